package promotion

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/validator"
	"google.golang.org/protobuf/proto"
)

// The automatic promotion policy (DESIGN §7, AU-8 [P6-F3]) runs on the
// leader only, never in the FSM and never on a follower. For each aerodb
// domain whose policy mode is PROMOTION_MODE_AUTOMATIC it keeps one timer,
// armed at its holder's lease expiry as the leader sees it; when the lease
// has expired it picks the best eligible member and submits a promotion
// attempt initiated by the policy through Promote, exactly as an operator's
// request goes (same lifecycle, same validator, same records and events).
// Manual domains get no timer and no state: nothing runs for them.
//
// Anti-flapping: no attempt within Dwell after the domain's last promotion
// (whoever made it; the time is the committed record's stamp); at least a
// backoff between two attempts of one epoch (BackoffMin doubling to
// BackoffMax); and after a denial (or when no member was eligible) no new
// attempt until a new progress report of the domain arrives.

// Policy defaults.
const (
	DefaultPolicyDwell      = 10 * time.Second
	DefaultPolicyBackoffMin = 500 * time.Millisecond
	DefaultPolicyBackoffMax = 30 * time.Second
	// policyPromoteTimeout bounds one policy attempt's proposals.
	policyPromoteTimeout = 10 * time.Second
)

// PolicyConfig tunes the automatic policy; zero fields take the defaults.
type PolicyConfig struct {
	// Dwell: after a promotion of a domain, the policy does not promote it
	// again for this long.
	Dwell time.Duration
	// BackoffMin and BackoffMax: the wait between two policy attempts of
	// one domain and epoch starts at BackoffMin and doubles up to BackoffMax.
	BackoffMin, BackoffMax time.Duration
}

func (c PolicyConfig) withDefaults() PolicyConfig {
	if c.Dwell == 0 {
		c.Dwell = DefaultPolicyDwell
	}
	if c.BackoffMin == 0 {
		c.BackoffMin = DefaultPolicyBackoffMin
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = DefaultPolicyBackoffMax
	}
	c.BackoffMax = max(c.BackoffMax, c.BackoffMin)
	return c
}

// Policy attempt results and skip reasons (authority_policy_attempts_total
// labels; a small fixed set, plus the validator's denial reasons).
const (
	PolicyAllowed = "allowed"
	PolicyDenied  = "denied"
	PolicySkipped = "skipped"
	PolicyError   = "error"

	SkipDwell          = "dwell"
	SkipBackoff        = "backoff"
	SkipAwaitingReport = "awaiting_report"
	SkipNoCandidate    = "no_candidate"
	SkipDisabled       = "promotion_disabled"

	ErrorIndeterminate = "indeterminate"
	ErrorOther         = "other"
)

// policyTerm is the policy of one leadership term; StepDown closes it.
type policyTerm struct {
	s   *Service
	cfg PolicyConfig
	// run executes one domain's evaluation loop off the caller's
	// goroutine (go f() in production; tests queue and drain).
	run    func(func())
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	closed  bool
	domains map[string]*policyDomain // automatic aerodb domains only
}

// policyDomain is the policy's leader-local state of one automatic domain.
type policyDomain struct {
	// timer fires at timerAt (lease expiry, dwell or backoff end); gen
	// tells a stale callback from the current timer's.
	timer   Stopper
	timerAt time.Time
	gen     uint64
	// running: an evaluation of this domain is under way; again: run it
	// once more when it ends (a trigger arrived meanwhile).
	running, again bool

	// Bookkeeping of the current epoch's attempts.
	epoch     uint64
	n         int           // number of the last request id used: policy-<epoch>-<n>
	backoff   time.Duration // wait after the next attempt
	notBefore time.Time     // no attempt before this (backoff)
	// reports counts the domain's progress reports; after a denial no new
	// attempt is made until it moves past reportsAtDenial.
	reports         uint64
	awaitingReport  bool
	reportsAtDenial uint64
	// retry is an attempt whose outcome is unknown: it is retried as is
	// (same request id), so the log returns its recorded outcome.
	retry *pb.PromotionRequest
}

