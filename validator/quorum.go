package validator

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// Replica-quorum durability (docs/DURABILITY.md). The holder acknowledges a
// write once it and K synchronous replicas of its epoch flushed it; the
// watermark lags. A promotion is therefore decided on the replicas, not on
// the watermark alone: a committed PreparePromotion fenced the synchronous
// set S (N members) at epoch + 1 — a fenced replica accepts no WAL of a
// lower epoch, so the old holder can acknowledge nothing more — and the
// attempt entry carries the fenced replicas' final positions. With
// N - K + 1 of them, every set of K acknowledgers has a member among them,
// so the most advanced fenced position holds every acknowledged write; the
// candidate must hold it (AU-4 for replica-quorum), on one history (AU-5).

// Denial reasons of the replica-quorum checks.
const (
	// ReasonQuorumNotFenced: no prepared fence, or too few fenced reports.
	ReasonQuorumNotFenced = "QuorumNotFenced"
	// ReasonCandidateBehindQuorum: a fenced replica flushed more than the
	// candidate.
	ReasonCandidateBehindQuorum = "CandidateBehindQuorum"
)

// Check names of the replica-quorum checks, run after the others.
const (
	CheckQuorumFenced          = "quorum_fenced"
	CheckCandidateMostAdvanced = "candidate_most_advanced"
	CheckFenceChainsAgree      = "fence_chains_agree"
)

// quorumOrder runs after order for replica-quorum domains.
var quorumOrder = [...]checkFunc{
	checkQuorumFenced,
	checkCandidateMostAdvanced,
	checkFenceChainsAgree,
}

func replicaQuorum(d *pb.Domain) bool {
	return d.GetPolicy().GetDurability() == pb.Durability_DURABILITY_REPLICA_QUORUM
}

// FenceQuorum is how many of a fence's synchronous replicas must report
// fenced positions: N - K + 1 (at least 1), so that every set of K
// acknowledgers has a member among them; more than N when K or N is 0, so
// nothing satisfies it (fail closed).
func FenceQuorum(fc *pb.Fence) int {
	n, k := len(fc.GetSyncSet()), int(fc.GetQuorumAcks())
	if k == 0 || n == 0 {
		return n + 1
	}
	if fenceQuorumShort {
		return max(n-k, 1)
	}
	return max(n-k+1, 1)
}

// pendingFence returns the domain's fence if it is for epoch + 1.
func pendingFence(d *pb.Domain) *pb.Fence {
	if fc := d.GetFence(); fc != nil && fc.GetEpoch() == d.GetEpoch()+1 {
		return fc
	}
	return nil
}

// fencedReports returns the attempt's reports that count as fenced at fc:
// marked fenced at fc's epoch, at most one per member (the first), in the
// entry's order. members limits them to the synchronous set when non-nil.
func fencedReports(a *pb.PromotionAttempt, fc *pb.Fence, members []string) []*pb.ProgressReport {
	var out []*pb.ProgressReport
	seen := map[string]bool{}
	for _, r := range a.GetFenceReports() {
		id := r.GetMemberId()
		if fc == nil || r.GetFencedEpoch() != fc.GetEpoch() || seen[id] {
			continue
		}
		if members != nil && !slices.Contains(members, id) {
			continue
		}
		seen[id] = true
		out = append(out, r)
	}
	return out
}

func memberIDs(rs []*pb.ProgressReport) []string {
	ids := make([]string, len(rs))
	for i, r := range rs {
		ids[i] = r.GetMemberId()
	}
	return ids
}

