package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Fuzz targets. With plain `go test` they run their seed corpus; explore
// with e.g. go test ./fsm -run '^$' -fuzz '^FuzzApply$' -fuzztime 60s
// (`make fuzz` runs each for FUZZTIME and prints executions per second).
//
// The seeds are built in code, never committed as files, so that they
// follow the snapshot format and the command set as they change: real
// states (the fixtures of apply_test.go and dispatch_test.go, and the
// states the property test's generator reaches on its fixed seeds), their
// snapshots, the entries that built them, and mutations of both (cut at
// and flipped around record and field boundaries).

// fuzzState is one real state the fuzz targets start from: its snapshot,
// its term, and the two entries the generator applied right after it (none
// for the fixtures).
type fuzzState struct {
	name string
	snap []byte
	term uint64
	next []step
}

var (
	fuzzOnce   sync.Once
	fuzzStates []fuzzState
	fuzzErr    error
)

// fuzzCorpus builds the real states once per process (every fuzz worker
// builds its own: the seeds are the same on every run).
func fuzzCorpus(tb testing.TB) []fuzzState {
	tb.Helper()
	fuzzOnce.Do(func() { fuzzStates, fuzzErr = buildFuzzStates(tb) })
	if fuzzErr != nil {
		tb.Fatal(fuzzErr)
	}
	return fuzzStates
}

func buildFuzzStates(tb testing.TB) ([]fuzzState, error) {
	var out []fuzzState
	add := func(name string, f *FSM, term uint64, next []step) error {
		snap, err := f.Snapshot()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, fuzzState{name: name, snap: snap, term: term, next: next})
		return nil
	}
	if err := add("empty", New(), 1, nil); err != nil {
		return nil, err
	}
	h, _ := readyToPromote(tb)
	if err := add("ready-to-promote", h.f, 1, nil); err != nil {
		return nil, err
	}
	if err := add("populated", populatedFSM(tb), 1, nil); err != nil {
		return nil, err
	}
	// The property test's streams (property_test.go), fixed seeds: the
	// state every 5 entries of the first 50 (later states grow past 30 KB
	// and slow every execution down), with the 2 entries the generator
	// applied next.
	for _, seed := range []uint64{1, 2, 3, 4, 5, 7} {
		g := newGen(seed, New())
		for k := range 10 {
			snap, err := g.f.Snapshot()
			if err != nil {
				return nil, err
			}
			term := g.term
			steps, _ := g.stream(5)
			out = append(out, fuzzState{name: fmt.Sprintf("seed %d after %d", seed, 5*k), snap: snap, term: term, next: steps[:2]})
		}
	}
	return out, nil
}

// restoredFSM is a fresh FSM restored from snap (a seed state).
func restoredFSM(t testing.TB, snap []byte) *FSM {
	t.Helper()
	f := New()
	if err := f.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatalf("restoring a seed state: %v", err)
	}
	return f
}

// fuzzSeedCommands are valid and nearly valid entries of every kind
// against the populated state.
func fuzzSeedCommands(t testing.TB) []*pb.Command {
	_, attempt := readyToPromote(t)
	a3 := cloneAttempt(attempt)
	a3.Request.RequestId = "req-9"
	a3.Request.Candidate = "n3"
	a3.Lease = leaseObs("n2", 2, pb.LeaseState_LEASE_STATE_EXPIRED)
	a3.CandidateReport = report("n3", 2)
	a3.CandidateReport.AppliedCommitId = 60
	a3.CandidateReport.WatermarkLsn, a3.CandidateReport.HashAtWatermark = 120, h120
	a3.CandidateReport.FlushedLsn, a3.CandidateReport.FlushedHash = 120, h120
	return []*pb.Command{
		createDB("db9"),
		createLock("db1"),
		updatePolicyCmd("db1", &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL, LeaseTtlMs: 1000, ReportMaxAgeMs: 1000, PromotionDisabled: true}),
		registerCmd("db1", "n4"),
		assignCmd("db1", "n1"),
		acquireCmd("lock1", "runner-b", leaseObs("runner-a", 1, pb.LeaseState_LEASE_STATE_EXPIRED), u64p(1)),
		acquireCmd("db1", "n2", nil, nil),
		releaseCmd("db1", "n2", 2),
		releaseCmd("lock1", "runner-a", 1),
		advanceCmd(wmAdv("db1", "n2", 2, 130, h120, 70)),
		advanceCmd(wmAdv("db1", "n2", 2, 110, h120, 70), wmAdv("db1", "n1", 1, 140, h100, 80)),
		attemptCmd(a3),
		attemptCmd(attempt), // a duplicate of the recorded req-1
		completeCmd("rel1", "ctl", 1, "canary-1"),
		abortCmd("lock1", "runner-a", 1, "x"),
		{},
	}
}

