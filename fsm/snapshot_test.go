package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"testing"
	"testing/iotest"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/protobuf/proto"
)

func mustSnapshot(t testing.TB, f *FSM) []byte {
	t.Helper()
	b, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSnapshotRoundTripEmpty(t *testing.T) {
	f := New()
	g := roundTrip(t, f)
	if len(g.DomainNames()) != 0 || g.LastIndex() != 0 {
		t.Fatalf("empty round trip: %v at %d", g.DomainNames(), g.LastIndex())
	}
	// Restoring an empty snapshot over a populated state empties it.
	p := populatedFSM(t)
	if err := p.Restore(bytes.NewReader(mustSnapshot(t, f))); err != nil {
		t.Fatal(err)
	}
	if len(p.DomainNames()) != 0 || p.LastIndex() != 0 || mustHash(t, p) != mustHash(t, f) {
		t.Fatalf("after restoring an empty snapshot: %v at %d", p.DomainNames(), p.LastIndex())
	}
	if _, ok := p.Attempt("db1", "req-1"); ok {
		t.Fatal("request index survived the restore of an empty snapshot")
	}
}

func TestSnapshotRoundTripPopulated(t *testing.T) {
	f := populatedFSM(t)
	g := roundTrip(t, f)
	if mustHash(t, g) != mustHash(t, f) {
		t.Fatal("state hash differs after restore")
	}
	for _, name := range f.DomainNames() {
		a, _ := f.Domain(name)
		b, _ := g.Domain(name)
		if DescribeDomain(a) != DescribeDomain(b) {
			t.Fatalf("describe %s:\n%s\nwant\n%s", name, DescribeDomain(b), DescribeDomain(a))
		}
	}
	fa, ga := f.Authorities(), g.Authorities()
	if len(fa) != len(ga) {
		t.Fatalf("authorities %v, want %v", ga, fa)
	}
	for i := range fa {
		if fa[i] != ga[i] {
			t.Fatalf("authority %+v, want %+v", ga[i], fa[i])
		}
	}
	// The restored state keeps working exactly like the original.
	for _, x := range []*FSM{f, g} {
		x.ApplyCommand(500, 2, advanceCmd(wmAdv("db1", "n2", 2, 130, h120, 70)))
		x.ApplyCommand(501, 2, releaseCmd("lock1", "runner-a", 1))
	}
	if !bytes.Equal(mustSnapshot(t, f), mustSnapshot(t, g)) {
		t.Fatal("original and restored states diverge after the same entries")
	}
}

// TestSnapshotIsDeterministic: building the same state in a different
// command order for independent domains gives the same bytes (sorted
// domains, deterministic marshalling, no map order).
// Two FSMs fed the same entries hold their domains in maps with different
// iteration orders; their snapshots must still be byte-identical.
func TestSnapshotIsDeterministic(t *testing.T) {
	names := []string{"d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8"}
	build := func() *FSM {
		f := New()
		for i, n := range names {
			f.ApplyCommand(uint64(i+1), 1, createLock(n))
		}
		return f
	}
	want := mustSnapshot(t, build())
	for range 20 {
		if !bytes.Equal(mustSnapshot(t, build()), want) {
			t.Fatal("equal states, different snapshots")
		}
	}
}

func TestSnapshotHeader(t *testing.T) {
	f := populatedFSM(t)
	snap := mustSnapshot(t, f)
	if string(snap[:len(snapshotMagic)]) != snapshotMagic {
		t.Fatalf("magic %q", snap[:len(snapshotMagic)])
	}
	recs := splitRecords(t, snap)
	var hdr pb.SnapshotHeader
	if recs[0].typ != recHeader || proto.Unmarshal(recs[0].body, &hdr) != nil {
		t.Fatalf("first record type %d", recs[0].typ)
	}
	if hdr.Version != snapshotVersion || hdr.LastIndex != f.LastIndex() || hdr.DomainCount != uint64(len(f.DomainNames())) {
		t.Fatalf("header %v", &hdr)
	}
	if hdr.AttemptCount != 2 {
		t.Fatalf("%d attempts", hdr.AttemptCount)
	}
	if last := recs[len(recs)-1]; last.typ != recEvents {
		t.Fatalf("last record type %d, want the event log", last.typ)
	}
	// Each domain's record, then its history record and a segment and a
	// data record per segment; then the attempts' digest.
	i, attempts := 1, 0
	for _, name := range f.DomainNames() {
		var d pb.Domain
		if recs[i].typ != recDomain || proto.Unmarshal(recs[i].body, &d) != nil || d.Name != name {
			t.Fatalf("record %d: type %d domain %q, want %q", i, recs[i].typ, d.Name, name)
		}
		if recs[i+1].typ != recHistory {
			t.Fatalf("record %d: type %d, want the history of %q", i+1, recs[i+1].typ, name)
		}
		for i += 2; recs[i].typ == recSegment; i += 2 {
			if recs[i+1].typ != recData {
				t.Fatalf("record %d: type %d, want a segment's data", i+1, recs[i+1].typ)
			}
			n, _ := binary.Uvarint(recs[i].body)
			attempts += int(n)
		}
	}
	if attempts != 2 || recs[i].typ != recDigest || len(recs[i].body) != 32 || len(recs) != i+3 {
		t.Fatalf("%d attempts in segments; record %d of %d: type %d", attempts, i, len(recs), recs[i].typ)
	}
}

type rawRecord struct {
	typ  byte
	body []byte
}

// splitRecords parses a valid snapshot into its records (trailer excluded).
func splitRecords(t testing.TB, snap []byte) []rawRecord {
	t.Helper()
	b := snap[len(snapshotMagic) : len(snap)-5]
	var out []rawRecord
	for len(b) > 0 {
		typ := b[0]
		n, k := binary.Uvarint(b[1:])
		if k <= 0 || uint64(len(b)-1-k) < n {
			t.Fatalf("bad record at %d", len(snap)-len(b))
		}
		out = append(out, rawRecord{typ, b[1+k : 1+k+int(n)]})
		b = b[1+k+int(n):]
	}
	return out
}

// buildSnapshot writes records with a correct trailer, so that a test can
// produce snapshots that are well-formed except for the one flaw it is about.
func buildSnapshot(magic string, recs []rawRecord) []byte {
	buf := []byte(magic)
	for _, r := range recs {
		buf = append(buf, r.typ)
		buf = binary.AppendUvarint(buf, uint64(len(r.body)))
		buf = append(buf, r.body...)
	}
	buf = append(buf, recTrailer)
	return binary.BigEndian.AppendUint32(buf, crc32.Checksum(buf, crcTable))
}

func headerRecord(t testing.TB, h *pb.SnapshotHeader) rawRecord {
	b, err := marshal.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	return rawRecord{recHeader, b}
}

func domainRecord(t testing.TB, name string) rawRecord {
	b, err := marshal.Marshal(&pb.Domain{Name: name, Kind: pb.DomainKind_DOMAIN_KIND_LOCK, Policy: manualPolicy(),
		Work: &pb.WorkState{Status: pb.LockStatus_LOCK_STATUS_FREE}})
	if err != nil {
		t.Fatal(err)
	}
	return rawRecord{recDomain, b}
}

// noEvents is an empty event-log record, the last record of a snapshot,
// after an empty server directory.
var (
	noServers = rawRecord{recServers, nil}
	noEvents  = rawRecord{recEvents, nil}
)

// restoreFails restores data into f and asserts ErrCorruptSnapshot with the
// previous state (and its request index) untouched.
func restoreFails(t testing.TB, f *FSM, data []byte, what string) {
	t.Helper()
	restoreReaderFails(t, f, bytes.NewReader(data), what)
}

func restoreReaderFails(t testing.TB, f *FSM, r io.Reader, what string) {
	t.Helper()
	before := mustHash(t, f)
	last := f.LastIndex()
	err := f.Restore(r)
	if !errors.Is(err, ErrCorruptSnapshot) {
		t.Fatalf("%s: Restore = %v, want ErrCorruptSnapshot", what, err)
	}
	if mustHash(t, f) != before || f.LastIndex() != last {
		t.Fatalf("%s: a failed restore changed the state", what)
	}
	if _, ok := f.Attempt("db1", "req-1"); !ok {
		t.Fatalf("%s: a failed restore dropped the request index", what)
	}
}

func TestRestoreRejectsCorruption(t *testing.T) {
	// The snapshot restored is a different state from the target's, so a
	// partial swap could not go unnoticed.
	src := populatedFSM(t)
	src.ApplyCommand(900, 3, createLock("zz-extra"))
	good := mustSnapshot(t, src)
	target := populatedFSM(t)

	// The exhaustive loops check the error per input and the state once at
	// the end: any accepted input would have swapped in src's state.
	before := mustHash(t, target)
	t.Run("every truncation", func(t *testing.T) {
		for n := range len(good) {
			if err := target.Restore(bytes.NewReader(good[:n])); !errors.Is(err, ErrCorruptSnapshot) {
				t.Fatalf("truncated to %d of %d bytes: Restore = %v", n, len(good), err)
			}
		}
	})
	t.Run("every flipped byte", func(t *testing.T) {
		bad := bytes.Clone(good)
		for i := range good {
			for _, mask := range []byte{0x01, 0x80, 0xff} {
				bad[i] ^= mask
				if err := target.Restore(bytes.NewReader(bad)); !errors.Is(err, ErrCorruptSnapshot) {
					t.Fatalf("byte %d ^ %#x: Restore = %v", i, mask, err)
				}
				bad[i] ^= mask
			}
		}
	})
	if mustHash(t, target) != before {
		t.Fatal("a rejected snapshot changed the state")
	}
	t.Run("trailing garbage", func(t *testing.T) {
		restoreFails(t, target, append(bytes.Clone(good), 0), "trailing zero")
		restoreFails(t, target, append(bytes.Clone(good), good...), "snapshot twice")
	})

	recs := splitRecords(t, good)
	hdr := func(version uint32, count uint64) rawRecord {
		return headerRecord(t, &pb.SnapshotHeader{Version: version, LastIndex: 9, DomainCount: count})
	}
	// Sanity: the builder produces what Restore accepts.
	if err := New().Restore(bytes.NewReader(buildSnapshot(snapshotMagic, recs))); err != nil {
		t.Fatalf("rebuilt snapshot: %v", err)
	}
	if err := New().Restore(bytes.NewReader(buildSnapshot(snapshotMagic, []rawRecord{hdr(1, 2), domainRecord(t, "a"), domainRecord(t, "b"), noServers, noEvents}))); err != nil {
		t.Fatalf("hand-built snapshot: %v", err)
	}
	cases := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"magic only", []byte(snapshotMagic)},
		{"wrong magic", buildSnapshot("AUTHSNAQ", recs)},
		{"short magic", buildSnapshot("AUTH", recs)},
		{"version 0", buildSnapshot(snapshotMagic, []rawRecord{hdr(0, 0)})},
		{"version 2", buildSnapshot(snapshotMagic, []rawRecord{hdr(2, 1), domainRecord(t, "a")})},
		{"out of order domains", buildSnapshot(snapshotMagic, []rawRecord{hdr(1, 2), domainRecord(t, "b"), domainRecord(t, "a")})},
		{"duplicate domain", buildSnapshot(snapshotMagic, []rawRecord{hdr(1, 2), domainRecord(t, "a"), domainRecord(t, "a")})},
		{"fewer domains than the header", buildSnapshot(snapshotMagic, []rawRecord{hdr(1, 3), domainRecord(t, "a"), domainRecord(t, "b")})},
		{"more domains than the header", buildSnapshot(snapshotMagic, []rawRecord{hdr(1, 1), domainRecord(t, "a"), domainRecord(t, "b")})},
		{"huge domain count", buildSnapshot(snapshotMagic, []rawRecord{hdr(1, 1<<62), domainRecord(t, "a")})},
		{"domain before header", buildSnapshot(snapshotMagic, []rawRecord{domainRecord(t, "a"), hdr(1, 1)})},
		{"header twice", buildSnapshot(snapshotMagic, []rawRecord{hdr(1, 1), hdr(1, 1)})},
		{"unknown record type", buildSnapshot(snapshotMagic, []rawRecord{hdr(1, 1), {7, recs[1].body}})},
		{"undecodable domain", buildSnapshot(snapshotMagic, []rawRecord{hdr(1, 1), {recDomain, []byte{0x0a, 0x05, 'a'}}})},
		{"no event log", buildSnapshot(snapshotMagic, []rawRecord{hdr(1, 1), domainRecord(t, "a")})},
		{"undecodable event log", buildSnapshot(snapshotMagic, []rawRecord{hdr(1, 0), noServers, {recEvents, []byte{0xff}}})},
		{"no server directory", buildSnapshot(snapshotMagic, []rawRecord{hdr(1, 0), noEvents})},
		{"undecodable header", buildSnapshot(snapshotMagic, []rawRecord{{recHeader, []byte{0xff}}})},
		{"no trailer", append([]byte(snapshotMagic), append([]byte{recHeader, byte(len(hdr(1, 0).body))}, hdr(1, 0).body...)...)},
		{"record length beyond the bound", append([]byte(snapshotMagic+"\x01"), binary.AppendUvarint(nil, maxRecord+1)...)},
		{"record length overflows", append([]byte(snapshotMagic+"\x01"), bytes.Repeat([]byte{0xff}, 11)...)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { restoreFails(t, target, tc.data, tc.name) })
	}
	t.Run("reader error", func(t *testing.T) {
		restoreReaderFails(t, target, io.MultiReader(bytes.NewReader(good[:len(good)/2]), iotest.ErrReader(errors.New("disk gone"))), "reader error")
		restoreReaderFails(t, target, iotest.ErrReader(io.ErrUnexpectedEOF), "reader error at once")
	})
	// After all of that the target still restores a good snapshot.
	if err := target.Restore(bytes.NewReader(good)); err != nil {
		t.Fatal(err)
	}
	if mustHash(t, target) != mustHash(t, src) {
		t.Fatal("restore after failures did not produce the source state")
	}
}

