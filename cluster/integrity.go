package cluster

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/crc64"
	"hash/fnv"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"google.golang.org/protobuf/proto"
)

// RebuildDoc is where an operator is sent when this server's data is
// damaged: the steps that rebuild a server from its peers.
const RebuildDoc = "docs/INTEGRITY.md#rebuilding-a-server-from-its-peers"

// ErrDamaged marks every integrity failure of a data dir: a log entry whose
// checksum does not match, a snapshot whose header disagrees with its
// meta.json, a truncated or unreadable raft.db, a stable store that lost its
// term. errors.Is(err, ErrDamaged) holds for all of them.
var ErrDamaged = errors.New("damaged")

// DamageError names the damaged file and what is wrong with it. Its message
// is one line and ends with what to do.
type DamageError struct {
	File  string // path of the damaged file
	Index uint64 // log index, when one entry is damaged (0 otherwise)
	Fault string // what is wrong
}

func (e *DamageError) Error() string {
	what := e.Fault
	if e.Index != 0 {
		what = fmt.Sprintf("log entry %d: %s", e.Index, e.Fault)
	}
	return fmt.Sprintf("%s is damaged: %s; nothing from it was applied; rebuild this server from its peers: %s", e.File, what, RebuildDoc)
}

func (e *DamageError) Is(target error) bool { return target == ErrDamaged }

func damaged(file string, index uint64, format string, a ...any) error {
	return &DamageError{File: file, Index: index, Fault: fmt.Sprintf(format, a...)}
}

