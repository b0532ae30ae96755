package promotion

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/validator"
)

// The policy tests run the real Service on the synchronous fake log and the
// fake clock. Policy evaluations are queued (never run on their own
// goroutine) and run by drain, so every test is deterministic and sleeps
// never.

type taskQueue struct {
	mu  sync.Mutex
	fns []func()
}

func (q *taskQueue) run(f func()) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.fns = append(q.fns, f)
}

func (q *taskQueue) drain() {
	for {
		q.mu.Lock()
		if len(q.fns) == 0 {
			q.mu.Unlock()
			return
		}
		f := q.fns[0]
		q.fns = q.fns[1:]
		q.mu.Unlock()
		f()
	}
}

// policyObserver records the policy's results.
type policyObserver struct {
	noopObserver
	mu      sync.Mutex
	results []string
}

func (o *policyObserver) PolicyAttempt(result, reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.results = append(o.results, result+"/"+reason)
}

func (o *policyObserver) count(what string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, r := range o.results {
		if r == what {
			n++
		}
	}
	return n
}

const (
	testDwell      = 10 * time.Second
	testBackoffMin = 500 * time.Millisecond
	testBackoffMax = 4 * time.Second
)

type policyRig struct {
	*rig
	q   *taskQueue
	obs *policyObserver
}

// newPolicyRig is newRig with db1 in the given mode: members n1..n3 (n3
// priority 5), n1 holds epoch 1, watermark (1, 100, h100, visible 50).
func newPolicyRig(t *testing.T, mode pb.PromotionMode) *policyRig {
	t.Helper()
	f := fsm.New()
	r := &policyRig{rig: &rig{t: t, log: &fakeLog{fsm: f, term: 1}, clock: newFakeClock()}, q: &taskQueue{}, obs: &policyObserver{}}
	r.ctx = t.Context()
	r.svc = NewService(Config{Log: r.log, FSM: f, Clock: r.clock, Observer: r.obs,
		Policy: PolicyConfig{Dwell: testDwell, BackoffMin: testBackoffMin, BackoffMax: testBackoffMax}})
	r.svc.policyRun = r.q.run
	if err := r.svc.BecomeLeader(r.ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.svc.StepDown)
	r.ok(r.svc.CreateDomain(r.ctx, "db1", pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{Mode: mode, LeaseTtlMs: uint64(testTTL.Milliseconds()),
		Durability: pb.Durability_DURABILITY_AUTHORITY_GATED}))
	for _, id := range []string{"n1", "n2", "n3"} {
		prio := uint32(0)
		if id == "n3" {
			prio = 5
		}
		r.ok(r.svc.RegisterMember(r.ctx, &pb.RegisterMember{Domain: "db1", MemberId: id, Priority: prio, State: pb.MemberState_MEMBER_STATE_ACTIVE}))
	}
	r.ok(r.svc.AssignInitial(r.ctx, "db1", "n1"))
	if err := r.advance("n1", 1, 100, h100, 50); err != nil {
		t.Fatal(err)
	}
	r.q.drain()
	return r
}

// step moves the clock and runs whatever the policy scheduled.
func (r *policyRig) step(d time.Duration) {
	r.clock.Advance(d)
	r.q.drain()
}

// good is a report that passes every check at watermark lsn 100.
func good(member string, epoch, flushed uint64) *pb.ProgressReport {
	return &pb.ProgressReport{MemberId: member, Epoch: epoch, FlushedLsn: flushed, FlushedHash: []byte{byte(flushed)},
		WatermarkLsn: 100, HashAtWatermark: h100, AppliedCommitId: 50, ReadSafe: true, State: pb.ReplicaState_REPLICA_STATE_STREAMING}
}

func (r *policyRig) send(rep *pb.ProgressReport) {
	r.t.Helper()
	if _, err := r.svc.ReportProgress("db1", rep); err != nil {
		r.t.Fatal(err)
	}
	r.q.drain()
}

// policyAttempts lists db1's recorded attempts initiated by the policy, in
// log order.
func (r *policyRig) policyAttempts() []*pb.AttemptRecord {
	page, _ := r.svc.fsm.History("db1", 0, 1000, true)
	var out []*pb.AttemptRecord
	for _, rec := range page.Records {
		if rec.GetRequest().GetInitiatedBy() == pb.Initiator_INITIATOR_POLICY {
			out = append(out, rec)
		}
	}
	return out
}

