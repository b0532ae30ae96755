package promotion

import (
	"context"
	"errors"
	"fmt"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/failpoint"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/validator"
	"google.golang.org/protobuf/proto"
)

// Outcome of a promotion request.
type Outcome struct {
	// Record is the attempt's record and explanation. For a committed attempt
	// it is the FSM's record (LogIndex > 0); for a dry run or an immediate
	// rejection it is the same evaluation, uncommitted (LogIndex == 0).
	Record *pb.AttemptRecord
	// Committed: the record is in the replicated log.
	Committed bool
	// Duplicate: the request id was already recorded; Record is that record
	// and no new entry was written.
	Duplicate bool
	// Lifecycle lists the states this attempt passed through on the leader.
	Lifecycle []State
}

// DeniedError is returned (with the Outcome) when an attempt is denied.
// Branch with errors.As; Reason and Invariant name the first failed check.
type DeniedError struct {
	Reason    string
	Invariant string
	Record    *pb.AttemptRecord
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("promotion denied: %s (%s)", e.Reason, e.Invariant)
}

func denied(rec *pb.AttemptRecord) error {
	d := rec.GetDecision()
	if d.GetAllowed() {
		return nil
	}
	return &DeniedError{Reason: d.DenialReason, Invariant: d.FailedInvariant, Record: rec}
}

// Promote runs one promotion attempt through the lifecycle:
//
//	Steady → Requested → Validating → Approved → Transitioning → Succeeded → Steady
//	                   ↘ Steady (rejected)  ↘ Denied → Steady
//
// A denied attempt is committed too, so its explanation is replicated and
// identical on every node; the error is then a *DeniedError. A dry run
// evaluates and commits nothing. A request id already recorded returns the
// recorded outcome without a new entry.
//
// Errors that leave the outcome unknown: ErrIndeterminate (retry with the
// same request id: it returns the recorded outcome if the entry committed,
// or decides afresh if it did not).
func (s *Service) Promote(ctx context.Context, req *pb.PromotionRequest) (*Outcome, error) {
	if req.GetDryRun() {
		return s.dryRun(req)
	}
	lc := NewLifecycle(req.GetRequestId())
	must(lc.To(PromotionRequested))
	out, err := s.promote(ctx, req, lc)
	if out == nil {
		out = &Outcome{}
	}
	if out.Committed || lc.State() == Steady {
		s.undecided.forget(req.GetDomain(), req.GetRequestId())
	} else {
		// No decision: if the intent is pending, the next leader records
		// its abort; should that be this node, it names this state.
		s.undecided.remember(req.GetDomain(), req.GetRequestId(), lc.State())
	}
	out.Lifecycle = lc.History()
	return out, err
}

func (s *Service) promote(ctx context.Context, req *pb.PromotionRequest, lc *Lifecycle) (*Outcome, error) {
	if out, err := s.admit(req); out != nil || err != nil {
		must(lc.To(Steady))
		return out, err
	}
	unlock := s.locks.exclusive(req.Domain)
	defer unlock()
	if rec, ok := s.fsm.Attempt(req.Domain, req.RequestId); ok { // raced with the same id
		must(lc.To(Steady))
		return &Outcome{Record: rec, Committed: true, Duplicate: true}, denied(rec)
	}
	if pl, ok := s.log.(Pipeliner); ok && s.pipelinable(req.Domain) {
		return s.promotePipelined(ctx, req, lc, pl)
	}
	// Make the request durable first: if this leader dies before the
	// attempt commits, the next leader sees it and records its abort.
	if err := s.recordIntent(ctx, req); err != nil {
		return nil, err
	}
	s.obs.Requested(req.Domain)
	if err := failpoint.Eval(failpoint.PromoteReceived); err != nil {
		return nil, err
	}
	if d, ok := s.fsm.Domain(req.Domain); ok && fsm.ReplicaQuorum(d.GetPolicy()) && d.GetKind() == pb.DomainKind_DOMAIN_KIND_AERODB {
		// The fence is a real one: from here the old holder can
		// acknowledge nothing, whatever the decision (docs/DURABILITY.md).
		// So fence only an attempt its dry run allows on the replicas'
		// current positions: a premature promotion (the holder's lease
		// still valid, a stale expected epoch, a candidate behind) is
		// denied without stopping a healthy primary.
		if pending(d) != nil || s.wouldAllowProspectively(req) {
			if err := s.prepareFence(ctx, req, d); err != nil {
				return nil, err
			}
		}
	}
	must(lc.To(PromotionValidating))
	attempt, rec, took, err := s.evaluate(req, false)
	if err != nil {
		return nil, err // only when leadership was lost mid-request
	}
	if err := failpoint.Eval(failpoint.PromoteBeforePropose); err != nil {
		return nil, err
	}
	if !rec.Decision.Allowed {
		must(lc.To(PromotionDenied))
		out, err := s.commitAttempt(ctx, attempt)
		if out != nil {
			must(lc.To(Steady))
			s.decided(out, took)
			if out.Record.GetDecision().GetAllowed() {
				// Cannot happen while the domain lock serialises writes; if it
				// does, the committed record (the new authority) stands.
				s.logger.Error("apply-time validation contradicted the leader's", "request_id", req.RequestId)
				s.granted(out.Record.Request.Domain, out.Record.HolderAfter, out.Record.EpochAfter, true)
			}
		}
		return out, err
	}
	must(lc.To(PromotionApproved))
	must(lc.To(AuthorityTransitioning))
	out, err := s.commitAttempt(ctx, attempt)
	return s.finish(req, lc, out, took, err)
}

