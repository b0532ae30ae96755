package promotion

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/validator"
	"google.golang.org/protobuf/proto"
)

// fakeLog applies proposals synchronously to an FSM, as a one-node log
// would. It counts entries so tests can prove "no new entry".
type fakeLog struct {
	mu      sync.Mutex
	fsm     *fsm.FSM
	index   uint64
	term    uint64
	entries int
	fail    error // returned by Propose when set
	// failAttempts is returned for PromotionAttempt entries only (the
	// leader dies between recording the intent and committing the attempt).
	failAttempts error
	// commitThenLose: the next proposal commits but reports ErrIndeterminate.
	commitThenLose bool
	// beforeAcquire, when set, runs before an Acquire entry is appended
	// (a proposal in flight, as seen by concurrent callers).
	beforeAcquire func()
	// applied, when set, receives every command after it applied.
	applied chan *pb.Command
}

func (l *fakeLog) Propose(_ context.Context, cmd *pb.Command) (*fsm.Result, error) {
	if _, ok := cmd.Body.(*pb.Command_Acquire); ok && l.beforeAcquire != nil {
		l.beforeAcquire()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail != nil {
		return nil, l.fail
	}
	if _, ok := cmd.Body.(*pb.Command_PromotionAttempt); ok && l.failAttempts != nil {
		return nil, l.failAttempts
	}
	if l.commitThenLose {
		// The entry commits but the proposer gives up waiting (its context
		// ended): it is applied, the caller hears only "unknown".
		l.commitThenLose = false
		l.index++
		b, _ := proto.Marshal(cmd)
		l.fsm.Apply(l.index, l.term, b)
		return nil, ErrIndeterminate
	}
	l.index++
	if _, note := cmd.Body.(*pb.Command_Note); !note {
		l.entries++ // notes ride ahead of the next write: counted apart
	}
	b, err := proto.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	res := l.fsm.Apply(l.index, l.term, b)
	if l.applied != nil {
		l.applied <- cmd
	}
	return res, nil
}

// ProposeAsync applies at once, as Propose does; the wait returns what
// Propose returned (a failure injected for an attempt appears there, after
// the intent queued before it has applied).
func (l *fakeLog) ProposeAsync(ctx context.Context, cmd *pb.Command) (func(context.Context) (*fsm.Result, error), error) {
	res, err := l.Propose(ctx, cmd)
	return func(context.Context) (*fsm.Result, error) { return res, err }, nil
}

func (l *fakeLog) Barrier(context.Context) error      { return nil }
func (l *fakeLog) VerifyLeader(context.Context) error { return nil }
func (l *fakeLog) Term() uint64                       { l.mu.Lock(); defer l.mu.Unlock(); return l.term }
func (l *fakeLog) ID() string                         { return "s1" }

func (l *fakeLog) count() int { l.mu.Lock(); defer l.mu.Unlock(); return l.entries }

const testTTL = time.Second

var (
	h100 = []byte{0x10, 0x00}
	h90  = []byte{0x09, 0x00}
)

type rig struct {
	t     testing.TB
	svc   *Service
	log   *fakeLog
	clock *fakeClock
	ctx   context.Context
}

// newRig builds a leader with domain db1 (authority-gated, named
// explicitly: the gated path is what most tests here exercise; see
// newQuorumRig): members n1..n3, n1 holds epoch 1, watermark (epoch 1,
// lsn 100, hash h100, visible 50).
func newRig(t testing.TB, disabled bool) *rig {
	t.Helper()
	f := fsm.New()
	r := &rig{t: t, log: &fakeLog{fsm: f, term: 1}, clock: newFakeClock(), ctx: context.Background()}
	r.svc = NewService(Config{Log: r.log, FSM: f, Clock: r.clock, PromotionDisabled: disabled})
	if err := r.svc.BecomeLeader(r.ctx); err != nil {
		t.Fatal(err)
	}
	r.ok(r.svc.CreateDomain(r.ctx, "db1", pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: uint64(testTTL.Milliseconds()),
		Durability: pb.Durability_DURABILITY_AUTHORITY_GATED}))
	for _, id := range []string{"n1", "n2", "n3"} {
		r.ok(r.svc.RegisterMember(r.ctx, &pb.RegisterMember{Domain: "db1", MemberId: id}))
	}
	r.ok(r.svc.AssignInitial(r.ctx, "db1", "n1"))
	r.advance("n1", 1, 100, h100, 50)
	return r
}

