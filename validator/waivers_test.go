package validator

import (
	"slices"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
)

func TestKnownWaiversSorted(t *testing.T) {
	got := KnownWaivers()
	want := []string{WaiverAllowDataLoss, WaiverAllowVisibilityRegression}
	if !slices.Equal(got, want) || !slices.IsSorted(got) {
		t.Fatalf("KnownWaivers() = %v, want sorted %v", got, want)
	}
	// Callers may modify the result; it must not alias package state.
	got[0] = "mutated"
	if KnownWaivers()[0] != WaiverAllowDataLoss {
		t.Fatal("KnownWaivers returned shared storage")
	}
}

// TestWaiversLetThrough: a covered failure keeps Satisfied=false and its
// Reason, records WaivedBy, and no longer denies.
// Readiness: AU-13; docs/READINESS.md.
func TestWaiversLetThrough(t *testing.T) {
	cases := []struct {
		name    string
		mutate  func(*Input)
		waived  map[string]string // check -> waiver
		applied []string
	}{
		{
			name:    "allow-data-loss/behind-replica",
			mutate:  compose(behindReplica, withWaivers(WaiverAllowDataLoss)),
			waived:  map[string]string{CheckCandidateContainsWatermark: WaiverAllowDataLoss, CheckHistoryPrefix: WaiverAllowDataLoss},
			applied: []string{WaiverAllowDataLoss},
		},
		{
			name:    "allow-data-loss/divergent-replica",
			mutate:  compose(divergentReplica, withWaivers(WaiverAllowDataLoss)),
			waived:  map[string]string{CheckHistoryPrefix: WaiverAllowDataLoss},
			applied: []string{WaiverAllowDataLoss},
		},
		{
			name:    "allow-visibility-regression/applied-below-visible",
			mutate:  compose(func(in *Input) { in.Attempt.CandidateReport.AppliedCommitId = 50 }, withWaivers(WaiverAllowVisibilityRegression)),
			waived:  map[string]string{CheckMvccVisibility: WaiverAllowVisibilityRegression},
			applied: []string{WaiverAllowVisibilityRegression},
		},
		{
			name:    "allow-visibility-regression/not-read-safe",
			mutate:  compose(func(in *Input) { in.Attempt.CandidateReport.ReadSafe = false }, withWaivers(WaiverAllowVisibilityRegression)),
			waived:  map[string]string{CheckMvccVisibility: WaiverAllowVisibilityRegression},
			applied: []string{WaiverAllowVisibilityRegression},
		},
		{
			name: "both-requested/only-used-one-recorded",
			mutate: compose(behindReplica,
				withWaivers(WaiverAllowVisibilityRegression, WaiverAllowDataLoss)),
			waived:  map[string]string{CheckCandidateContainsWatermark: WaiverAllowDataLoss, CheckHistoryPrefix: WaiverAllowDataLoss},
			applied: []string{WaiverAllowDataLoss},
		},
		{
			name: "both-requested/both-used-sorted",
			mutate: compose(behindReplica, func(in *Input) { in.Attempt.CandidateReport.AppliedCommitId = 1 },
				withWaivers(WaiverAllowVisibilityRegression, WaiverAllowDataLoss)),
			waived: map[string]string{
				CheckCandidateContainsWatermark: WaiverAllowDataLoss, CheckHistoryPrefix: WaiverAllowDataLoss,
				CheckMvccVisibility: WaiverAllowVisibilityRegression,
			},
			applied: []string{WaiverAllowDataLoss, WaiverAllowVisibilityRegression},
		},
		{
			name:   "requested-but-unneeded/none-applied",
			mutate: withWaivers(WaiverAllowDataLoss),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := allowedInput()
			tc.mutate(&in)
			d := Evaluate(in)
			if !d.GetAllowed() || d.GetDenialReason() != "" || d.GetFailedInvariant() != "" {
				t.Fatalf("want allowed:\n%s", Describe(d))
			}
			if !slices.Equal(d.GetWaiversApplied(), tc.applied) {
				t.Errorf("WaiversApplied = %v, want %v", d.GetWaiversApplied(), tc.applied)
			}
			for _, c := range d.GetChecks() {
				want, isWaived := tc.waived[c.GetName()]
				switch {
				case isWaived && (c.GetSatisfied() || c.GetReason() == "" || c.GetWaivedBy() != want):
					t.Errorf("%s: satisfied=%v reason=%q waived_by=%q, want failed+waived by %s",
						c.GetName(), c.GetSatisfied(), c.GetReason(), c.GetWaivedBy(), want)
				case !isWaived && (!c.GetSatisfied() || c.GetWaivedBy() != ""):
					t.Errorf("%s: satisfied=%v waived_by=%q, want satisfied and not waived",
						c.GetName(), c.GetSatisfied(), c.GetWaivedBy())
				}
			}
		})
	}
}

