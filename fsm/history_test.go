package fsm

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"runtime"
	"strconv"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/protobuf/proto"
)

// TestStateHashIncremental: after every entry of every property stream, the
// incrementally maintained state hash equals the one recomputed from every
// record. It fails when an applier changes a domain it did not look up
// (its digest would go stale).
func TestStateHashIncremental(t *testing.T) {
	for _, seed := range propertySeeds() {
		f := New()
		g := newGen(seed, f)
		for i := range streamLen {
			g.stream(1)
			inc := mustHash(t, f)
			f.mu.Lock()
			f.recomputeDigests()
			f.mu.Unlock()
			if full := mustHash(t, f); full != inc {
				t.Fatalf("seed=%d entry %d (index %d): incremental state hash %x, recomputed %x", seed, i, g.index, inc[:8], full[:8])
			}
		}
	}
}

// TestStateHashSeesEveryRecord: changing any one domain record or stored
// attempt changes the state hash, and so does dropping one.
func TestStateHashSeesEveryRecord(t *testing.T) {
	f := populatedFSM(t)
	base := mustHash(t, f)
	g := roundTrip(t, f)
	if mustHash(t, g) != base {
		t.Fatal("restored state hashes differently")
	}
	d, _ := g.Domain("db1")
	d.Members[0].Priority++
	g.setDomain(d)
	if mustHash(t, g) == base {
		t.Fatal("a changed member priority left the state hash unchanged")
	}
	g = roundTrip(t, f)
	h := g.histories["db1"]
	old := h.denied.segs[0].rawAt(0)
	rec := record(old, 0)
	rec.Request.Reason += "!"
	raw, _ := marshal.Marshal(rec)
	g.digest.sub(attemptDigest(old))
	h.denied = attemptList{}
	h.denied.push(rec.LogIndex, raw, crc32.Checksum(raw, crcTable), nil, nil)
	g.digest.add(attemptDigest(raw))
	if mustHash(t, g) == base {
		t.Fatal("a changed attempt record left the state hash unchanged")
	}
	g = roundTrip(t, f)
	g.digest.sub(attemptDigest(g.histories["db1"].denied.segs[0].rawAt(0)))
	g.histories["db1"].denied = attemptList{}
	if mustHash(t, g) == base {
		t.Fatal("a dropped attempt record left the state hash unchanged")
	}
}

// historyFixture promotes back and forth n times on db1, with a denied
// attempt after every allowed one.
func historyFixture(t testing.TB, n int) *harness {
	t.Helper()
	h, attempt := readyToPromote(t)
	for i := range n {
		d, _ := h.f.AuthorityOf("db1")
		cand := map[string]string{"n1": "n2", "n2": "n3", "n3": "n2"}[d.Holder]
		a := cloneAttempt(attempt)
		a.Request.RequestId, a.Request.Candidate = "p-"+strconv.Itoa(i), cand
		a.Lease.Holder, a.Lease.Epoch = d.Holder, d.Epoch
		a.CandidateReport.MemberId, a.CandidateReport.Epoch = cand, d.Epoch
		if res := h.ok(attemptCmd(a)); !res.Attempt.Decision.Allowed {
			t.Fatalf("promotion %d denied: %s", i, DescribeAttempt(res.Attempt))
		}
		a = cloneAttempt(a)
		a.Request.RequestId, a.Lease = "d-"+strconv.Itoa(i), nil
		if res := h.ok(attemptCmd(a)); res.Attempt.Decision.Allowed {
			t.Fatalf("attempt d-%d allowed", i)
		}
	}
	return h
}