func (r *rig) ok(_ *fsm.Result, err error) {
	r.t.Helper()
	if err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) advance(holder string, epoch, lsn uint64, hash []byte, visible uint64) error {
	r.t.Helper()
	errs, err := r.svc.AdvanceWatermark(r.ctx, []*pb.WatermarkAdvance{{Domain: "db1", Epoch: epoch, Holder: holder, Lsn: lsn, Hash: hash, VisibleCommitId: visible}})
	if err != nil {
		r.t.Fatal(err)
	}
	return errs[0]
}

func (r *rig) report(member string, epoch, flushed uint64, hash []byte, applied uint64) {
	r.t.Helper()
	_, err := r.svc.ReportProgress("db1", &pb.ProgressReport{MemberId: member, Epoch: epoch, FlushedLsn: flushed, FlushedHash: hash,
		WatermarkLsn: 100, HashAtWatermark: h100, AppliedCommitId: applied, ReadSafe: true, State: pb.ReplicaState_REPLICA_STATE_STREAMING})
	if err != nil {
		r.t.Fatal(err)
	}
}

func req(id, candidate string, expected ...uint64) *pb.PromotionRequest {
	q := &pb.PromotionRequest{RequestId: id, Domain: "db1", Candidate: candidate, Reason: "test", InitiatedBy: pb.Initiator_INITIATOR_OPERATOR}
	if len(expected) > 0 {
		q.ExpectedEpoch = &expected[0]
	}
	return q
}

func wantDenied(t *testing.T, err error, reason string) *DeniedError {
	t.Helper()
	var d *DeniedError
	if !errors.As(err, &d) || d.Reason != reason {
		t.Fatalf("err = %v, want denial %s", err, reason)
	}
	return d
}

func states(ss ...State) []State { return ss }

func sameStates(a, b []State) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPromoteSuccessWalksTheLifecycle(t *testing.T) {
	r := newRig(t, false)
	r.report("n2", 1, 100, h100, 50)
	r.clock.Advance(testTTL) // n1's lease expires on the leader
	out, err := r.svc.Promote(r.ctx, req("r1", "n2", 1))
	if err != nil {
		t.Fatal(err)
	}
	want := states(Steady, PromotionRequested, PromotionValidating, PromotionApproved, AuthorityTransitioning, PromotionSucceeded, Steady)
	if !sameStates(out.Lifecycle, want) {
		t.Fatalf("lifecycle = %v, want %v", out.Lifecycle, want)
	}
	rec := out.Record
	if !out.Committed || rec.EpochBefore != 1 || rec.EpochAfter != 2 || rec.HolderAfter != "n2" || rec.LogIndex == 0 {
		t.Fatalf("record = %v", rec)
	}
	if rec.Lease.GetState() != pb.LeaseState_LEASE_STATE_EXPIRED || rec.Lease.GetLeaderTerm() != 1 {
		t.Fatalf("lease observation not recorded: %v", rec.Lease)
	}
	// The new holder's lease starts now.
	if obs, _ := r.svc.Leases().Observe("db1"); obs.Holder != "n2" || obs.Epoch != 2 || obs.Status != LeaseHeld {
		t.Fatalf("lease after promotion = %+v", obs)
	}
}

func TestPromoteRetrySameRequestIDWritesNothing(t *testing.T) {
	r := newRig(t, false)
	r.report("n2", 1, 100, h100, 50)
	r.clock.Advance(testTTL)
	first, err := r.svc.Promote(r.ctx, req("r1", "n2", 1))
	if err != nil {
		t.Fatal(err)
	}
	entries := r.log.count()
	again, err := r.svc.Promote(r.ctx, req("r1", "n2", 1))
	if err != nil || !again.Duplicate || !proto.Equal(first.Record, again.Record) {
		t.Fatalf("retry = %+v, %v; want the recorded outcome", again, err)
	}
	if r.log.count() != entries {
		t.Fatalf("retry wrote %d entries", r.log.count()-entries)
	}
	if !sameStates(again.Lifecycle, states(Steady, PromotionRequested, Steady)) {
		t.Fatalf("duplicate lifecycle = %v", again.Lifecycle)
	}
}