// finish ends an approved attempt's lifecycle on its committed outcome.
func (s *Service) finish(req *pb.PromotionRequest, lc *Lifecycle, out *Outcome, took time.Duration, err error) (*Outcome, error) {
	if out == nil {
		return nil, err // crash or leadership loss here: the log decides (AU-10)
	}
	s.decided(out, took)
	if !out.Record.Decision.Allowed {
		// Cannot happen while the domain lock serialises writes; if it does,
		// the committed record (the old authority) stands.
		s.logger.Error("apply-time validation contradicted the leader's", "request_id", req.RequestId,
			"reason", out.Record.Decision.DenialReason)
		return out, denied(out.Record)
	}
	must(lc.To(PromotionSucceeded))
	s.granted(out.Record.Request.Domain, out.Record.HolderAfter, out.Record.EpochAfter, true)
	must(lc.To(Steady))
	return out, nil
}

// pipelinable reports whether a promotion of domain may queue its attempt
// right behind its intent (promotePipelined): an authority-gated domain
// (a replica-quorum aerodb domain commits a fence between the two, which
// needs the intent committed first) with room for one more pending intent
// (so the intent cannot be refused while its attempt is queued).
func (s *Service) pipelinable(domain string) bool {
	d, ok := s.fsm.Domain(domain)
	if !ok {
		return false
	}
	quorum := fsm.ReplicaQuorum(d.GetPolicy()) && d.GetKind() == pb.DomainKind_DOMAIN_KIND_AERODB
	return !quorum && len(d.GetPending()) < fsm.MaxPending
}

// pipelineWaitPoints are the failpoints whose crash cells on the leader
// name "intent committed" before the attempt is proposed or stored
// (docs/CRASH-MATRIX.md): the promote/* points before the proposal, and
// the leader's own log store of the attempt (raftlog/*, evaluated in
// cluster's log store for batches carrying an attempt).
var pipelineWaitPoints = []string{failpoint.PromoteReceived, failpoint.PromoteValidating, failpoint.PromoteBeforePropose,
	failpoint.RaftLogBeforeStore, failpoint.RaftLogAfterStore}

