package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// Every entry is stored sealed; a changed byte of data is refused on read
// (and reported once); an entry stored before checksums existed is read.
// TestSealedFrom: a new data dir requires a checksum on every entry; one
// whose log starts with entries of an earlier build requires them from its
// first sealed entry; the value is kept, and a damaged value is refused.
func TestSealedFrom(t *testing.T) {
	open := func(t *testing.T) (*raftboltdb.BoltStore, string) {
		path := filepath.Join(t.TempDir(), "raft.db")
		store, err := raftboltdb.New(raftboltdb.Options{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		return store, path
	}
	store, path := open(t)
	if v, err := sealedFrom(path, store, mustChecksumLogStore(t, store, path, nil)); err != nil || v != 1 {
		t.Fatalf("new data dir: %d, %v", v, err)
	}
	store, path = open(t)
	for i := uint64(1); i <= 2; i++ {
		if err := store.StoreLog(&raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte("old")}); err != nil {
			t.Fatal(err)
		}
	}
	cs := mustChecksumLogStore(t, store, path, nil)
	if err := cs.StoreLog(&raft.Log{Index: 3, Term: 1, Type: raft.LogCommand, Data: []byte("new")}); err != nil {
		t.Fatal(err)
	}
	if v, err := sealedFrom(path, store, cs); err != nil || v != 3 {
		t.Fatalf("upgraded data dir: %d, %v", v, err)
	}
	if v, err := store.GetUint64(sealedFromKey); err != nil || v != 3 {
		t.Fatalf("kept value: %d, %v", v, err)
	}
	if err := store.SetUint64(sealedFromKey, 1<<40); err != nil {
		t.Fatal(err)
	}
	if _, err := sealedFrom(path, store, cs); !errors.Is(err, ErrDamaged) {
		t.Fatalf("damaged value: %v", err)
	}
}

func TestChecksumLogStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	store, err := raftboltdb.New(raftboltdb.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var reported []error
	cs := mustChecksumLogStore(t, store, path, func(err error) { reported = append(reported, err) })
	in := []*raft.Log{
		{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("alpha")},
		{Index: 2, Term: 1, Type: raft.LogCommand, Data: []byte("bravo")},
	}
	if err := cs.StoreLogs(in); err != nil {
		t.Fatal(err)
	}
	if in[0].Extensions != nil {
		t.Fatal("StoreLogs modified the caller's entry")
	}
	// An entry without a checksum at or above legacyBelow is damage (the
	// damage may have removed the checksum field itself)...
	if err := store.StoreLog(&raft.Log{Index: 3, Term: 1, Type: raft.LogCommand, Data: []byte("legacy")}); err != nil {
		t.Fatal(err)
	}
	var l3 raft.Log
	if err := cs.GetLog(3, &l3); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "checksum missing") {
		t.Fatalf("unsealed entry in a sealed log: %v", err)
	}
	reported = nil
	cs.once = sync.Once{}
	// ...below it, it was written by an earlier build: accepted.
	cs.legacyBelow = 4
	for i := uint64(1); i <= 3; i++ {
		var l raft.Log
		if err := cs.GetLog(i, &l); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		if i < 3 && len(l.Extensions) != sealLen {
			t.Fatalf("entry %d stored without a checksum: %x", i, l.Extensions)
		}
	}
	// One byte of entry 2's data changes on disk.
	var raw raft.Log
	if err := store.GetLog(2, &raw); err != nil {
		t.Fatal(err)
	}
	raw.Data = bytes.Clone(raw.Data)
	raw.Data[0] ^= 0x01
	if err := store.StoreLog(&raw); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		var l raft.Log
		err := cs.GetLog(2, &l)
		if !errors.Is(err, ErrDamaged) || l.Data != nil {
			t.Fatalf("damaged entry read: err=%v data=%q", err, l.Data)
		}
		for _, want := range []string{path, "log entry 2", "checksum mismatch", RebuildDoc} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not name %q", err, want)
			}
		}
	}
	if len(reported) != 1 {
		t.Fatalf("OnCorruption called %d times, want once", len(reported))
	}
	// A checksum field this build does not write is damage too.
	raw.Data[0] ^= 0x01
	raw.Extensions = []byte{9, 9}
	if err := store.StoreLog(&raw); err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	if err := cs.GetLog(2, &l); !errors.Is(err, ErrDamaged) {
		t.Fatalf("unknown checksum field accepted: %v", err)
	}
}