func TestPromoteDeniedIsCommittedWithItsExplanation(t *testing.T) {
	r := newRig(t, false)
	r.report("n2", 1, 90, h90, 50) // behind the watermark
	r.clock.Advance(testTTL)
	out, err := r.svc.Promote(r.ctx, req("r1", "n2"))
	d := wantDenied(t, err, validator.ReasonReplicaBehindWal)
	if d.Invariant != "AU-4 [P6-S1]" || !out.Committed || out.Record.EpochAfter != 1 {
		t.Fatalf("denied outcome = %+v / %+v", d, out.Record)
	}
	if !sameStates(out.Lifecycle, states(Steady, PromotionRequested, PromotionValidating, PromotionDenied, Steady)) {
		t.Fatalf("lifecycle = %v", out.Lifecycle)
	}
	rec, ok := r.svc.fsm.Attempt("db1", "r1")
	if !ok || !proto.Equal(rec, out.Record) {
		t.Fatalf("explanation not recorded in the state")
	}
}

func TestPromoteWhileOldLeaseValidIsDeniedThenAllowedAfterRelease(t *testing.T) {
	r := newRig(t, false)
	r.report("n2", 1, 100, h100, 50)
	_, err := r.svc.Promote(r.ctx, req("r1", "n2", 1))
	d := wantDenied(t, err, validator.ReasonPrimaryStillActive)
	if d.Record.Lease.GetState() != pb.LeaseState_LEASE_STATE_HELD || d.Record.Lease.GetRemainingMs() != 1000 {
		t.Fatalf("observation = %v", d.Record.Lease)
	}
	r.ok(r.svc.Release(r.ctx, "db1", "n1", 1))
	if _, err := r.svc.Promote(r.ctx, req("r2", "n2", 1)); err != nil {
		t.Fatalf("after release: %v", err)
	}
}

func TestDryRunCommitsNothing(t *testing.T) {
	r := newRig(t, false)
	r.report("n2", 1, 100, h100, 50)
	r.clock.Advance(testTTL)
	before, _ := r.svc.fsm.Domain("db1")
	entries := r.log.count()
	q := req("r1", "n2", 1)
	q.DryRun = true
	out, err := r.svc.Promote(r.ctx, q)
	if err != nil || out.Committed || !out.Record.Decision.Allowed || out.Lifecycle != nil {
		t.Fatalf("dry run = %+v, %v", out, err)
	}
	after, _ := r.svc.fsm.Domain("db1")
	if !proto.Equal(before, after) || r.log.count() != entries {
		t.Fatal("dry run changed the state")
	}
	// The real attempt then decides the same way.
	q.DryRun = false
	if real, err := r.svc.Promote(r.ctx, q); err != nil || !proto.Equal(real.Record.Decision, out.Record.Decision) {
		t.Fatalf("real attempt decided differently: %v", err)
	}
}

// Readiness: AU-12 (fenced by epoch); docs/READINESS.md.
func TestFencingAfterPromotion(t *testing.T) {
	r := newRig(t, false)
	r.report("n2", 1, 100, h100, 50)
	r.clock.Advance(testTTL)
	if _, err := r.svc.Promote(r.ctx, req("r1", "n2", 1)); err != nil {
		t.Fatal(err)
	}
	if err := r.advance("n1", 1, 120, []byte{0x12}, 60); !errors.Is(err, fsm.ErrFenced) {
		t.Fatalf("old holder's watermark advance: %v, want fenced", err)
	}
	if _, err := r.svc.Renew("db1", "n1", 1); !errors.Is(err, ErrFenced) {
		t.Fatalf("old holder's renewal: %v, want fenced", err)
	}
	if _, err := r.svc.Release(r.ctx, "db1", "n1", 1); !errors.Is(err, fsm.ErrFenced) {
		t.Fatalf("old holder's release: %v, want fenced", err)
	}
	if _, err := r.svc.Renew("db1", "n2", 2); err != nil {
		t.Fatalf("new holder's renewal: %v", err)
	}
	if err := r.advance("n2", 2, 120, []byte{0x12}, 60); err != nil {
		t.Fatalf("new holder's advance: %v", err)
	}
}

// The FSM fences even when the leader's pre-check is bypassed: an advance
// proposed straight into the log with the old epoch is rejected at apply.
func TestWatermarkFencedAtApplyToo(t *testing.T) {
	r := newRig(t, false)
	r.report("n2", 1, 100, h100, 50)
	r.clock.Advance(testTTL)
	if _, err := r.svc.Promote(r.ctx, req("r1", "n2", 1)); err != nil {
		t.Fatal(err)
	}
	res, _ := r.log.Propose(r.ctx, &pb.Command{Body: &pb.Command_AdvanceWatermark{AdvanceWatermark: &pb.AdvanceWatermark{
		Advances: []*pb.WatermarkAdvance{{Domain: "db1", Epoch: 1, Holder: "n1", Lsn: 130, Hash: []byte{1}}}}}})
	if !errors.Is(res.Err, fsm.ErrFenced) {
		t.Fatalf("apply-time fencing: %v", res.Err)
	}
}

