package fsm

import (
	"fmt"
	"strings"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/validator"
)

// Release events (docs/RELEASES.md): one per decision, allowed or denied.
const (
	EventReleaseDecided = "release.decided"
)

// Bounds of a release domain's record.
const (
	MaxReleaseDecisions = 32
	MaxKnownGood        = 8
)

// applyReleaseTransition decides one release transition with the pure
// release validator and records the decision, allowed or denied, with its
// explanation and evidence digests. Fenced by the controller's (holder,
// epoch): a stale controller changes nothing and records nothing. Promote,
// abort and rollback grant epoch + 1 to the same holder, so every actuator
// call stamped with the old epoch is refused from then on.
func applyReleaseTransition(f *FSM, e entry) *Result {
	c := e.cmd.GetReleaseTransition()
	if err := ValidateReleaseTransition(c); err != nil {
		return failed(e.index, err)
	}
	d, err := f.lookup(c.GetDomain())
	if err != nil {
		return failed(e.index, err)
	}
	if d.Kind != pb.DomainKind_DOMAIN_KIND_RELEASE {
		return failed(e.index, fmt.Errorf("%w: domain %q is a %v domain; releases live in release domains", ErrPrecondition, d.Name, d.Kind))
	}
	if err := fence(d, c.GetHolder(), c.GetEpoch()); err != nil {
		return failed(e.index, err)
	}
	if d.Release == nil {
		d.Release = &pb.ReleaseState{}
	}
	rs := d.Release
	stamp := e.cmd.GetStampedUnixMs()
	decision, refs := validator.EvaluateRelease(validator.ReleaseInput{
		State: rs, Policy: d.GetPolicy().GetRelease(), Action: c.GetAction(), Canary: c.GetCanary(),
		Step: c.GetStep(), Weight: c.GetWeight(), Evidence: c.GetEvidence(), StampedUnixMs: stamp,
	})
	rec := &pb.ReleaseDecision{Index: e.index, StampedUnixMs: stamp, Action: c.GetAction(), Decision: decision,
		FromPhase: rs.Phase, EpochBefore: d.Epoch, Holder: c.GetHolder(), Reason: c.GetReason(), Evidence: refs}
	promoted := ""
	if decision.Allowed {
		if c.GetAction() == pb.ReleaseAction_RELEASE_ACTION_ABORT {
			rec.AbortedCanary = rs.Canary
		}
		if c.GetAction() == pb.ReleaseAction_RELEASE_ACTION_PROMOTE {
			promoted = rs.Canary
		}
		moveRelease(d, rs, c, refs, e.index, stamp)
	}
	rec.ToPhase, rec.Stable, rec.Canary, rec.Step, rec.Weight, rec.EpochAfter = rs.Phase, rs.Stable, rs.Canary, rs.Step, rs.Weight, d.Epoch
	rs.Decisions = append(rs.Decisions, rec)
	if n := len(rs.Decisions); n > MaxReleaseDecisions {
		rs.Decisions = append([]*pb.ReleaseDecision(nil), rs.Decisions[n-MaxReleaseDecisions:]...)
	}
	d.UpdatedIndex = e.index
	var digests []string
	for _, r := range refs {
		digests = append(digests, r.Type+"="+r.Digest)
	}
	f.emit(e, EventReleaseDecided, d, "action", validator.ActionName(c.GetAction()),
		"allowed", fmt.Sprint(decision.Allowed), "denial_reason", decision.DenialReason,
		"phase", validator.PhaseName(rs.Phase), "stable", rs.Stable, "canary", rs.Canary, "step", u(uint64(rs.Step)),
		"weight", u(uint64(rs.Weight)), "epoch_before", u(rec.EpochBefore), "evidence", strings.Join(digests, ","), "reason", c.GetReason())
	if promoted != "" {
		// A successful retry: earlier aborts of this digest were false.
		judgeRetried(f, e, d, promoted)
	}
	res := done(d)
	res.Release = rec
	return res
}