func (r *policyRig) holder() (string, uint64) {
	a, _ := r.svc.fsm.AuthorityOf("db1")
	return a.Holder, a.Epoch
}

func (r *policyRig) timers() int {
	r.clock.mu.Lock()
	defer r.clock.mu.Unlock()
	n := 0
	for _, t := range r.clock.timers {
		if !t.stopped {
			n++
		}
	}
	return n
}

func TestPolicyCandidateRanking(t *testing.T) {
	d := &pb.Domain{Name: "db1", Kind: pb.DomainKind_DOMAIN_KIND_AERODB, Epoch: 3, Holder: "h",
		Policy:    &pb.Policy{ReportMaxAgeMs: 1000},
		Watermark: &pb.Watermark{Epoch: 3, Lsn: 100, Hash: h100}}
	reports := map[string]*pb.ProgressReport{}
	ages := map[string]time.Duration{}
	add := func(id string, prio uint32, state pb.MemberState, rep *pb.ProgressReport, age time.Duration) {
		d.Members = append(d.Members, &pb.Member{Id: id, Priority: prio, State: state})
		if rep != nil {
			reports[id], ages[id] = rep, age
		}
	}
	active := pb.MemberState_MEMBER_STATE_ACTIVE
	diverged := good("diverged", 3, 150)
	diverged.State = pb.ReplicaState_REPLICA_STATE_DIVERGED
	wrongHash := good("wronghash", 3, 150)
	wrongHash.HashAtWatermark = h90
	otherLsn := good("otherlsn", 3, 150)
	otherLsn.WatermarkLsn = 90
	add("h", 9, active, good("h", 3, 200), 0) // the holder
	add("a", 0, active, good("a", 3, 120), 0)
	add("b", 1, active, good("b", 3, 120), 0) // same lsn as a, higher priority
	add("c", 1, active, good("c", 3, 120), 0) // same as b: id decides
	add("d", 0, active, good("d", 3, 130), 0) // most advanced
	add("old", 9, active, good("old", 2, 300), 0)
	add("stale", 9, active, good("stale", 3, 300), 2*time.Second)
	add("behind", 9, active, good("behind", 3, 90), 0)
	add("diverged", 9, active, diverged, 0)
	add("wronghash", 9, active, wrongHash, 0)
	add("otherlsn", 9, active, otherLsn, 0)
	add("gone", 9, pb.MemberState_MEMBER_STATE_DECOMMISSIONED, good("gone", 3, 300), 0)
	add("silent", 9, active, nil, 0)
	got := eligibleCandidates(d, func(m string) (*pb.ProgressReport, time.Duration, bool) {
		r, ok := reports[m]
		return r, ages[m], ok
	})
	var ids []string
	for _, c := range got {
		ids = append(ids, c.id)
	}
	if want := []string{"d", "b", "c", "a"}; !slices.Equal(ids, want) {
		t.Fatalf("ranking = %v, want %v", ids, want)
	}
	d.Watermark = nil
	if got := eligibleCandidates(d, func(m string) (*pb.ProgressReport, time.Duration, bool) {
		r, ok := reports[m]
		return r, ages[m], ok
	}); len(got) != 0 {
		t.Fatalf("unknown watermark: %v eligible, want none", got)
	}
}

func TestPolicyPromotesBestMemberOnExpiry(t *testing.T) {
	r := newPolicyRig(t, pb.PromotionMode_PROMOTION_MODE_AUTOMATIC)
	if r.timers() != 1 {
		t.Fatalf("%d timers, want one at the lease's expiry", r.timers())
	}
	r.send(good("n2", 1, 120))
	r.send(good("n3", 1, 120)) // same lsn, higher priority
	r.step(testTTL - time.Millisecond)
	if h, e := r.holder(); h != "n1" || e != 1 || len(r.policyAttempts()) != 0 {
		t.Fatalf("before expiry: %s@%d, %d attempts", h, e, len(r.policyAttempts()))
	}
	r.step(time.Millisecond) // the lease expires: the timer fires
	if h, e := r.holder(); h != "n3" || e != 2 {
		t.Fatalf("holder %s@%d, want n3@2", h, e)
	}
	recs := r.policyAttempts()
	if len(recs) != 1 {
		t.Fatalf("%d policy attempts, want 1", len(recs))
	}
	rec := recs[0]
	if rec.Request.RequestId != "policy-1-1" || rec.Request.GetExpectedEpoch() != 1 || !rec.Decision.Allowed ||
		rec.Lease.GetState() != pb.LeaseState_LEASE_STATE_EXPIRED {
		t.Fatalf("record = %v", rec)
	}
	if r.obs.count(PolicyAllowed+"/") != 1 {
		t.Fatalf("results %v", r.obs.results)
	}
	// The new holder's lease has its own timer.
	if r.timers() != 1 {
		t.Fatalf("%d timers after the promotion, want 1", r.timers())
	}
}