// Readiness: AU-1 (compare-and-set on the epoch); docs/READINESS.md.
func TestStaleExpectedEpochDenied(t *testing.T) {
	r := newRig(t, false)
	r.report("n2", 1, 100, h100, 50)
	r.clock.Advance(testTTL)
	if _, err := r.svc.Promote(r.ctx, req("r1", "n2", 1)); err != nil {
		t.Fatal(err)
	}
	r.report("n3", 2, 100, h100, 50)
	_, err := r.svc.Promote(r.ctx, req("r2", "n3", 1))
	wantDenied(t, err, validator.ReasonEpochStale)
}

// Simulated split brain: two operators promote different candidates against
// the same expected epoch at the same time. Exactly one succeeds.
func TestConcurrentPromotionsExactlyOneWins(t *testing.T) {
	r := newRig(t, false)
	r.report("n2", 1, 100, h100, 50)
	r.report("n3", 1, 100, h100, 50)
	r.clock.Advance(testTTL)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, cand := range []string{"n2", "n3"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = r.svc.Promote(r.ctx, req("r-"+cand, cand, 1))
		}()
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		default:
			wantDenied(t, err, validator.ReasonEpochStale)
		}
	}
	if a, _ := r.svc.fsm.AuthorityOf("db1"); wins != 1 || a.Epoch != 2 {
		t.Fatalf("wins = %d, epoch = %d; want exactly one winner at epoch 2", wins, a.Epoch)
	}
}

func TestMissingReportDeniedMetadataMissing(t *testing.T) {
	r := newRig(t, false)
	// Waivers permitted (a recorded deviation): even they cannot stand in
	// for missing evidence.
	r.ok(r.svc.UpdatePolicy(r.ctx, "db1", &pb.Policy{LeaseTtlMs: uint64(testTTL.Milliseconds()),
		WaiverMode: pb.WaiverMode_WAIVER_MODE_PERMITTED, WaiverReason: "test: evidence, not waivers"}))
	r.clock.Advance(testTTL)
	q := req("r1", "n2", 1)
	q.Waivers, q.Reason = []string{validator.WaiverAllowDataLoss, validator.WaiverAllowVisibilityRegression}, "operator accepts loss"
	_, err := r.svc.Promote(r.ctx, q)
	wantDenied(t, err, validator.ReasonMetadataMissing)
}

// A new leader has no reports (soft state) and denies until replicas report
// again: fail closed.
func TestNewLeaderForgetsReports(t *testing.T) {
	r := newRig(t, false)
	r.report("n2", 1, 100, h100, 50)
	r.clock.Advance(testTTL)
	r.svc.StepDown()
	r.log.term = 2
	if err := r.svc.BecomeLeader(r.ctx); err != nil {
		t.Fatal(err)
	}
	r.clock.Advance(testTTL) // the reset lease runs out again
	_, err := r.svc.Promote(r.ctx, req("r1", "n2", 1))
	wantDenied(t, err, validator.ReasonMetadataMissing)
}

func TestNewLeaderResetsLeasesToFullTTL(t *testing.T) {
	r := newRig(t, false)
	r.clock.Advance(testTTL - time.Millisecond)
	r.svc.StepDown()
	if _, err := r.svc.Renew("db1", "n1", 1); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("renew on a follower: %v", err)
	}
	r.log.term = 2
	if err := r.svc.BecomeLeader(r.ctx); err != nil {
		t.Fatal(err)
	}
	obs, _ := r.svc.Leases().Observe("db1")
	if obs.Status != LeaseHeld || obs.Remaining != testTTL {
		t.Fatalf("after leader change: %+v, want a full TTL", obs)
	}
}

