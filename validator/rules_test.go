package validator

import (
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// invariantOf spells out each check's invariant independently of the
// implementation, so a renamed invariant is caught here.
var invariantOf = map[string]string{
	CheckRequestWellformed:          "AU-13 [P6-F1]",
	CheckPromotionEnabled:           "AU-14 [P5-I16]",
	CheckCandidateEligible:          "[P6-A3]",
	CheckExpectedEpoch:              "AU-1",
	CheckOldHolderInactive:          "AU-1 [P6-A1]",
	CheckCandidateReport:            "AU-7 [P6-F1]",
	CheckWatermarkKnown:             "AU-4 [P6-F1]",
	CheckCandidateContainsWatermark: "AU-4 [P6-S1]",
	CheckHistoryPrefix:              "AU-5 [P6-S2]",
	CheckMvccVisibility:             "AU-6 [P6-S3]",
}

type ruleCase struct {
	name   string
	mutate func(*Input)
	// The check under test and what it must conclude.
	check      string
	satisfied  bool
	reason     string      // the check's Reason ("" when satisfied)
	observed   [][2]string // key/value pairs that must appear in the check
	denial     string      // the decision's DenialReason ("" = allowed)
	denyByName string      // the check whose invariant the decision must name (defaults to check)
}

func obs(kvs ...string) [][2]string {
	out := make([][2]string, 0, len(kvs)/2)
	for i := 0; i+1 < len(kvs); i += 2 {
		out = append(out, [2]string{kvs[i], kvs[i+1]})
	}
	return out
}

func noop(*Input) {}

func withWaiverMode(m pb.WaiverMode, reason string) func(*Input) {
	return func(in *Input) { in.Domain.Policy.WaiverMode, in.Domain.Policy.WaiverReason = m, reason }
}

// ruleCases has, for every check, at least one allow and one deny case, and
// covers every denial reason as the decision's reason.
var ruleCases = []ruleCase{
	// 1. request_wellformed
	{name: "wellformed/allow", mutate: noop, check: CheckRequestWellformed, satisfied: true,
		observed: obs("request_id", "req-1", "domain", "db1", "candidate", "r2", "kind", "DOMAIN_KIND_AERODB", "waivers", "none",
			"waiver_mode", "legacy", "deviation", "none")},
	// Strict mode (issue 17, Phase 6 readiness §4): no waiver, however
	// justified; a request without waivers is unaffected.
	{name: "wellformed/deny-waiver-on-strict-domain",
		mutate: compose(withWaivers(WaiverAllowDataLoss), withWaiverMode(pb.WaiverMode_WAIVER_MODE_STRICT, "")),
		check:  CheckRequestWellformed, reason: ReasonInvalidRequest, denial: ReasonInvalidRequest,
		observed: obs("waivers", "allow-data-loss", "waiver_mode", "strict", "deviation", "none")},
	{name: "wellformed/allow-strict-without-waivers", mutate: withWaiverMode(pb.WaiverMode_WAIVER_MODE_STRICT, ""),
		check: CheckRequestWellformed, satisfied: true, observed: obs("waivers", "none", "waiver_mode", "strict")},
	{name: "wellformed/allow-waiver-on-permitted-domain",
		mutate: compose(withWaivers(WaiverAllowDataLoss), withWaiverMode(pb.WaiverMode_WAIVER_MODE_PERMITTED, "n1 disk lost, ticket OPS-7")),
		check:  CheckRequestWellformed, satisfied: true,
		observed: obs("waivers", "allow-data-loss", "waiver_mode", "permitted", "deviation", "n1 disk lost, ticket OPS-7")},
	{name: "wellformed/allow-with-justified-waivers", mutate: withWaivers(WaiverAllowVisibilityRegression, WaiverAllowDataLoss),
		check: CheckRequestWellformed, satisfied: true,
		observed: obs("waivers", "allow-visibility-regression,allow-data-loss")},
	{name: "wellformed/deny-no-request", mutate: func(in *Input) { in.Attempt.Request = nil },
		check: CheckRequestWellformed, reason: ReasonInvalidRequest, denial: ReasonInvalidRequest,
		observed: obs("request_id", "none", "domain", "none", "candidate", "none", "waivers", "none")},
	{name: "wellformed/deny-empty-request-id", mutate: func(in *Input) { in.Attempt.Request.RequestId = "" },
		check: CheckRequestWellformed, reason: ReasonInvalidRequest, denial: ReasonInvalidRequest,
		observed: obs("request_id", "none")},
	{name: "wellformed/deny-other-domain", mutate: func(in *Input) { in.Attempt.Request.Domain = "db2" },
		check: CheckRequestWellformed, reason: ReasonInvalidRequest, denial: ReasonInvalidRequest,
		observed: obs("domain", "db2")},
	{name: "wellformed/deny-empty-candidate", mutate: func(in *Input) { in.Attempt.Request.Candidate = "" },
		check: CheckRequestWellformed, reason: ReasonInvalidRequest, denial: ReasonInvalidRequest,
		observed: obs("candidate", "none")},
	{name: "wellformed/deny-lock-domain", mutate: func(in *Input) { in.Domain.Kind = pb.DomainKind_DOMAIN_KIND_LOCK },
		check: CheckRequestWellformed, reason: ReasonInvalidRequest, denial: ReasonInvalidRequest,
		observed: obs("kind", "DOMAIN_KIND_LOCK")},
	{name: "wellformed/deny-unspecified-kind", mutate: func(in *Input) { in.Domain.Kind = pb.DomainKind_DOMAIN_KIND_UNSPECIFIED },
		check: CheckRequestWellformed, reason: ReasonInvalidRequest, denial: ReasonInvalidRequest,
		observed: obs("kind", "DOMAIN_KIND_UNSPECIFIED")},
	{name: "wellformed/deny-unknown-waiver", mutate: withWaivers("force"),
		check: CheckRequestWellformed, reason: ReasonInvalidRequest, denial: ReasonInvalidRequest,
		observed: obs("waivers", "force")},
	{name: "wellformed/deny-repeated-waiver", mutate: withWaivers(WaiverAllowDataLoss, WaiverAllowDataLoss),
		check: CheckRequestWellformed, reason: ReasonInvalidRequest, denial: ReasonInvalidRequest,
		observed: obs("waivers", "allow-data-loss,allow-data-loss")},
	{name: "wellformed/deny-waiver-without-reason",
		mutate: compose(withWaivers(WaiverAllowDataLoss), func(in *Input) { in.Attempt.Request.Reason = "" }),
		check:  CheckRequestWellformed, reason: ReasonInvalidRequest, denial: ReasonInvalidRequest,
		observed: obs("waivers", "allow-data-loss")},

	// 2. promotion_enabled
	{name: "enabled/allow", mutate: noop, check: CheckPromotionEnabled, satisfied: true,
		observed: obs("promotion_disabled", "false")},
	{name: "enabled/allow-nil-policy", mutate: func(in *Input) { in.Domain.Policy = nil },
		check: CheckPromotionEnabled, satisfied: true, observed: obs("promotion_disabled", "false")},
	{name: "enabled/deny-disabled", mutate: func(in *Input) { in.Domain.Policy.PromotionDisabled = true },
		check: CheckPromotionEnabled, reason: ReasonPromotionDisabled, denial: ReasonPromotionDisabled,
		observed: obs("promotion_disabled", "true")},

	// 3. candidate_eligible
	{name: "eligible/allow", mutate: noop, check: CheckCandidateEligible, satisfied: true,
		observed: obs("candidate", "r2", "registered", "true", "holder", "p1", "member_state", "MEMBER_STATE_ACTIVE", "report_state", "REPLICA_STATE_STREAMING")},
	{name: "eligible/allow-released-holder-reclaims",
		mutate: func(in *Input) {
			in.Domain.Released = true
			in.Attempt.Request.Candidate = "p1"
			in.Attempt.CandidateReport.MemberId = "p1"
			in.Attempt.Lease = nil
		},
		check: CheckCandidateEligible, satisfied: true, observed: obs("candidate", "p1", "holder", "p1")},
	{name: "eligible/deny-unregistered", mutate: func(in *Input) { in.Attempt.Request.Candidate = "r9" },
		check: CheckCandidateEligible, reason: ReasonInvalidRequest, denial: ReasonInvalidRequest,
		observed: obs("candidate", "r9", "registered", "false", "member_state", "none")},
	{name: "eligible/deny-nil-members", mutate: func(in *Input) { in.Domain.Members = nil },
		check: CheckCandidateEligible, reason: ReasonInvalidRequest, denial: ReasonInvalidRequest,
		observed: obs("registered", "false")},
	{name: "eligible/deny-candidate-is-holder",
		mutate: func(in *Input) { in.Attempt.Request.Candidate = "p1"; in.Attempt.CandidateReport.MemberId = "p1" },
		check:  CheckCandidateEligible, reason: ReasonInvalidRequest, denial: ReasonInvalidRequest,
		observed: obs("candidate", "p1", "holder", "p1", "registered", "true")},
	{name: "eligible/deny-decommissioned",
		mutate: func(in *Input) { in.Attempt.Request.Candidate = "r3"; in.Attempt.CandidateReport.MemberId = "r3" },
		check:  CheckCandidateEligible, reason: ReasonReplicaNotActive, denial: ReasonReplicaNotActive,
		observed: obs("candidate", "r3", "member_state", "MEMBER_STATE_DECOMMISSIONED")},
	{name: "eligible/deny-report-diverged",
		mutate: func(in *Input) { in.Attempt.CandidateReport.State = pb.ReplicaState_REPLICA_STATE_DIVERGED },
		check:  CheckCandidateEligible, reason: ReasonReplicaNotActive, denial: ReasonReplicaNotActive,
		observed: obs("report_state", "REPLICA_STATE_DIVERGED")},
	{name: "eligible/deny-report-rebuilding",
		mutate: func(in *Input) { in.Attempt.CandidateReport.State = pb.ReplicaState_REPLICA_STATE_REBUILDING },
		check:  CheckCandidateEligible, reason: ReasonReplicaNotActive, denial: ReasonReplicaNotActive,
		observed: obs("report_state", "REPLICA_STATE_REBUILDING")},

	// 4. expected_epoch
	{name: "epoch/allow-absent", mutate: noop, check: CheckExpectedEpoch, satisfied: true,
		observed: obs("expected_epoch", "none", "current_epoch", "7")},
	{name: "epoch/allow-match", mutate: func(in *Input) { in.Attempt.Request.ExpectedEpoch = u64p(7) },
		check: CheckExpectedEpoch, satisfied: true, observed: obs("expected_epoch", "7", "current_epoch", "7")},
	{name: "epoch/deny-stale", mutate: func(in *Input) { in.Attempt.Request.ExpectedEpoch = u64p(6) },
		check: CheckExpectedEpoch, reason: ReasonEpochStale, denial: ReasonEpochStale,
		observed: obs("expected_epoch", "6", "current_epoch", "7")},
	{name: "epoch/deny-explicit-zero", mutate: func(in *Input) { in.Attempt.Request.ExpectedEpoch = u64p(0) },
		check: CheckExpectedEpoch, reason: ReasonEpochStale, denial: ReasonEpochStale,
		observed: obs("expected_epoch", "0", "current_epoch", "7")},

	// 5. old_holder_inactive
	{name: "holder/allow-lease-expired", mutate: noop, check: CheckOldHolderInactive, satisfied: true,
		observed: obs("holder", "p1", "epoch", "7", "released", "false", "lease_state", "LEASE_STATE_EXPIRED",
			"lease_holder", "p1", "lease_epoch", "7", "remaining_ms", "0", "leader_term", "3")},
	{name: "holder/allow-released", mutate: func(in *Input) { in.Domain.Released = true; in.Attempt.Lease = nil },
		check: CheckOldHolderInactive, satisfied: true, observed: obs("released", "true", "lease_state", "none")},
	{name: "holder/allow-never-assigned",
		mutate: func(in *Input) { in.Domain.Holder = ""; in.Attempt.Lease = nil },
		check:  CheckOldHolderInactive, satisfied: true, observed: obs("holder", "none", "lease_holder", "none")},
	{name: "holder/deny-no-observation", mutate: func(in *Input) { in.Attempt.Lease = nil },
		check: CheckOldHolderInactive, reason: ReasonPrimaryStillActive, denial: ReasonPrimaryStillActive,
		observed: obs("holder", "p1", "lease_state", "none", "lease_holder", "none", "lease_epoch", "none", "remaining_ms", "none", "leader_term", "none")},
	{name: "holder/deny-lease-held",
		mutate: func(in *Input) {
			in.Attempt.Lease.State = pb.LeaseState_LEASE_STATE_HELD
			in.Attempt.Lease.RemainingMs = 1500
		},
		check: CheckOldHolderInactive, reason: ReasonPrimaryStillActive, denial: ReasonPrimaryStillActive,
		observed: obs("lease_state", "LEASE_STATE_HELD", "remaining_ms", "1500")},
	{name: "holder/deny-unspecified-lease-state",
		mutate: func(in *Input) { in.Attempt.Lease.State = pb.LeaseState_LEASE_STATE_UNSPECIFIED },
		check:  CheckOldHolderInactive, reason: ReasonPrimaryStillActive, denial: ReasonPrimaryStillActive,
		observed: obs("lease_state", "LEASE_STATE_UNSPECIFIED")},
	{name: "holder/deny-expiry-of-other-holder", mutate: func(in *Input) { in.Attempt.Lease.Holder = "p0" },
		check: CheckOldHolderInactive, reason: ReasonPrimaryStillActive, denial: ReasonPrimaryStillActive,
		observed: obs("holder", "p1", "lease_holder", "p0")},
	{name: "holder/deny-expiry-of-older-epoch", mutate: func(in *Input) { in.Attempt.Lease.Epoch = 6 },
		check: CheckOldHolderInactive, reason: ReasonPrimaryStillActive, denial: ReasonPrimaryStillActive,
		observed: obs("epoch", "7", "lease_epoch", "6")},

	// 6. candidate_report
	{name: "report/allow", mutate: noop, check: CheckCandidateReport, satisfied: true,
		observed: obs("report", "present", "report_epoch", "7", "current_epoch", "7", "report_age_ms", "200", "max_age_ms", "5000")},
	{name: "report/allow-age-at-limit", mutate: func(in *Input) { in.Attempt.ReportAgeMs = 5000 },
		check: CheckCandidateReport, satisfied: true, observed: obs("report_age_ms", "5000", "max_age_ms", "5000")},
	{name: "report/allow-no-age-limit",
		mutate: func(in *Input) { in.Domain.Policy.ReportMaxAgeMs = 0; in.Attempt.ReportAgeMs = 999999 },
		check:  CheckCandidateReport, satisfied: true, observed: obs("report_age_ms", "999999", "max_age_ms", "0")},
	{name: "report/deny-absent", mutate: func(in *Input) { in.Attempt.CandidateReport = nil },
		check: CheckCandidateReport, reason: ReasonMetadataMissing, denial: ReasonMetadataMissing,
		observed: obs("report", "absent", "report_epoch", "none", "current_epoch", "7", "report_age_ms", "none")},
	{name: "report/deny-from-other-member", mutate: func(in *Input) { in.Attempt.CandidateReport.MemberId = "r3" },
		check: CheckCandidateReport, reason: ReasonMetadataMissing, denial: ReasonMetadataMissing,
		observed: obs("report", "present")},
	{name: "report/deny-older-epoch", mutate: func(in *Input) { in.Attempt.CandidateReport.Epoch = 6 },
		check: CheckCandidateReport, reason: ReasonStaleReport, denial: ReasonStaleReport,
		observed: obs("report_epoch", "6", "current_epoch", "7")},
	{name: "report/deny-too-old", mutate: func(in *Input) { in.Attempt.ReportAgeMs = 5001 },
		check: CheckCandidateReport, reason: ReasonStaleReport, denial: ReasonStaleReport,
		observed: obs("report_age_ms", "5001", "max_age_ms", "5000")},

	// 7. watermark_known
	{name: "watermark/allow", mutate: noop, check: CheckWatermarkKnown, satisfied: true,
		observed: obs("watermark_epoch", "7", "watermark_lsn", "100", "watermark_hash", "abababababababab", "visible_commit_id", "55")},
	{name: "watermark/allow-from-older-epoch", mutate: func(in *Input) { in.Domain.Watermark.Epoch = 6 },
		check: CheckWatermarkKnown, satisfied: true, observed: obs("watermark_epoch", "6")},
	{name: "watermark/deny-unknown", mutate: func(in *Input) { in.Domain.Watermark = nil },
		check: CheckWatermarkKnown, reason: ReasonMetadataMissing, denial: ReasonMetadataMissing,
		observed: obs("watermark_epoch", "unknown", "watermark_lsn", "unknown", "watermark_hash", "unknown", "visible_commit_id", "unknown")},
	{name: "watermark/deny-epoch-ahead-of-domain", mutate: func(in *Input) { in.Domain.Watermark.Epoch = 8 },
		check: CheckWatermarkKnown, reason: ReasonMetadataMissing, denial: ReasonMetadataMissing,
		observed: obs("watermark_epoch", "8")},

	// 8. candidate_contains_watermark
	{name: "contains/allow-ahead", mutate: noop, check: CheckCandidateContainsWatermark, satisfied: true,
		observed: obs("flushed_lsn", "120", "watermark_lsn", "100")},
	{name: "contains/allow-exactly-at",
		mutate: func(in *Input) { r := in.Attempt.CandidateReport; r.FlushedLsn, r.FlushedHash = 100, hash100 },
		check:  CheckCandidateContainsWatermark, satisfied: true, observed: obs("flushed_lsn", "100", "watermark_lsn", "100")},
	{name: "contains/deny-behind", mutate: behindReplica,
		check: CheckCandidateContainsWatermark, reason: ReasonReplicaBehindWal, denial: ReasonReplicaBehindWal,
		observed: obs("flushed_lsn", "90", "watermark_lsn", "100")},
	{name: "contains/deny-one-behind",
		mutate: func(in *Input) { in.Attempt.CandidateReport.FlushedLsn = 99 },
		check:  CheckCandidateContainsWatermark, reason: ReasonReplicaBehindWal, denial: ReasonReplicaBehindWal,
		observed: obs("flushed_lsn", "99", "watermark_lsn", "100")},
	{name: "contains/deny-no-report", mutate: func(in *Input) { in.Attempt.CandidateReport = nil },
		check: CheckCandidateContainsWatermark, reason: ReasonMetadataMissing,
		denial: ReasonMetadataMissing, denyByName: CheckCandidateReport,
		observed: obs("flushed_lsn", "none", "watermark_lsn", "100")},
	{name: "contains/deny-unknown-watermark", mutate: func(in *Input) { in.Domain.Watermark = nil },
		check: CheckCandidateContainsWatermark, reason: ReasonMetadataMissing,
		denial: ReasonMetadataMissing, denyByName: CheckWatermarkKnown,
		observed: obs("flushed_lsn", "120", "watermark_lsn", "unknown")},

	// 9. history_prefix
	{name: "prefix/allow", mutate: noop, check: CheckHistoryPrefix, satisfied: true,
		observed: obs("watermark_lsn", "100", "watermark_hash", "abababababababab", "report_watermark_lsn", "100", "candidate_hash_at_watermark", "abababababababab")},
	{name: "prefix/allow-empty-prefix",
		mutate: func(in *Input) {
			in.Domain.Watermark = &pb.Watermark{Epoch: 7}
			r := in.Attempt.CandidateReport
			r.WatermarkLsn, r.HashAtWatermark = 0, nil
		},
		check: CheckHistoryPrefix, satisfied: true,
		observed: obs("watermark_lsn", "0", "watermark_hash", "none", "report_watermark_lsn", "0", "candidate_hash_at_watermark", "none")},
	{name: "prefix/allow-flushed-exactly-at-with-same-hash",
		mutate: func(in *Input) { r := in.Attempt.CandidateReport; r.FlushedLsn, r.FlushedHash = 100, hash100 },
		check:  CheckHistoryPrefix, satisfied: true, observed: obs("watermark_lsn", "100")},
	{name: "prefix/deny-same-lsn-other-hash", mutate: divergentReplica,
		check: CheckHistoryPrefix, reason: ReasonHistoryDivergence, denial: ReasonHistoryDivergence,
		observed: obs("watermark_lsn", "100", "report_watermark_lsn", "100", "watermark_hash", "abababababababab", "candidate_hash_at_watermark", "efefefefefefefef")},
	{name: "prefix/deny-flushed-at-watermark-other-hash",
		mutate: func(in *Input) { r := in.Attempt.CandidateReport; r.FlushedLsn, r.FlushedHash = 100, hashFork },
		check:  CheckHistoryPrefix, reason: ReasonHistoryDivergence, denial: ReasonHistoryDivergence,
		observed: obs("watermark_lsn", "100", "candidate_hash_at_watermark", "abababababababab")},
	{name: "prefix/deny-hash-for-other-lsn",
		mutate: func(in *Input) { in.Attempt.CandidateReport.WatermarkLsn = 90 },
		check:  CheckHistoryPrefix, reason: ReasonStaleReport, denial: ReasonStaleReport,
		observed: obs("watermark_lsn", "100", "report_watermark_lsn", "90")},
	{name: "prefix/deny-watermark-without-hash",
		mutate: func(in *Input) { in.Domain.Watermark.Hash = nil; in.Attempt.CandidateReport.HashAtWatermark = nil },
		check:  CheckHistoryPrefix, reason: ReasonMetadataMissing, denial: ReasonMetadataMissing,
		observed: obs("watermark_lsn", "100", "watermark_hash", "none", "candidate_hash_at_watermark", "none")},
	{name: "prefix/deny-no-report", mutate: func(in *Input) { in.Attempt.CandidateReport = nil },
		check: CheckHistoryPrefix, reason: ReasonMetadataMissing,
		denial: ReasonMetadataMissing, denyByName: CheckCandidateReport,
		observed: obs("report_watermark_lsn", "none", "candidate_hash_at_watermark", "none")},
	{name: "prefix/deny-unknown-watermark", mutate: func(in *Input) { in.Domain.Watermark = nil },
		check: CheckHistoryPrefix, reason: ReasonMetadataMissing,
		denial: ReasonMetadataMissing, denyByName: CheckWatermarkKnown,
		observed: obs("watermark_lsn", "unknown", "watermark_hash", "unknown")},

	// 10. mvcc_visibility
	{name: "mvcc/allow", mutate: noop, check: CheckMvccVisibility, satisfied: true,
		observed: obs("applied_commit_id", "60", "visible_commit_id", "55", "read_safe", "true")},
	{name: "mvcc/allow-exactly-visible", mutate: func(in *Input) { in.Attempt.CandidateReport.AppliedCommitId = 55 },
		check: CheckMvccVisibility, satisfied: true, observed: obs("applied_commit_id", "55", "visible_commit_id", "55")},
	{name: "mvcc/deny-applied-below-visible", mutate: func(in *Input) { in.Attempt.CandidateReport.AppliedCommitId = 50 },
		check: CheckMvccVisibility, reason: ReasonMvccVisibilityViolation, denial: ReasonMvccVisibilityViolation,
		observed: obs("applied_commit_id", "50", "visible_commit_id", "55", "read_safe", "true")},
	{name: "mvcc/deny-not-read-safe", mutate: func(in *Input) { in.Attempt.CandidateReport.ReadSafe = false },
		check: CheckMvccVisibility, reason: ReasonMvccVisibilityViolation, denial: ReasonMvccVisibilityViolation,
		observed: obs("applied_commit_id", "60", "visible_commit_id", "55", "read_safe", "false")},
	{name: "mvcc/deny-no-report", mutate: func(in *Input) { in.Attempt.CandidateReport = nil },
		check: CheckMvccVisibility, reason: ReasonMetadataMissing,
		denial: ReasonMetadataMissing, denyByName: CheckCandidateReport,
		observed: obs("applied_commit_id", "none", "visible_commit_id", "55", "read_safe", "none")},
	{name: "mvcc/deny-unknown-watermark", mutate: func(in *Input) { in.Domain.Watermark = nil },
		check: CheckMvccVisibility, reason: ReasonMetadataMissing,
		denial: ReasonMetadataMissing, denyByName: CheckWatermarkKnown,
		observed: obs("visible_commit_id", "unknown")},
}

// Readiness: AU-4, P6-S1, AU-5, P6-S2, AU-6, P6-S3 (every rule and denial); docs/READINESS.md.
func TestRules(t *testing.T) {
	for _, tc := range ruleCases {
		t.Run(tc.name, func(t *testing.T) {
			in := allowedInput()
			tc.mutate(&in)
			d := Evaluate(in)

			c := findCheck(d, tc.check)
			if c == nil {
				t.Fatalf("check %s missing from decision:\n%s", tc.check, Describe(d))
			}
			if c.GetSatisfied() != tc.satisfied || c.GetReason() != tc.reason {
				t.Errorf("%s: satisfied=%v reason=%q, want satisfied=%v reason=%q\n%s",
					tc.check, c.GetSatisfied(), c.GetReason(), tc.satisfied, tc.reason, Describe(d))
			}
			if c.GetInvariant() != invariantOf[tc.check] {
				t.Errorf("%s: invariant=%q, want %q", tc.check, c.GetInvariant(), invariantOf[tc.check])
			}
			for _, kv := range tc.observed {
				if got, ok := observedValue(c, kv[0]); !ok || got != kv[1] {
					t.Errorf("%s: observed %s=%q (present=%v), want %q", tc.check, kv[0], got, ok, kv[1])
				}
			}
			assertDecision(t, d, tc.denial, tc.denyByName, tc.check)
		})
	}
}

// assertDecision checks Allowed, DenialReason and FailedInvariant.
func assertDecision(t *testing.T, d *pb.Decision, denial, denyBy, check string) {
	t.Helper()
	if denial == "" {
		if !d.GetAllowed() || d.GetDenialReason() != "" || d.GetFailedInvariant() != "" {
			t.Errorf("want allowed, got allowed=%v reason=%q invariant=%q\n%s",
				d.GetAllowed(), d.GetDenialReason(), d.GetFailedInvariant(), Describe(d))
		}
		return
	}
	if denyBy == "" {
		denyBy = check
	}
	if d.GetAllowed() || d.GetDenialReason() != denial || d.GetFailedInvariant() != invariantOf[denyBy] {
		t.Errorf("got allowed=%v reason=%q invariant=%q, want denied reason=%q invariant=%q\n%s",
			d.GetAllowed(), d.GetDenialReason(), d.GetFailedInvariant(), denial, invariantOf[denyBy], Describe(d))
	}
}

// TestEveryDenialReasonCovered guards the table above: each reason must be
// the decision's denial reason in at least one case.
func TestEveryDenialReasonCovered(t *testing.T) {
	reasons := []string{
		ReasonInvalidRequest, ReasonPromotionDisabled, ReasonReplicaNotActive, ReasonEpochStale,
		ReasonPrimaryStillActive, ReasonMetadataMissing, ReasonStaleReport, ReasonReplicaBehindWal,
		ReasonHistoryDivergence, ReasonMvccVisibilityViolation,
	}
	for _, r := range reasons {
		found := false
		for _, tc := range ruleCases {
			found = found || tc.denial == r
		}
		if !found {
			t.Errorf("no rule case denies with %s", r)
		}
	}
	for name := range invariantOf {
		var allow, deny bool
		for _, tc := range ruleCases {
			allow = allow || (tc.check == name && tc.satisfied && tc.denial == "")
			deny = deny || (tc.check == name && !tc.satisfied && tc.denial != "")
		}
		if !allow || !deny {
			t.Errorf("check %s: allow case=%v deny case=%v, want both", name, allow, deny)
		}
	}
}
