package fsm

import (
	"fmt"
	"strings"
	"unicode/utf8"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// Deploy events (docs/DEPLOY.md).
const (
	EventDeployStarted          = "deploy.started"
	EventDeployFailover         = "deploy.failover"
	EventDeployHandoff          = "deploy.handoff"
	EventDeployVerifying        = "deploy.verifying"
	EventDeploySucceeded        = "deploy.succeeded"
	EventDeployFailed           = "deploy.failed"
	EventDeployRollbackRequired = "deploy.rollback_required"
)

// Bounds on a deploy step: every field of it ends up in the domain record.
const (
	MaxReleaseLen        = 256
	MaxDeployReasonLen   = 1024
	MaxDeployChecks      = 16
	MaxDeployOverrides   = 16
	MaxDeployTransitions = 32
)

// DeployID is a deployment's idempotency key.
func DeployID(environment, release string) string { return environment + "@" + release }

// applyDeployStep moves the deployment a lock domain records. Every step is
// fenced by (holder, epoch): only the lock's current holder moves it, and a
// holder whose epoch was superseded (its lease expired and another runner
// took the lock) is refused, so a paused runner's late steps change
// nothing. The legal moves:
//
//	CLAIM    idle | succeeded or failed (another deploy id)  -> deploying (started)
//	CLAIM    failed (same deploy id, retry)                  -> deploying (attempt + 1)
//	CLAIM    deploying | verifying from an earlier epoch      -> unchanged (failover)
//	VERIFY   deploying                                        -> verifying
//	SUCCEED  verifying                                        -> succeeded
//	FAIL     deploying | verifying                            -> failed
//	HANDOFF  deploying | verifying                            -> unchanged (lost)
//
// A step the deployment has already taken at this epoch is a no-op (a
// retried call whose outcome was unknown).
func applyDeployStep(f *FSM, e entry) *Result {
	c := e.cmd.GetDeployStep()
	if err := validateDeployStep(c); err != nil {
		return failed(e.index, err)
	}
	d, err := f.lookup(c.GetDomain())
	if err != nil {
		return failed(e.index, err)
	}
	if d.Kind != pb.DomainKind_DOMAIN_KIND_LOCK {
		return failed(e.index, fmt.Errorf("%w: domain %q is a %v domain; deployments live in lock domains", ErrPrecondition, d.Name, d.Kind))
	}
	if err := fence(d, c.GetHolder(), c.GetEpoch()); err != nil {
		return failed(e.index, err)
	}
	dep := d.Deployment
	if c.GetAction() != pb.DeployAction_DEPLOY_ACTION_CLAIM {
		if err := sameDeployment(d, c); err != nil {
			return failed(e.index, err)
		}
	}
	step := deployStep{f: f, e: e, d: d, c: c}
	switch c.GetAction() {
	case pb.DeployAction_DEPLOY_ACTION_CLAIM:
		return step.claim()
	case pb.DeployAction_DEPLOY_ACTION_VERIFY:
		return step.move(pb.DeployStatus_DEPLOY_STATUS_DEPLOYING, pb.DeployStatus_DEPLOY_STATUS_VERIFYING, EventDeployVerifying)
	case pb.DeployAction_DEPLOY_ACTION_SUCCEED:
		return step.move(pb.DeployStatus_DEPLOY_STATUS_VERIFYING, pb.DeployStatus_DEPLOY_STATUS_SUCCEEDED, EventDeploySucceeded)
	case pb.DeployAction_DEPLOY_ACTION_FAIL:
		return step.move(dep.GetStatus(), pb.DeployStatus_DEPLOY_STATUS_FAILED, EventDeployFailed)
	default: // HANDOFF
		return step.handoff()
	}
}

type deployStep struct {
	f *FSM
	e entry
	d *pb.Domain
	c *pb.DeployStep
}

// sameDeployment checks that a non-claim step names the deployment this
// holder claimed at this epoch.
func sameDeployment(d *pb.Domain, c *pb.DeployStep) error {
	dep := d.Deployment
	id := DeployID(c.GetEnvironment(), c.GetRelease())
	switch {
	case dep == nil:
		return fmt.Errorf("%w: domain %q records no deployment; claim it first", ErrPrecondition, d.Name)
	case dep.DeployId != id:
		return fmt.Errorf("%w: domain %q records deployment %q, not %q", ErrPrecondition, d.Name, dep.DeployId, id)
	case dep.Epoch != c.GetEpoch():
		return fmt.Errorf("%w: deployment %q was claimed at epoch %d, not at this epoch %d; claim it first", ErrPrecondition, id, dep.Epoch, c.GetEpoch())
	}
	return nil
}

func unfinished(s pb.DeployStatus) bool {
	return s == pb.DeployStatus_DEPLOY_STATUS_DEPLOYING || s == pb.DeployStatus_DEPLOY_STATUS_VERIFYING
}

func (s deployStep) claim() *Result {
	d, c, dep := s.d, s.c, s.d.Deployment
	id := DeployID(c.GetEnvironment(), c.GetRelease())
	switch {
	case dep != nil && dep.DeployId == id && dep.Epoch == c.GetEpoch() && dep.Holder == c.GetHolder() && unfinished(dep.Status):
		return done(d) // claimed already at this epoch: a retried call
	case dep != nil && dep.DeployId != id && unfinished(dep.Status):
		return failed(s.e.index, fmt.Errorf("%w: domain %q is %s deployment %q (epoch %d, runner group %q); it must succeed or fail first",
			ErrPrecondition, d.Name, statusWord(dep.Status), dep.DeployId, dep.Epoch, dep.RunnerGroup))
	case dep != nil && dep.DeployId == id && unfinished(dep.Status):
		return s.failover()
	case dep != nil && dep.DeployId == id && dep.Status == pb.DeployStatus_DEPLOY_STATUS_SUCCEEDED:
		return failed(s.e.index, fmt.Errorf("%w: deployment %q already succeeded (attempt %d, epoch %d, log index %d): nothing to do",
			ErrPrecondition, id, dep.Attempt, dep.Epoch, dep.UpdatedIndex))
	case dep != nil && dep.DeployId == id && dep.Status == pb.DeployStatus_DEPLOY_STATUS_FAILED && !c.GetRetry():
		return failed(s.e.index, fmt.Errorf("%w: deployment %q failed (attempt %d: %s); run it again with --retry",
			ErrPrecondition, id, dep.Attempt, dep.Reason))
	}
	attempt := uint32(1)
	var trail []*pb.DeployTransition
	if dep != nil && dep.DeployId == id { // a retry of a failed deployment
		attempt, trail = dep.Attempt+1, dep.Transitions
	}
	stamp := s.e.cmd.GetStampedUnixMs()
	d.Deployment = &pb.Deployment{
		DeployId: id, Environment: c.GetEnvironment(), Release: c.GetRelease(),
		Status: pb.DeployStatus_DEPLOY_STATUS_DEPLOYING, Attempt: attempt,
		StartedUnixMs: stamp, StartedIndex: s.e.index, Overrides: c.GetOverrides(),
		Transitions: trail,
	}
	s.record(pb.DeployStatus_DEPLOY_STATUS_UNSPECIFIED)
	s.f.emit(s.e, EventDeployStarted, d, "deploy_id", id, "env", c.GetEnvironment(), "release", c.GetRelease(),
		"attempt", u(uint64(attempt)), "runner_group", c.GetRunnerGroup(), "role", c.GetRole())
	return done(d)
}

// failover: this holder took the lock over from the one that was working on
// the same deployment at an earlier epoch; the status stays (deploying: run
// the idempotent deploy again; verifying: resume at verification).
func (s deployStep) failover() *Result {
	d, c, dep := s.d, s.c, s.d.Deployment
	from := dep.Holder
	fromGroup, fromEpoch := dep.RunnerGroup, dep.Epoch
	stamp := s.e.cmd.GetStampedUnixMs()
	var took int64
	if dep.LostUnixMs > 0 && stamp >= dep.LostUnixMs {
		took = stamp - dep.LostUnixMs
	}
	dep.Failovers++
	dep.LostUnixMs = 0
	dep.Overrides = c.GetOverrides()
	s.record(dep.Status)
	s.f.emit(s.e, EventDeployFailover, d, "deploy_id", dep.DeployId, "env", dep.Environment,
		"from_holder", from, "from_group", fromGroup, "from_epoch", u(fromEpoch),
		"to_holder", c.GetHolder(), "to_group", c.GetRunnerGroup(), "status", statusWord(dep.Status),
		"failover_ms", fmt.Sprint(took), "reason", c.GetReason())
	return done(d)
}

// move is a status transition from → to by the holder that claimed it.
func (s deployStep) move(from, to pb.DeployStatus, event string) *Result {
	d, c, dep := s.d, s.c, s.d.Deployment
	if dep.Status == to {
		return done(d) // taken already: a retried call
	}
	if dep.Status != from || !unfinished(dep.Status) {
		return failed(s.e.index, fmt.Errorf("%w: deployment %q is %s; %v is not legal from there",
			ErrPrecondition, dep.DeployId, statusWord(dep.Status), c.GetAction()))
	}
	prev := dep.Status
	dep.Status = to
	if to == pb.DeployStatus_DEPLOY_STATUS_SUCCEEDED || to == pb.DeployStatus_DEPLOY_STATUS_FAILED {
		dep.FinishedUnixMs = s.e.cmd.GetStampedUnixMs()
		dep.Reason = c.GetReason()
		dep.FailedChecks = c.GetFailedChecks()
	}
	s.record(prev)
	fields := []string{"deploy_id", dep.DeployId, "env", dep.Environment, "attempt", u(uint64(dep.Attempt)),
		"runner_group", dep.RunnerGroup, "failovers", u(uint64(dep.Failovers))}
	if dep.FinishedUnixMs > 0 {
		fields = append(fields, "duration_ms", fmt.Sprint(max(0, dep.FinishedUnixMs-dep.StartedUnixMs)))
	}
	if to == pb.DeployStatus_DEPLOY_STATUS_FAILED {
		fields = append(fields, "failed_checks", strings.Join(dep.FailedChecks, ","), "reason", dep.Reason)
	}
	s.f.emit(s.e, event, d, fields...)
	if to == pb.DeployStatus_DEPLOY_STATUS_FAILED && c.GetRollbackRequired() {
		s.f.emit(s.e, EventDeployRollbackRequired, d, "deploy_id", dep.DeployId, "env", dep.Environment,
			"release", dep.Release, "failed_checks", strings.Join(dep.FailedChecks, ","), "reason", dep.Reason)
	}
	return done(d)
}

// handoff: the holder gives the unfinished deployment up (its preflight or
// deploy command failed) for the other runner group; it releases next.
func (s deployStep) handoff() *Result {
	d, c, dep := s.d, s.c, s.d.Deployment
	if !unfinished(dep.Status) {
		return failed(s.e.index, fmt.Errorf("%w: deployment %q is %s; only an unfinished one can be handed off",
			ErrPrecondition, dep.DeployId, statusWord(dep.Status)))
	}
	if dep.LostUnixMs != 0 {
		return done(d) // handed off already: a retried call
	}
	dep.LostUnixMs = max(1, s.e.cmd.GetStampedUnixMs())
	dep.Reason = c.GetReason()
	dep.FailedChecks = c.GetFailedChecks()
	s.record(dep.Status)
	s.f.emit(s.e, EventDeployHandoff, d, "deploy_id", dep.DeployId, "env", dep.Environment,
		"runner_group", dep.RunnerGroup, "failed_checks", strings.Join(dep.FailedChecks, ","), "reason", dep.Reason)
	return done(d)
}

// record stamps the deployment with this step and appends it to the
// bounded audit trail.
func (s deployStep) record(from pb.DeployStatus) {
	dep, c := s.d.Deployment, s.c
	stamp := s.e.cmd.GetStampedUnixMs()
	dep.Holder, dep.Epoch, dep.RunnerGroup, dep.Role = c.GetHolder(), c.GetEpoch(), c.GetRunnerGroup(), c.GetRole()
	dep.UpdatedUnixMs, dep.UpdatedIndex = stamp, s.e.index
	dep.Transitions = append(dep.Transitions, &pb.DeployTransition{
		Index: s.e.index, StampedUnixMs: stamp, Action: c.GetAction(), From: from, To: dep.Status,
		Holder: c.GetHolder(), Epoch: c.GetEpoch(), RunnerGroup: c.GetRunnerGroup(), Role: c.GetRole(), Reason: c.GetReason(),
	})
	if n := len(dep.Transitions); n > MaxDeployTransitions {
		dep.Transitions = append([]*pb.DeployTransition(nil), dep.Transitions[n-MaxDeployTransitions:]...)
	}
	s.d.UpdatedIndex = s.e.index
}

// deployLost notes, on a lock's release or takeover, that the holder
// working on an unfinished deployment is gone (stamp: when, by the
// leader's clock).
func deployLost(d *pb.Domain, holder string, epoch uint64, stamp int64) {
	dep := d.Deployment
	if dep == nil || !unfinished(dep.Status) || dep.Holder != holder || dep.Epoch != epoch || dep.LostUnixMs != 0 {
		return
	}
	dep.LostUnixMs = max(1, stamp)
}

func statusWord(s pb.DeployStatus) string {
	switch s {
	case pb.DeployStatus_DEPLOY_STATUS_DEPLOYING:
		return "deploying"
	case pb.DeployStatus_DEPLOY_STATUS_VERIFYING:
		return "verifying"
	case pb.DeployStatus_DEPLOY_STATUS_SUCCEEDED:
		return "succeeded"
	case pb.DeployStatus_DEPLOY_STATUS_FAILED:
		return "failed"
	}
	return "idle"
}

// ValidateDeployStep checks a deploy step's fields and bounds (the
// transport checks the same before anything reaches the log).
func ValidateDeployStep(c *pb.DeployStep) error { return validateDeployStep(c) }

func validateDeployStep(c *pb.DeployStep) error {
	if c.GetAction() < pb.DeployAction_DEPLOY_ACTION_CLAIM || c.GetAction() > pb.DeployAction_DEPLOY_ACTION_HANDOFF {
		return fmt.Errorf("%w: deploy action %v is not claim, verify, succeed, fail or handoff", ErrInvalid, c.GetAction())
	}
	for _, n := range []struct{ kind, v string }{{"domain", c.GetDomain()}, {"holder", c.GetHolder()},
		{"environment", c.GetEnvironment()}, {"runner group", c.GetRunnerGroup()}, {"role", c.GetRole()}} {
		if err := ValidateName(n.kind, n.v); err != nil {
			return err
		}
	}
	if err := validateRelease(c.GetRelease()); err != nil {
		return err
	}
	if err := validateText("reason", c.GetReason(), MaxDeployReasonLen); err != nil {
		return err
	}
	if len(c.GetFailedChecks()) > MaxDeployChecks {
		return fmt.Errorf("%w: %d failed checks, more than %d", ErrInvalid, len(c.GetFailedChecks()), MaxDeployChecks)
	}
	for _, chk := range c.GetFailedChecks() {
		if err := ValidateName("failed check", chk); err != nil {
			return err
		}
	}
	if len(c.GetOverrides()) > MaxDeployOverrides {
		return fmt.Errorf("%w: %d overrides, more than %d", ErrInvalid, len(c.GetOverrides()), MaxDeployOverrides)
	}
	for _, o := range c.GetOverrides() {
		if err := ValidateName("overridden check", o.GetCheck()); err != nil {
			return err
		}
		if o.GetReason() == "" {
			return fmt.Errorf("%w: the override of %q has no reason", ErrInvalid, o.GetCheck())
		}
		if err := validateText("override reason", o.GetReason(), MaxDeployReasonLen); err != nil {
			return err
		}
	}
	return nil
}

// validateRelease: a release digest or tag, 1..256 bytes of
// [A-Za-z0-9._:@/+-].
func validateRelease(s string) error {
	if s == "" || len(s) > MaxReleaseLen {
		return fmt.Errorf("%w: release is %d bytes; want 1..%d", ErrInvalid, len(s), MaxReleaseLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._:@/+-", c) >= 0 {
			continue
		}
		return fmt.Errorf("%w: release: character %q at %d is not allowed (a digest or tag: letters, digits, '._:@/+-')", ErrInvalid, c, i)
	}
	return nil
}

// validateText bounds free text stored in the record: valid UTF-8 without
// control characters (it is printed by operators' terminals).
func validateText(kind, s string, maxLen int) error {
	if len(s) > maxLen {
		return fmt.Errorf("%w: %s is %d bytes, longer than %d", ErrInvalid, kind, len(s), maxLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, kind)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: %s contains control character %U", ErrInvalid, kind, r)
		}
	}
	return nil
}