// Log entry checksums. raft-boltdb/v2 persists the whole raft.Log with
// msgpack, Extensions included, and hashicorp/raft (v1.7.3) never
// interprets Extensions: it only carries them (ApplyLog copies them from
// the caller, the transports send them along). checksumLogStore uses the
// field for a CRC-32C (Castagnoli) over the entry's index, term, type and
// data:
//
//	Extensions = 0x01 | CRC-32C big-endian (5 bytes)
//
// Every entry is sealed when stored (a follower re-seals what the leader
// sent: the checksum protects this server's disk) and verified whenever it
// is read back from raft.db. An entry with empty Extensions was written
// before checksums existed (a data dir of an earlier build) and is accepted
// as it is; any other Extensions value that is not a valid seal is damage.
const (
	sealVersion byte = 1
	sealLen          = 5
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func entryChecksum(l *raft.Log) uint32 {
	var hdr [17]byte
	binary.BigEndian.PutUint64(hdr[0:], l.Index)
	binary.BigEndian.PutUint64(hdr[8:], l.Term)
	hdr[16] = byte(l.Type)
	return crc32.Update(crc32.Update(0, castagnoli, hdr[:]), castagnoli, l.Data)
}

func seal(l *raft.Log) []byte {
	b := make([]byte, sealLen)
	b[0] = sealVersion
	binary.BigEndian.PutUint32(b[1:], entryChecksum(l))
	return b
}

// verifyEntry checks an entry for index idx; it returns the fault, or ""
// when the entry is sound. An entry without a checksum is accepted only
// below legacyBelow: written before this data dir's entries carried
// checksums (read from disk), or carried in memory (before apply). At or
// above it, a missing checksum is damage: raft-boltdb skips unknown msgpack
// keys, so one damaged byte in the "Extensions" key drops the checksum
// field along with whatever else the damage changed.
func verifyEntry(idx uint64, l *raft.Log, legacyBelow uint64) string {
	if l.Index != idx {
		return fmt.Sprintf("stored under index %d but carries index %d", idx, l.Index)
	}
	if len(l.Extensions) == 0 {
		if idx < legacyBelow {
			return "" // written before entries carried checksums: accepted unverified
		}
		return fmt.Sprintf("checksum missing (entries from index %d on carry one)", legacyBelow)
	}
	if len(l.Extensions) != sealLen || l.Extensions[0] != sealVersion {
		return fmt.Sprintf("checksum field of %d bytes (version %d), not a checksum this build writes", len(l.Extensions), firstByte(l.Extensions))
	}
	want := binary.BigEndian.Uint32(l.Extensions[1:])
	if got := entryChecksum(l); got != want {
		return fmt.Sprintf("checksum mismatch (stored %08x, computed %08x)", want, got)
	}
	return ""
}

func firstByte(b []byte) byte {
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

// checksumLogStore seals entries on write and verifies them on read. A
// mismatch is never handed to raft as a good entry: GetLog returns a
// DamageError, and onCorrupt (Config.OnCorruption) is told first — raft
// itself panics when it cannot read an entry it must apply, so the server
// is expected to stop there (authorityd logs one line and exits 3).
type checksumLogStore struct {
	raft.LogStore
	// read reads and decodes entry idx without verifying it: for raft.db
	// from the stored bytes (see rawlog.go), not through raft-boltdb's
	// GetLog; for wal/ through raft-wal's GetLog.
	read      func(idx uint64, l *raft.Log) error
	path      string // raft.db, or the wal/ directory
	onCorrupt func(error)
	once      sync.Once
	// legacyBelow: entries below this index may lack a checksum (written
	// by a build before checksums). Zero: every entry must carry one.
	legacyBelow uint64
}

// newChecksumLogStore wraps the raft.db a BoltStore has open.
func newChecksumLogStore(store *raftboltdb.BoltStore, path string, onCorrupt func(error)) (*checksumLogStore, error) {
	raw, err := boltRawReader(store)
	if err != nil {
		return nil, err
	}
	read := func(idx uint64, l *raft.Log) error {
		b, err := raw(idx)
		if err != nil {
			return err
		}
		return decodeEntry(b, l)
	}
	return &checksumLogStore{LogStore: store, read: read, path: path, onCorrupt: onCorrupt}, nil
}

// IsMonotonic forwards raft.MonotonicLogStore: with wal/ (which keeps
// consecutive indexes only) raft must delete the whole log when it
// installs a snapshot.
func (s *checksumLogStore) IsMonotonic() bool {
	m, ok := s.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

func (s *checksumLogStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs stores sealed copies: the caller's entries (which raft's log
// cache keeps and other goroutines read) are not modified.
func (s *checksumLogStore) StoreLogs(logs []*raft.Log) error {
	sealed := make([]*raft.Log, len(logs))
	for i, l := range logs {
		c := *l
		c.Extensions = seal(&c)
		sealed[i] = &c
	}
	return s.LogStore.StoreLogs(sealed)
}

func (s *checksumLogStore) GetLog(idx uint64, l *raft.Log) error {
	err := s.getVerified(idx, l)
	if errors.Is(err, ErrDamaged) && s.onCorrupt != nil {
		s.once.Do(func() { s.onCorrupt(err) })
	}
	return err
}

func (s *checksumLogStore) getVerified(idx uint64, l *raft.Log) error {
	if err := s.getUnverified(idx, l); err != nil {
		return err
	}
	if fault := verifyEntry(idx, l, s.legacyBelow); fault != "" {
		*l = raft.Log{}
		return damaged(s.path, idx, "%s", fault)
	}
	return nil
}

// getUnverified reads and decodes entry idx without checking its seal.
func (s *checksumLogStore) getUnverified(idx uint64, l *raft.Log) error {
	*l = raft.Log{}
	err := s.read(idx, l)
	if errors.Is(err, raft.ErrLogNotFound) {
		return err
	}
	if err != nil {
		*l = raft.Log{}
		return damaged(s.path, idx, "unreadable: %v", err)
	}
	return nil
}

// checkBeforeApply verifies a sealed entry once more right before it is
// applied (an entry read from disk was verified by GetLog; one from raft's
// in-memory cache or from the leader carries the seal it was stored or sent
// with, or none). raft cannot skip an entry, so a mismatch stops the
// server: OnCorruption (authorityd exits), and a panic if it returns.
func (a *raftFSM) checkBeforeApply(l *raft.Log) {
	// In memory an entry may lack a checksum (raft's cache and the
	// leader's in-flight batch hold the caller's unsealed copies).
	fault := verifyEntry(l.Index, l, math.MaxUint64)
	if fault == "" {
		return
	}
	err := damaged(a.path, l.Index, "%s (found before apply)", fault)
	if a.onCorrupt != nil {
		a.onCorrupt(err)
	}
	panic(err)
}

// openStore opens raft.db, turning a panic or memory fault inside bbolt (a
// truncated or overwritten file) into a DamageError. A file that bbolt's
// own meta pages say is shorter than its data is refused before bbolt maps
// it.
func openStore(path string) (store *raftboltdb.BoltStore, err error) {
	if err := checkBoltFile(path); err != nil {
		return nil, err
	}
	defer guard(path, &err)
	store, err = raftboltdb.New(raftboltdb.Options{Path: path})
	if err != nil {
		return nil, damaged(path, 0, "cannot open: %v", err)
	}
	return store, nil
}

// guard recovers a panic (including a fault reading bbolt's memory map,
// made a panic by debug.SetPanicOnFault) into a DamageError naming path.
// It must be deferred directly by the function doing the reading.
func guard(path string, err *error) {
	if r := recover(); r != nil {
		*err = damaged(path, 0, "reading it failed (%v)", r)
	}
}

// withFaultPanics runs f with memory faults turned into panics on this
// goroutine (bbolt reads raft.db through mmap: a truncated file faults).
func withFaultPanics(f func() error) error {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	return f()
}

// checkBoltFile reads bbolt's two meta pages and refuses a file shorter
// than the pages the newest valid meta page counts (a truncated raft.db),
// or a non-empty file with no valid meta page. An empty or missing file is
// left to bbolt (it initialises it; checkStable then catches a stable store
// that lost its term).
func checkBoltFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return damaged(path, 0, "cannot open: %v", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return damaged(path, 0, "cannot stat: %v", err)
	}
	size := fi.Size()
	if size == 0 {
		return nil
	}
	const magic = 0xED0CDAED
	type meta struct {
		pageSize   uint32
		pgid, txid uint64
	}
	read := func(off int64) (meta, bool) {
		var b [80]byte
		if _, err := f.ReadAt(b[:], off); err != nil {
			return meta{}, false
		}
		m := b[16:] // after the page header
		if binary.LittleEndian.Uint32(m[0:]) != magic {
			return meta{}, false
		}
		h := fnv.New64a()
		h.Write(m[:56])
		if h.Sum64() != binary.LittleEndian.Uint64(m[56:]) {
			return meta{}, false
		}
		return meta{pageSize: binary.LittleEndian.Uint32(m[8:]), pgid: binary.LittleEndian.Uint64(m[40:]), txid: binary.LittleEndian.Uint64(m[48:])}, true
	}
	m0, ok0 := read(0)
	var m1 meta
	ok1 := false
	if ok0 && m0.pageSize >= 512 && m0.pageSize <= 1<<20 {
		m1, ok1 = read(int64(m0.pageSize))
	} else {
		for _, ps := range []int64{4096, 8192, 16384, 65536} {
			if m1, ok1 = read(ps); ok1 {
				break
			}
		}
	}
	best, ok := m0, ok0
	if ok1 && (!ok0 || m1.txid > m0.txid) {
		best, ok = m1, true
	}
	if !ok {
		return damaged(path, 0, "no valid bbolt meta page (%d bytes; overwritten or not a raft.db)", size)
	}
	if need := int64(best.pgid) * int64(best.pageSize); size < need {
		return damaged(path, 0, "truncated: %d bytes, its pages need %d", size, need)
	}
	return nil
}

// checkDataDir verifies, before raft starts, everything raft would trust
// without looking: every stored log entry's checksum, every snapshot
// (state file CRC, header index against meta.json, the log around it), and
// that a data dir with a log or snapshots still knows its term.
func checkDataDir(dataDir string, st *stores) (err error) {
	path, logs := st.stablePath, st.logs
	return withFaultPanics(func() (err error) {
		defer guard(logs.path, &err)
		if logs.legacyBelow, err = sealedFrom(path, st.stable, logs); err != nil {
			return err
		}
		first, last, err := scanLog(logs)
		if err != nil {
			return err
		}
		snaps, err := checkSnapshots(dataDir, first, last, logs)
		if err != nil {
			return err
		}
		if err := checkWALMark(st, last, snaps); err != nil {
			return err
		}
		return checkStable(path, st.stable, logs, first, last, snaps)
	})
}

// sealedFromKey is the stable-store key holding the first log index whose
// entries carry checksums in this data dir.
var sealedFromKey = []byte("authority-sealed-from")

// sealedFrom reads the first index whose entries must carry a checksum. A
// data dir without the key gets it now: the index of its first sealed
// entry, or the next index when none is sealed (a new data dir: 1). Every
// build since has sealed every entry it stored, in log order.
func sealedFrom(path string, store *raftboltdb.BoltStore, logs *checksumLogStore) (uint64, error) {
	last, err := logs.LastIndex()
	if err != nil {
		return 0, damaged(logs.path, 0, "last index unreadable: %v", err)
	}
	v, err := store.GetUint64(sealedFromKey)
	switch {
	case err == nil && v >= 1 && v <= last+1:
		return v, nil
	case err == nil:
		return 0, damaged(path, 0, "stable key %s is %d, outside 1..%d (the last index + 1)", sealedFromKey, v, last+1)
	case !errors.Is(err, raftboltdb.ErrKeyNotFound):
		return 0, damaged(path, 0, "stable key %s unreadable: %v", sealedFromKey, err)
	}
	first, err := logs.FirstIndex()
	if err != nil {
		return 0, damaged(logs.path, 0, "first index unreadable: %v", err)
	}
	from := last + 1
	var l raft.Log
	for i := first; i != 0 && i <= last; i++ {
		if logs.getUnverified(i, &l) == nil && len(l.Extensions) > 0 {
			from = i
			break
		}
	}
	if err := store.SetUint64(sealedFromKey, from); err != nil {
		return 0, fmt.Errorf("cluster: %s: record %s: %w", path, sealedFromKey, err)
	}
	return from, nil
}

// scanLog verifies every entry FirstIndex..LastIndex.
func scanLog(logs *checksumLogStore) (first, last uint64, err error) {
	path := logs.path
	if first, err = logs.FirstIndex(); err != nil {
		return 0, 0, damaged(path, 0, "first index unreadable: %v", err)
	}
	if last, err = logs.LastIndex(); err != nil {
		return 0, 0, damaged(path, 0, "last index unreadable: %v", err)
	}
	var l raft.Log
	for i := first; i != 0 && i <= last; i++ {
		if err := logs.getVerified(i, &l); err != nil {
			if errors.Is(err, raft.ErrLogNotFound) {
				return 0, 0, damaged(path, i, "missing between entries %d and %d", first, last)
			}
			return 0, 0, err
		}
	}
	return first, last, nil
}

// snapshotInfo is what checkSnapshots learnt of one valid snapshot.
type snapshotInfo struct{ index, term uint64 }

// checkSnapshots checks every snapshot under dataDir/snapshots: meta.json
// readable and naming the same term and index as the directory raft
// created; state file matching its CRC; the fsm header's last index equal
// to meta.json's, or below it only by entries that are not commands (a
// leader's no-op, a configuration change: the state machine never sees
// them) where this server's log shows them. A meta.json index moved
// forward would make raft skip entries; one moved back would replay them.
func checkSnapshots(dataDir string, first, last uint64, logs *checksumLogStore) ([]snapshotInfo, error) {
	dir := filepath.Join(dataDir, "snapshots")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, damaged(dir, 0, "unreadable: %v", err)
	}
	var out []snapshotInfo
	for _, e := range ents {
		if !e.IsDir() || strings.HasSuffix(e.Name(), ".tmp") {
			continue // raft deletes unfinished snapshots itself
		}
		info, err := checkSnapshot(filepath.Join(dir, e.Name()), e.Name(), first, last, logs)
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].index > out[j].index })
	return out, nil
}

