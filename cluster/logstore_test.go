package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// walGolden writes entries 1..n through the stores a server uses (sealed,
// with a current term) into a wal/ of small segments, closes them cleanly
// and returns the data dir and the entries.
func walGolden(t *testing.T, n int, segmentSize int) (string, []raft.Log) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "golden")
	cfg := Config{NodeID: "s1", DataDir: dir, WALSegmentSize: segmentSize}.withDefaults()
	st, err := openStores(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 11)) // fixed seed: the same bytes every run
	var want []raft.Log
	for i := 1; i <= n; {
		var batch []*raft.Log
		for j := 0; j < 1+i%3 && i <= n; j++ {
			data := make([]byte, 8+rng.IntN(40))
			for k := range data {
				data[k] = byte('a' + rng.IntN(26))
			}
			l := raft.Log{Index: uint64(i), Term: 1 + uint64(i/5), Type: raft.LogCommand, Data: data}
			want = append(want, l)
			batch = append(batch, &l)
			i++
		}
		if err := st.logs.StoreLogs(batch); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.stable.SetUint64([]byte("CurrentTerm"), want[len(want)-1].Term); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, want
}

// TestWALEveryByteDamaged flips each byte a wal/ segment holds, one at a
// time, and opens the data dir: it is refused with a one-line DamageError,
// or it opens with exactly the log that was written — never a shorter log
// or a changed entry. (raft-wal alone reads past a damaged frame header
// as the end of the log, and drops a last batch whose commit CRC fails:
// the durable mark and the entry checksums turn both into refusals.)
func TestWALEveryByteDamaged(t *testing.T) {
	golden, want := walGolden(t, 12, 64<<10)
	segs, _ := filepath.Glob(filepath.Join(golden, WALDir, "*.wal"))
	if len(segs) != 1 {
		t.Fatalf("segments: %v", segs)
	}
	seg, _ := os.ReadFile(segs[0])
	used := len(bytes.TrimRight(seg, "\x00"))
	refused, intact := 0, 0
	for pos := 0; pos < used; pos++ {
		dir := filepath.Join(t.TempDir(), fmt.Sprint(pos))
		copyDir(t, golden, dir)
		p := filepath.Join(dir, WALDir, filepath.Base(segs[0]))
		b := bytes.Clone(seg)
		b[pos] ^= 0xff
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := Config{NodeID: "s1", DataDir: dir, WALSegmentSize: 64 << 10}.withDefaults()
		st, err := openStores(cfg)
		if err != nil {
			if !errors.Is(err, ErrDamaged) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("byte %d: %v", pos, err)
			}
			refused++
			continue
		}
		last, _ := st.logs.LastIndex()
		if last != uint64(len(want)) {
			st.Close()
			t.Fatalf("byte %d flipped: opened with last index %d, %d were written", pos, last, len(want))
		}
		for _, w := range want {
			var l raft.Log
			if err := st.logs.GetLog(w.Index, &l); err != nil || l.Term != w.Term || l.Type != w.Type || !bytes.Equal(l.Data, w.Data) {
				st.Close()
				t.Fatalf("byte %d flipped: entry %d read back as %+v (%v)", pos, w.Index, l, err)
			}
		}
		st.Close()
		intact++
	}
	t.Logf("%d bytes of the segment flipped one at a time: %d refused, %d opened with the whole log intact (padding, reserved bytes)", used, refused, intact)
}

// The durable mark follows a suffix delete down (raft truncating a
// follower's conflicting entries) and back up with new appends, so a clean
// reopen is never refused. (With raft-wal v0.4.0 the reopen after the
// delete failed: "sealed segment has no index block", hashicorp/raft-wal
// issue 31, fixed in v0.4.2.)
func TestWALMarkFollowsSuffixDelete(t *testing.T) {
	dir, want := walGolden(t, 12, 1<<20)
	cfg := Config{NodeID: "s1", DataDir: dir}.withDefaults()
	st, err := openStores(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.logs.DeleteRange(9, 12); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = openStores(cfg)
	if err != nil {
		t.Fatalf("reopen after a suffix delete: %v", err)
	}
	if last, _ := st.logs.LastIndex(); last != 8 {
		t.Fatalf("last %d after deleting 9..12", last)
	}
	l := want[8]
	l.Term = 3 // a new leader's entry at the same index
	l.Data = []byte("another leader's entry")
	if err := st.logs.StoreLogs([]*raft.Log{&l}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = openStores(cfg)
	if err != nil {
		t.Fatalf("reopen after a new append: %v", err)
	}
	defer st.Close()
	if mark, _ := st.stable.GetUint64(walDurableKey); mark != 9 {
		t.Fatalf("mark %d, want 9", mark)
	}
}

// A data dir never switches log stores: one kept in raft.db stays there,
// and naming the other store is an error, not a new empty log.
func TestLogStoreKindIsKept(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s1")
	cfg := Config{NodeID: "s1", DataDir: dir, LogStore: LogStoreBolt}.withDefaults()
	st, err := openStores(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l := raft.Log{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("x")}
	if err := st.logs.StoreLogs([]*raft.Log{&l}); err != nil {
		t.Fatal(err)
	}
	st.stable.SetUint64([]byte("CurrentTerm"), 1)
	st.Close()
	cfg.LogStore = LogStoreAuto
	if st, err = openStores(cfg); err != nil || st.kind != LogStoreBolt {
		t.Fatalf("auto on a bolt data dir: kind %v, %v", st, err)
	}
	st.Close()
	cfg.LogStore = LogStoreWAL
	if _, err := openStores(cfg); err == nil || !strings.Contains(err.Error(), "does not change log stores") {
		t.Fatalf("wal on a bolt data dir: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, WALDir)); err == nil {
		t.Fatal("a refused switch created wal/")
	}
}

// A follower that was down while the leader compacted its log receives a
// snapshot (raft deletes its whole wal/ log: the store is monotonic), then
// appends after it; it restarts from that data dir and converges again.
func TestSnapshotInstallThenRestart(t *testing.T) {
	c := newTunedTestCluster(t, 3, func(cfg *Config) {
		cfg.TrailingLogs, cfg.SnapshotThreshold, cfg.SnapshotInterval = 2, 1<<20, time.Hour
	})
	l := c.leader()
	behind := -1
	for i, m := range c.members {
		if m != l {
			behind = i
			break
		}
	}
	c.stop(behind)
	for i := range 20 {
		createDomains(t, l.node, fmt.Sprintf("while-down-%02d.example", i))
	}
	// Every running server compacts, so whichever of them leads after the
	// restart holds no log the behind one could catch up from.
	c.converge()
	for _, m := range c.members {
		if m != nil {
			if err := m.node.Snapshot(); err != nil {
				t.Fatal(err)
			}
		}
	}
	c.stopAll()
	c.startAll()
	c.converge()
	first, _ := c.members[behind].node.logs.FirstIndex()
	if first < 20 {
		t.Fatalf("%s's log starts at %d: it caught up from the log, not from a snapshot", nodeID(behind), first)
	}
	createDomains(t, c.leader().node, "after-install.example")
	c.stopAll()
	c.startAll()
	want := c.converge()
	t.Logf("%s installed a snapshot (log from %d) and restarted; state hash %x", nodeID(behind), first, want[:6])
}
