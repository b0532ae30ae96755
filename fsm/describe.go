package fsm

import (
	"encoding/hex"
	"fmt"
	"strings"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/validator"
)

// DescribeDomain renders a domain as stable text: fixed field order, members
// sorted, no pointers or map order. Tests, logs and the CLI share it.
func DescribeDomain(d *pb.Domain) string {
	var b strings.Builder
	fmt.Fprintf(&b, "domain %s kind=%s epoch=%d holder=%s released=%t\n",
		d.Name, kindName(d.Kind), d.Epoch, orNone(d.Holder), d.Released)
	p := d.GetPolicy()
	fmt.Fprintf(&b, "  policy mode=%s lease_ttl_ms=%d promotion_disabled=%t report_max_age_ms=%d min_sync_replicas=%d\n",
		strings.TrimPrefix(p.GetMode().String(), "PROMOTION_MODE_"), p.GetLeaseTtlMs(), p.GetPromotionDisabled(),
		p.GetReportMaxAgeMs(), p.GetMinSyncReplicas())
	if ReplicaQuorum(p) {
		fmt.Fprintf(&b, "  durability replica-quorum quorum_acks=%d watermark_interval_ms=%d\n", p.GetMinSyncReplicas(), p.GetWatermarkIntervalMs())
	}
	if d.Kind == pb.DomainKind_DOMAIN_KIND_AERODB {
		// The waiver mode; a permitted one is a recorded deviation from
		// Phase 6 readiness §4, named with its reason.
		fmt.Fprintf(&b, "  waivers %s", validator.WaiverModeName(p))
		if r := p.GetWaiverReason(); r != "" {
			fmt.Fprintf(&b, " deviation=%q", r)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "  watermark %s\n", DescribeWatermark(d.Watermark))
	if fc := d.GetFence(); fc != nil {
		fmt.Fprintf(&b, "  fence epoch=%d candidate=%s sync_set=%s quorum_acks=%d needed=%d request_id=%s index=%d\n",
			fc.Epoch, orNone(fc.Candidate), orNone(strings.Join(fc.SyncSet, ",")), fc.QuorumAcks, validator.FenceQuorum(fc),
			fc.RequestId, fc.Index)
	}
	for _, m := range d.Members {
		fmt.Fprintf(&b, "  member %s state=%s priority=%d registered_epoch=%d\n",
			m.Id, strings.TrimPrefix(m.State.String(), "MEMBER_STATE_"), m.Priority, m.RegisteredEpoch)
	}
	if w := d.Work; w != nil {
		fmt.Fprintf(&b, "  work status=%s epoch=%d id=%s\n", strings.TrimPrefix(w.Status.String(), "LOCK_STATUS_"), w.Epoch, orNone(w.WorkId))
	}
	if dep := d.GetDeployment(); dep != nil {
		b.WriteString(DescribeDeployment(dep))
	}
	if rs := d.GetRelease(); rs != nil {
		fmt.Fprintf(&b, "  release phase=%s stable=%s canary=%s step=%d weight=%d known_good=%s\n", validator.PhaseName(rs.Phase),
			orNone(rs.Stable), orNone(rs.Canary), rs.Step, rs.Weight, orNone(strings.Join(rs.KnownGood, ",")))
		for _, dec := range rs.Decisions {
			verdict := "allowed"
			if !dec.GetDecision().GetAllowed() {
				verdict = "denied " + dec.GetDecision().GetDenialReason()
			}
			fmt.Fprintf(&b, "    %d %s %s epoch %d->%d\n", dec.Index,
				validator.ActionName(dec.Action), verdict, dec.EpochBefore, dec.EpochAfter)
		}
	}
	fmt.Fprintf(&b, "  attempts allowed=%d denied=%d\n", d.AllowedCount, d.DeniedCount)
	return b.String()
}

// DescribeWatermark renders a watermark, or "unknown".
func DescribeWatermark(w *pb.Watermark) string {
	if w == nil {
		return "unknown"
	}
	return fmt.Sprintf("epoch=%d lsn=%d hash=%s visible_commit_id=%d", w.Epoch, w.Lsn, hex.EncodeToString(w.Hash), w.VisibleCommitId)
}

// DescribeAttempt renders an attempt record (the explanation) as text.
func DescribeAttempt(r *pb.AttemptRecord) string {
	var b strings.Builder
	q := r.GetRequest()
	outcome := "DENIED " + r.GetDecision().GetDenialReason()
	if r.GetDecision().GetAllowed() {
		outcome = "ALLOWED"
	}
	where := fmt.Sprintf("index=%d term=%d", r.LogIndex, r.Term)
	if r.LogIndex == 0 {
		where = "not committed (dry run)" // nothing is in the log
	}
	fmt.Fprintf(&b, "attempt %s domain=%s candidate=%s %s: %s\n",
		q.GetRequestId(), q.GetDomain(), q.GetCandidate(), where, outcome)
	fmt.Fprintf(&b, "  epoch %d -> %d, holder %s -> %s\n", r.EpochBefore, r.EpochAfter, orNone(r.HolderBefore), orNone(r.HolderAfter))
	expected := "none"
	if q.ExpectedEpoch != nil {
		expected = fmt.Sprint(q.GetExpectedEpoch())
	}
	fmt.Fprintf(&b, "  request expected_epoch=%s reason=%q waivers=%s initiated_by=%s\n",
		expected, q.GetReason(), orNone(strings.Join(q.GetWaivers(), ",")),
		strings.TrimPrefix(q.GetInitiatedBy().String(), "INITIATOR_"))
	for _, f := range r.GetFenceReports() {
		fmt.Fprintf(&b, "  fence_report %s\n", DescribeFencedReport(f))
	}
	b.WriteString(validator.Describe(r.GetDecision()))
	return b.String()
}

// DescribeFencedReport renders a replica's fenced final position.
func DescribeFencedReport(f *pb.ProgressReport) string {
	chain := make([]string, len(f.GetChain()))
	for i, c := range f.GetChain() {
		chain[i] = fmt.Sprintf("%d@%s", c.GetLsn(), hexOrNone(c.GetHash()))
	}
	return fmt.Sprintf("member=%s fenced_epoch=%d flushed=%d/%d@%s chain=%s", f.GetMemberId(), f.GetFencedEpoch(),
		f.GetFlushedEpoch(), f.GetFlushedLsn(), hexOrNone(f.GetFlushedHash()), orNone(strings.Join(chain, ",")))
}

func hexOrNone(b []byte) string {
	if len(b) == 0 {
		return "none"
	}
	return hex.EncodeToString(b)
}

func kindName(k pb.DomainKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "DOMAIN_KIND_"))
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func modeName(m pb.PromotionMode) string {
	return strings.ToLower(strings.TrimPrefix(m.String(), "PROMOTION_MODE_"))
}