// singleNode opens a one-server cluster on raft's in-memory transport.
func singleNode(t *testing.T, dir string) (*Node, error) {
	return singleNodeOn(t, dir, LogStoreAuto)
}

func singleNodeOn(t *testing.T, dir, kind string) (*Node, error) {
	_, tr := raft.NewInmemTransport("s1")
	return Open(Config{NodeID: "s1", DataDir: dir, Transport: tr, LogStore: kind,
		HeartbeatTimeout: time.Second, ElectionTimeout: time.Second, // a starved leader keeps its term on a loaded machine
		LeaderLeaseTimeout: 500 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
		TrailingLogs: 2, SnapshotThreshold: 1 << 20, SnapshotInterval: time.Hour})
}

func createDomains(t *testing.T, n *Node, names ...string) {
	t.Helper()
	for _, name := range names {
		cmd := &pb.Command{Body: &pb.Command_CreateDomain{CreateDomain: &pb.CreateDomain{Name: name,
			Kind: pb.DomainKind_DOMAIN_KIND_AERODB, Policy: &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL, LeaseTtlMs: 2000, ReportMaxAgeMs: 1000}}}}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := n.Propose(ctx, cmd)
		cancel()
		if err != nil || res.Err != nil {
			t.Fatal(name, err, res)
		}
	}
}

// goldenDataDir is a stopped server's data dir with a snapshot (log
// compacted behind it to 2 trailing entries) and 5 entries after it; it
// returns the data dir and its state hash.
func goldenDataDir(t *testing.T) (string, [32]byte) {
	return goldenDataDirOn(t, LogStoreAuto)
}

func goldenDataDirOn(t *testing.T, kind string) (string, [32]byte) {
	dir := filepath.Join(t.TempDir(), "golden")
	n, err := singleNodeOn(t, dir, kind)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Bootstrap([]Peer{{ID: "s1", Address: "s1"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "leader", n.IsLeader)
	createDomains(t, n, "before-a.example", "before-b.example", "before-c.example")
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	createDomains(t, n, "after-a.example", "after-b.example", "after-c.example", "after-d.example", "after-e.example")
	h, err := n.FSM().StateHash()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	return dir, h
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if fi.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// logDamageCases damage the log itself, where the data dir keeps it.
func logDamageCases(kind string) []damageCase {
	if kind == LogStoreBolt {
		return []damageCase{{"entry data byte flipped", func(t *testing.T, dir string) {
			flipAll(t, filepath.Join(dir, "raft.db"), "after-c.example")
		}, "raft.db", "checksum mismatch"}}
	}
	seg := func(t *testing.T, dir string) string {
		t.Helper()
		m, _ := filepath.Glob(filepath.Join(dir, WALDir, "*.wal"))
		if len(m) != 1 {
			t.Fatalf("segments: %v", m)
		}
		return m[0]
	}
	return []damageCase{
		{"entry data byte flipped", func(t *testing.T, dir string) {
			flipAll(t, seg(t, dir), "after-c.example")
		}, WALDir, "checksum mismatch"},
		{"frame header damaged mid-segment", func(t *testing.T, dir string) {
			// raft-wal reads a segment up to the first frame header it
			// cannot decode and takes the rest as never written.
			damageFrameHeader(t, seg(t, dir), "after-b.example")
		}, WALDir, "were stored durably"},
		{"segment truncated", func(t *testing.T, dir string) {
			p := seg(t, dir)
			b, _ := os.ReadFile(p)
			if err := os.Truncate(p, int64(bytes.Index(b, []byte("after-b.example")))); err != nil {
				t.Fatal(err)
			}
		}, WALDir, "were stored durably"},
		{"segment removed", func(t *testing.T, dir string) {
			if err := os.Remove(seg(t, dir)); err != nil {
				t.Fatal(err)
			}
		}, WALDir, "were stored durably"},
		{"wal meta file removed", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, WALDir, "wal-meta.db")); err != nil {
				t.Fatal(err)
			}
		}, "wal-meta.db", "missing while segment files remain"},
		{"wal directory removed", func(t *testing.T, dir string) {
			if err := os.RemoveAll(filepath.Join(dir, WALDir)); err != nil {
				t.Fatal(err)
			}
		}, WALDir, "missing"},
	}
}