func TestExpiredLeaseNeverRenewed(t *testing.T) {
	r := newRig(t, false)
	r.clock.Advance(testTTL)
	if _, err := r.svc.Renew("db1", "n1", 1); !errors.Is(err, ErrLeaseExpired) {
		t.Fatalf("renew after expiry: %v", err)
	}
	if err := r.advance("n1", 1, 110, []byte{0x11}, 55); !errors.Is(err, ErrLeaseExpired) {
		t.Fatalf("advance after expiry: %v", err)
	}
	// The holder takes its lease back through the log, at the same epoch.
	res, err := r.svc.Acquire(r.ctx, "db1", "n1", nil)
	if err != nil || res.Epoch != 1 {
		t.Fatalf("re-acquire: %v, %v", res, err)
	}
	if _, err := r.svc.Renew("db1", "n1", 1); err != nil {
		t.Fatalf("renew after re-acquire: %v", err)
	}
}

func TestMalformedRequestRejectedImmediately(t *testing.T) {
	r := newRig(t, false)
	entries := r.log.count()
	out, err := r.svc.Promote(r.ctx, req("", "n2"))
	if !errors.Is(err, fsm.ErrInvalid) || r.log.count() != entries {
		t.Fatalf("malformed: %v", err)
	}
	if !sameStates(out.Lifecycle, states(Steady, PromotionRequested, Steady)) {
		t.Fatalf("lifecycle = %v", out.Lifecycle)
	}
	if _, err := r.svc.Promote(r.ctx, &pb.PromotionRequest{RequestId: "x", Domain: "nope", Candidate: "n2"}); !errors.Is(err, fsm.ErrNotFound) {
		t.Fatalf("unknown domain: %v", err)
	}
}

// Disablement (AU-14): with promotion off on the server, every promotion
// path is refused and nothing is written; the rest behaves unchanged.
func TestGloballyDisabled(t *testing.T) {
	on, off := newRig(t, false), newRig(t, true)
	for _, r := range []*rig{on, off} {
		r.report("n2", 1, 100, h100, 50)
		if err := r.advance("n1", 1, 110, []byte{0x11}, 55); err != nil {
			t.Fatal(err)
		}
		if _, err := r.svc.Renew("db1", "n1", 1); err != nil {
			t.Fatal(err)
		}
	}
	hOn, _ := on.svc.fsm.StateHash()
	hOff, _ := off.svc.fsm.StateHash()
	if hOn != hOff {
		t.Fatal("the same non-promotion workload gave different states")
	}
	off.clock.Advance(testTTL)
	for _, dry := range []bool{false, true} {
		q := req("r1", "n2", 1)
		q.DryRun = dry
		if _, err := off.svc.Promote(off.ctx, q); !errors.Is(err, ErrGloballyDisabled) {
			t.Fatalf("dry=%t: %v, want disabled", dry, err)
		}
	}
	if h, _ := off.svc.fsm.StateHash(); h != hOff {
		t.Fatal("a refused promotion changed the state")
	}
}

// Per-domain disablement: the attempt is denied PromotionDisabled and the
// authority, watermark and leases are untouched.
func TestDomainDisabled(t *testing.T) {
	r := newRig(t, false)
	r.ok(r.svc.UpdatePolicy(r.ctx, "db1", &pb.Policy{LeaseTtlMs: 1000, PromotionDisabled: true}))
	r.report("n2", 1, 100, h100, 50)
	r.clock.Advance(testTTL)
	_, err := r.svc.Promote(r.ctx, req("r1", "n2", 1))
	wantDenied(t, err, validator.ReasonPromotionDisabled)
	if a, _ := r.svc.fsm.AuthorityOf("db1"); a.Epoch != 1 || a.Holder != "n1" {
		t.Fatalf("authority moved: %+v", a)
	}
}

func TestNotLeaderServesNothing(t *testing.T) {
	r := newRig(t, false)
	r.svc.StepDown()
	if _, err := r.svc.Promote(r.ctx, req("r1", "n2")); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("promote: %v", err)
	}
	if _, err := r.svc.AdvanceWatermark(r.ctx, []*pb.WatermarkAdvance{{Domain: "db1"}}); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("advance: %v", err)
	}
	if _, err := r.svc.ReportProgress("db1", &pb.ProgressReport{MemberId: "n2"}); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("report: %v", err)
	}
	// A term change without a new barrier is not ready either.
	r2 := newRig(t, false)
	r2.log.term = 5
	if _, err := r2.svc.Renew("db1", "n1", 1); !errors.Is(err, ErrNotReady) {
		t.Fatalf("renew in a new term before the barrier: %v", err)
	}
}