func (s *Service) newPolicyTerm() *policyTerm {
	ctx, cancel := context.WithCancel(context.Background())
	run := s.policyRun
	if run == nil {
		run = func(f func()) { go f() }
	}
	return &policyTerm{s: s, cfg: s.policyCfg, run: run, ctx: ctx, cancel: cancel, domains: map[string]*policyDomain{}}
}

// close ends the term: timers stop, running evaluations find it closed and
// their proposals fail with ErrNotLeader (nil-safe).
func (t *policyTerm) close() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.closed = true
	t.cancel()
	for _, st := range t.domains {
		if st.timer != nil {
			st.timer.Stop()
			st.timer = nil
		}
	}
}

// automatic reports whether d is an aerodb domain under the automatic policy.
func automatic(d *pb.Domain) bool {
	return d.GetKind() == pb.DomainKind_DOMAIN_KIND_AERODB && d.GetPolicy().GetMode() == pb.PromotionMode_PROMOTION_MODE_AUTOMATIC
}

// start arms a timer at the lease expiry of every automatic domain (called
// by BecomeLeader once the term serves; leases were just reset to a full TTL).
func (t *policyTerm) start() {
	for _, a := range t.s.fsm.Authorities() {
		if a.Kind != pb.DomainKind_DOMAIN_KIND_AERODB || a.Holder == "" || a.Released {
			continue // no lease to watch; a grant refreshes the domain
		}
		t.refresh(a.Domain)
	}
}

// refresh re-reads whether domain is automatic (after a grant or a policy
// change): an automatic domain is evaluated (which arms its timer), a
// domain that is not is forgotten. Nil-safe.
func (t *policyTerm) refresh(domain string) {
	if t == nil {
		return
	}
	d, ok := t.s.fsm.Domain(domain)
	if !ok || !automatic(d) {
		t.forget(domain)
		return
	}
	t.schedule(domain)
}

// reported counts a progress report of domain; a domain waiting for one
// (after a denial, or with no eligible member) is evaluated again. Manual
// domains cost a map lookup. Nil-safe.
func (t *policyTerm) reported(domain string) {
	if t == nil {
		return
	}
	t.mu.Lock()
	st, ok := t.domains[domain]
	if !ok || t.closed {
		t.mu.Unlock()
		return
	}
	st.reports++
	wake := st.awaitingReport
	t.mu.Unlock()
	if wake {
		t.schedule(domain)
	}
}

func (t *policyTerm) forget(domain string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if st, ok := t.domains[domain]; ok {
		if st.timer != nil {
			st.timer.Stop()
		}
		delete(t.domains, domain)
	}
}

// schedule runs an evaluation of domain, at most one at a time per domain.
func (t *policyTerm) schedule(domain string) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	st, ok := t.domains[domain]
	if !ok {
		st = &policyDomain{}
		t.domains[domain] = st
	}
	if st.running {
		st.again = true
		t.mu.Unlock()
		return
	}
	st.running = true
	t.mu.Unlock()
	t.run(func() {
		for {
			t.consider(domain, st)
			t.mu.Lock()
			if !st.again || t.closed {
				st.running, st.again = false, false
				t.mu.Unlock()
				return
			}
			st.again = false
			t.mu.Unlock()
		}
	})
}

// arm makes sure domain is evaluated again at (no later than) at. An
// earlier timer is kept: when it fires, the evaluation re-arms.
func (t *policyTerm) arm(domain string, st *policyDomain, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.domains[domain] != st {
		return
	}
	now := t.s.clock.Now()
	if st.timer != nil && !st.timerAt.After(at) && st.timerAt.After(now) {
		return
	}
	if st.timer != nil {
		st.timer.Stop()
	}
	st.gen++
	gen := st.gen
	fire := func() {
		t.mu.Lock()
		current := !t.closed && t.domains[domain] == st && st.gen == gen
		if current {
			st.timer = nil
		}
		t.mu.Unlock()
		if current {
			t.schedule(domain)
		}
	}
	d := max(at.Sub(now), 0)
	st.timerAt = at
	if tc, ok := t.s.clock.(TimerClock); ok {
		st.timer = tc.AfterFunc(d, fire)
	} else {
		st.timer = time.AfterFunc(d, fire)
	}
}

