// Package validator decides whether a promotion attempt on an AeroDB domain
// may take effect, and explains why.
//
// The decision is a pure function of the replicated domain state at the
// entry's log index and the attempt recorded in that entry (AU-9 [P6-D1]):
// no clock, no randomness, no I/O, no goroutines, and no map iteration in
// the output. Every replica and every replay therefore reaches the same
// decision and renders the same explanation, byte for byte.
package validator

import (
	"slices"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// Input is everything a decision may depend on.
type Input struct {
	// Domain is the replicated state of the domain at the entry's log index
	// (never nil).
	Domain *pb.Domain
	// Attempt is the request and the evidence recorded in the log entry
	// (never nil).
	Attempt *pb.PromotionAttempt
}

// Denial reasons. Callers branch on these values (never on Detail text).
const (
	ReasonInvalidRequest          = "InvalidRequest"
	ReasonPromotionDisabled       = "PromotionDisabled"
	ReasonReplicaNotActive        = "ReplicaNotActive"
	ReasonEpochStale              = "EpochStale"
	ReasonPrimaryStillActive      = "PrimaryStillActive"
	ReasonMetadataMissing         = "MetadataMissing"
	ReasonStaleReport             = "StaleReport"
	ReasonReplicaBehindWal        = "ReplicaBehindWal"
	ReasonHistoryDivergence       = "HistoryDivergence"
	ReasonMvccVisibilityViolation = "MvccVisibilityViolation"
)

// Waivers are named and narrow (AU-13): each covers exactly the failures
// listed in waivable, and nothing ever waives fencing or missing evidence.
const (
	// WaiverAllowDataLoss waives the candidate_contains_watermark and
	// history_prefix checks (AU-4/AU-5), and for replica-quorum domains
	// candidate_most_advanced and fence_chains_agree. Never quorum_fenced.
	WaiverAllowDataLoss = "allow-data-loss"
	// WaiverAllowVisibilityRegression waives the mvcc_visibility check (AU-6).
	WaiverAllowVisibilityRegression = "allow-visibility-regression"
)

// Check names, in the fixed order Evaluate runs them.
const (
	CheckRequestWellformed          = "request_wellformed"
	CheckPromotionEnabled           = "promotion_enabled"
	CheckCandidateEligible          = "candidate_eligible"
	CheckExpectedEpoch              = "expected_epoch"
	CheckOldHolderInactive          = "old_holder_inactive"
	CheckCandidateReport            = "candidate_report"
	CheckWatermarkKnown             = "watermark_known"
	CheckCandidateContainsWatermark = "candidate_contains_watermark"
	CheckHistoryPrefix              = "history_prefix"
	CheckMvccVisibility             = "mvcc_visibility"
)

// WaiverModeName names a domain's waiver mode as explanations, events and
// the CLI show it: "strict" (Phase 6 readiness §4: no waiver), "permitted"
// (an operator's recorded deviation), or "legacy" (unspecified: a domain
// created before strict mode, permitted without a recorded reason).
func WaiverModeName(p *pb.Policy) string {
	switch p.GetWaiverMode() {
	case pb.WaiverMode_WAIVER_MODE_STRICT:
		return "strict"
	case pb.WaiverMode_WAIVER_MODE_PERMITTED:
		return "permitted"
	default:
		return "legacy"
	}
}

// KnownWaivers returns the waiver names a request may carry, sorted.
// It is the one list of waivers: transport, the CLI and the checks all ask
// IsKnownWaiver / KnownWaivers, and waivable names only these.
func KnownWaivers() []string {
	return slices.Clone(knownWaivers[:])
}

// knownWaivers is the source of KnownWaivers and IsKnownWaiver (sorted).
var knownWaivers = [...]string{WaiverAllowDataLoss, WaiverAllowVisibilityRegression}

// IsKnownWaiver reports whether name is one of KnownWaivers.
func IsKnownWaiver(name string) bool {
	return slices.Contains(knownWaivers[:], name)
}

// waivable is the complete table of what a waiver may cover: one check and
// one reason each. Keying on the reason too matters: a history_prefix
// failure for MetadataMissing or StaleReport is missing evidence, not a
// known loss, and must stay a denial (AU-7 [P6-F1]).
var waivable = [...]struct{ check, reason, waiver string }{
	{CheckCandidateContainsWatermark, ReasonReplicaBehindWal, WaiverAllowDataLoss},
	{CheckHistoryPrefix, ReasonHistoryDivergence, WaiverAllowDataLoss},
	{CheckMvccVisibility, ReasonMvccVisibilityViolation, WaiverAllowVisibilityRegression},
	{CheckCandidateMostAdvanced, ReasonCandidateBehindQuorum, WaiverAllowDataLoss},
	{CheckFenceChainsAgree, ReasonHistoryDivergence, WaiverAllowDataLoss},
}

// checkFunc evaluates one rule. It must only read its input.
type checkFunc func(in Input) *pb.Check

// order is the fixed evaluation order; the explanation lists every check in
// this order, not just up to the first failure (AU-11 [P6-O2]).
var order = [...]checkFunc{
	checkRequestWellformed,
	checkPromotionEnabled,
	checkCandidateEligible,
	checkExpectedEpoch,
	checkOldHolderInactive,
	checkCandidateReport,
	checkWatermarkKnown,
	checkCandidateContainsWatermark,
	checkHistoryPrefix,
	checkMvccVisibility,
}

// Evaluate runs every check in the fixed order and returns the decision.
// It never mutates in and never panics on absent optional evidence.
// The decision is a pure function of in (AU-9 [P6-D1]).
func Evaluate(in Input) *pb.Decision {
	d := &pb.Decision{Checks: make([]*pb.Check, 0, len(order)+len(quorumOrder))}
	for _, run := range order {
		d.Checks = append(d.Checks, run(in))
	}
	if replicaQuorum(in.Domain) {
		for _, run := range quorumOrder {
			d.Checks = append(d.Checks, run(in))
		}
	}
	// A malformed request's waivers waive nothing: a waiver only counts when
	// it is known, unrepeated and justified by a reason (AU-13).
	if d.Checks[0].GetSatisfied() {
		d.WaiversApplied = applyWaivers(d.Checks, in.Attempt.GetRequest().GetWaivers())
	}
	d.Allowed = true
	for _, c := range d.Checks {
		if c.GetSatisfied() || c.GetWaivedBy() != "" {
			continue
		}
		d.Allowed = false
		d.DenialReason = c.GetReason()
		d.FailedInvariant = c.GetInvariant()
		break
	}
	return d
}

// applyWaivers marks each failed check a requested waiver covers and returns
// the sorted, unique waivers that actually waived something. The check keeps
// Satisfied=false and its Reason so the explanation shows what was waived.
// Nothing here can waive fencing (AU-1, AU-12): AeroDB's force override let
// two writers through (P6-A1a); ours is a named waiver of one check (AU-13).
func applyWaivers(checks []*pb.Check, requested []string) []string {
	var applied []string
	for _, c := range checks {
		if c.GetSatisfied() {
			continue
		}
		for _, w := range waivable {
			if c.GetName() == w.check && c.GetReason() == w.reason && slices.Contains(requested, w.waiver) {
				c.WaivedBy = w.waiver
				applied = append(applied, w.waiver)
			}
		}
	}
	slices.Sort(applied)
	return slices.Compact(applied)
}