func TestPolicyPrefersACandidateTheValidatorAllows(t *testing.T) {
	r := newPolicyRig(t, pb.PromotionMode_PROMOTION_MODE_AUTOMATIC)
	ahead := good("n3", 1, 150)
	ahead.ReadSafe = false // ranked first, but MVCC visibility would deny it
	r.send(ahead)
	r.send(good("n2", 1, 120))
	r.step(testTTL)
	if h, _ := r.holder(); h != "n2" {
		t.Fatalf("holder %s, want n2", h)
	}
}

func TestPolicyDwellAfterPromotion(t *testing.T) {
	r := newPolicyRig(t, pb.PromotionMode_PROMOTION_MODE_AUTOMATIC)
	r.send(good("n2", 1, 120))
	r.step(testTTL)
	if h, e := r.holder(); h != "n2" || e != 2 {
		t.Fatalf("holder %s@%d", h, e)
	}
	// n2 never renews; n3 is eligible at epoch 2.
	r.send(good("n3", 2, 120))
	r.step(testTTL) // n2's lease expires within the dwell
	if h, e := r.holder(); h != "n2" || e != 2 || len(r.policyAttempts()) != 1 {
		t.Fatalf("within the dwell: holder %s@%d, %d attempts", h, e, len(r.policyAttempts()))
	}
	if r.obs.count(PolicySkipped+"/"+SkipDwell) == 0 {
		t.Fatalf("no dwell skip recorded: %v", r.obs.results)
	}
	r.send(good("n3", 2, 120)) // still within the dwell: a report changes nothing
	r.step(testDwell - testTTL - time.Millisecond)
	if h, _ := r.holder(); h != "n2" {
		t.Fatalf("promoted %s before the dwell ended", h)
	}
	r.send(good("n3", 2, 120)) // keep the report fresh
	r.step(time.Millisecond)   // the dwell ends: the timer fires
	if h, e := r.holder(); h != "n3" || e != 3 {
		t.Fatalf("after the dwell: holder %s@%d, want n3@3", h, e)
	}
}

// Readiness: P6-F3, AU-8 (a denied attempt is not retried automatically); docs/READINESS.md.
func TestPolicyDeniedNotRetriedWithoutNewReport(t *testing.T) {
	r := newPolicyRig(t, pb.PromotionMode_PROMOTION_MODE_AUTOMATIC)
	rep := good("n2", 1, 120)
	rep.ReadSafe = false // eligible, but the validator denies it
	r.send(rep)
	r.step(testTTL)
	recs := r.policyAttempts()
	if len(recs) != 1 || recs[0].Decision.DenialReason != validator.ReasonMvccVisibilityViolation {
		t.Fatalf("attempts = %v", recs)
	}
	// However long we wait, no new attempt without a new report.
	for range 20 {
		r.step(testBackoffMax)
	}
	if n := len(r.policyAttempts()); n != 1 {
		t.Fatalf("%d attempts without a new report, want 1", n)
	}
	if r.obs.count(PolicySkipped+"/"+SkipAwaitingReport) == 0 {
		t.Fatalf("the engine never re-checked: %v", r.obs.results)
	}
	r.send(good("n2", 1, 120)) // new facts
	if h, e := r.holder(); h != "n2" || e != 2 || len(r.policyAttempts()) != 2 {
		t.Fatalf("after a new report: holder %s@%d, %d attempts", h, e, len(r.policyAttempts()))
	}
	if id := r.policyAttempts()[1].Request.RequestId; id != "policy-1-2" {
		t.Fatalf("second request id %q", id)
	}
}

