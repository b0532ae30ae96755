package fsm

import (
	"fmt"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// EventReleaseAbortLabelled records a verdict on an abort: an operator's
// label (LabelReleaseAbort) or "false" when the aborted digest was later
// promoted (a successful retry). Counted as canary_abort_verdict_total.
const EventReleaseAbortLabelled = "release.abort_labelled"

// Verdict sources (the event's "source" field).
const (
	AbortVerdictOperator = "operator"
	AbortVerdictRetry    = "retry"
)

// applyLabelReleaseAbort records an operator's verdict on an allowed abort
// still among the domain's kept decisions. Not fenced by the controller's
// epoch (an operator judges after the fact) and changes no epoch, lease or
// phase; a decision is judged once (a second label is refused), so the
// count of verdicts equals the count of judged aborts.
func applyLabelReleaseAbort(f *FSM, e entry) *Result {
	c := e.cmd.GetLabelReleaseAbort()
	if err := ValidateLabelReleaseAbort(c); err != nil {
		return failed(e.index, err)
	}
	d, err := f.lookup(c.GetDomain())
	if err != nil {
		return failed(e.index, err)
	}
	if d.Kind != pb.DomainKind_DOMAIN_KIND_RELEASE {
		return failed(e.index, fmt.Errorf("%w: domain %q is a %v domain; aborts are labelled on release domains", ErrPrecondition, d.Name, d.Kind))
	}
	var rec *pb.ReleaseDecision
	for _, r := range d.GetRelease().GetDecisions() {
		if r.Index == c.GetDecisionIndex() {
			rec = r
		}
	}
	switch {
	case rec == nil:
		return failed(e.index, fmt.Errorf("%w: no decision at index %d among %q's last %d decisions", ErrNotFound, c.GetDecisionIndex(), d.Name, MaxReleaseDecisions))
	case rec.Action != pb.ReleaseAction_RELEASE_ACTION_ABORT || !rec.GetDecision().GetAllowed():
		return failed(e.index, fmt.Errorf("%w: decision %d is not an allowed abort", ErrPrecondition, rec.Index))
	case rec.AbortVerdict != "":
		return failed(e.index, fmt.Errorf("%w: abort %d was already judged %q at index %d", ErrPrecondition, rec.Index, rec.AbortVerdict, rec.AbortVerdictIndex))
	}
	judgeAbort(f, e, d, rec, c.GetVerdict(), AbortVerdictOperator, c.GetReason(), c.GetOperator())
	d.UpdatedIndex = e.index
	res := done(d)
	res.Release = rec
	return res
}

// judgeAbort sets an abort decision's verdict and emits its event.
func judgeAbort(f *FSM, e entry, d *pb.Domain, rec *pb.ReleaseDecision, verdict, source, reason, by string) {
	rec.AbortVerdict, rec.AbortVerdictReason, rec.AbortVerdictIndex = verdict, reason, e.index
	f.emit(e, EventReleaseAbortLabelled, d, "decision_index", u(rec.Index), "verdict", verdict, "source", source,
		"canary", rec.AbortedCanary, "by", by, "reason", reason)
}

// judgeRetried labels "false" every unjudged allowed abort of digest still
// among the kept decisions: the same digest was promoted after all.
func judgeRetried(f *FSM, e entry, d *pb.Domain, digest string) {
	for _, r := range d.GetRelease().GetDecisions() {
		if r.Action == pb.ReleaseAction_RELEASE_ACTION_ABORT && r.GetDecision().GetAllowed() && r.AbortVerdict == "" &&
			r.AbortedCanary != "" && r.AbortedCanary == digest {
			judgeAbort(f, e, d, r, "false", AbortVerdictRetry, fmt.Sprintf("the same digest was promoted at index %d", e.index), "")
		}
	}
}

// ValidateLabelReleaseAbort checks a label's fields and bounds (the
// transport checks the same before anything reaches the log).
func ValidateLabelReleaseAbort(c *pb.LabelReleaseAbort) error {
	if err := ValidateName("domain", c.GetDomain()); err != nil {
		return err
	}
	if c.GetDecisionIndex() == 0 {
		return fmt.Errorf("%w: decision index is required", ErrInvalid)
	}
	if v := c.GetVerdict(); v != "true" && v != "false" {
		return fmt.Errorf("%w: verdict must be true or false (%d bytes given)", ErrInvalid, len(v))
	}
	if err := validateText("reason", c.GetReason(), MaxDeployReasonLen); err != nil {
		return err
	}
	if c.GetOperator() != "" {
		if err := validateText("operator", c.GetOperator(), MaxDeployReasonLen); err != nil {
			return err
		}
	}
	return nil
}