// damageFrameHeader sets the type byte of the raft-wal frame holding
// needle to a value no frame has. A segment is a 32-byte file header, then
// frames: an 8-byte header (type, 3 reserved bytes, little-endian length)
// and the payload, padded to 8 bytes.
func damageFrameHeader(t *testing.T, file, needle string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(b, []byte(needle))
	for off := 32; off+8 <= len(b) && b[off] != 0; {
		n := int(binary.LittleEndian.Uint32(b[off+4:]))
		if b[off] == 3 { // a commit frame: its length field is a CRC
			n = 0
		}
		end := off + 8 + (n+7)/8*8
		if at >= off && at < end {
			f, err := os.OpenFile(file, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte{0x7f}, int64(off)); err != nil {
				t.Fatal(err)
			}
			return
		}
		off = end
	}
	t.Fatalf("no frame holds %q in %s", needle, file)
}

// snapshotDir is the one snapshot directory of a golden data dir.
func snapshotDir(t *testing.T, dir string) string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*-*-*"))
	if len(m) != 1 {
		t.Fatalf("snapshots: %v", m)
	}
	return m[0]
}

// flipAll flips one byte inside every copy of needle in file (bbolt may
// keep an old copy of a page in a free page; the live one is among them).
func flipAll(t *testing.T, file string, needle string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := bytes.Index(b, []byte(needle)); i >= 0; {
		b[i+2] ^= 0x01
		n++
		j := bytes.Index(b[i+1:], []byte(needle))
		if j < 0 {
			break
		}
		i += 1 + j
	}
	if n == 0 {
		t.Fatalf("%q not in %s", needle, file)
	}
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func editMeta(t *testing.T, snap string, edit func(m map[string]any)) {
	t.Helper()
	p := filepath.Join(snap, "meta.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func metaIndex(m map[string]any) uint64 {
	var i uint64
	fmt.Sscan(string(m["Index"].(json.Number)), &i)
	return i
}

// Open refuses every kind of damage before raft starts, with an error
// naming the file and the fault (never a panic); the untouched data dir
// reopens to the same state.
func TestOpenRefusesDamagedDataDir(t *testing.T) {
	for _, kind := range []string{LogStoreWAL, LogStoreBolt} {
		t.Run(kind, func(t *testing.T) { testOpenRefusesDamagedDataDir(t, kind) })
	}
}

type damageCase struct {
	name   string
	damage func(t *testing.T, dir string)
	file   string // the error names this file (relative to the data dir; "" = snapshot dir)
	fault  string
}

func testOpenRefusesDamagedDataDir(t *testing.T, kind string) {
	golden, want := goldenDataDirOn(t, kind)
	logFile := "raft.db"
	if kind == LogStoreWAL {
		logFile = WALDir
	}
	cases := logDamageCases(kind)
	cases = append(cases, []damageCase{
		{"raft.db truncated", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "raft.db")
			fi, _ := os.Stat(p)
			if err := os.Truncate(p, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
		}, "raft.db", "truncated"},
		{"raft.db emptied, snapshots left", func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, "raft.db"), 0); err != nil {
				t.Fatal(err)
			}
		}, "raft.db", "no current term"},
		{"raft.db meta pages overwritten", func(t *testing.T, dir string) {
			f, err := os.OpenFile(filepath.Join(dir, "raft.db"), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt(make([]byte, 8192), 0)
			f.Close()
		}, "raft.db", "no valid bbolt meta page"},
		{"raft.db data pages overwritten", func(t *testing.T, dir string) {
			// Meta pages intact, every other page garbage: bbolt panics or
			// faults while reading; Open turns that into an error.
			p := filepath.Join(dir, "raft.db")
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			ps := os.Getpagesize()
			for i := 2 * ps; i < len(b); i++ {
				b[i] = 0xAB
			}
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "raft.db", "reading it failed"},
		{"snapshot state byte flipped", func(t *testing.T, dir string) {
			flipAll(t, filepath.Join(snapshotDir(t, dir), "state.bin"), "before-b.example")
		}, "state.bin", "does not match the CRC"},
		{"meta.json index edited", func(t *testing.T, dir string) {
			editMeta(t, snapshotDir(t, dir), func(m map[string]any) { m["Index"] = metaIndex(m) + 3 })
		}, "meta.json", "disagree with the snapshot's id"},
		{"meta.json index and id edited consistently", func(t *testing.T, dir string) {
			snap := snapshotDir(t, dir)
			var newID string
			editMeta(t, snap, func(m map[string]any) {
				idx := metaIndex(m) + 3
				parts := strings.Split(m["ID"].(string), "-")
				newID = fmt.Sprintf("%s-%d-%s", parts[0], idx, parts[2])
				m["Index"], m["ID"] = idx, newID
			})
			if err := os.Rename(snap, filepath.Join(filepath.Dir(snap), newID)); err != nil {
				t.Fatal(err)
			}
		}, "meta.json", "command entry"},
		{"meta.json index moved back", func(t *testing.T, dir string) {
			snap := snapshotDir(t, dir)
			var newID string
			editMeta(t, snap, func(m map[string]any) {
				idx := metaIndex(m) - 1
				parts := strings.Split(m["ID"].(string), "-")
				newID = fmt.Sprintf("%s-%d-%s", parts[0], idx, parts[2])
				m["Index"], m["ID"] = idx, newID
			})
			if err := os.Rename(snap, filepath.Join(filepath.Dir(snap), newID)); err != nil {
				t.Fatal(err)
			}
		}, "meta.json", "below the snapshot's own last index"},
		{"snapshot directory removed", func(t *testing.T, dir string) {
			if err := os.RemoveAll(snapshotDir(t, dir)); err != nil {
				t.Fatal(err)
			}
		}, logFile, "no snapshot covers"},
	}...)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "s1")
			copyDir(t, golden, dir)
			tc.damage(t, dir)
			n, err := singleNodeOn(t, dir, kind)
			if err == nil {
				n.Shutdown()
				t.Fatal("a damaged data dir opened")
			}
			msg := err.Error()
			if !errors.Is(err, ErrDamaged) || !strings.Contains(msg, tc.file) || !strings.Contains(msg, tc.fault) ||
				!strings.Contains(msg, RebuildDoc) || strings.Contains(msg, "\n") {
				t.Fatalf("error %q: want one line naming %s and %q", msg, tc.file, tc.fault)
			}
			t.Log(msg)
		})
	}
	t.Run("untouched", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "s1")
		copyDir(t, golden, dir)
		n, err := singleNodeOn(t, dir, kind)
		if err != nil {
			t.Fatal(err)
		}
		defer n.Shutdown()
		eventually(t, "leader", n.IsLeader)
		if err := n.Barrier(context.Background()); err != nil {
			t.Fatal(err)
		}
		if h, _ := n.FSM().StateHash(); h != want {
			t.Fatal("reopened data dir has another state hash")
		}
	})
}

