package fsm

import (
	"fmt"
	"slices"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/validator"
	"google.golang.org/protobuf/proto"
)

// applyPromotionAttempt re-validates an attempt against the state at this
// log index and records the decision with its explanation. The validator's
// expected-epoch and lease-observation checks make this a compare-and-set
// on the epoch: an attempt decided on an older epoch can never apply.
//
// The record is a pure function of (state, entry) (AU-9). A repeated request
// id returns the recorded outcome and changes nothing.
// A promotion is this one entry (AU-2 [P6-A2]): the epoch and the holder
// change together in its apply, or not at all.
func applyPromotionAttempt(f *FSM, e entry) *Result {
	a := e.cmd.GetPromotionAttempt()
	req := a.GetRequest()
	if req == nil {
		return failed(e.index, fmt.Errorf("%w: promotion attempt without a request", ErrInvalid))
	}
	if req.DryRun {
		return failed(e.index, fmt.Errorf("%w: a dry run is never logged", ErrInvalid))
	}
	if err := ValidateName("request id", req.RequestId); err != nil {
		return failed(e.index, err)
	}
	d, err := f.lookup(req.Domain)
	if err != nil {
		return failed(e.index, err)
	}
	if rec, ok := f.histories[d.Name].attempt(req.RequestId); ok {
		if !SameRequest(rec.Request, req) {
			return failed(e.index, fmt.Errorf("%w: request id %q was used for another request (candidate %q)",
				ErrConflict, req.RequestId, rec.GetRequest().GetCandidate()))
		}
		return &Result{Epoch: d.Epoch, Holder: d.Holder, Attempt: rec, Duplicate: true}
	}
	rec := &pb.AttemptRecord{
		Request:         req,
		Decision:        validator.Evaluate(validator.Input{Domain: d, Attempt: a}),
		LogIndex:        e.index,
		Term:            e.term,
		EpochBefore:     d.Epoch,
		HolderBefore:    d.Holder,
		Lease:           a.Lease,
		CandidateReport: a.CandidateReport,
		ReportAgeMs:     a.ReportAgeMs,
		StampedUnixMs:   e.cmd.StampedUnixMs,
		FenceReports:    a.FenceReports,
		Fence:           d.Fence,
	}
	rec = proto.Clone(rec).(*pb.AttemptRecord) // own every field: the entry is the caller's
	if rec.Decision.Allowed {
		grant(d, req.Candidate, e.index)
	} else {
		d.UpdatedIndex = e.index
	}
	rec.EpochAfter, rec.HolderAfter = d.Epoch, d.Holder
	f.store(d, rec)
	f.emitAttempt(e, d, rec, takePending(d, req.RequestId) != nil)
	return &Result{Epoch: d.Epoch, Holder: d.Holder, Attempt: proto.Clone(rec).(*pb.AttemptRecord)}
}

// SameRequest reports whether two requests under one request id ask for the
// same thing (candidate, expected epoch, waivers). A reused id with other
// parameters is a conflict, not a retry: answering it with the earlier
// outcome would let a caller believe its new request was decided.
func SameRequest(a, b *pb.PromotionRequest) bool {
	return a.GetCandidate() == b.GetCandidate() &&
		(a.ExpectedEpoch == nil) == (b.ExpectedEpoch == nil) && a.GetExpectedEpoch() == b.GetExpectedEpoch() &&
		slices.Equal(a.GetWaivers(), b.GetWaivers())
}

// emitAttempt records AeroDB's promotion events for one decided attempt, in
// lifecycle order, with AeroDB's field names.
// Every decided attempt is observable (AU-11 [P6-O1]).
func (f *FSM) emitAttempt(e entry, d *pb.Domain, rec *pb.AttemptRecord, announced bool) {
	req := rec.GetRequest()
	cand := req.GetCandidate()
	if !announced { // no PromotionIntent came first: the attempt is also the request
		f.emitRequested(e, d, req, rec.HolderBefore)
	}
	f.emit(e, EventPromotionValidationStarted, d, "requested_replica_id", cand, "request_id", req.GetRequestId())
	dec := rec.GetDecision()
	if !dec.GetAllowed() {
		f.emit(e, EventPromotionValidationFailed, d, "requested_replica_id", cand, "failed_invariant", dec.FailedInvariant,
			"failure_reason", dec.DenialReason, "request_id", req.GetRequestId())
		return
	}
	f.emit(e, EventPromotionValidationSucceeded, d, "requested_replica_id", cand, "request_id", req.GetRequestId())
	f.emit(e, EventPromotionTransitionStarted, d, "requested_replica_id", cand, "request_id", req.GetRequestId())
	f.emit(e, EventPromotionTransitionCompleted, d, "new_primary_id", rec.HolderAfter, "epoch", u(rec.EpochAfter),
		"request_id", req.GetRequestId())
}