// checkQuorumFenced: N - K + 1 synchronous replicas reported final
// positions fenced at the prepared epoch (AU-4 [P6-S1], missing evidence
// otherwise: never waived).
func checkQuorumFenced(in Input) *pb.Check {
	fc := pendingFence(in.Domain)
	fenced := fencedReports(in.Attempt, fc, fc.GetSyncSet())
	need := FenceQuorum(fc)
	c := newCheck(CheckQuorumFenced, "AU-4 [P6-S1]",
		kv("fence_epoch", present(fc != nil, u64(fc.GetEpoch()), "none")),
		kv("sync_set", present(fc != nil, joinOrNone(fc.GetSyncSet()), "none")),
		kv("quorum_acks", present(fc != nil, u64(uint64(fc.GetQuorumAcks())), "none")),
		kv("fenced", joinOrNone(memberIDs(fenced))),
		kv("needed", present(fc != nil, u64(uint64(need)), "none")),
	)
	switch {
	case fc == nil:
		return deny(c, ReasonQuorumNotFenced, fmt.Sprintf("No prepared fence at epoch %d: the synchronous replicas were not fenced (PreparePromotion).", in.Domain.GetEpoch()+1))
	case len(fenced) < need:
		return deny(c, ReasonQuorumNotFenced, fmt.Sprintf("%d of the %d synchronous replicas reported fenced at epoch %d; N - K + 1 = %d are needed (K = %d).",
			len(fenced), len(fc.GetSyncSet()), fc.GetEpoch(), need, fc.GetQuorumAcks()))
	}
	return pass(c, fmt.Sprintf("%d of the %d synchronous replicas reported fenced at epoch %d (N - K + 1 = %d needed, K = %d): every write acknowledged by K replicas is on one of them.",
		len(fenced), len(fc.GetSyncSet()), fc.GetEpoch(), need, fc.GetQuorumAcks()))
}

// ahead reports whether position a is beyond b: by the epoch of the last
// flushed record, then lsn (a record of a later epoch supersedes any suffix
// an earlier holder left unacknowledged).
func ahead(a, b *pb.ProgressReport) bool {
	if a.GetFlushedEpoch() != b.GetFlushedEpoch() {
		return a.GetFlushedEpoch() > b.GetFlushedEpoch()
	}
	return a.GetFlushedLsn() > b.GetFlushedLsn()
}

func position(r *pb.ProgressReport) string {
	return fmt.Sprintf("%s@%d/%d", r.GetMemberId(), r.GetFlushedEpoch(), r.GetFlushedLsn())
}

// mostAdvanced returns the first report no other report is ahead of.
func mostAdvanced(rs []*pb.ProgressReport) *pb.ProgressReport {
	var best *pb.ProgressReport
	for _, r := range rs {
		if best == nil || ahead(r, best) {
			best = r
		}
	}
	return best
}

// comparedMembers are the members whose fenced positions the candidate is
// compared with: the synchronous set and the candidate itself. The old
// holder's own report (when it is not the candidate) is left out: what it
// holds beyond the synchronous replicas was never flushed by K of them, so
// never acknowledged, and it must not block every promotion.
func comparedMembers(in Input, fc *pb.Fence) []string {
	return append(slices.Clone(fc.GetSyncSet()), in.Attempt.GetRequest().GetCandidate())
}

// candidateFenced returns the candidate's own fenced report (the candidate
// may be outside the synchronous set: a released or former holder).
func candidateFenced(in Input, fc *pb.Fence) *pb.ProgressReport {
	cand := in.Attempt.GetRequest().GetCandidate()
	for _, r := range fencedReports(in.Attempt, fc, nil) {
		if r.GetMemberId() == cand {
			return r
		}
	}
	return nil
}

// checkCandidateMostAdvanced: the candidate reported fenced too, and no
// fenced replica flushed beyond it (AU-4 [P6-S1]).
func checkCandidateMostAdvanced(in Input) *pb.Check {
	fc := pendingFence(in.Domain)
	all := fencedReports(in.Attempt, fc, comparedMembers(in, fc))
	cand := candidateFenced(in, fc)
	best := mostAdvanced(all)
	c := newCheck(CheckCandidateMostAdvanced, "AU-4 [P6-S1]",
		kv("candidate_position", present(cand != nil, position(cand), "none")),
		kv("most_advanced", present(best != nil, position(best), "none")),
		kv("positions", joinOrNone(positions(all))),
	)
	switch {
	case fc == nil || cand == nil:
		return deny(c, ReasonMetadataMissing, fmt.Sprintf("Candidate %q has no report fenced at epoch %d.", in.Attempt.GetRequest().GetCandidate(), in.Domain.GetEpoch()+1))
	case ahead(best, cand):
		return deny(c, ReasonCandidateBehindQuorum, fmt.Sprintf("Fenced replica %q flushed epoch %d lsn %d, beyond the candidate's epoch %d lsn %d.",
			best.GetMemberId(), best.GetFlushedEpoch(), best.GetFlushedLsn(), cand.GetFlushedEpoch(), cand.GetFlushedLsn()))
	}
	return pass(c, fmt.Sprintf("The candidate flushed epoch %d lsn %d; no fenced replica flushed beyond it.", cand.GetFlushedEpoch(), cand.GetFlushedLsn()))
}