// A running node's log store reports a damaged entry through
// Config.OnCorruption (authorityd exits there) and never returns it.
func TestRunningNodeReportsCorruption(t *testing.T) {
	for _, kind := range []string{LogStoreWAL, LogStoreBolt} {
		t.Run(kind, func(t *testing.T) { testRunningNodeReportsCorruption(t, kind) })
	}
}

func testRunningNodeReportsCorruption(t *testing.T, kind string) {
	dir := filepath.Join(t.TempDir(), "s1")
	_, tr := raft.NewInmemTransport("s1")
	reported := make(chan error, 4)
	n, err := Open(Config{NodeID: "s1", DataDir: dir, Transport: tr, LogStore: kind,
		HeartbeatTimeout: time.Second, ElectionTimeout: time.Second, // a starved leader keeps its term on a loaded machine
		LeaderLeaseTimeout: 500 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
		OnCorruption: func(err error) { reported <- err }})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	if err := n.Bootstrap([]Peer{{ID: "s1", Address: "s1"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "leader", n.IsLeader)
	createDomains(t, n, "one.example", "two.example")
	last, _ := n.logs.LastIndex()
	var raw raft.Log
	if err := n.logs.LogStore.GetLog(last, &raw); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "raft.db")
	if kind == LogStoreBolt {
		raw.Data = bytes.Clone(raw.Data)
		raw.Data[len(raw.Data)-1] ^= 0x40
		if err := n.stores.stable.StoreLog(&raw); err != nil {
			t.Fatal(err)
		}
	} else {
		file = filepath.Join(dir, WALDir)
		flipInSegments(t, file, raw.Data)
	}
	var l raft.Log
	if err := n.logs.GetLog(last, &l); !errors.Is(err, ErrDamaged) {
		t.Fatalf("damaged entry read: %v", err)
	}
	select {
	case err := <-reported:
		if !strings.Contains(err.Error(), fmt.Sprintf("log entry %d", last)) || !strings.Contains(err.Error(), file) {
			t.Fatalf("report %q does not name the entry and the file", err)
		}
	default:
		t.Fatal("OnCorruption not called")
	}
}

// flipInSegments flips the last byte of the last copy of data in the wal/
// segment files under dir, in place.
func flipInSegments(t testing.TB, dir string, data []byte) {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.wal"))
	for i := len(segs) - 1; i >= 0; i-- {
		b, err := os.ReadFile(segs[i])
		if err != nil {
			t.Fatal(err)
		}
		at := bytes.LastIndex(b, data)
		if at < 0 {
			continue
		}
		f, err := os.OpenFile(segs[i], os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		pos := int64(at + len(data) - 1)
		if _, err := f.WriteAt([]byte{b[pos] ^ 0x40}, pos); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Fatalf("entry data not found in %d segment files under %s", len(segs), dir)
}

// An entry whose seal does not match is not applied: OnCorruption is told,
// and raft (which cannot skip it) is stopped by a panic if the callback
// returns.
func TestApplyRefusesDamagedEntry(t *testing.T) {
	f := fsm.New()
	var reported error
	a := &raftFSM{f: f, hooks: noHooks{}, path: "/data/raft.db", onCorrupt: func(err error) { reported = err }}
	l := &raft.Log{Index: 7, Term: 2, Type: raft.LogCommand, Data: []byte("x")}
	l.Extensions = seal(l)
	l.Data = []byte("y")
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("a damaged entry was applied")
			}
		}()
		a.Apply(l)
	}()
	if !errors.Is(reported, ErrDamaged) || !strings.Contains(reported.Error(), "log entry 7") || f.LastIndex() != 0 {
		t.Fatalf("reported %v, fsm at %d", reported, f.LastIndex())
	}
}