// MaxPending bounds the undecided attempts of one domain.
const MaxPending = 64

func (f *FSM) emitRequested(e entry, d *pb.Domain, req *pb.PromotionRequest, currentPrimary string) {
	f.emit(e, EventPromotionRequested, d, "requested_replica_id", req.GetCandidate(), "current_primary_id", currentPrimary,
		"reason", req.GetReason(), "request_id", req.GetRequestId())
}

// applyPromotionIntent makes a received request durable before it is
// decided. It changes no authority. Idempotent: a request id already
// pending or already decided changes nothing.
func applyPromotionIntent(f *FSM, e entry) *Result {
	req := e.cmd.GetPromotionIntent().GetRequest()
	if req == nil {
		return failed(e.index, fmt.Errorf("%w: promotion intent without a request", ErrInvalid))
	}
	if err := ValidateName("request id", req.GetRequestId()); err != nil {
		return failed(e.index, err)
	}
	d, err := f.lookup(req.GetDomain())
	if err != nil {
		return failed(e.index, err)
	}
	if rec, ok := f.histories[d.Name].attempt(req.RequestId); ok {
		return &Result{Epoch: d.Epoch, Holder: d.Holder, Attempt: rec, Duplicate: true}
	}
	if pendingIndex(d, req.RequestId) >= 0 {
		return done(d)
	}
	if len(d.Pending) >= MaxPending {
		return failed(e.index, fmt.Errorf("%w: domain %q already has %d undecided promotion requests", ErrPrecondition, d.Name, len(d.Pending)))
	}
	d.Pending = append(d.Pending, &pb.PendingIntent{RequestId: req.RequestId, Candidate: req.GetCandidate(), Index: e.index})
	d.UpdatedIndex = e.index
	f.emitRequested(e, d, req, d.Holder)
	return done(d)
}

// applyPromotionAbort records that a requested attempt was never decided:
// its leader crashed or lost leadership before the attempt committed.
func applyPromotionAbort(f *FSM, e entry) *Result {
	c := e.cmd.GetPromotionAbort()
	d, err := f.lookup(c.GetDomain())
	if err != nil {
		return failed(e.index, err)
	}
	p := takePending(d, c.GetRequestId())
	if p == nil {
		return failed(e.index, fmt.Errorf("%w: no undecided request %q in domain %q", ErrPrecondition, c.GetRequestId(), d.Name))
	}
	d.UpdatedIndex = e.index
	f.emit(e, EventPromotionAbortedOnCrash, d, "last_known_state", c.GetLastKnownState(), "requested_replica_id", p.Candidate,
		"request_id", p.RequestId)
	return done(d)
}

func pendingIndex(d *pb.Domain, id string) int {
	return slices.IndexFunc(d.Pending, func(p *pb.PendingIntent) bool { return p.RequestId == id })
}

// takePending removes and returns the pending intent of a request id.
func takePending(d *pb.Domain, id string) *pb.PendingIntent {
	i := pendingIndex(d, id)
	if i < 0 {
		return nil
	}
	p := d.Pending[i]
	d.Pending = slices.Delete(d.Pending, i, i+1)
	return p
}

// PendingIntents lists every domain's undecided requests, sorted by domain
// then log index: what a new leader must abort after its barrier.
func (f *FSM) PendingIntents() []PendingIntent {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []PendingIntent
	for _, n := range f.sortedNames() {
		if _, ok := recField(f.recs[n].raw, 15); !ok { // Domain.pending: none
			continue
		}
		for _, p := range decodeDomain(f.recs[n].raw).Pending {
			out = append(out, PendingIntent{Domain: n, RequestID: p.RequestId, Candidate: p.Candidate, Index: p.Index})
		}
	}
	return out
}

// PendingIntent names one undecided request.
type PendingIntent struct {
	Domain, RequestID, Candidate string
	Index                        uint64
}
