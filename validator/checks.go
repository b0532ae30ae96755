package validator

import (
	"bytes"
	"fmt"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// Each check below reads only its Input and returns one *pb.Check with its
// observed values in a fixed key order. Getters are used throughout because
// they are nil-safe: absent policy, members, report, watermark or lease
// must deny with a reason, never panic (AU-7 [P6-F1]).

// checkRequestWellformed rejects requests the rest of the rules cannot be
// meaningfully evaluated against, including waivers without a justification
// (AU-13).
func checkRequestWellformed(in Input) *pb.Check {
	req := in.Attempt.GetRequest()
	// The domain's waiver mode and, for an operator's recorded deviation,
	// its reason: every explanation names whether waivers could apply.
	p := in.Domain.GetPolicy()
	c := newCheck(CheckRequestWellformed, "AU-13 [P6-F1]",
		kv("request_id", orNone(req.GetRequestId())),
		kv("domain", orNone(req.GetDomain())),
		kv("candidate", orNone(req.GetCandidate())),
		kv("kind", in.Domain.GetKind().String()),
		kv("waivers", joinOrNone(req.GetWaivers())),
		kv("waiver_mode", WaiverModeName(p)),
		kv("deviation", orNone(p.GetWaiverReason())),
	)
	if problem := requestProblem(in); problem != "" {
		return deny(c, ReasonInvalidRequest, problem)
	}
	return pass(c, fmt.Sprintf("Request %q to promote %q in domain %q is well-formed.",
		req.GetRequestId(), req.GetCandidate(), req.GetDomain()))
}

// requestProblem returns a sentence naming the first malformation, or "".
func requestProblem(in Input) string {
	req := in.Attempt.GetRequest()
	switch {
	case req == nil:
		return "The attempt carries no request."
	case req.GetRequestId() == "":
		return "The request has no request_id."
	case req.GetDomain() != in.Domain.GetName():
		return fmt.Sprintf("The request names domain %q but was applied to domain %q.", req.GetDomain(), in.Domain.GetName())
	case req.GetCandidate() == "":
		return "The request names no candidate."
	case in.Domain.GetKind() != pb.DomainKind_DOMAIN_KIND_AERODB:
		// Lock and release domains have their own validators; accepting them
		// here would apply database rules to something that is not a database.
		return fmt.Sprintf("Domain %q is of kind %s, not DOMAIN_KIND_AERODB.", in.Domain.GetName(), in.Domain.GetKind())
	}
	if problem := waiverProblem(req); problem != "" {
		return problem
	}
	if len(req.GetWaivers()) > 0 && in.Domain.GetPolicy().GetWaiverMode() == pb.WaiverMode_WAIVER_MODE_STRICT {
		return fmt.Sprintf("Domain %q is strict (Phase 6 readiness §4): no waiver relaxes P6-S1..S3, and waivers %s are refused; "+
			"only an operator's recorded deviation (waiver_mode permitted, with a reason) allows them.", in.Domain.GetName(), joinOrNone(req.GetWaivers()))
	}
	return ""
}

// waiverProblem checks that every waiver is known, unrepeated and justified.
func waiverProblem(req *pb.PromotionRequest) string {
	ws := req.GetWaivers()
	for i, w := range ws {
		if !IsKnownWaiver(w) {
			return fmt.Sprintf("Waiver %q is not one of the known waivers %v.", w, KnownWaivers())
		}
		for _, prev := range ws[:i] {
			if prev == w {
				return fmt.Sprintf("Waiver %q is repeated.", w)
			}
		}
	}
	if len(ws) > 0 && req.GetReason() == "" {
		return fmt.Sprintf("Waivers %s require a non-empty reason.", joinOrNone(ws))
	}
	return ""
}

// checkPromotionEnabled: with promotion disabled no promotion path exists
// (AU-14 [P5-I16]).
func checkPromotionEnabled(in Input) *pb.Check {
	disabled := in.Domain.GetPolicy().GetPromotionDisabled()
	c := newCheck(CheckPromotionEnabled, "AU-14 [P5-I16]",
		kv("promotion_disabled", boolStr(disabled)))
	if disabled {
		return deny(c, ReasonPromotionDisabled, fmt.Sprintf("Promotion is disabled for domain %q.", in.Domain.GetName()))
	}
	return pass(c, fmt.Sprintf("Promotion is enabled for domain %q.", in.Domain.GetName()))
}

// checkCandidateEligible: authority is only ever claimed by an explicitly
// registered, active member that is not already the holder ([P6-A3]).
func checkCandidateEligible(in Input) *pb.Check {
	cand := in.Attempt.GetRequest().GetCandidate()
	holder := in.Domain.GetHolder()
	m := findMember(in.Domain.GetMembers(), cand)
	report := in.Attempt.GetCandidateReport()
	c := newCheck(CheckCandidateEligible, "[P6-A3]",
		kv("candidate", orNone(cand)),
		kv("registered", boolStr(m != nil)),
		kv("holder", orNone(holder)),
		kv("member_state", present(m != nil, m.GetState().String(), "none")),
		kv("report_state", present(report != nil, report.GetState().String(), "none")),
	)
	switch {
	case m == nil:
		return deny(c, ReasonInvalidRequest, fmt.Sprintf("Candidate %q is not a registered member of domain %q.", cand, in.Domain.GetName()))
	case cand == holder && !in.Domain.GetReleased() && pendingFence(in.Domain) == nil:
		// With a fence pending the holder can acknowledge nothing more and
		// may be promoted again, through the same checks.
		return deny(c, ReasonInvalidRequest, fmt.Sprintf("Candidate %q already holds domain %q at epoch %d.", cand, in.Domain.GetName(), in.Domain.GetEpoch()))
	case m.GetState() != pb.MemberState_MEMBER_STATE_ACTIVE:
		return deny(c, ReasonReplicaNotActive, fmt.Sprintf("Candidate %q is in member state %s, not MEMBER_STATE_ACTIVE.", cand, m.GetState()))
	case report != nil && unusableReplica(report.GetState()):
		return deny(c, ReasonReplicaNotActive, fmt.Sprintf("Candidate %q reports replica state %s.", cand, report.GetState()))
	}
	return pass(c, fmt.Sprintf("Candidate %q is an active registered member and not the current holder %q.", cand, holder))
}

// unusableReplica: a diverged or rebuilding replica has no history that can
// continue the primary's (divergence is never healed silently), and a report
// that does not say what state the replica is in is missing metadata: fail
// closed (AU-7).
func unusableReplica(s pb.ReplicaState) bool {
	return s != pb.ReplicaState_REPLICA_STATE_STREAMING && s != pb.ReplicaState_REPLICA_STATE_CATCHING_UP
}

// findMember scans linearly rather than binary-searching: the list is small
// and a scan stays correct even if an upstream bug ever left it unsorted.
func findMember(members []*pb.Member, id string) *pb.Member {
	for _, m := range members {
		if m.GetId() == id {
			return m
		}
	}
	return nil
}

// checkExpectedEpoch is the request's compare-and-set on the fencing token
// (AU-1); absent means the caller did not ask for one.
func checkExpectedEpoch(in Input) *pb.Check {
	req := in.Attempt.GetRequest()
	has := req != nil && req.ExpectedEpoch != nil
	want, cur := req.GetExpectedEpoch(), in.Domain.GetEpoch()
	c := newCheck(CheckExpectedEpoch, "AU-1",
		kv("expected_epoch", present(has, u64(want), "none")),
		kv("current_epoch", u64(cur)),
	)
	switch {
	case !has:
		return pass(c, fmt.Sprintf("No expected epoch was given; the current epoch is %d.", cur))
	case want != cur && !skipEpochCAS:
		return deny(c, ReasonEpochStale, fmt.Sprintf("The request expects epoch %d but the domain is at epoch %d.", want, cur))
	}
	return pass(c, fmt.Sprintf("The expected epoch %d matches the current epoch.", cur))
}

// checkOldHolderInactive: the old holder must be gone by the log's account,
// never by belief. Only a recorded expiry for exactly this holder and epoch
// counts; anything else fails closed (AU-1 [P6-A1]).
func checkOldHolderInactive(in Input) *pb.Check {
	holder, epoch := in.Domain.GetHolder(), in.Domain.GetEpoch()
	lease := in.Attempt.GetLease()
	has := lease != nil
	c := newCheck(CheckOldHolderInactive, "AU-1 [P6-A1]",
		kv("holder", orNone(holder)),
		kv("epoch", u64(epoch)),
		kv("released", boolStr(in.Domain.GetReleased())),
		kv("lease_state", present(has, lease.GetState().String(), "none")),
		kv("lease_holder", present(has, orNone(lease.GetHolder()), "none")),
		kv("lease_epoch", present(has, u64(lease.GetEpoch()), "none")),
		kv("remaining_ms", present(has, u64(lease.GetRemainingMs()), "none")),
		kv("leader_term", present(has, u64(lease.GetLeaderTerm()), "none")),
	)
	switch {
	case holder == "":
		return pass(c, fmt.Sprintf("Domain %q has never had a holder.", in.Domain.GetName()))
	case in.Domain.GetReleased():
		return pass(c, fmt.Sprintf("Holder %q released authority at epoch %d.", holder, epoch))
	case !has:
		return deny(c, ReasonPrimaryStillActive, fmt.Sprintf("No lease observation was recorded for holder %q at epoch %d.", holder, epoch))
	case lease.GetHolder() != holder || lease.GetEpoch() != epoch:
		return deny(c, ReasonPrimaryStillActive, fmt.Sprintf("The lease observation is for holder %q at epoch %d, not holder %q at epoch %d.",
			lease.GetHolder(), lease.GetEpoch(), holder, epoch))
	case lease.GetState() != pb.LeaseState_LEASE_STATE_EXPIRED:
		return deny(c, ReasonPrimaryStillActive, fmt.Sprintf("Holder %q's lease at epoch %d is %s with %d ms remaining at leader term %d.",
			holder, epoch, lease.GetState(), lease.GetRemainingMs(), lease.GetLeaderTerm()))
	}
	return pass(c, fmt.Sprintf("Holder %q's lease at epoch %d had expired when observed at leader term %d.", holder, epoch, lease.GetLeaderTerm()))
}

// checkCandidateReport: promotion evidence must exist, come from the
// candidate, describe the current epoch and be fresh (AU-7 [P6-F1]).
func checkCandidateReport(in Input) *pb.Check {
	r := in.Attempt.GetCandidateReport()
	cand := in.Attempt.GetRequest().GetCandidate()
	cur := in.Domain.GetEpoch()
	age, maxAge := in.Attempt.GetReportAgeMs(), in.Domain.GetPolicy().GetReportMaxAgeMs()
	c := newCheck(CheckCandidateReport, "AU-7 [P6-F1]",
		kv("report", present(r != nil, "present", "absent")),
		kv("report_epoch", present(r != nil, u64(r.GetEpoch()), "none")),
		kv("current_epoch", u64(cur)),
		kv("report_age_ms", present(r != nil, u64(age), "none")),
		kv("max_age_ms", u64(maxAge)),
	)
	switch {
	case r == nil:
		return deny(c, ReasonMetadataMissing, fmt.Sprintf("The leader had no progress report from candidate %q.", cand))
	case r.GetMemberId() != cand:
		return deny(c, ReasonMetadataMissing, fmt.Sprintf("The recorded report is from member %q, not candidate %q.", r.GetMemberId(), cand))
	case r.GetEpoch() != cur:
		return deny(c, ReasonStaleReport, fmt.Sprintf("The candidate's report is for epoch %d but the domain is at epoch %d.", r.GetEpoch(), cur))
	case maxAge > 0 && age > maxAge:
		return deny(c, ReasonStaleReport, fmt.Sprintf("The candidate's report is %d ms old, older than the %d ms limit.", age, maxAge))
	}
	return pass(c, fmt.Sprintf("The candidate's report is for epoch %d and %d ms old (limit %d ms, 0 = none).", cur, age, maxAge))
}

// checkWatermarkKnown: an unknown or contradictory watermark denies; the
// WAL checks must never be skipped for lack of a position (AU-4 [P6-F1]).
func checkWatermarkKnown(in Input) *pb.Check {
	wm := in.Domain.GetWatermark()
	has := wm != nil
	c := newCheck(CheckWatermarkKnown, "AU-4 [P6-F1]",
		kv("watermark_epoch", present(has, u64(wm.GetEpoch()), "unknown")),
		kv("watermark_lsn", present(has, u64(wm.GetLsn()), "unknown")),
		kv("watermark_hash", present(has, hexOrNone(wm.GetHash()), "unknown")),
		kv("visible_commit_id", present(has, u64(wm.GetVisibleCommitId()), "unknown")),
	)
	switch {
	case !has:
		return deny(c, ReasonMetadataMissing, fmt.Sprintf("Domain %q has no committed watermark.", in.Domain.GetName()))
	case wm.GetEpoch() > in.Domain.GetEpoch():
		return deny(c, ReasonMetadataMissing, fmt.Sprintf("The watermark's epoch %d is ahead of the domain's epoch %d.", wm.GetEpoch(), in.Domain.GetEpoch()))
	}
	return pass(c, fmt.Sprintf("The watermark is known at epoch %d, lsn %d, visible commit id %d.", wm.GetEpoch(), wm.GetLsn(), wm.GetVisibleCommitId()))
}

// checkCandidateContainsWatermark: every acknowledged write is at or below
// the watermark, so a candidate that has not flushed it would lose
// acknowledged writes (AU-4 [P6-S1]).
func checkCandidateContainsWatermark(in Input) *pb.Check {
	r, wm := in.Attempt.GetCandidateReport(), in.Domain.GetWatermark()
	c := newCheck(CheckCandidateContainsWatermark, "AU-4 [P6-S1]",
		kv("flushed_lsn", present(r != nil, u64(r.GetFlushedLsn()), "none")),
		kv("watermark_lsn", present(wm != nil, u64(wm.GetLsn()), "unknown")),
	)
	switch {
	case r == nil || wm == nil:
		return deny(c, ReasonMetadataMissing, "The candidate's flushed position or the watermark is unknown.")
	case r.GetFlushedLsn() < wm.GetLsn():
		return deny(c, ReasonReplicaBehindWal, fmt.Sprintf("The candidate flushed lsn %d, below the watermark lsn %d.", r.GetFlushedLsn(), wm.GetLsn()))
	}
	return pass(c, fmt.Sprintf("The candidate flushed lsn %d, at or above the watermark lsn %d.", r.GetFlushedLsn(), wm.GetLsn()))
}

// checkHistoryPrefix compares chain hashes at the watermark's lsn: equal
// counters with different content are divergence, so counters alone never
// pass (AU-5 [P6-S2]).
func checkHistoryPrefix(in Input) *pb.Check {
	r, wm := in.Attempt.GetCandidateReport(), in.Domain.GetWatermark()
	c := newCheck(CheckHistoryPrefix, "AU-5 [P6-S2]",
		kv("watermark_lsn", present(wm != nil, u64(wm.GetLsn()), "unknown")),
		kv("watermark_hash", present(wm != nil, hexOrNone(wm.GetHash()), "unknown")),
		kv("report_watermark_lsn", present(r != nil, u64(r.GetWatermarkLsn()), "none")),
		kv("candidate_hash_at_watermark", present(r != nil, hexOrNone(r.GetHashAtWatermark()), "none")),
	)
	if reason, detail := historyProblem(r, wm); reason != "" {
		return deny(c, reason, detail)
	}
	if wm.GetLsn() == 0 {
		return pass(c, "The watermark is at lsn 0, so the required prefix is empty.")
	}
	return pass(c, fmt.Sprintf("The candidate's chain hash at lsn %d equals the watermark's.", wm.GetLsn()))
}

// historyProblem returns the reason and sentence for a failed prefix rule.
func historyProblem(r *pb.ProgressReport, wm *pb.Watermark) (reason, detail string) {
	switch {
	case r == nil || wm == nil:
		return ReasonMetadataMissing, "The candidate's history or the watermark is unknown."
	case wm.GetLsn() == 0:
		return "", ""
	case len(wm.GetHash()) == 0:
		// Without the watermark's hash only counters could be compared,
		// which is exactly the check AU-5 forbids relying on.
		return ReasonMetadataMissing, fmt.Sprintf("The watermark at lsn %d carries no chain hash.", wm.GetLsn())
	case r.GetWatermarkLsn() != wm.GetLsn():
		// The replica's hash belongs to another position; comparing it would
		// prove nothing either way.
		return ReasonStaleReport, fmt.Sprintf("The candidate's hash is for lsn %d, not the watermark lsn %d.", r.GetWatermarkLsn(), wm.GetLsn())
	case !bytes.Equal(r.GetHashAtWatermark(), wm.GetHash()):
		return ReasonHistoryDivergence, fmt.Sprintf("The candidate's chain hash at lsn %d is %s, not the watermark's %s.",
			wm.GetLsn(), hexOrNone(r.GetHashAtWatermark()), hexOrNone(wm.GetHash()))
	case r.GetFlushedLsn() == wm.GetLsn() && !bytes.Equal(r.GetFlushedHash(), wm.GetHash()):
		return ReasonHistoryDivergence, fmt.Sprintf("The candidate's flushed hash at lsn %d is %s, not the watermark's %s.",
			wm.GetLsn(), hexOrNone(r.GetFlushedHash()), hexOrNone(wm.GetHash()))
	}
	return "", ""
}

// checkMvccVisibility: readers must never see a commit disappear, so the
// candidate must have applied every commit the holder made visible and be
// able to serve reads consistently (AU-6 [P6-S3]).
func checkMvccVisibility(in Input) *pb.Check {
	r, wm := in.Attempt.GetCandidateReport(), in.Domain.GetWatermark()
	c := newCheck(CheckMvccVisibility, "AU-6 [P6-S3]",
		kv("applied_commit_id", present(r != nil, u64(r.GetAppliedCommitId()), "none")),
		kv("visible_commit_id", present(wm != nil, u64(wm.GetVisibleCommitId()), "unknown")),
		kv("read_safe", present(r != nil, boolStr(r.GetReadSafe()), "none")),
	)
	switch {
	case r == nil || wm == nil:
		return deny(c, ReasonMetadataMissing, "The candidate's applied commit id or the visible commit id is unknown.")
	case r.GetAppliedCommitId() < wm.GetVisibleCommitId():
		return deny(c, ReasonMvccVisibilityViolation, fmt.Sprintf("The candidate applied commit id %d, below the visible commit id %d.",
			r.GetAppliedCommitId(), wm.GetVisibleCommitId()))
	case !r.GetReadSafe():
		return deny(c, ReasonMvccVisibilityViolation, fmt.Sprintf("The candidate applied commit id %d but is not read-safe.", r.GetAppliedCommitId()))
	}
	return pass(c, fmt.Sprintf("The candidate applied commit id %d, at or above the visible commit id %d, and is read-safe.",
		r.GetAppliedCommitId(), wm.GetVisibleCommitId()))
}