func checkSnapshot(dir, name string, first, last uint64, logs *checksumLogStore) (snapshotInfo, error) {
	metaPath := filepath.Join(dir, "meta.json")
	b, err := os.ReadFile(metaPath)
	if err != nil {
		return snapshotInfo{}, damaged(metaPath, 0, "unreadable: %v", err)
	}
	var meta struct {
		ID    string
		Index uint64
		Term  uint64
		Size  int64
		CRC   []byte
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		return snapshotInfo{}, damaged(metaPath, 0, "not valid JSON: %v", err)
	}
	// raft names the directory term-index-milliseconds.
	parts := strings.Split(name, "-")
	if len(parts) != 3 || meta.ID != name {
		return snapshotInfo{}, damaged(metaPath, 0, "ID %q does not name its directory %q", meta.ID, name)
	}
	term, err1 := strconv.ParseUint(parts[0], 10, 64)
	index, err2 := strconv.ParseUint(parts[1], 10, 64)
	if err1 != nil || err2 != nil || term != meta.Term || index != meta.Index {
		return snapshotInfo{}, damaged(metaPath, 0, "index %d term %d disagree with the snapshot's id %q", meta.Index, meta.Term, name)
	}
	statePath := filepath.Join(dir, "state.bin")
	hdr, err := readSnapshotHeader(statePath, meta.CRC)
	if err != nil {
		return snapshotInfo{}, err
	}
	if hdr.LastIndex > meta.Index {
		return snapshotInfo{}, damaged(metaPath, 0, "index %d is below the snapshot's own last index %d (state.bin header)", meta.Index, hdr.LastIndex)
	}
	if hdr.LastIndex < meta.Index && first != 0 && first <= hdr.LastIndex+1 && hdr.LastIndex+1 <= last {
		// The log holds the entries between the two: none may be a command.
		for i := hdr.LastIndex + 1; i <= meta.Index; i++ {
			if i > last {
				return snapshotInfo{}, damaged(metaPath, 0, "index %d lies beyond this server's log (last entry %d) and past the snapshot's own last index %d", meta.Index, last, hdr.LastIndex)
			}
			var l raft.Log
			if err := logs.getVerified(i, &l); err != nil {
				return snapshotInfo{}, err
			}
			if l.Type == raft.LogCommand {
				return snapshotInfo{}, damaged(metaPath, 0, "index %d disagrees with the snapshot's own last index %d (state.bin header): command entry %d would be skipped", meta.Index, hdr.LastIndex, i)
			}
		}
	}
	if first != 0 && meta.Index >= first && meta.Index <= last {
		var l raft.Log
		if err := logs.getVerified(meta.Index, &l); err != nil {
			return snapshotInfo{}, err
		}
		if l.Term != meta.Term {
			return snapshotInfo{}, damaged(metaPath, 0, "term %d at index %d, but log entry %d has term %d", meta.Term, meta.Index, meta.Index, l.Term)
		}
	}
	return snapshotInfo{index: meta.Index, term: meta.Term}, nil
}