// promotePipelined is promote with one commit wait instead of two. The
// intent is queued, the attempt is decided on the applied state and queued
// right behind it, and only then does the leader wait: for the intent, then
// for the attempt. The log keeps their order, so what a crash can leave is
// what it could leave before: nothing (the caller was told nothing), the
// intent alone (the next leader records its abort: AU-10), or both (the
// decision stands). The leader's evaluation never needed the intent
// applied (it changes no authority and no check reads it) and the FSM
// re-validates the attempt at its index anyway (the domain lock keeps other
// writes out in between). With one of pipelineWaitPoints armed (tests
// only: failpoint builds), the leader waits for the intent's commit before
// queueing the attempt, so a crash at those points is exactly the state
// their cells name (intent committed, attempt not proposed or not stored
// beyond the leader), one a leader that dies before its attempt is
// replicated can leave; promote/queued is the pipelined window itself.
func (s *Service) promotePipelined(ctx context.Context, req *pb.PromotionRequest, lc *Lifecycle, pl Pipeliner) (*Outcome, error) {
	defer s.notesAhead(ctx)() // observations precede the write that carries them
	waitIntent, err := s.queue(ctx, pl, &pb.Command{Body: &pb.Command_PromotionIntent{PromotionIntent: &pb.PromotionIntent{
		Request: proto.Clone(req).(*pb.PromotionRequest)}}})
	if err != nil {
		return nil, err
	}
	var intentErr error
	intentDone := false
	intent := func() error {
		if !intentDone {
			intentErr, intentDone = intentResult(waitIntent(ctx)), true
		}
		return intentErr
	}
	// From here the intent may be in the log: "not leader" (nothing
	// proposed, so the client sends the request elsewhere) is true only if
	// raft refused the intent too (P6-F3: never a re-send of a request
	// whose intent may have committed).
	fail := func(err error) (*Outcome, error) {
		if errors.Is(err, ErrNotLeader) && !errors.Is(intent(), ErrNotLeader) {
			return nil, fmt.Errorf("%w: %v", ErrIndeterminate, err)
		}
		return nil, err
	}
	if failpoint.Armed(pipelineWaitPoints...) {
		if err := intent(); err != nil {
			return nil, err
		}
	}
	s.obs.Requested(req.Domain)
	if err := failpoint.Eval(failpoint.PromoteReceived); err != nil {
		return fail(err)
	}
	must(lc.To(PromotionValidating))
	attempt, rec, took, err := s.evaluate(req, false)
	if err != nil {
		return fail(err) // only when leadership was lost mid-request
	}
	if err := failpoint.Eval(failpoint.PromoteBeforePropose); err != nil {
		return fail(err)
	}
	allowed := rec.Decision.Allowed
	if allowed {
		must(lc.To(PromotionApproved))
		must(lc.To(AuthorityTransitioning))
	} else {
		must(lc.To(PromotionDenied))
	}
	waitAttempt, err := s.queue(ctx, pl, &pb.Command{Body: &pb.Command_PromotionAttempt{PromotionAttempt: attempt}})
	if err != nil {
		return fail(err)
	}
	if err := failpoint.Eval(failpoint.PromoteQueued); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIndeterminate, err) // both queued: either may commit
	}
	if err := intent(); err != nil && !errors.Is(err, ErrIndeterminate) && !errors.Is(err, ErrNotLeader) {
		// Refused at apply (the pre-check makes it unexpected): the
		// attempt behind it is decided all the same.
		s.logger.Warn("promotion intent refused at apply", "request_id", req.RequestId, "error", err)
	}
	out, err := s.attemptOutcome(waitAttempt(ctx))
	if out == nil {
		return fail(err)
	}
	if !allowed {
		must(lc.To(Steady))
		s.decided(out, took)
		if out.Record.GetDecision().GetAllowed() {
			// Cannot happen while the domain lock serialises writes; if it
			// does, the committed record (the new authority) stands.
			s.logger.Error("apply-time validation contradicted the leader's", "request_id", req.RequestId)
			s.granted(out.Record.Request.Domain, out.Record.HolderAfter, out.Record.EpochAfter, true)
		}
		return out, err
	}
	return s.finish(req, lc, out, took, err)
}

// queue stamps a command as proposeOne does and queues it.
func (s *Service) queue(ctx context.Context, pl Pipeliner, cmd *pb.Command) (func(context.Context) (*fsm.Result, error), error) {
	cmd.StampedUnixMs = s.clock.Now().UnixMilli()
	cmd.Term = s.log.Term()
	cmd.Proposer = s.log.ID()
	return pl.ProposeAsync(ctx, cmd)
}

func intentResult(res *fsm.Result, err error) error {
	if err != nil {
		return err
	}
	return res.Err
}

// admit rejects what must not enter the lifecycle: not leader, malformed,
// disabled on this server, or a request id already recorded. Every refusal
// is observed (refusals.go); a duplicate is not a refusal.
func (s *Service) admit(req *pb.PromotionRequest) (*Outcome, error) {
	out, err := s.admission(req)
	if out == nil && err != nil {
		s.refused(req, refusalReason(err))
	}
	return out, err
}