func mustChecksumLogStore(t testing.TB, store *raftboltdb.BoltStore, path string, onCorrupt func(error)) *checksumLogStore {
	t.Helper()
	cs, err := newChecksumLogStore(store, path, onCorrupt)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// TestBoltHandleMatchesLibrary: the bbolt handle read out of raft-boltdb's
// BoltStore is the database it writes to (an upgrade that moves the field
// fails here, not on a server).
func TestBoltHandleMatchesLibrary(t *testing.T) {
	path := filepath.Join(t.TempDir(), "raft.db")
	store, err := raftboltdb.New(raftboltdb.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	db, err := boltHandle(store)
	if err != nil {
		t.Fatal(err)
	}
	if db.Path() != path {
		t.Fatalf("handle on %q, store on %q", db.Path(), path)
	}
	want := &raft.Log{Index: 7, Term: 3, Type: raft.LogCommand, Data: []byte("seven"), AppendedAt: time.Unix(1_800_000_000, 5).UTC()}
	if err := store.StoreLog(want); err != nil {
		t.Fatal(err)
	}
	raw, err := boltRawReader(store)
	if err != nil {
		t.Fatal(err)
	}
	b, err := raw(7)
	if err != nil {
		t.Fatal(err)
	}
	var got, lib raft.Log
	if err := decodeEntry(b, &got); err != nil {
		t.Fatal(err)
	}
	if err := store.GetLog(7, &lib); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, lib) {
		t.Fatalf("raw decode %+v, raft-boltdb %+v", got, lib)
	}
	if _, err := raw(8); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("missing entry: %v", err)
	}
}