// readSnapshotHeader verifies state.bin against raft's CRC-64 from
// meta.json and decodes the fsm snapshot header (fsm/snapshot.go: magic
// "AUTHSNAP", then a header record: type 1, uvarint length, SnapshotHeader).
func readSnapshotHeader(path string, crc []byte) (*pb.SnapshotHeader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, damaged(path, 0, "unreadable: %v", err)
	}
	defer f.Close()
	if err := checkCRC64(f, crc); err != nil {
		return nil, damaged(path, 0, "%v", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, damaged(path, 0, "unreadable: %v", err)
	}
	r := bufio.NewReader(f)
	magic := make([]byte, 8)
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != "AUTHSNAP" {
		return nil, damaged(path, 0, "no snapshot header (magic)")
	}
	typ, err := r.ReadByte()
	if err != nil || typ != 1 {
		return nil, damaged(path, 0, "no snapshot header record")
	}
	n, err := binary.ReadUvarint(r)
	if err != nil || n > 1<<16 {
		return nil, damaged(path, 0, "snapshot header length unreadable")
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, damaged(path, 0, "snapshot header truncated")
	}
	var hdr pb.SnapshotHeader
	if err := proto.Unmarshal(body, &hdr); err != nil {
		return nil, damaged(path, 0, "snapshot header: %v", err)
	}
	return &hdr, nil
}