func (t *policyTerm) skipped(domain, reason string) {
	t.s.obs.PolicyAttempt(PolicySkipped, reason)
	t.s.logger.Debug("policy: no attempt", "domain", domain, "reason", reason)
}

// consider is one evaluation of an automatic domain: arm the timer while
// the lease is held; once it expired, wait out dwell and backoff, pick the
// best eligible member and submit the attempt.
// A denied domain is not considered again until a new report arrives, with
// backoff, and a new attempt gets a new request id (AU-8 [P6-F3]).
func (t *policyTerm) consider(name string, st *policyDomain) {
	if t.s.checkReady() != nil {
		return
	}
	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		return
	}
	d, ok := t.s.fsm.Domain(name)
	if !ok || !automatic(d) {
		t.forget(name)
		return
	}
	if d.Epoch == 0 || d.Holder == "" || d.Released {
		return // no holder whose lease could expire: a grant refreshes
	}
	t.s.syncLease(fsm.Authority{Domain: d.Name, Kind: d.Kind, Epoch: d.Epoch, Holder: d.Holder, Released: d.Released,
		TTLms: d.GetPolicy().GetLeaseTtlMs()})
	now := t.s.clock.Now()
	obs, err := t.s.leases.Observe(name)
	if err != nil {
		return
	}
	switch {
	case obs.Status == LeaseHeld:
		t.arm(name, st, now.Add(obs.Remaining))
		return
	case obs.Status != LeaseExpired || obs.Epoch != d.Epoch || obs.Holder != d.Holder:
		return
	}
	if d.GetPolicy().GetPromotionDisabled() || t.s.promotionDisabled {
		t.skipped(name, SkipDisabled) // AU-14: no promotion path, no entry
		return
	}
	if until := t.dwellUntil(d, now); now.Before(until) && !policyIgnoresAntiFlapping {
		t.skipped(name, SkipDwell)
		t.arm(name, st, until)
		return
	}
	t.mu.Lock()
	if st.epoch != d.Epoch { // a new epoch: its attempts start afresh
		*st = policyDomain{timer: st.timer, timerAt: st.timerAt, gen: st.gen, running: st.running, again: st.again,
			reports: st.reports, epoch: d.Epoch, backoff: t.cfg.BackoffMin}
	}
	notBefore, waiting := st.notBefore, st.awaitingReport && st.reports == st.reportsAtDenial
	req := st.retry
	t.mu.Unlock()
	if now.Before(notBefore) && !policyIgnoresAntiFlapping {
		t.skipped(name, SkipBackoff)
		t.arm(name, st, notBefore)
		return
	}
	if waiting {
		t.skipped(name, SkipAwaitingReport)
		return
	}
	if req == nil {
		cand, why, ok := t.pick(d, obs)
		if !ok {
			t.skipped(name, SkipNoCandidate)
			t.mu.Lock()
			st.awaitingReport, st.reportsAtDenial = true, st.reports
			t.mu.Unlock()
			return
		}
		t.mu.Lock()
		st.n++
		for {
			if _, used := t.s.fsm.Attempt(name, policyRequestID(d.Epoch, st.n)); !used {
				break
			}
			st.n++
		}
		epoch := d.Epoch
		req = &pb.PromotionRequest{RequestId: policyRequestID(d.Epoch, st.n), Domain: name, Candidate: cand,
			ExpectedEpoch: &epoch, Reason: why, InitiatedBy: pb.Initiator_INITIATOR_POLICY}
		t.mu.Unlock()
	}
	t.mu.Lock()
	if t.closed || t.s.policy.Load() != t { // leadership moved on meanwhile
		t.mu.Unlock()
		return
	}
	st.notBefore = now.Add(st.backoff)
	st.backoff = min(2*st.backoff, t.cfg.BackoffMax)
	st.retry = nil
	t.mu.Unlock()
	t.s.logger.Info("policy: submitting promotion", "domain", name, "request_id", req.RequestId,
		"candidate", req.Candidate, "epoch", d.Epoch, "holder", d.Holder)
	ctx, cancel := context.WithTimeout(t.ctx, policyPromoteTimeout)
	_, err = t.s.Promote(ctx, req)
	cancel()
	t.mu.Lock()
	rearm := false
	var denial *DeniedError
	switch {
	case err == nil:
		// The grant's hook re-arms the timer at the new holder's lease.
		t.s.obs.PolicyAttempt(PolicyAllowed, "")
	case errors.As(err, &denial):
		t.s.obs.PolicyAttempt(PolicyDenied, denial.Reason)
		st.awaitingReport, st.reportsAtDenial = true, st.reports
		rearm = true // re-checked at the backoff's end; attempts only after a new report
	case errors.Is(err, ErrNotLeader), errors.Is(err, ErrNotReady):
		// The term is over; the next leader's policy takes over.
	case errors.Is(err, ErrGloballyDisabled):
		t.s.obs.PolicyAttempt(PolicySkipped, SkipDisabled)
	case errors.Is(err, ErrIndeterminate), errors.Is(err, context.DeadlineExceeded):
		t.s.obs.PolicyAttempt(PolicyError, ErrorIndeterminate)
		st.retry = req // same request id: the log returns its outcome
		rearm = true
	default:
		t.s.obs.PolicyAttempt(PolicyError, ErrorOther)
		t.s.logger.Warn("policy: promotion attempt failed", "domain", name, "request_id", req.RequestId, "error", err)
		rearm = true
	}
	at := st.notBefore
	t.mu.Unlock()
	if rearm { // retry at the backoff's end
		t.arm(name, st, at)
	}
}