func (s *Service) admission(req *pb.PromotionRequest) (*Outcome, error) {
	if err := s.checkReady(); err != nil {
		return nil, err
	}
	if err := fsm.ValidateName("request id", req.GetRequestId()); err != nil {
		return nil, err
	}
	if err := fsm.ValidateName("domain", req.GetDomain()); err != nil {
		return nil, err
	}
	if rec, ok := s.fsm.Attempt(req.Domain, req.RequestId); ok {
		if !fsm.SameRequest(rec.Request, req) {
			return nil, fmt.Errorf("%w: request id %q was used for another request (candidate %q)",
				fsm.ErrConflict, req.RequestId, rec.GetRequest().GetCandidate())
		}
		return &Outcome{Record: rec, Committed: true, Duplicate: true}, denied(rec)
	}
	if _, ok := s.fsm.AuthorityOf(req.Domain); !ok {
		return nil, fmt.Errorf("%w: domain %q", fsm.ErrNotFound, req.Domain)
	}
	if s.promotionDisabled {
		return nil, fmt.Errorf("%w: %s", ErrGloballyDisabled, validator.ReasonPromotionDisabled)
	}
	return nil, nil
}

// dryRun evaluates a request exactly as Promote would now, commits nothing
// and walks no lifecycle.
func (s *Service) dryRun(req *pb.PromotionRequest) (*Outcome, error) {
	if out, err := s.admit(req); out != nil || err != nil {
		return out, err
	}
	_, rec, took, err := s.evaluate(req, true)
	if err != nil {
		return nil, err
	}
	s.obs.Decided(rec, false, took)
	s.dryRunObserved(rec)
	return &Outcome{Record: rec}, denied(rec)
}

// decided logs a committed decision once, with its request id, and tells
// the observer. A duplicate (an earlier decision returned again) is not a
// new decision.
func (s *Service) decided(out *Outcome, took time.Duration) {
	if out.Duplicate {
		return
	}
	rec := out.Record
	d := rec.GetDecision()
	s.logger.Info("promotion decided", "request_id", rec.GetRequest().GetRequestId(), "domain", rec.GetRequest().GetDomain(),
		"candidate", rec.GetRequest().GetCandidate(), "allowed", d.GetAllowed(), "reason", d.GetDenialReason(),
		"invariant", d.GetFailedInvariant(), "epoch_before", rec.EpochBefore, "epoch_after", rec.EpochAfter,
		"log_index", rec.LogIndex, "waivers", d.GetWaiversApplied())
	s.obs.Decided(rec, true, took)
}

// evaluate gathers the leader's evidence (its lease observation and the
// candidate's latest report with its age) into an attempt entry and decides
// it against the current state, exactly as apply will.
//
// For a replica-quorum domain the entry also carries the fenced reports
// the leader holds; a dry run with no fence prepared yet shows the fence a
// prepare would record, with the replicas' current positions as if final.
// Authority follows only from a committed entry: the lease observation is
// this leader's own, recorded in the entry, never inherited (AU-3 [P6-A3]).
func (s *Service) evaluate(req *pb.PromotionRequest, dryRun bool) (*pb.PromotionAttempt, *pb.AttemptRecord, time.Duration, error) {
	d, ok := s.fsm.Domain(req.Domain)
	if !ok {
		return nil, nil, 0, fmt.Errorf("%w: domain %q", fsm.ErrNotFound, req.Domain)
	}
	if a, ok := s.fsm.AuthorityOf(req.Domain); ok {
		s.syncLease(a)
	}
	obs, err := s.leases.Observe(req.Domain)
	if err != nil {
		return nil, nil, 0, err
	}
	attempt := &pb.PromotionAttempt{
		Request: proto.Clone(req).(*pb.PromotionRequest),
		Lease: &pb.LeaseObservation{Holder: obs.Holder, Epoch: obs.Epoch, State: leaseState(obs.Status),
			RemainingMs: uint64(obs.Remaining.Milliseconds()), LeaderTerm: s.log.Term(), LeaderId: s.log.ID()},
	}
	attempt.Request.DryRun = false
	if rep, age, ok := s.reports.get(req.Domain, req.Candidate, s.clock.Now()); ok {
		attempt.CandidateReport, attempt.ReportAgeMs = rep, uint64(age.Milliseconds())
	}
	if fsm.ReplicaQuorum(d.GetPolicy()) {
		if fc := pending(d); fc != nil {
			attempt.FenceReports = s.fencedReports(req.Domain, fc)
		} else if dryRun {
			s.prospective(d, attempt)
		}
	}
	start := s.clock.Now()
	if err := failpoint.Eval(failpoint.PromoteValidating); err != nil {
		return nil, nil, 0, err
	}
	decision := validator.Evaluate(validator.Input{Domain: d, Attempt: attempt})
	took := s.clock.Now().Sub(start)
	rec := &pb.AttemptRecord{
		Request: req, Decision: decision,
		EpochBefore: d.Epoch, EpochAfter: d.Epoch, HolderBefore: d.Holder, HolderAfter: d.Holder,
		Lease: attempt.Lease, CandidateReport: attempt.CandidateReport, ReportAgeMs: attempt.ReportAgeMs,
		FenceReports: attempt.FenceReports, Fence: d.Fence,
	}
	if rec.Decision.Allowed { // what the entry would do: shown by dry runs
		rec.EpochAfter, rec.HolderAfter = d.Epoch+1, req.Candidate
	}
	return attempt, rec, took, nil
}