// fieldBoundaries are the offsets of the top-level protobuf fields of an
// entry (where a tag starts), as far as it parses.
func fieldBoundaries(data []byte) []int {
	var out []int
	for p := 0; p < len(data); {
		out = append(out, p)
		_, _, n := protowire.ConsumeField(data[p:])
		if n < 0 {
			break
		}
		p += n
	}
	return out
}

// entryMutations are an entry cut at and flipped around each of its field
// boundaries.
func entryMutations(data []byte) [][]byte {
	var out [][]byte
	for _, b := range fieldBoundaries(data) {
		out = append(out, data[:b])
		for _, p := range []int{b - 1, b, b + 1} {
			if p >= 0 && p < len(data) {
				m := bytes.Clone(data)
				m[p] ^= 0x80
				out = append(out, m)
			}
		}
	}
	return out
}

func marshalled(t testing.TB, cmd *pb.Command) []byte {
	data, err := marshal.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// FuzzApply applies two entries (any bytes) at the next indexes of a real
// state, on two replicas restored from the same snapshot and on a third
// restored from a snapshot taken between the two entries. Apply never
// panics except for the one documented panic (a command unknown to this
// version, which changes nothing); an entry that fails changes no state
// hash; every failure wraps a sentinel; the three replicas agree on every
// result and on the state hash after every entry (determinism); the final
// state round-trips through Snapshot/Restore.
func FuzzApply(f *testing.F) {
	states := fuzzCorpus(f)
	populated := 0
	for i, s := range states {
		if s.name == "populated" {
			populated = i
		}
	}
	for _, cmd := range fuzzSeedCommands(f) {
		data := marshalled(f, cmd)
		f.Add(uint8(populated), uint64(1), data, []byte(nil))
		f.Add(uint8(populated), uint64(1), data, data) // the same entry twice
	}
	for _, data := range entryMutations(marshalled(f, fuzzSeedCommands(f)[11])) {
		f.Add(uint8(populated), uint64(1), data, []byte(nil))
	}
	f.Add(uint8(populated), uint64(1), []byte{}, []byte{0xff})
	f.Add(uint8(populated), uint64(1), []byte{0x52, 0x05, 0x01}, []byte(nil))
	f.Add(uint8(populated), uint64(1), withUnknownField(f, &pb.Command{Term: 1}), []byte(nil))
	f.Add(uint8(populated), uint64(1), withUnknownField(f, releaseCmd("db1", "n2", 2)), []byte(nil))
	// Real sequences: the two entries the generator applied next to each
	// of its states, and mutations of some of them.
	for i, s := range states {
		if len(s.next) < 2 {
			continue
		}
		a, b := s.next[0], s.next[1]
		f.Add(uint8(i), a.term, a.data, b.data)
		if i%15 == 7 {
			for _, m := range entryMutations(a.data) {
				f.Add(uint8(i), a.term, m, b.data)
			}
		}
	}

	f.Fuzz(func(t *testing.T, base uint8, term uint64, e1, e2 []byte) {
		s := states[int(base)%len(states)]
		a, b := restoredFSM(t, s.snap), restoredFSM(t, s.snap)
		index := a.LastIndex() + 1
		applyBoth(t, a, b, index, term, e1)
		mid, err := a.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		c := New()
		if err := c.Restore(bytes.NewReader(mid)); err != nil {
			t.Fatalf("restoring the state after entry 1: %v", err)
		}
		ra := applyBoth(t, a, b, index+1, term, e2)
		rc, msg := applyCatch(c, index+1, term, e2)
		if (msg == "") != (ra != nil) || (ra != nil && resultKey(ra) != resultKey(rc)) {
			t.Fatalf("entry 2 on a replica restored after entry 1: %s / %s, want %s", resultKey(rc), msg, resultKey(ra))
		}
		if mustHash(t, c) != mustHash(t, a) {
			t.Fatal("a replica restored between the entries has a different state hash")
		}
		// Whatever happened, the state still round-trips.
		roundTrip(t, a)
	})
}

// applyBoth applies data at index to a and b, checks the outcome and that
// both agree, and returns a's result (nil after the unknown-command panic).
func applyBoth(t *testing.T, a, b *FSM, index, term uint64, data []byte) *Result {
	t.Helper()
	before := mustHash(t, a)
	ra, msg := applyCatch(a, index, term, data)
	rb, msgB := applyCatch(b, index, term, data)
	if msg != msgB {
		t.Fatalf("Apply(%x): replicas disagree: panic %q and %q", data, msg, msgB)
	}
	if msg != "" {
		// The one documented panic: a command this version does not
		// know. Anything else (including an AU-1 invariant under the
		// invariants tag) is a bug.
		var cmd pb.Command
		if !strings.Contains(msg, "unknown to this version") || proto.Unmarshal(data, &cmd) != nil ||
			cmd.Body != nil || len(cmd.ProtoReflect().GetUnknown()) == 0 {
			t.Fatalf("Apply(%x) panicked: %s", data, msg)
		}
		if mustHash(t, a) != before || mustHash(t, b) != before {
			t.Fatal("the unknown-command panic changed the state")
		}
		return nil
	}
	if resultKey(ra) != resultKey(rb) {
		t.Fatalf("Apply(%x): replicas disagree:\n%s\n%s", data, resultKey(ra), resultKey(rb))
	}
	after := mustHash(t, a)
	if mustHash(t, b) != after {
		t.Fatalf("Apply(%x): the same entry on the same state gave two state hashes", data)
	}
	failedAll := ra.Err != nil || ra.Duplicate
	if len(ra.Watermarks) > 1 {
		failedAll = true
		for _, w := range ra.Watermarks {
			failedAll = failedAll && w.Err != nil
		}
	}
	if failedAll && after != before {
		t.Fatalf("Apply(%x) failed (%v) but changed the state", data, ra.Err)
	}
	if ra.Err != nil && !isSentinel(ra.Err) {
		t.Fatalf("Apply(%x): error %v wraps no sentinel", data, ra.Err)
	}
	for _, w := range ra.Watermarks {
		if w.Err != nil && !isSentinel(w.Err) {
			t.Fatalf("Apply(%x): watermark error %v wraps no sentinel", data, w.Err)
		}
	}
	return ra
}

// applyCatch applies data and turns a panic into its message.
func applyCatch(f *FSM, index, term uint64, data []byte) (res *Result, msg string) {
	defer func() {
		if r := recover(); r != nil {
			res, msg = nil, fmt.Sprint(r)
			if msg == "" {
				msg = "empty panic"
			}
		}
	}()
	return f.Apply(index, term, data), ""
}

// resultKey renders every field of a result, for comparing replicas.
func resultKey(r *Result) string {
	if r == nil {
		return "<nil>"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "index=%d err=%v epoch=%d holder=%q duplicate=%v", r.Index, r.Err, r.Epoch, r.Holder, r.Duplicate)
	if r.Attempt != nil {
		a, err := marshal.Marshal(r.Attempt)
		fmt.Fprintf(&b, " attempt=%x/%v", a, err)
	}
	for _, w := range r.Watermarks {
		fmt.Fprintf(&b, " watermark[%s]=%v", w.Domain, w.Err)
	}
	return b.String()
}

func isSentinel(err error) bool {
	for _, s := range []error{ErrNotFound, ErrExists, ErrInvalid, ErrFenced, ErrPrecondition, ErrConflict} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// snapshotMagicLen and the trailer layout below are today's snapshot format
// (snapshot.go); they only steer seed mutations and the checksum fix-up. On
// another format the mutations land elsewhere and the fix-up does nothing:
// the targets still run, they explore less.
const snapshotMagicLen = 8

// recordBoundaries are the offsets where a snapshot's records (and its
// trailer) start, as far as it parses.
func recordBoundaries(snap []byte) []int {
	var out []int
	for p := snapshotMagicLen; p < len(snap); {
		out = append(out, p)
		if snap[p] == 0xFF {
			break // the trailer
		}
		n, k := binary.Uvarint(snap[p+1:])
		if k <= 0 || uint64(len(snap)-p-1-k) < n {
			break
		}
		p += 1 + k + int(n)
	}
	return out
}

// withValidTrailer recomputes the closing CRC-32C (type 0xFF, then the
// checksum of every byte before it), so that a mutated record reaches the
// decoder instead of stopping at the checksum.
func withValidTrailer(data []byte) []byte {
	if len(data) < 5 || data[len(data)-5] != 0xFF {
		return data
	}
	out := bytes.Clone(data)
	binary.BigEndian.PutUint32(out[len(out)-4:], crc32.Checksum(out[:len(out)-4], crc32.MakeTable(crc32.Castagnoli)))
	return out
}

// FuzzRestore restores any bytes (with fix set, after recomputing the
// trailer's checksum, so that mutations inside records are decoded) into a
// populated state. A failed restore is ErrCorruptSnapshot and leaves the
// state, its applied index and its request index exactly as they were. A
// snapshot that restores re-encodes to a snapshot that restores to the
// same state hash and index (and is a fixed point of Snapshot/Restore),
// and the restored state and its re-restored copy take further entries
// without panicking and agree on the state hash after each.
func FuzzRestore(f *testing.F) {
	states := fuzzCorpus(f)
	for i, s := range states {
		if i >= 3 && i%3 != 2 {
			continue
		}
		f.Add(s.snap, false)
		f.Add(s.snap[:len(s.snap)/2], false)
		if i%30 != 2 {
			continue
		}
		// Cut at, and flipped around, every record boundary; each also
		// with a valid checksum.
		for _, b := range recordBoundaries(s.snap) {
			muts := [][]byte{s.snap[:b]}
			for _, p := range []int{b - 1, b, b + 1} {
				if p >= 0 && p < len(s.snap) {
					m := bytes.Clone(s.snap)
					m[p] ^= 0x01
					muts = append(muts, m)
				}
			}
			for _, m := range muts {
				f.Add(m, false)
				f.Add(m, true)
			}
		}
	}
	// A version-3 history of several segments with a rebuilt ring front,
	// flipped around each record boundary (the segment, data and history
	// records carry checksums of their own); the committed snapshots of
	// every version.
	long := mustSnapshot(f, historyFixture(f, 70).f)
	f.Add(long, false)
	for _, b := range recordBoundaries(long) {
		for _, p := range []int{b + 1, b + 3} {
			if p < len(long) {
				m := bytes.Clone(long)
				m[p] ^= 0x01
				f.Add(m, true)
			}
		}
	}
	for version := 2; version <= snapshotVersion; version++ {
		snap, err := os.ReadFile(filepath.Join(goldenDir, fmt.Sprintf("snapshot-v%d.bin", version)))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(snap, false)
	}
	full := states[len(states)-1].snap
	f.Add(append(bytes.Clone(full), 0), false)
	f.Add([]byte("AUTHSNAP"), false)
	f.Add([]byte{}, false)
	f.Add(buildSnapshot(snapshotMagic, []rawRecord{headerRecord(f, &pb.SnapshotHeader{Version: 1, DomainCount: 2}), domainRecord(f, "b"), domainRecord(f, "a")}), false)
	var populated []byte
	for _, s := range states {
		if s.name == "populated" {
			populated = s.snap
		}
	}

	f.Fuzz(func(t *testing.T, data []byte, fix bool) {
		if fix {
			data = withValidTrailer(data)
		}
		// The target spills its history (spill.go), as a server's does;
		// its re-encoded copy g keeps it in memory.
		target := New()
		spillOn(target)
		if err := target.Restore(bytes.NewReader(populated)); err != nil {
			t.Fatalf("restoring the seed state: %v", err)
		}
		target.ApplyCommand(target.LastIndex()+1, 1, createLock("keep"))
		before, last := mustHash(t, target), target.LastIndex()
		// data is any snapshot, not a continuation of target's history: the
		// invariants checker, which keeps its history across a restore
		// (invariants_test.go), starts afresh here.
		target.checker = invariantChecker{}
		if err := target.Restore(bytes.NewReader(data)); err != nil {
			if !errors.Is(err, ErrCorruptSnapshot) {
				t.Fatalf("Restore error %v is not ErrCorruptSnapshot", err)
			}
			if mustHash(t, target) != before || target.LastIndex() != last {
				t.Fatal("a failed restore changed the state")
			}
			if _, ok := target.Attempt("db1", "req-1"); !ok {
				t.Fatal("a failed restore dropped the request index")
			}
			return
		}
		// A valid snapshot: its state re-encodes to a snapshot that
		// restores to the same state (a fixed point of Snapshot/Restore).
		h := mustHash(t, target)
		g := roundTrip(t, target)
		if mustHash(t, g) != h || g.LastIndex() != target.LastIndex() {
			t.Fatal("the re-encoded snapshot restores to another state")
		}
		// Both take further entries alike.
		idx := g.LastIndex()
		for _, name := range g.DomainNames() {
			for _, cmd := range []*pb.Command{
				attemptCmd(&pb.PromotionAttempt{Request: &pb.PromotionRequest{RequestId: "fz", Domain: name, Candidate: "n2"}}),
				advanceCmd(wmAdv(name, "n1", 1, 1, h100, 1)),
				acquireCmd(name, "n1", nil, nil),
			} {
				idx++
				data := marshalled(t, cmd)
				r1, msg1 := applyCatch(target, idx, 1, data)
				r2, msg2 := applyCatch(g, idx, 1, data)
				if msg1 != "" || msg2 != "" {
					t.Fatalf("entry %d on a restored state panicked: %s / %s", idx, msg1, msg2)
				}
				if resultKey(r1) != resultKey(r2) || mustHash(t, target) != mustHash(t, g) {
					t.Fatalf("entry %d: the restored state and its re-restored copy diverge: %s / %s", idx, resultKey(r1), resultKey(r2))
				}
			}
		}
	})
}