// TestWaiversCannotWaive: fencing, disablement, eligibility, missing or
// stale evidence, and the other waiver's domain all stay denials, even with
// every waiver requested.
// Readiness: P6-A1a, AU-13 (nothing waives fencing); docs/READINESS.md.
func TestWaiversCannotWaive(t *testing.T) {
	both := withWaivers(WaiverAllowDataLoss, WaiverAllowVisibilityRegression)
	cases := []struct {
		name   string
		mutate func(*Input)
		check  string
		reason string
	}{
		{"epoch-stale", compose(both, func(in *Input) { in.Attempt.Request.ExpectedEpoch = u64p(6) }),
			CheckExpectedEpoch, ReasonEpochStale},
		{"primary-still-active", compose(both, func(in *Input) { in.Attempt.Lease.State = pb.LeaseState_LEASE_STATE_HELD }),
			CheckOldHolderInactive, ReasonPrimaryStillActive},
		{"promotion-disabled", compose(both, func(in *Input) { in.Domain.Policy.PromotionDisabled = true }),
			CheckPromotionEnabled, ReasonPromotionDisabled},
		{"replica-not-active", compose(both, func(in *Input) {
			in.Attempt.CandidateReport.State = pb.ReplicaState_REPLICA_STATE_DIVERGED
		}), CheckCandidateEligible, ReasonReplicaNotActive},
		{"metadata-missing/no-report", compose(both, func(in *Input) { in.Attempt.CandidateReport = nil }),
			CheckCandidateReport, ReasonMetadataMissing},
		{"metadata-missing/unknown-watermark", compose(both, func(in *Input) { in.Domain.Watermark = nil }),
			CheckWatermarkKnown, ReasonMetadataMissing},
		{"metadata-missing/watermark-without-hash", compose(both, func(in *Input) { in.Domain.Watermark.Hash = nil }),
			CheckHistoryPrefix, ReasonMetadataMissing},
		{"stale-report/older-epoch", compose(both, func(in *Input) { in.Attempt.CandidateReport.Epoch = 6 }),
			CheckCandidateReport, ReasonStaleReport},
		{"stale-report/hash-for-other-lsn", compose(both, func(in *Input) { in.Attempt.CandidateReport.WatermarkLsn = 90 }),
			CheckHistoryPrefix, ReasonStaleReport},
		{"data-loss-does-not-waive-mvcc", compose(withWaivers(WaiverAllowDataLoss),
			func(in *Input) { in.Attempt.CandidateReport.AppliedCommitId = 50 }),
			CheckMvccVisibility, ReasonMvccVisibilityViolation},
		{"visibility-does-not-waive-behind", compose(behindReplica, withWaivers(WaiverAllowVisibilityRegression)),
			CheckCandidateContainsWatermark, ReasonReplicaBehindWal},
		{"visibility-does-not-waive-divergence", compose(divergentReplica, withWaivers(WaiverAllowVisibilityRegression)),
			CheckHistoryPrefix, ReasonHistoryDivergence},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := allowedInput()
			tc.mutate(&in)
			d := Evaluate(in)
			assertDecision(t, d, tc.reason, "", tc.check)
			if c := findCheck(d, tc.check); c.GetWaivedBy() != "" || c.GetReason() != tc.reason {
				t.Errorf("%s: reason=%q waived_by=%q, want reason=%q and not waived", tc.check, c.GetReason(), c.GetWaivedBy(), tc.reason)
			}
		})
	}
}

// TestInvalidWaiverRequestsWaiveNothing: an unknown, repeated or unjustified
// waiver makes the request invalid, and its waivers change no check.
func TestInvalidWaiverRequestsWaiveNothing(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Input)
	}{
		{"unknown", withWaivers(WaiverAllowDataLoss, "force")},
		{"empty-name", withWaivers("")},
		{"repeated", withWaivers(WaiverAllowDataLoss, WaiverAllowDataLoss)},
		{"no-reason", compose(withWaivers(WaiverAllowDataLoss), func(in *Input) { in.Attempt.Request.Reason = "" })},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := allowedInput()
			compose(behindReplica, tc.mutate)(&in)
			d := Evaluate(in)
			assertDecision(t, d, ReasonInvalidRequest, "", CheckRequestWellformed)
			if len(d.GetWaiversApplied()) != 0 {
				t.Errorf("WaiversApplied = %v, want none", d.GetWaiversApplied())
			}
			for _, c := range d.GetChecks() {
				if c.GetWaivedBy() != "" {
					t.Errorf("%s waived by %q in an invalid request", c.GetName(), c.GetWaivedBy())
				}
			}
		})
	}
}

// TestOneWaiverList: the waivable table names only known waivers, every
// known waiver covers something, and IsKnownWaiver agrees with KnownWaivers
// (transport and authorityctl validate through IsKnownWaiver).
func TestOneWaiverList(t *testing.T) {
	covers := map[string]bool{}
	for _, w := range waivable {
		if !IsKnownWaiver(w.waiver) {
			t.Errorf("waivable names %q, which is not a known waiver", w.waiver)
		}
		covers[w.waiver] = true
	}
	for _, k := range KnownWaivers() {
		if !IsKnownWaiver(k) {
			t.Errorf("IsKnownWaiver(%q) = false", k)
		}
		if !covers[k] {
			t.Errorf("known waiver %q covers no check", k)
		}
	}
	for _, bad := range []string{"", "bogus", "ALLOW-DATA-LOSS", "allow-data-loss "} {
		if IsKnownWaiver(bad) {
			t.Errorf("IsKnownWaiver(%q) = true", bad)
		}
	}
}