func TestIndeterminateProposalLeavesLifecycleInTransition(t *testing.T) {
	r := newRig(t, false)
	r.report("n2", 1, 100, h100, 50)
	r.clock.Advance(testTTL)
	r.log.failAttempts = ErrIndeterminate
	out, err := r.svc.Promote(r.ctx, req("r1", "n2", 1))
	if !errors.Is(err, ErrIndeterminate) {
		t.Fatalf("err = %v", err)
	}
	if last := out.Lifecycle[len(out.Lifecycle)-1]; last != AuthorityTransitioning {
		t.Fatalf("lifecycle ended in %v, want AuthorityTransitioning", last)
	}
	// Retrying the same id decides afresh: nothing had committed.
	r.log.failAttempts = nil
	if _, err := r.svc.Promote(r.ctx, req("r1", "n2", 1)); err != nil {
		t.Fatalf("retry: %v", err)
	}
}

func TestWithDefaults(t *testing.T) {
	p := WithDefaults(nil)
	if p.Mode != pb.PromotionMode_PROMOTION_MODE_MANUAL || p.LeaseTtlMs != 10000 || p.ReportMaxAgeMs != 30000 || p.MinSyncReplicas != 1 {
		t.Fatalf("defaults = %v", p)
	}
	if err := fsm.ValidatePolicy(p); err != nil {
		t.Fatal(err)
	}
}

// A leader that recorded the request but died before the attempt committed:
// the next leader records aborted_on_crash through the log, and the attempt
// is forgotten (authority unchanged); a retry decides afresh.
// Readiness: P6-D2, AU-10 (recovery records what the log says, decides nothing); docs/READINESS.md.
func TestNewLeaderAbortsUndecidedAttempts(t *testing.T) {
	r := newRig(t, false)
	r.report("n2", 1, 100, h100, 50)
	r.clock.Advance(testTTL)
	r.log.failAttempts = ErrIndeterminate
	if _, err := r.svc.Promote(r.ctx, req("r1", "n2", 1)); !errors.Is(err, ErrIndeterminate) {
		t.Fatalf("err = %v", err)
	}
	if p := r.svc.fsm.PendingIntents(); len(p) != 1 || p[0].RequestID != "r1" {
		t.Fatalf("pending = %+v", p)
	}
	r.log.failAttempts = nil
	r.svc.StepDown()
	r.log.term = 2
	from := r.log.index + 1
	if err := r.svc.BecomeLeader(r.ctx); err != nil {
		t.Fatal(err)
	}
	if p := r.svc.fsm.PendingIntents(); len(p) != 0 {
		t.Fatalf("still pending after the new leader's barrier: %+v", p)
	}
	evs, _, _ := r.svc.fsm.EventsFrom(from, 10)
	if len(evs) != 2 || evs[0].Type != fsm.EventPromotionAbortedOnCrash || evs[1].Type != fsm.EventLeaderChanged {
		t.Fatalf("events after leader change: %v", evs)
	}
	if a, _ := r.svc.fsm.AuthorityOf("db1"); a.Epoch != 1 || a.Holder != "n1" {
		t.Fatalf("authority changed: %+v", a)
	}
	r.clock.Advance(testTTL)
	r.report("n2", 1, 100, h100, 50)
	if out, err := r.svc.Promote(r.ctx, req("r1", "n2", 1)); err != nil || out.Duplicate {
		t.Fatalf("retry after abort: %+v %v", out, err)
	}
}

// Regression (found by the soak): a lock grant that committed while its
// proposer gave up waiting must still expire on the leader; before, the
// lease table kept the older epoch and the lock could never be taken again.
func TestUnseenGrantStillExpires(t *testing.T) {
	r := newRig(t, false)
	r.ok(r.svc.CreateDomain(r.ctx, "lk", pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: 400}))
	r.log.commitThenLose = true
	if _, err := r.svc.Acquire(r.ctx, "lk", "a", nil); !errors.Is(err, ErrIndeterminate) {
		t.Fatalf("acquire: %v", err)
	}
	if a, _ := r.svc.fsm.AuthorityOf("lk"); a.Epoch != 1 || a.Holder != "a" {
		t.Fatalf("the grant did not commit: %+v", a)
	}
	if _, err := r.svc.Acquire(r.ctx, "lk", "b", nil); !errors.Is(err, fsm.ErrPrecondition) {
		t.Fatalf("acquire while a's lease runs: %v", err)
	}
	r.clock.Advance(400 * time.Millisecond)
	res, err := r.svc.Acquire(r.ctx, "lk", "b", nil)
	if err != nil || res.Epoch != 2 || res.Holder != "b" {
		t.Fatalf("acquire after a's lease expired: %v %v", res, err)
	}
}