// TestDamagedLengthAllocatesLittle: every stored entry damaged at every
// byte — the byte set to 0xff or with a bit flipped, or overwritten with a
// msgpack header announcing 32-bit length (bin32, str32, array32, map32,
// ext32) followed by 0xff: the largest lengths a damaged byte or two can
// produce — is read back as a DamageError or as the entry itself, and no
// read allocates more than 1 MiB. raft-boltdb's own decoder allocates up to
// 4 GiB for such a length (FuzzLogEntry found it: a damaged AppendedAt
// header took 17 s to read).
func TestDamagedLengthAllocatesLittle(t *testing.T) {
	entries := realStoredEntries(t)
	mem := &rawLogStore{raw: map[uint64][]byte{}}
	cs := &checksumLogStore{LogStore: mem, read: mem.read, path: "raft.db", onCorrupt: func(error) {}}
	damages := []func(b []byte, pos int){
		func(b []byte, pos int) { b[pos] = 0xff },
		func(b []byte, pos int) { b[pos] ^= 0x80 },
		func(b []byte, pos int) { b[pos] ^= 0x01 },
	}
	for _, header := range []byte{0xc6, 0xdb, 0xdd, 0xdf, 0xc9} {
		damages = append(damages, func(b []byte, pos int) {
			b[pos] = header
			if pos+1 < len(b) {
				b[pos+1] = 0xff
			}
		})
	}
	var worst uint64
	var before, after runtime.MemStats
	reads := 0
	for _, e := range entries {
		var orig raft.Log
		if err := rbDecode(e, &orig); err != nil {
			t.Fatal(err)
		}
		for pos := range e {
			for _, damage := range damages {
				damaged := bytes.Clone(e)
				damage(damaged, pos)
				mem.raw[orig.Index] = damaged
				runtime.ReadMemStats(&before)
				var got raft.Log
				err := cs.getVerified(orig.Index, &got)
				runtime.ReadMemStats(&after)
				reads++
				worst = max(worst, after.TotalAlloc-before.TotalAlloc)
				if err == nil && (got.Term != orig.Term || !bytes.Equal(got.Data, orig.Data)) {
					t.Fatalf("entry %d byte %d: damaged entry accepted", orig.Index, pos)
				}
				if err != nil && !errors.Is(err, ErrDamaged) {
					t.Fatalf("entry %d byte %d: %v", orig.Index, pos, err)
				}
			}
		}
	}
	t.Logf("%d damaged reads, largest allocation of one read %d bytes", reads, worst)
	if worst > 1<<20 {
		t.Fatalf("a damaged entry cost %d bytes to read (bound 1 MiB)", worst)
	}
}