func memberStateName(s pb.MemberState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "MEMBER_STATE_"))
}

// DescribeDeployment renders a deploy lock's deployment and its transitions
// (free text quoted).
func DescribeDeployment(dep *pb.Deployment) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  deployment %s status=%s attempt=%d holder=%s epoch=%d group=%s role=%s failovers=%d lost=%t checks=%s reason=%q\n",
		dep.DeployId, statusWord(dep.Status), dep.Attempt, dep.Holder, dep.Epoch, dep.RunnerGroup, dep.Role,
		dep.Failovers, dep.LostUnixMs != 0, orNone(strings.Join(dep.FailedChecks, ",")), dep.Reason)
	for _, tr := range dep.Transitions {
		fmt.Fprintf(&b, "    %d %s %s->%s by %s@%d (%s)\n", tr.Index,
			strings.ToLower(strings.TrimPrefix(tr.Action.String(), "DEPLOY_ACTION_")),
			statusWord(tr.From), statusWord(tr.To), tr.Holder, tr.Epoch, tr.RunnerGroup)
	}
	return b.String()
}

// DescribeReleaseDecision renders one release decision with every check
// (the explanation), byte-identical on every server.
func DescribeReleaseDecision(d *pb.ReleaseDecision) string {
	var b strings.Builder
	fmt.Fprintf(&b, "release %s at index %d: phase %s -> %s, stable=%s canary=%s step=%d weight=%d, epoch %d -> %d, holder %s, reason %q\n",
		validator.ActionName(d.GetAction()), d.GetIndex(), validator.PhaseName(d.GetFromPhase()),
		validator.PhaseName(d.GetToPhase()), orNone(d.GetStable()), orNone(d.GetCanary()), d.GetStep(), d.GetWeight(), d.GetEpochBefore(),
		d.GetEpochAfter(), d.GetHolder(), d.GetReason())
	for _, ev := range d.GetEvidence() {
		fmt.Fprintf(&b, "  evidence %s %s key_id=%s\n", ev.GetType(), ev.GetDigest(), ev.GetKeyId())
	}
	if d.GetAbortedCanary() != "" {
		fmt.Fprintf(&b, "  aborted canary %s\n", d.GetAbortedCanary())
	}
	if d.GetAbortVerdict() != "" {
		fmt.Fprintf(&b, "  abort verdict %s at index %d: %q\n", d.GetAbortVerdict(), d.GetAbortVerdictIndex(), d.GetAbortVerdictReason())
	}
	b.WriteString(validator.Describe(d.GetDecision()))
	return b.String()
}