func TestPolicyBackoffDoubles(t *testing.T) {
	r := newPolicyRig(t, pb.PromotionMode_PROMOTION_MODE_AUTOMATIC)
	bad := good("n2", 1, 120)
	bad.ReadSafe = false
	r.send(bad)
	r.step(testTTL)
	// A new report arrives at once after every denial: attempts are then
	// spaced by the backoff, 500 ms doubling to the 4 s cap.
	for range 8 {
		for range 100 {
			r.send(bad)
			r.step(50 * time.Millisecond)
		}
	}
	recs := r.policyAttempts()
	var gaps []time.Duration
	for i := 1; i < len(recs); i++ {
		gaps = append(gaps, time.Duration(recs[i].StampedUnixMs-recs[i-1].StampedUnixMs)*time.Millisecond)
	}
	want := []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second}
	for len(want) < len(gaps) {
		want = append(want, testBackoffMax)
	}
	if len(gaps) < 6 || !slices.Equal(gaps, want) {
		t.Fatalf("gaps between attempts = %v, want %v", gaps, want)
	}
	if r.obs.count(PolicySkipped+"/"+SkipBackoff) == 0 {
		t.Fatalf("no backoff skip: %v", r.obs.results)
	}
}

// Readiness: P6-A3, AU-3 (no authority from a timeout on a manual domain); docs/READINESS.md.
func TestPolicyLeavesManualDomainsAlone(t *testing.T) {
	r := newPolicyRig(t, pb.PromotionMode_PROMOTION_MODE_MANUAL)
	r.send(good("n2", 1, 120))
	if r.timers() != 0 {
		t.Fatalf("%d timers for a manual domain", r.timers())
	}
	entries := r.log.count()
	for range 10 {
		r.step(testDwell)
		r.send(good("n2", 1, 120))
	}
	if h, _ := r.holder(); h != "n1" || len(r.policyAttempts()) != 0 || r.log.count() != entries || len(r.obs.results) != 0 {
		t.Fatalf("manual domain: holder %s, %d attempts, %d new entries, results %v", h, len(r.policyAttempts()), r.log.count()-entries, r.obs.results)
	}
	if n := len(r.svc.policy.Load().domains); n != 0 {
		t.Fatalf("policy tracks %d domains, want 0", n)
	}
	// Switching the domain to automatic arms its timer; back to manual
	// stops it.
	r.ok(r.svc.UpdatePolicy(r.ctx, "db1", &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_AUTOMATIC, LeaseTtlMs: uint64(testTTL.Milliseconds())}))
	r.q.drain()
	if r.timers() != 1 {
		t.Fatalf("%d timers after switching to automatic", r.timers())
	}
	r.ok(r.svc.UpdatePolicy(r.ctx, "db1", &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL, LeaseTtlMs: uint64(testTTL.Milliseconds())}))
	r.q.drain()
	if r.timers() != 0 {
		t.Fatalf("%d timers after switching back to manual", r.timers())
	}
}

func TestPolicyStopsWithLeadership(t *testing.T) {
	r := newPolicyRig(t, pb.PromotionMode_PROMOTION_MODE_AUTOMATIC)
	r.send(good("n2", 1, 120))
	r.svc.StepDown()
	if r.timers() != 0 {
		t.Fatalf("%d timers after stepping down", r.timers())
	}
	entries := r.log.count()
	r.step(10 * testTTL)
	if h, _ := r.holder(); h != "n1" || r.log.count() != entries || len(r.obs.results) != 0 {
		t.Fatalf("after stepping down: holder %s, %d new entries, results %v", h, r.log.count()-entries, r.obs.results)
	}
}

func TestPolicyFollowerDoesNothing(t *testing.T) {
	r := newPolicyRig(t, pb.PromotionMode_PROMOTION_MODE_AUTOMATIC)
	r.svc.StepDown()
	// A second service on the same applied state that never leads.
	follower := NewService(Config{Log: r.log, FSM: r.svc.fsm, Clock: r.clock, Observer: r.obs})
	follower.policyRun = r.q.run
	if _, err := follower.ReportProgress("db1", good("n2", 1, 120)); err == nil {
		t.Fatal("a follower accepted a report")
	}
	entries := r.log.count()
	r.step(10 * testTTL)
	if follower.policy.Load() != nil || r.timers() != 0 || r.log.count() != entries || len(r.obs.results) != 0 {
		t.Fatalf("follower: %d timers, %d new entries, results %v", r.timers(), r.log.count()-entries, r.obs.results)
	}
}