func positions(rs []*pb.ProgressReport) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = position(r)
	}
	return out
}

// checkFenceChainsAgree: for every other fenced report whose last record
// is of the candidate's last epoch (one writer wrote them all, so they must
// be prefixes of one another), the candidate's chain hash at that replica's
// flushed lsn equals the replica's flushed hash — one history, compared by
// chain hashes, never by counters alone (AU-5 [P6-S2]).
func checkFenceChainsAgree(in Input) *pb.Check {
	fc := pendingFence(in.Domain)
	cand := candidateFenced(in, fc)
	var agreed, missing, diverged, superseded []string
	for _, r := range fencedReports(in.Attempt, fc, comparedMembers(in, fc)) {
		if cand == nil || r.GetMemberId() == cand.GetMemberId() || r.GetFlushedLsn() == 0 {
			continue
		}
		h, ok := chainAt(cand, r.GetFlushedLsn())
		switch {
		case r.GetFlushedEpoch() < cand.GetFlushedEpoch():
			// Its last record is of an earlier epoch: every write
			// acknowledged in that epoch is in the history the candidate's
			// later epoch continued; what it holds beyond is an
			// unacknowledged suffix the later epoch superseded.
			superseded = append(superseded, position(r))
		case !ok:
			missing = append(missing, position(r))
		case !bytes.Equal(h, r.GetFlushedHash()):
			diverged = append(diverged, position(r))
		default:
			agreed = append(agreed, position(r))
		}
	}
	c := newCheck(CheckFenceChainsAgree, "AU-5 [P6-S2]",
		kv("agreed", joinOrNone(agreed)),
		kv("unverified", joinOrNone(missing)),
		kv("diverged", joinOrNone(diverged)),
		kv("superseded", joinOrNone(superseded)),
	)
	switch {
	case cand == nil:
		return deny(c, ReasonMetadataMissing, "The candidate has no fenced report to compare chains with.")
	case len(diverged) > 0:
		return deny(c, ReasonHistoryDivergence, fmt.Sprintf("The candidate's chain hash differs from fenced replicas at %s.", strings.Join(diverged, ", ")))
	case len(missing) > 0 && fc.GetIndex() == 0:
		// A dry run's prospective fence (never committed: index 0): the
		// replicas are asked for chain hashes only once fenced.
		return pass(c, fmt.Sprintf("Dry run: the candidate's chain is compared with %s once the replicas are fenced.", strings.Join(missing, ", ")))
	case len(missing) > 0:
		return deny(c, ReasonMetadataMissing, fmt.Sprintf("The candidate reported no chain hash at the positions of %s.", strings.Join(missing, ", ")))
	}
	return pass(c, fmt.Sprintf("The candidate's chain agrees with every fenced replica's position (%d compared).", len(agreed)))
}

// chainAt returns the candidate's chain hash at lsn: its flushed hash at
// its own flushed lsn, or a chain point it reported.
func chainAt(r *pb.ProgressReport, lsn uint64) ([]byte, bool) {
	if r.GetFlushedLsn() == lsn {
		return r.GetFlushedHash(), true
	}
	for _, p := range r.GetChain() {
		if p.GetLsn() == lsn {
			return p.GetHash(), true
		}
	}
	return nil, false
}