// moveRelease moves the release state for an allowed transition.
func moveRelease(d *pb.Domain, rs *pb.ReleaseState, c *pb.ReleaseTransition, refs []*pb.EvidenceRef, index uint64, stamp int64) {
	moved := func(phase pb.ReleasePhase) { rs.Phase, rs.SinceUnixMs, rs.SinceIndex = phase, stamp, index }
	switch c.GetAction() {
	case pb.ReleaseAction_RELEASE_ACTION_START_CANARY:
		rs.Canary, rs.Step, rs.Weight = c.GetCanary(), c.GetStep(), c.GetWeight()
		rs.CanaryManifest = nil
		for _, r := range refs {
			if r.Type == validator.EvidenceManifest {
				rs.CanaryManifest = r
			}
		}
		moved(pb.ReleasePhase_RELEASE_PHASE_PROGRESSING)
	case pb.ReleaseAction_RELEASE_ACTION_ADVANCE_STEP:
		rs.Step, rs.Weight = c.GetStep(), c.GetWeight()
		rs.SinceUnixMs, rs.SinceIndex = stamp, index
	case pb.ReleaseAction_RELEASE_ACTION_PAUSE:
		moved(pb.ReleasePhase_RELEASE_PHASE_PAUSED)
	case pb.ReleaseAction_RELEASE_ACTION_RESUME:
		moved(pb.ReleasePhase_RELEASE_PHASE_PROGRESSING)
	case pb.ReleaseAction_RELEASE_ACTION_PROMOTE:
		if rs.Stable != "" {
			rs.KnownGood = append([]string{rs.Stable}, rs.KnownGood...)
		}
		if len(rs.KnownGood) > MaxKnownGood {
			rs.KnownGood = rs.KnownGood[:MaxKnownGood]
		}
		rs.Stable, rs.Canary, rs.Step, rs.Weight, rs.CanaryManifest = rs.Canary, "", 0, 0, nil
		moved(pb.ReleasePhase_RELEASE_PHASE_PROMOTED)
		grant(d, d.Holder, index)
	case pb.ReleaseAction_RELEASE_ACTION_ABORT:
		rs.Canary, rs.Step, rs.Weight, rs.CanaryManifest = "", 0, 0, nil
		moved(pb.ReleasePhase_RELEASE_PHASE_ABORTED)
		grant(d, d.Holder, index)
	case pb.ReleaseAction_RELEASE_ACTION_ROLLBACK:
		rs.Stable, rs.KnownGood = rs.KnownGood[0], append([]string(nil), rs.KnownGood[1:]...)
		rs.Canary, rs.Step, rs.Weight, rs.CanaryManifest = "", 0, 0, nil
		moved(pb.ReleasePhase_RELEASE_PHASE_ROLLED_BACK)
		grant(d, d.Holder, index)
	}
}

// ValidateReleaseTransition checks a release transition's fields and
// bounds (the transport checks the same before anything reaches the log).
func ValidateReleaseTransition(c *pb.ReleaseTransition) error {
	if c.GetAction() < pb.ReleaseAction_RELEASE_ACTION_START_CANARY || c.GetAction() > pb.ReleaseAction_RELEASE_ACTION_ROLLBACK {
		return fmt.Errorf("%w: release action %v is not start-canary, advance-step, pause, resume, promote, abort or rollback", ErrInvalid, c.GetAction())
	}
	if err := ValidateName("domain", c.GetDomain()); err != nil {
		return err
	}
	if err := ValidateName("holder", c.GetHolder()); err != nil {
		return err
	}
	if c.GetAction() == pb.ReleaseAction_RELEASE_ACTION_START_CANARY {
		if err := validateDigest(c.GetCanary()); err != nil {
			return err
		}
	} else if c.GetCanary() != "" {
		return fmt.Errorf("%w: only start-canary names a canary", ErrInvalid)
	}
	if c.GetWeight() > 100 {
		return fmt.Errorf("%w: weight %d is above 100", ErrInvalid, c.GetWeight())
	}
	if err := validateText("reason", c.GetReason(), MaxDeployReasonLen); err != nil {
		return err
	}
	if len(c.GetEvidence()) > validator.MaxEvidencePerDecision {
		return fmt.Errorf("%w: %d pieces of evidence, more than %d", ErrInvalid, len(c.GetEvidence()), validator.MaxEvidencePerDecision)
	}
	for _, ev := range c.GetEvidence() {
		if err := ValidateName("evidence type", ev.GetType()); err != nil {
			return err
		}
		if n := len(ev.GetEnvelope()); n == 0 || n > validator.MaxEvidenceBytes {
			return fmt.Errorf("%w: %s evidence is %d bytes; want 1..%d", ErrInvalid, ev.GetType(), n, validator.MaxEvidenceBytes)
		}
	}
	return nil
}

// validateDigest: "sha256:" and 64 lowercase hex digits.
func validateDigest(s string) error {
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		return fmt.Errorf("%w: canary digest must be sha256:<64 lowercase hex digits> (%d bytes given)", ErrInvalid, len(s))
	}
	return nil
}