func TestPolicyNewLeaderHonoursDwell(t *testing.T) {
	r := newPolicyRig(t, pb.PromotionMode_PROMOTION_MODE_AUTOMATIC)
	r.send(good("n2", 1, 120))
	r.step(testTTL)
	if h, _ := r.holder(); h != "n2" {
		t.Fatalf("holder %s", h)
	}
	r.svc.StepDown()
	r.log.mu.Lock()
	r.log.term = 2
	r.log.mu.Unlock()
	if err := r.svc.BecomeLeader(r.ctx); err != nil {
		t.Fatal(err)
	}
	r.q.drain()
	r.send(good("n3", 2, 120))
	r.step(testTTL) // n2's lease (reset to a full TTL) expires within the dwell
	if h, _ := r.holder(); h != "n2" || r.obs.count(PolicySkipped+"/"+SkipDwell) == 0 {
		t.Fatalf("new leader: holder %s, results %v", h, r.obs.results)
	}
}

func TestPolicyNoCandidateWaitsForReport(t *testing.T) {
	r := newPolicyRig(t, pb.PromotionMode_PROMOTION_MODE_AUTOMATIC)
	entries := r.log.count()
	r.step(testTTL) // nobody reported: nothing to submit
	if r.obs.count(PolicySkipped+"/"+SkipNoCandidate) != 1 || len(r.policyAttempts()) != 0 || r.log.count() != entries {
		t.Fatalf("results %v, %d new entries", r.obs.results, r.log.count()-entries)
	}
	r.send(good("n2", 1, 120))
	if h, _ := r.holder(); h != "n2" {
		t.Fatalf("holder %s after the report", h)
	}
}

func TestPolicyRetriesAnIndeterminateAttemptAsIs(t *testing.T) {
	r := newPolicyRig(t, pb.PromotionMode_PROMOTION_MODE_AUTOMATIC)
	r.send(good("n2", 1, 120))
	r.log.mu.Lock()
	r.log.failAttempts = ErrIndeterminate
	r.log.mu.Unlock()
	r.step(testTTL)
	if r.obs.count(PolicyError+"/"+ErrorIndeterminate) != 1 {
		t.Fatalf("results %v", r.obs.results)
	}
	r.log.mu.Lock()
	r.log.failAttempts = nil
	r.log.mu.Unlock()
	r.send(good("n2", 1, 120))
	r.send(good("n3", 1, 200)) // better now, but the unknown attempt is retried as it was
	r.step(testBackoffMin)
	recs := r.policyAttempts()
	if len(recs) != 1 || recs[0].Request.RequestId != "policy-1-1" || recs[0].Request.Candidate != "n2" {
		t.Fatalf("attempts = %v", recs)
	}
}

// The leader's timer makes expiry observations prompt for automatic
// domains: the lease_expired observation is made at the expiry instant.
func TestPolicyObservesExpiryAtTheDeadline(t *testing.T) {
	r := newPolicyRig(t, pb.PromotionMode_PROMOTION_MODE_AUTOMATIC)
	var expired []string
	r.svc.leases.lockAll()
	prev := r.svc.leases.onExpire
	r.svc.leases.onExpire = func(d string) { expired = append(expired, d); prev(d) }
	r.svc.leases.unlockAll()
	r.step(testTTL)
	if fmt.Sprint(expired) != "[db1]" {
		t.Fatalf("expiries observed: %v", expired)
	}
}

// AU-14: with promotion disabled for the domain the policy writes nothing.
func TestPolicyDisabledDomainWritesNothing(t *testing.T) {
	r := newPolicyRig(t, pb.PromotionMode_PROMOTION_MODE_AUTOMATIC)
	r.ok(r.svc.UpdatePolicy(r.ctx, "db1", &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_AUTOMATIC,
		LeaseTtlMs: uint64(testTTL.Milliseconds()), PromotionDisabled: true}))
	r.q.drain()
	r.send(good("n2", 1, 120))
	entries := r.log.count()
	r.step(testTTL)
	if h, _ := r.holder(); h != "n1" || r.log.count() != entries || r.obs.count(PolicySkipped+"/"+SkipDisabled) != 1 {
		t.Fatalf("disabled: holder %s, %d new entries, results %v", h, r.log.count()-entries, r.obs.results)
	}
}