// checkStable refuses a stable store that lost its term while the data dir
// still has a log or snapshots: raft would start at term 0 with no vote
// and could vote twice in a term it already voted in.
func checkStable(path string, store *raftboltdb.BoltStore, logs *checksumLogStore, first, last uint64, snaps []snapshotInfo) error {
	if first != 0 && first > 1 {
		covered := false
		for _, s := range snaps {
			if s.index >= first-1 {
				covered = true
			}
		}
		if !covered {
			return damaged(logs.path, 0, "the log starts at entry %d but no snapshot covers the entries before it (snapshots/ removed or damaged)", first)
		}
	}
	term, err := store.GetUint64([]byte("CurrentTerm"))
	if err != nil && !isNotFound(err) {
		return damaged(path, 0, "current term unreadable: %v", err)
	}
	if err != nil || term == 0 {
		if last != 0 || len(snaps) > 0 {
			return damaged(path, 0, "no current term or vote although the data dir holds %d log entries and %d snapshots (emptied or replaced? it could vote twice in one term)", entries(first, last), len(snaps))
		}
		return nil
	}
	var maxTerm uint64
	if len(snaps) > 0 {
		maxTerm = snaps[0].term
	}
	if last != 0 {
		var l raft.Log
		if err := logs.getUnverified(last, &l); err == nil {
			maxTerm = max(maxTerm, l.Term)
		}
	}
	if term < maxTerm {
		return damaged(path, 0, "current term %d is below the term %d of its own log or snapshot", term, maxTerm)
	}
	return nil
}

func entries(first, last uint64) uint64 {
	if last == 0 {
		return 0
	}
	return last - first + 1
}

// checkCRC64 compares the file's CRC-64 (ECMA, as raft's file snapshot
// store computes it) with want from meta.json.
func checkCRC64(f *os.File, want []byte) error {
	h := crc64.New(crc64.MakeTable(crc64.ECMA))
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("unreadable: %v", err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want) {
		return fmt.Errorf("state does not match the CRC in meta.json (stored %x, computed %x)", want, got)
	}
	return nil
}

// withFaultPanicsStore is openStore with memory faults made panics.
func withFaultPanicsStore(path string) (store *raftboltdb.BoltStore, err error) {
	err = withFaultPanics(func() error {
		var e error
		store, e = openStore(path)
		return e
	})
	return store, err
}