func TestHistoryPages(t *testing.T) {
	const n = 150
	h := historyFixture(t, n)
	allowed, denied := attemptsOf(h.f, "db1")
	if len(allowed) != n || len(denied) != DeniedHistory {
		t.Fatalf("stored %d allowed, %d denied", len(allowed), len(denied))
	}
	if d := h.domain("db1"); d.AllowedCount != n || d.DeniedCount != n {
		t.Fatalf("counts %d/%d", d.AllowedCount, d.DeniedCount)
	}
	for _, tc := range []struct {
		withDenied bool
		limit      int
		want       []*pb.AttemptRecord
	}{
		{false, 0, allowed},
		{false, 7, allowed},
		{true, 0, mergeRecords(allowed, denied)},
		{true, 33, mergeRecords(allowed, denied)},
		{true, MaxHistoryPage, mergeRecords(allowed, denied)},
	} {
		var got []*pb.AttemptRecord
		pages := 0
		for after := uint64(0); ; pages++ {
			page, ok := h.f.History("db1", after, tc.limit, tc.withDenied)
			if !ok {
				t.Fatal("domain not found")
			}
			limit := tc.limit
			if limit == 0 {
				limit = DefaultHistoryPage
			}
			if len(page.Records) > limit || page.More && len(page.Records) != limit {
				t.Fatalf("limit %d: page of %d records, more=%t", limit, len(page.Records), page.More)
			}
			got = append(got, page.Records...)
			if !page.More {
				if page.Next != 0 {
					t.Fatalf("last page has next=%d", page.Next)
				}
				break
			}
			after = page.Next
		}
		if len(got) != len(tc.want) {
			t.Fatalf("denied=%t limit=%d: %d records in %d pages, want %d", tc.withDenied, tc.limit, len(got), pages, len(tc.want))
		}
		for i := range got {
			if !proto.Equal(got[i], tc.want[i]) {
				t.Fatalf("denied=%t limit=%d: record %d is index %d, want %d", tc.withDenied, tc.limit, i, got[i].LogIndex, tc.want[i].LogIndex)
			}
		}
	}
	if _, ok := h.f.History("nope", 0, 0, true); ok {
		t.Fatal("history of an unknown domain")
	}
	newest := h.f.NewestAttempts("db1", 3)
	all := mergeRecords(allowed, denied)
	for i, rec := range newest {
		if !proto.Equal(rec, all[len(all)-1-i]) {
			t.Fatalf("newest %d is index %d", i, rec.LogIndex)
		}
	}
}

// TestHistoryPageBytes: a page stops once its records reach the byte
// bound, so it fits a gRPC message whatever the limit asked.
func TestHistoryPageBytes(t *testing.T) {
	h := historyFixture(t, 700) // about 2 KB per record
	page, _ := h.f.History("db1", 0, MaxHistoryPage, false)
	size := 0
	for _, r := range page.Records {
		size += proto.Size(r)
	}
	if !page.More || size < HistoryPageBytes || size > HistoryPageBytes+8<<10 {
		t.Fatalf("page of %d records, %d bytes, more=%t", len(page.Records), size, page.More)
	}
}