// Renewals never touch the timer: it fires at the old expiry, finds the
// lease renewed and re-arms at the new one; a holder that keeps renewing
// is never replaced, and the first expiry after it stops is acted on.
func TestPolicyTimerFollowsRenewals(t *testing.T) {
	r := newPolicyRig(t, pb.PromotionMode_PROMOTION_MODE_AUTOMATIC)
	r.send(good("n2", 1, 120))
	for range 20 {
		r.step(testTTL / 2)
		if _, err := r.svc.Renew("db1", "n1", 1); err != nil {
			t.Fatal(err)
		}
		r.send(good("n2", 1, 120))
		if r.timers() != 1 {
			t.Fatalf("%d timers, want 1", r.timers())
		}
	}
	if h, _ := r.holder(); h != "n1" || len(r.policyAttempts()) != 0 || len(r.obs.results) != 0 {
		t.Fatalf("while renewing: holder %s, results %v", h, r.obs.results)
	}
	r.step(testTTL - time.Millisecond)
	if h, _ := r.holder(); h != "n1" {
		t.Fatalf("promoted %s before the expiry", h)
	}
	r.step(time.Millisecond)
	if h, _ := r.holder(); h != "n2" {
		t.Fatalf("holder %s after the expiry, want n2", h)
	}
}

// A new leader never reuses a request id its predecessor's policy used
// (the same id with another candidate would be a conflict, the same one a
// duplicate): it takes the first number not recorded.
func TestPolicyNewLeaderTakesAFreshRequestID(t *testing.T) {
	r := newPolicyRig(t, pb.PromotionMode_PROMOTION_MODE_AUTOMATIC)
	bad := good("n2", 1, 120)
	bad.ReadSafe = false
	r.send(bad)
	r.step(testTTL)
	if recs := r.policyAttempts(); len(recs) != 1 || recs[0].Request.RequestId != "policy-1-1" || recs[0].Decision.Allowed {
		t.Fatalf("attempts = %v", recs)
	}
	r.svc.StepDown()
	r.log.mu.Lock()
	r.log.term = 2
	r.log.mu.Unlock()
	if err := r.svc.BecomeLeader(r.ctx); err != nil {
		t.Fatal(err)
	}
	r.q.drain()
	r.send(good("n3", 1, 120))
	r.step(testTTL) // n1's lease, reset to a full TTL by the new leader, expires
	recs := r.policyAttempts()
	if len(recs) != 2 || recs[1].Request.RequestId != "policy-1-2" || !recs[1].Decision.Allowed || recs[1].Request.Candidate != "n3" {
		t.Fatalf("attempts = %v", recs)
	}
}

// Acceptance (issue 13, item 5) on the fake clock: holders that pause
// (stop renewing) after a random while, over and over, with every other
// member reporting fresh progress all along, cause at most one promotion
// per dwell period.
func TestPolicyFlappingHoldersAtMostOnePromotionPerDwell(t *testing.T) {
	const seed = 20261204
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	r := newPolicyRig(t, pb.PromotionMode_PROMOTION_MODE_AUTOMATIC)
	tick := 100 * time.Millisecond
	pauseAt := r.clock.Now().Add(time.Duration(rng.IntN(30)) * tick)
	for range 3000 { // 300 s
		holder, epoch := r.holder()
		now := r.clock.Now()
		if now.Before(pauseAt) {
			if _, err := r.svc.Renew("db1", holder, epoch); err != nil {
				t.Fatalf("renewal of %s@%d: %v", holder, epoch, err)
			}
		}
		for _, m := range []string{"n1", "n2", "n3"} {
			if m != holder {
				r.send(good(m, epoch, 120))
			}
		}
		r.step(tick)
		if _, e := r.holder(); e != epoch {
			// A new holder: it renews for a random while, then pauses.
			pauseAt = r.clock.Now().Add(time.Duration(rng.IntN(30)) * tick)
		}
	}
	var allowed []int64
	for _, rec := range r.policyAttempts() {
		if rec.Decision.Allowed {
			allowed = append(allowed, rec.StampedUnixMs)
		}
	}
	if len(allowed) < 5 {
		t.Fatalf("only %d promotions in 300 s: the test does not flap", len(allowed))
	}
	for i := 1; i < len(allowed); i++ {
		if gap := time.Duration(allowed[i]-allowed[i-1]) * time.Millisecond; gap < testDwell {
			t.Fatalf("promotions %d and %d only %v apart (dwell %v)", i-1, i, gap, testDwell)
		}
	}
	t.Logf("%d promotions in 300 s", len(allowed))
}