func policyRequestID(epoch uint64, n int) string { return fmt.Sprintf("policy-%d-%d", epoch, n) }

// dwellUntil is when the dwell after the domain's last promotion ends: the
// committed record that granted the current epoch carries the leader's
// stamp, so a new leader honours its predecessor's promotions too. A clock
// that stepped back makes the dwell start now (never longer than Dwell).
func (t *policyTerm) dwellUntil(d *pb.Domain, now time.Time) time.Time {
	if d.GetEpochIndex() == 0 {
		return time.Time{}
	}
	page, _ := t.s.fsm.History(d.Name, d.GetEpochIndex()-1, 1, false)
	if len(page.Records) == 0 || page.Records[0].GetLogIndex() != d.GetEpochIndex() {
		return time.Time{} // the epoch was not granted by a promotion
	}
	elapsed := time.Duration(max(now.UnixMilli()-page.Records[0].GetStampedUnixMs(), 0)) * time.Millisecond
	if elapsed >= t.cfg.Dwell {
		return time.Time{}
	}
	return now.Add(t.cfg.Dwell - elapsed)
}

// policyCandidate is one eligible member with its ranking keys.
type policyCandidate struct {
	id       string
	flushed  uint64
	priority uint32
}

// eligibleCandidates lists the members the policy may pick, best first: an
// active registered member, not the holder, whose latest report on this
// leader is for the current epoch, fresh (policy report_max_age_ms), from a
// usable replica, and carries the watermark's hash at its lsn; ranked by
// flushed lsn (most advanced first), then priority (higher first), then
// id. Pure given its inputs.
func eligibleCandidates(d *pb.Domain, report func(member string) (*pb.ProgressReport, time.Duration, bool)) []policyCandidate {
	wm := d.GetWatermark()
	if wm == nil {
		return nil // unknown watermark: nobody is provably complete (AU-4)
	}
	maxAge := time.Duration(d.GetPolicy().GetReportMaxAgeMs()) * time.Millisecond
	var out []policyCandidate
	for _, m := range d.GetMembers() {
		if m.GetState() != pb.MemberState_MEMBER_STATE_ACTIVE || m.GetId() == d.GetHolder() {
			continue
		}
		r, age, ok := report(m.GetId())
		switch {
		case !ok, r.GetEpoch() != d.GetEpoch(), maxAge > 0 && age > maxAge,
			r.GetState() != pb.ReplicaState_REPLICA_STATE_STREAMING && r.GetState() != pb.ReplicaState_REPLICA_STATE_CATCHING_UP,
			r.GetFlushedLsn() < wm.GetLsn():
			continue
		case wm.GetLsn() > 0 && (r.GetWatermarkLsn() != wm.GetLsn() || !bytes.Equal(r.GetHashAtWatermark(), wm.GetHash())):
			continue
		}
		out = append(out, policyCandidate{id: m.GetId(), flushed: r.GetFlushedLsn(), priority: m.GetPriority()})
	}
	slices.SortFunc(out, func(a, b policyCandidate) int {
		return cmp.Or(cmp.Compare(b.flushed, a.flushed), cmp.Compare(b.priority, a.priority), cmp.Compare(a.id, b.id))
	})
	return out
}