func mergeRecords(a, b []*pb.AttemptRecord) []*pb.AttemptRecord {
	var out []*pb.AttemptRecord
	for len(a)+len(b) > 0 {
		if len(b) == 0 || len(a) > 0 && a[0].LogIndex < b[0].LogIndex {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return out
}

// TestDeniedHistoryBytesBound: large denied attempts are evicted by bytes
// before the count bound, and the newest is always kept.
func TestDeniedHistoryBytesBound(t *testing.T) {
	h, attempt := readyToPromote(t)
	big := string(bytes.Repeat([]byte("x"), 16<<10))
	for i := range 40 {
		a := cloneAttempt(attempt)
		a.Request.RequestId, a.Request.Reason, a.Lease = fmt.Sprintf("big-%d", i), big, nil
		h.ok(attemptCmd(a))
	}
	h.f.mu.RLock()
	hist := h.f.histories["db1"]
	n, size := hist.denied.len(), hist.deniedBytes
	h.f.mu.RUnlock()
	if size > DeniedHistoryBytes || n >= 40 || n < DeniedHistoryBytes/(20<<10) {
		t.Fatalf("denied ring: %d records, %d bytes", n, size)
	}
	if _, ok := h.f.Attempt("db1", "big-39"); !ok {
		t.Fatal("newest denied attempt not kept")
	}
	if _, ok := h.f.Attempt("db1", "big-0"); ok {
		t.Fatal("oldest denied attempt still indexed")
	}
}

// TestRestoreVersion1Snapshot: a snapshot written before attempts had
// records of their own (history inside the domain record) restores with
// its attempts moved to the history.
func TestRestoreVersion1Snapshot(t *testing.T) {
	h := historyFixture(t, 5)
	allowed, denied := attemptsOf(h.f, "db1")
	d := h.domain("db1")
	d.AllowedCount, d.DeniedCount = 0, 0
	d.LegacyAllowed, d.LegacyDenied = allowed, denied
	snap := buildSnapshot(snapshotMagic, []rawRecord{
		headerRecord(t, &pb.SnapshotHeader{Version: 1, LastIndex: h.index, DomainCount: 1}),
		{recDomain, mustMarshal(t, d)},
		{recServers, mustMarshal(t, &pb.ServerDirectory{})},
		{recEvents, mustMarshal(t, &pb.EventLog{})},
	})
	g := New()
	if err := g.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatalf("restore version 1: %v", err)
	}
	got, _ := g.Domain("db1")
	if got.AllowedCount != 5 || got.DeniedCount != 5 || len(got.LegacyAllowed)+len(got.LegacyDenied) != 0 {
		t.Fatalf("migrated domain: %s", DescribeDomain(got))
	}
	ga, gd := attemptsOf(g, "db1")
	if len(ga) != 5 || len(gd) != 5 || !proto.Equal(ga[4], allowed[4]) || !proto.Equal(gd[0], denied[0]) {
		t.Fatalf("migrated history: %d allowed, %d denied", len(ga), len(gd))
	}
	if _, ok := g.Attempt("db1", "d-3"); !ok {
		t.Fatal("migrated request index misses d-3")
	}
}

// TestPromotionCostIndependentOfHistory: what a promotion allocates (the
// read of the domain a promotion does, the apply, the reply) on a domain
// with 10,000 allowed promotions is within 1.2× of a new domain's. Bytes
// allocated are deterministic where time is not; BenchmarkPromoteLongHistory
// reports the latencies.
func TestPromotionCostIndependentOfHistory(t *testing.T) {
	short := historyFixture(t, 2)
	long := historyFixture(t, 10_000)
	cost := func(h *harness) uint64 {
		const runs = 200
		cmds := make([]*pb.Command, runs)
		for i := range cmds {
			d, _ := h.f.AuthorityOf("db1")
			cand := map[string]string{"n2": "n3", "n3": "n2"}[d.Holder]
			cmds[i] = attemptCmd(&pb.PromotionAttempt{
				Request:         &pb.PromotionRequest{RequestId: "cost-" + strconv.Itoa(i), Domain: "db1", Candidate: cand},
				Lease:           leaseObs(d.Holder, d.Epoch, pb.LeaseState_LEASE_STATE_HELD), // denied: the state stays put
				CandidateReport: report(cand, d.Epoch),
			})
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for _, cmd := range cmds {
			h.f.Domain("db1")
			h.index++
			if res := h.f.ApplyCommand(h.index, 1, cmd); res.Err != nil {
				t.Fatal(res.Err)
			}
			h.f.Attempt("db1", cmd.GetPromotionAttempt().Request.RequestId)
		}
		runtime.ReadMemStats(&after)
		return (after.TotalAlloc - before.TotalAlloc) / runs
	}
	s, l := cost(short), cost(long)
	t.Logf("bytes allocated per promotion: %d on a domain with 2 allowed promotions, %d with 10,000", s, l)
	if float64(l) > 1.2*float64(s) {
		t.Fatalf("a promotion on a long history allocates %d bytes, %.2f× a new domain's %d", l, float64(l)/float64(s), s)
	}
}

func mustMarshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := marshal.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMemberLimitAtApply: registrations that passed the edge together
// cannot take a domain past MaxMembersPerDomain; updating an existing
// member stays possible.
func TestMemberLimitAtApply(t *testing.T) {
	h := newHarness(t)
	h.ok(createDB("big"))
	for i := range MaxMembersPerDomain {
		h.ok(registerCmd("big", fmt.Sprintf("m%03d", i)))
	}
	h.fails(registerCmd("big", "one-too-many"), ErrInvalid)
	h.ok(registerCmd("big", "m000"))
	if n := len(h.domain("big").Members); n != MaxMembersPerDomain {
		t.Fatalf("%d members", n)
	}
}

// TestCaptureWhileApplying: a capture shares the history segments and the
// request index with the live state; entries applied after it — allowed
// ones appending to a shared segment, denied ones evicting from the ring
// (its front segment rebuilt, its request ids removed) — leave what the
// capture writes exactly the state at the capture.
func TestCaptureWhileApplying(t *testing.T) {
	h := historyFixture(t, 70) // 70 allowed over three segments; a full ring that has evicted
	want := mustHash(t, h.f)
	wantAllowed, wantDenied := attemptsOf(h.f, "db1")
	c, err := h.f.Capture()
	if err != nil {
		t.Fatal(err)
	}
	attempt := func(id string, allowed bool) {
		d, _ := h.f.AuthorityOf("db1")
		cand := map[string]string{"n1": "n2", "n2": "n3", "n3": "n2"}[d.Holder]
		a := &pb.PromotionAttempt{
			Request:         &pb.PromotionRequest{RequestId: id, Domain: "db1", Candidate: cand},
			Lease:           leaseObs(d.Holder, d.Epoch, pb.LeaseState_LEASE_STATE_EXPIRED),
			CandidateReport: report(cand, d.Epoch),
		}
		if !allowed {
			a.Lease = nil
		}
		if res := h.ok(attemptCmd(a)); res.Attempt.Decision.Allowed != allowed {
			t.Fatalf("%s: %s", id, DescribeAttempt(res.Attempt))
		}
	}
	for i := range 40 {
		attempt("later-d-"+strconv.Itoa(i), false)
		if i%4 == 0 {
			attempt("later-p-"+strconv.Itoa(i), true)
		}
	}
	var buf bytes.Buffer
	if _, err := c.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	g := New()
	if err := g.Restore(&buf); err != nil {
		t.Fatalf("the capture does not restore: %v", err)
	}
	if mustHash(t, g) != want {
		t.Fatal("the capture restores to another state than the one captured")
	}
	gotAllowed, gotDenied := attemptsOf(g, "db1")
	if !sameRecords(gotAllowed, wantAllowed) || !sameRecords(gotDenied, wantDenied) {
		t.Fatal("the capture's records differ from the captured state's")
	}
	for _, rec := range append(wantAllowed, wantDenied...) {
		if got, ok := g.Attempt("db1", rec.Request.RequestId); !ok || !proto.Equal(got, rec) {
			t.Fatalf("request %q not found in the restored capture", rec.Request.RequestId)
		}
	}
	if _, ok := g.Attempt("db1", "later-d-0"); ok {
		t.Fatal("an attempt applied after the capture is in it")
	}
}

func sameRecords(a, b []*pb.AttemptRecord) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// TestVersion2RecordAtIndexZero: a version-2 snapshot may hold an attempt
// record at log index 0 (FuzzRestore found one); restored, it re-encodes
// to a version-3 snapshot that restores to the same state.
func TestVersion2RecordAtIndexZero(t *testing.T) {
	rec := &pb.AttemptRecord{Request: &pb.PromotionRequest{RequestId: "r0", Domain: "a", Candidate: "n1"}, Decision: &pb.Decision{}}
	raw, err := marshal.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	snap := buildSnapshot(snapshotMagic, []rawRecord{
		headerRecord(t, &pb.SnapshotHeader{Version: 2, LastIndex: 9, DomainCount: 1, AttemptCount: 1}),
		domainRecord(t, "a"), {recAttempt, raw}, {recServers, nil}, {recEvents, nil}})
	f := New()
	if err := f.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatalf("the version-2 snapshot does not restore: %v", err)
	}
	g := roundTrip(t, f)
	if mustHash(t, g) != mustHash(t, f) {
		t.Fatal("re-encoded as version 3, the state hashes differently")
	}
	if got, ok := g.Attempt("a", "r0"); !ok || got.LogIndex != 0 {
		t.Fatal("the record at index 0 is lost")
	}
}