func TestRestoreThroughSlowReader(t *testing.T) {
	src := populatedFSM(t)
	good := mustSnapshot(t, src)
	for _, r := range []io.Reader{iotest.OneByteReader(bytes.NewReader(good)), iotest.HalfReader(bytes.NewReader(good)), iotest.DataErrReader(bytes.NewReader(good))} {
		g := New()
		if err := g.Restore(r); err != nil {
			t.Fatalf("Restore through %T: %v", r, err)
		}
		if mustHash(t, g) != mustHash(t, src) {
			t.Fatal("restored state differs")
		}
	}
}

func TestRestoreRebuildsRequestIndex(t *testing.T) {
	h, attempt := readyToPromote(t)
	denied := cloneAttempt(attempt)
	denied.Request.RequestId = "req-0"
	denied.Lease = nil
	recDenied := h.ok(attemptCmd(denied)).Attempt
	recAllowed := h.ok(attemptCmd(attempt)).Attempt
	snap := mustSnapshot(t, h.f)

	// The target has request ids of its own, which the restore must forget.
	other, otherAttempt := readyToPromote(t)
	otherAttempt.Request.RequestId = "only-in-target"
	other.ok(attemptCmd(otherAttempt))
	if err := other.f.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if _, ok := other.f.Attempt("db1", "only-in-target"); ok {
		t.Fatal("request index kept an id from before the restore")
	}
	other.index = other.f.LastIndex()
	for _, tc := range []struct {
		cmd  *pb.PromotionAttempt
		want *pb.AttemptRecord
	}{{attempt, recAllowed}, {denied, recDenied}} {
		res := other.unchanged(attemptCmd(tc.cmd))
		if res.Err != nil || !res.Duplicate || !proto.Equal(res.Attempt, tc.want) {
			t.Fatalf("retry of %s after restore: dup=%t err=%v", tc.cmd.Request.RequestId, res.Duplicate, res.Err)
		}
	}
	// An id the restored state never saw is decided afresh.
	fresh := cloneAttempt(otherAttempt)
	fresh.Request.Candidate = "n3"
	if res := other.ok(attemptCmd(fresh)); res.Duplicate {
		t.Fatal("unknown id treated as a duplicate after restore")
	}
}