func (s *Service) commitAttempt(ctx context.Context, a *pb.PromotionAttempt) (*Outcome, error) {
	return s.attemptOutcome(s.propose(ctx, &pb.Command{Body: &pb.Command_PromotionAttempt{PromotionAttempt: a}}))
}

// attemptOutcome turns an attempt entry's apply result into the outcome.
func (s *Service) attemptOutcome(res *fsm.Result, err error) (*Outcome, error) {
	if err != nil {
		return nil, err
	}
	if res.Err != nil {
		return nil, res.Err
	}
	if err := failpoint.Eval(failpoint.PromoteAfterCommit); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIndeterminate, err) // committed, but the caller is not told
	}
	out := &Outcome{Record: res.Attempt, Committed: true, Duplicate: res.Duplicate}
	return out, denied(res.Attempt)
}

func leaseState(s LeaseStatus) pb.LeaseState {
	switch s {
	case LeaseHeld:
		return pb.LeaseState_LEASE_STATE_HELD
	case LeaseExpired:
		return pb.LeaseState_LEASE_STATE_EXPIRED
	case LeaseReleased:
		return pb.LeaseState_LEASE_STATE_RELEASED
	}
	return pb.LeaseState_LEASE_STATE_NONE
}

// must panics on a forbidden lifecycle transition: the code paths above only
// take allowed ones, so a failure is a programming error, not an input.
func must(err error) {
	if err != nil {
		panic(err)
	}
}

// IsDenied reports whether err is a promotion denial.
func IsDenied(err error) bool {
	var d *DeniedError
	return errors.As(err, &d)
}

// recordIntent commits the PromotionIntent of a request (idempotent).
// Crash safety (AU-2 [P6-F2]): before the attempt commits, nothing but
// this intent is in the log, and a new leader aborts it (abortUndecided).
func (s *Service) recordIntent(ctx context.Context, req *pb.PromotionRequest) error {
	res, err := s.propose(ctx, &pb.Command{Body: &pb.Command_PromotionIntent{PromotionIntent: &pb.PromotionIntent{
		Request: proto.Clone(req).(*pb.PromotionRequest)}}})
	if err != nil {
		return err
	}
	return res.Err
}

// LastKnownRequested is the last lifecycle state a PromotionIntent proves.
const LastKnownRequested = "PromotionRequested"

// abortUndecided records the abort of every attempt that was requested but
// never decided under an earlier leader (run after the barrier, before
// serving): replication.promotion.aborted_on_crash, through the log.
// Recovery decides nothing and infers no intent (AU-10 [P6-D2]). Its
// last_known_state is the last lifecycle state this node saw the attempt
// reach when it led it (undecided), else PromotionRequested: all the log
// proves of an attempt whose leader crashed.
func (s *Service) abortUndecided(ctx context.Context) error {
	pending := s.fsm.PendingIntents()
	s.undecided.keepOnly(pending)
	for _, p := range pending {
		if err := failpoint.Eval(failpoint.PromoteBeforeAbort); err != nil {
			return err
		}
		res, err := s.propose(ctx, &pb.Command{Body: &pb.Command_PromotionAbort{PromotionAbort: &pb.PromotionAbort{
			Domain: p.Domain, RequestId: p.RequestID, LastKnownState: s.undecided.lastKnown(p.Domain, p.RequestID)}}})
		if err != nil {
			return err
		}
		if res.Err != nil && !errors.Is(res.Err, fsm.ErrPrecondition) {
			return res.Err
		}
		if err := failpoint.Eval(failpoint.PromoteAfterAbort); err != nil {
			return err
		}
		s.undecided.forget(p.Domain, p.RequestID)
		s.logger.Warn("promotion aborted on crash", "domain", p.Domain, "request_id", p.RequestID,
			"candidate", p.Candidate, "requested_at_index", p.Index)
		if res.Err == nil {
			s.obs.CrashAborted(p.Domain, p.RequestID)
		}
	}
	return nil
}