// pick chooses the candidate: the best-ranked eligible member the
// validator would allow now (a member that fails a check the ranking does
// not cover, e.g. MVCC visibility, does not hide a good one); when none
// would pass, the best-ranked one, so the denial is recorded and explained.
func (t *policyTerm) pick(d *pb.Domain, obs Observation) (candidate, reason string, ok bool) {
	now := t.s.clock.Now()
	cands := eligibleCandidates(d, func(member string) (*pb.ProgressReport, time.Duration, bool) {
		return t.s.reports.get(d.Name, member, now)
	})
	if len(cands) == 0 {
		return "", "", false
	}
	best := cands[0]
	for _, c := range cands {
		if t.wouldAllow(d, obs, c.id, now) {
			best = c
			break
		}
	}
	reason = fmt.Sprintf("automatic policy: holder %q's lease at epoch %d expired on the leader; %q is the best of %d eligible members (flushed lsn %d, priority %d)",
		d.Holder, d.Epoch, best.id, len(cands), best.flushed, best.priority)
	return best.id, reason, true
}

// wouldAllow previews the validator's decision for candidate on the
// leader's current evidence (nothing is recorded).
func (t *policyTerm) wouldAllow(d *pb.Domain, obs Observation, candidate string, now time.Time) bool {
	epoch := d.Epoch
	attempt := &pb.PromotionAttempt{
		Request: &pb.PromotionRequest{RequestId: "policy-preview", Domain: d.Name, Candidate: candidate, ExpectedEpoch: &epoch,
			Reason: "preview", InitiatedBy: pb.Initiator_INITIATOR_POLICY},
		Lease: &pb.LeaseObservation{Holder: obs.Holder, Epoch: obs.Epoch, State: leaseState(obs.Status),
			RemainingMs: uint64(obs.Remaining.Milliseconds()), LeaderTerm: t.s.log.Term(), LeaderId: t.s.log.ID()},
	}
	if rep, age, ok := t.s.reports.get(d.Name, candidate, now); ok {
		attempt.CandidateReport, attempt.ReportAgeMs = rep, uint64(age.Milliseconds())
	}
	if fsm.ReplicaQuorum(d.GetPolicy()) {
		// Rank on the fenced positions once a fence is pending (a denied
		// attempt leaves one), else on the positions as if final.
		d = proto.Clone(d).(*pb.Domain)
		if fc := pending(d); fc != nil {
			attempt.FenceReports = t.s.fencedReports(d.Name, fc)
		} else {
			t.s.prospective(d, attempt)
		}
	}
	return validator.Evaluate(validator.Input{Domain: d, Attempt: attempt}).GetAllowed()
}
