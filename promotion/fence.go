package promotion

import (
	"context"
	"fmt"
	"slices"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/failpoint"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/validator"
)

// Replica-quorum promotions (docs/DURABILITY.md): before the deciding
// entry, the leader commits a PreparePromotion (the fence), tells the
// replicas through their ReportProgress responses, and waits — without
// polling — until enough of them have reported final positions fenced at
// the new epoch, and the candidate its chain hashes at their positions.
// The attempt entry then carries those reports and the validator decides.

// DefaultFenceWait bounds how long a replica-quorum promotion waits for
// fenced reports after its prepare committed; the decision is then taken on
// what arrived (too few reports deny with QuorumNotFenced and the numbers).
// Replicas report at once when they see the fence, so this is a bound for
// the absent, not a pause for the present.
const DefaultFenceWait = 3 * time.Second

// fenceDecisionReserve is kept from the caller's deadline for committing
// the decision after the wait: a wait that used the whole deadline would
// leave the caller with an unknown outcome (and a retry that waits again).
const fenceDecisionReserve = time.Second

// prepareFence commits the fence for req's domain at epoch + 1 unless one
// is pending, then waits for the reports the decision needs (or the bound,
// or ctx). It returns the domain as it stands after the prepare.
func (s *Service) prepareFence(ctx context.Context, req *pb.PromotionRequest, d *pb.Domain) error {
	if pending(d) == nil {
		res, err := s.propose(ctx, &pb.Command{Body: &pb.Command_PreparePromotion{PreparePromotion: &pb.PreparePromotion{
			RequestId: req.GetRequestId(), Domain: d.GetName(), Candidate: req.GetCandidate(), ExpectedEpoch: d.GetEpoch()}}})
		if err != nil {
			return err
		}
		if res.Err != nil {
			return res.Err
		}
	}
	if err := failpoint.Eval(failpoint.PromoteAfterPrepare); err != nil {
		return err
	}
	d, ok := s.fsm.Domain(req.GetDomain())
	if !ok {
		return fmt.Errorf("%w: domain %q", fsm.ErrNotFound, req.GetDomain())
	}
	fc := pending(d)
	if fc == nil {
		return nil // the epoch moved meanwhile: the decision denies on it
	}
	s.logger.Info("replicas fenced for promotion", "domain", d.GetName(), "fence_epoch", fc.GetEpoch(),
		"sync_set", fc.GetSyncSet(), "needed", validator.FenceQuorum(fc), "request_id", req.GetRequestId())
	wait := s.fenceWait
	if wait <= 0 {
		wait = DefaultFenceWait
	}
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, max(time.Until(dl)-fenceDecisionReserve, 0))
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		changed := s.reports.changes()
		if s.fenceComplete(d, fc, req.GetCandidate()) {
			return nil
		}
		select {
		case <-changed:
		case <-timer.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// wouldAllowProspectively is the dry run of req (no fence yet): the checks
// on the replicas' current positions as if final.
func (s *Service) wouldAllowProspectively(req *pb.PromotionRequest) bool {
	_, rec, _, err := s.evaluate(req, true)
	return err == nil && rec.GetDecision().GetAllowed()
}

// pending is the domain's fence if it is for the next epoch.
func pending(d *pb.Domain) *pb.Fence {
	if fc := d.GetFence(); fc != nil && fc.GetEpoch() == d.GetEpoch()+1 {
		return fc
	}
	return nil
}

// fenceComplete: N - K + 1 synchronous replicas reported fenced, the
// candidate reported fenced, and its chain covers every fenced position of
// its own last epoch (what the validator will compare).
func (s *Service) fenceComplete(d *pb.Domain, fc *pb.Fence, candidate string) bool {
	reps := s.fencedReports(d.GetName(), fc)
	var cand *pb.ProgressReport
	inSet := 0
	for _, r := range reps {
		if slices.Contains(fc.GetSyncSet(), r.GetMemberId()) {
			inSet++
		}
		if r.GetMemberId() == candidate {
			cand = r
		}
	}
	if inSet < validator.FenceQuorum(fc) || cand == nil {
		return false
	}
	for _, r := range reps {
		if !slices.Contains(fc.GetSyncSet(), r.GetMemberId()) {
			continue // the validator compares the synchronous set only (and the candidate)
		}
		if r.GetFlushedEpoch() == cand.GetFlushedEpoch() && r.GetFlushedLsn() != cand.GetFlushedLsn() && r.GetFlushedLsn() > 0 &&
			!slices.ContainsFunc(cand.GetChain(), func(p *pb.ChainPoint) bool { return p.GetLsn() == r.GetFlushedLsn() }) {
			return false
		}
	}
	return true
}

// fencedReports returns the leader's latest reports for domain marked
// fenced at fc's epoch, sorted by member id (the order the entry records).
func (s *Service) fencedReports(domain string, fc *pb.Fence) []*pb.ProgressReport {
	var out []*pb.ProgressReport
	for _, r := range s.reports.all(domain) {
		if r.GetFencedEpoch() == fc.GetEpoch() {
			out = append(out, r)
		}
	}
	return out
}

// FenceFor is what a ReportProgress response tells a replica of domain: the
// pending fence (nil when none) and the lsns whose chain hashes the next
// report should carry (the flushed lsns of the fenced reports so far).
func (s *Service) FenceFor(domain string) (*pb.Fence, []uint64) {
	fc := s.fsm.PendingFence(domain)
	if fc == nil {
		return nil, nil
	}
	var lsns []uint64
	for _, r := range s.fencedReports(domain, fc) {
		if r.GetFlushedLsn() > 0 {
			lsns = append(lsns, r.GetFlushedLsn())
		}
	}
	slices.Sort(lsns)
	return fc, slices.Compact(lsns)
}

// prospective is what a dry run of a replica-quorum promotion shows before
// anything is fenced: the fence a prepare would record, and the replicas'
// current positions as if they were their final ones — fresh reports only
// (received within the policy's report_max_age_ms): a replica that stopped
// reporting is not evidence.
func (s *Service) prospective(d *pb.Domain, attempt *pb.PromotionAttempt) {
	if pending(d) != nil {
		return
	}
	d.Fence = &pb.Fence{Epoch: d.GetEpoch() + 1, RequestId: attempt.GetRequest().GetRequestId(),
		Candidate: attempt.GetRequest().GetCandidate(), SyncSet: fsm.SyncSet(d), QuorumAcks: d.GetPolicy().GetMinSyncReplicas()}
	attempt.FenceReports = nil
	for _, r := range s.reports.fresh(d.GetName(), s.clock.Now(), ms(d.GetPolicy().GetReportMaxAgeMs())) {
		r.FencedEpoch = d.Fence.Epoch
		attempt.FenceReports = append(attempt.FenceReports, r)
	}
}
