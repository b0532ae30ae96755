package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/fsm"
	"github.com/spf13/cobra"
)

// newDeployCmd: the deploy pipeline's runner side (docs/DEPLOY.md).
func newDeployCmd(o *options) *cobra.Command {
	return newGroupCmd("deploy", "Run a deployment under a fenced deploy lock, with runner-group failover",
		newDeployRunCmd(o), newDeployGetCmd(o))
}

// deployConfig is one `deploy run`.
type deployConfig struct {
	domain, env, release, role, group, holder string
	argv                                      []string
	primaryGrace, cmdTimeout, killGrace       time.Duration
	outcomeWait, lockWait                     time.Duration
	retry                                     bool
	checks                                    deployChecks
}

// deployChecks are the runner's checks before and after the deploy
// command; nil ones are skipped.
type deployChecks struct {
	// preflight returns the failed checks (as "preflight:NAME"), the
	// overridden ones, and a one-line summary.
	preflight func(ctx context.Context) (failed []string, overrides []*pb.DeployOverride, summary string, err error)
	// gates returns the failed health gates (as "gate:SERVICE") and a
	// one-line summary.
	gates func(ctx context.Context) (failed []string, summary string, err error)
	// alert tells on-call (an Alertmanager-compatible webhook).
	alert func(ctx context.Context, name, summary string, labels map[string]string) error
}

const (
	rolePrimary   = "primary"
	roleSecondary = "secondary"
)

func newDeployRunCmd(o *options) *cobra.Command {
	cfg := deployConfig{}
	var (
		primaryGrace, cmdTimeout, killGrace = positiveDuration(15 * time.Second), positiveDuration(30 * time.Minute), positiveDuration(2 * time.Second)
		outcomeWait, lockWait               = positiveDuration(30 * time.Minute), positiveDuration(time.Hour)
		role                                = enumValue{value: rolePrimary, allowed: []string{rolePrimary, roleSecondary}}
		files                               checkFiles
	)
	cmd := &cobra.Command{
		Use:   "run --domain D --env ENV --release DIGEST --role primary|secondary --runner-group G -- CMD [ARGS...]",
		Short: "Run CMD once per release under the deploy lock; the other runner group takes over if this one fails",
		Long: `Runs the deployment of RELEASE to ENV under the deploy lock DOMAIN (a lock
domain). Start it on both runner groups at once: the primary takes the lock;
the secondary is a hot standby that waits (watching the domain, not polling)
and takes the lock over when the primary has not claimed the deployment
within --primary-grace, its lease expired, or it handed the deployment off
(its preflight or CMD failed).

Steps, each one committed entry fenced by the lock's epoch: claim (deploy id
ENV@RELEASE), preflight (--preflight FILE), CMD, verify, health gates
(--gates FILE), succeed or fail. CMD runs in its own process group with
AUTHORITY_DOMAIN, AUTHORITY_EPOCH, AUTHORITY_DEPLOY_ID, AUTHORITY_ENV,
AUTHORITY_RELEASE and AUTHORITY_RUNNER_GROUP set: a target that keeps state
should refuse epochs lower than the highest it saw ('authorityctl fence').
While CMD runs the lease is renewed; if it is lost, CMD's process group gets
SIGTERM, then SIGKILL after --kill-grace, before the lease can expire on the
service.

A takeover continues the recorded deployment: deploying runs CMD again (it
must be idempotent), verifying resumes at the health gates. A deploy id that
already succeeded is not run again; a failed one needs --retry. A failed
health gate marks the deployment failed and rollback-required and alerts;
so does a failure on both runner groups. Both runners exit with the
deployment's outcome: 0 succeeded, 1 otherwise.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 0 || len(args) == 0 {
				return usagef("give the deploy command after --: deploy run ... -- CMD [ARGS...]")
			}
			return nil
		},
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			o.cleansUp.Store(true) // stops CMD (SIGTERM, --kill-grace) and hands off
			cfg.argv, cfg.role = args, role.value
			cfg.primaryGrace, cfg.cmdTimeout, cfg.killGrace = time.Duration(primaryGrace), time.Duration(cmdTimeout), time.Duration(killGrace)
			cfg.outcomeWait, cfg.lockWait = time.Duration(outcomeWait), time.Duration(lockWait)
			if cfg.holder == "" { // the runner's own identity: deployer/NAME acts as NAME
				self, err := o.selfIdentity()
				if err != nil {
					return err
				}
				if self.IsZero() {
					return usagef("give --holder NAME (no client certificate to take it from)")
				}
				cfg.holder = self.Name
			}
			if err := checkNames("domain", cfg.domain, "environment", cfg.env, "runner group", cfg.group, "holder", cfg.holder); err != nil {
				return err
			}
			st := &pb.DeployStep{Domain: cfg.domain, Holder: cfg.holder, Epoch: 1, Action: pb.DeployAction_DEPLOY_ACTION_CLAIM,
				Environment: cfg.env, Release: cfg.release, RunnerGroup: cfg.group, Role: cfg.role}
			if err := fsm.ValidateDeployStep(st); err != nil {
				return usageError{err}
			}
			checks, err := loadDeployChecks(files, cfg.env, cfg.domain, fsm.DeployID(cfg.env, cfg.release), o.stderr, o.getenv)
			if err != nil {
				return usageError{err}
			}
			cfg.checks = checks
			return runDeploy(cmd.Context(), o, cfg)
		}),
	}
	fs := cmd.Flags()
	fs.StringVar(&cfg.domain, "domain", "", "the deploy lock (a lock domain)")
	fs.StringVar(&cfg.env, "env", "", "environment deployed to (part of the deploy id)")
	fs.StringVar(&cfg.release, "release", "", "release digest or tag (part of the deploy id)")
	fs.Var(&role, "role", "this runner's role")
	fs.StringVar(&cfg.group, "runner-group", "", "this runner's group (recorded with every step)")
	fs.StringVar(&cfg.holder, "holder", "", "the lock holder name (default: NAME of this runner's certificate, deployer/NAME)")
	fs.Var(&primaryGrace, "primary-grace", "secondary: how long the primary has to claim the deployment")
	fs.Var(&cmdTimeout, "cmd-timeout", "CMD is stopped (and counts as failed) after this long")
	fs.Var(&killGrace, "kill-grace", "between SIGTERM and SIGKILL of CMD's process group")
	fs.Var(&outcomeWait, "outcome-wait", "after handing off: how long to wait for the other runner's outcome")
	fs.Var(&lockWait, "lock-wait", "how long to wait for the deploy lock")
	fs.BoolVar(&cfg.retry, "retry", false, "run a deploy id that failed again")
	fs.StringVar(&files.preflight, "preflight", "", "preflight configuration (docs/PREFLIGHT.md) to run before CMD")
	fs.StringArrayVar(&files.overrides, "override", nil, "CHECK=REASON: let that failing preflight check pass (recorded in the deployment)")
	fs.StringVar(&files.gates, "gates", "", "health gates (docs/HEALTH-GATES.md) to run after CMD")
	fs.StringVar(&files.webhook, "alert-webhook", "", "Alertmanager-compatible URL alerted on a failed health gate and on failure of both runner groups")
	markRequired(cmd, "domain", "env", "release", "runner-group")
	return cmd
}

// deployRun is one runner's run.
type deployRun struct {
	o   *options
	cfg deployConfig
	c   *client.Client
	id  string
}

func (r *deployRun) logf(format string, args ...any) {
	r.o.progressf("deploy %s [%s/%s]: "+format, append([]any{r.id, r.cfg.group, r.cfg.role}, args...)...)
}

// errDeployFailed: the deployment's outcome is failed (exit 1).
var errDeployFailed = errors.New("deployment failed")

func runDeploy(ctx context.Context, o *options, cfg deployConfig) error {
	c, err := o.connect(ctx)
	if err != nil {
		return err
	}
	defer closeQuietly(c)
	r := &deployRun{o: o, cfg: cfg, c: c, id: fsm.DeployID(cfg.env, cfg.release)}
	before, err := r.read(ctx)
	if err != nil {
		return err
	}
	if done, err := r.finished(before, cfg.retry); done {
		return err
	}
	if cfg.role == roleSecondary {
		r.awaitPrimary(ctx, before)
	}
	retry := cfg.retry && before.GetDeployId() == r.id && before.GetStatus() == pb.DeployStatus_DEPLOY_STATUS_FAILED
	for {
		lease, err := r.acquire(ctx)
		if err != nil {
			return err
		}
		again, err := r.holding(ctx, lease, retry)
		if !again {
			return err
		}
		// Handed off, or the lease was lost: the other runner group works
		// on it. Wait for the outcome; if the deployment is still
		// unfinished and unclaimed at the end, take the lock back.
		if done, err := r.awaitOutcome(ctx); done {
			return err
		}
		retry = false
	}
}

// read returns the domain's deployment (linearizable).
func (r *deployRun) read(ctx context.Context) (*pb.Deployment, error) {
	rctx, cancel := r.o.withTimeout(ctx)
	defer cancel()
	d, err := r.c.GetDomain(rctx, r.cfg.domain)
	if err != nil {
		return nil, err
	}
	if d.GetKind() != pb.DomainKind_DOMAIN_KIND_LOCK {
		return nil, usagef("domain %q is a %s domain; a deploy lock is a lock domain", r.cfg.domain, kindName(d.GetKind()))
	}
	return d.GetDeployment(), nil
}

// finished reports whether this deploy id already has an outcome, and the
// exit it means: succeeded (0), failed without --retry (1).
func (r *deployRun) finished(dep *pb.Deployment, retry bool) (bool, error) {
	if dep.GetDeployId() != r.id {
		return false, nil
	}
	switch dep.GetStatus() {
	case pb.DeployStatus_DEPLOY_STATUS_SUCCEEDED:
		r.logf("already succeeded (attempt %d, runner group %s, epoch %d): nothing to do", dep.GetAttempt(), dep.GetRunnerGroup(), dep.GetEpoch())
		return true, r.print(dep)
	case pb.DeployStatus_DEPLOY_STATUS_FAILED:
		if retry {
			return false, nil
		}
		r.logf("failed (attempt %d: %s); run again with --retry", dep.GetAttempt(), dep.GetReason())
		return true, errors.Join(r.print(dep), errDeployFailed)
	}
	return false, nil
}

func (r *deployRun) print(dep *pb.Deployment) error {
	if dep == nil {
		return nil
	}
	return r.o.printer().Deployment(dep)
}

// awaitPrimary (secondary): give the primary --primary-grace to claim this
// deployment, watching the domain's events.
func (r *deployRun) awaitPrimary(ctx context.Context, before *pb.Deployment) {
	if before.GetDeployId() == r.id {
		return // claimed already
	}
	wctx, cancel := context.WithTimeout(ctx, r.cfg.primaryGrace)
	defer cancel()
	w, err := r.c.Watch(wctx, 0, r.cfg.domain)
	if err != nil {
		return
	}
	defer w.Close()
	for {
		ev, err := w.Next(wctx)
		if err != nil {
			r.logf("the primary did not claim the deployment within %s; taking the lock when free", r.cfg.primaryGrace)
			return
		}
		if strings.HasPrefix(ev.GetType(), "deploy.") && eventField(ev, "deploy_id") == r.id {
			r.logf("the primary claimed the deployment; standing by")
			return
		}
	}
}

// acquire waits for the deploy lock (blocking acquire, one bounded call
// after another, until --lock-wait).
func (r *deployRun) acquire(ctx context.Context) (*client.Lease, error) {
	wctx, cancel := context.WithTimeout(ctx, r.cfg.lockWait)
	defer cancel()
	for {
		// Each blocking call is bounded well below --lock-wait, so that a
		// wait cut by a leader change, or a grant whose first renewal is
		// slow to confirm, is retried within seconds.
		cctx, ccancel := context.WithTimeout(wctx, 20*time.Second)
		l, err := r.c.Acquire(cctx, r.cfg.domain, r.cfg.holder, client.WithWait(), client.WithMargin(r.cfg.killGrace+time.Second))
		ccancel()
		if err == nil {
			r.logf("holds the deploy lock at epoch %d", l.Epoch())
			return l, nil
		}
		if wctx.Err() != nil {
			return nil, fmt.Errorf("no deploy lock within --lock-wait %s: %w", r.cfg.lockWait, err)
		}
		if !errors.Is(err, client.ErrFailedPrecondition) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, client.ErrOutcomeUnknown) {
			return nil, err
		}
	}
}

// step records one deploy step at the lease's epoch.
func (r *deployRun) step(ctx context.Context, l *client.Lease, action pb.DeployAction, reason string, failed []string,
	mod func(*pb.DeployStep)) (*pb.Deployment, error) {
	if err := l.Check(); err != nil {
		return nil, err
	}
	st := &pb.DeployStep{Domain: r.cfg.domain, Holder: r.cfg.holder, Epoch: l.Epoch(), Action: action,
		Environment: r.cfg.env, Release: r.cfg.release, RunnerGroup: r.cfg.group, Role: r.cfg.role,
		Reason: bounded(reason, fsm.MaxDeployReasonLen), FailedChecks: failed}
	if mod != nil {
		mod(st)
	}
	sctx, cancel := r.o.withTimeout(ctx)
	defer cancel()
	return r.c.DeployStep(sctx, st)
}

// holding runs the deployment while holding the lock. again reports that
// the deployment went to the other runner group (handoff, lost lease) and
// this runner should wait for its outcome.
func (r *deployRun) holding(ctx context.Context, l *client.Lease, retry bool) (again bool, err error) {
	release := func() {
		rctx, cancel := r.o.withTimeout(context.WithoutCancel(ctx))
		defer cancel()
		if err := l.Release(rctx); err != nil && !errors.Is(err, client.ErrFenced) {
			r.logf("release: %v", err)
		}
	}
	defer release()
	dep, err := r.read(ctx)
	if err != nil {
		return false, err
	}
	if done, err := r.finished(dep, retry); done {
		return false, err
	}
	if dep.GetDeployId() == r.id && dep.GetLostUnixMs() != 0 && dep.GetRunnerGroup() == r.cfg.group {
		// This group handed it off and nobody took it over.
		return false, r.fail(ctx, l, "no other runner group took the deployment over after this one handed it off: "+dep.GetReason(),
			dep.GetFailedChecks(), false)
	}
	reason := "started"
	if dep.GetDeployId() == r.id && (dep.GetStatus() == pb.DeployStatus_DEPLOY_STATUS_DEPLOYING || dep.GetStatus() == pb.DeployStatus_DEPLOY_STATUS_VERIFYING) {
		reason = "took over from " + dep.GetRunnerGroup() + ": " + takeoverReason(dep)
	}
	dep, err = r.step(ctx, l, pb.DeployAction_DEPLOY_ACTION_CLAIM, reason, nil, func(st *pb.DeployStep) { st.Retry = retry })
	if err != nil {
		return r.lost(l, err)
	}
	r.logf("claimed (%s, attempt %d, failovers %d): %s", statusName(dep.GetStatus()), dep.GetAttempt(), dep.GetFailovers(), reason)
	if dep.GetStatus() == pb.DeployStatus_DEPLOY_STATUS_DEPLOYING {
		if again, err, done := r.deploy(ctx, l); done {
			return again, err
		}
	}
	return r.verify(ctx, l)
}

// deploy runs preflight and CMD, then records verify. done: the run ended
// (handed off, failed, or lost) with again/err as holding's result.
func (r *deployRun) deploy(ctx context.Context, l *client.Lease) (again bool, err error, done bool) {
	if r.cfg.checks.preflight != nil {
		failed, overrides, summary, perr := r.cfg.checks.preflight(l.Context())
		if perr != nil {
			failed, summary = []string{"preflight:error"}, perr.Error()
		}
		if len(failed) > 0 {
			again, err := r.giveUp(ctx, l, "preflight failed: "+summary, failed)
			return again, err, true
		}
		if len(overrides) > 0 {
			if _, err := r.step(ctx, l, pb.DeployAction_DEPLOY_ACTION_CLAIM, "preflight overrides", nil,
				func(st *pb.DeployStep) { st.Overrides = overrides }); err != nil {
				again, err := r.lost(l, err)
				return again, err, true
			}
		}
		r.logf("preflight passed: %s", summary)
	}
	if err := r.runCommand(ctx, l); err != nil {
		if l.Check() != nil {
			again, err := r.lost(l, err)
			return again, err, true
		}
		again, err := r.giveUp(ctx, l, err.Error(), []string{"command"})
		return again, err, true
	}
	if _, err := r.step(ctx, l, pb.DeployAction_DEPLOY_ACTION_VERIFY, "deploy command succeeded", nil, nil); err != nil {
		again, err := r.lost(l, err)
		return again, err, true
	}
	return false, nil, false
}

// verify runs the health gates and records the outcome.
func (r *deployRun) verify(ctx context.Context, l *client.Lease) (bool, error) {
	if r.cfg.checks.gates != nil {
		r.logf("verifying: health gates")
		failed, summary, gerr := r.cfg.checks.gates(l.Context())
		if gerr != nil {
			failed, summary = []string{"gate:error"}, gerr.Error()
		}
		if l.Check() != nil {
			return r.lost(l, l.Check())
		}
		if len(failed) > 0 {
			return false, r.fail(ctx, l, "health gates failed: "+summary, failed, true)
		}
	}
	dep, err := r.step(ctx, l, pb.DeployAction_DEPLOY_ACTION_SUCCEED, "health gates passed", nil, nil)
	if err != nil {
		return r.lost(l, err)
	}
	r.logf("succeeded (attempt %d, failovers %d)", dep.GetAttempt(), dep.GetFailovers())
	return false, r.print(dep)
}

// giveUp after a failed preflight or CMD: the primary hands the deployment
// off to the other runner group; the secondary (the last one) fails it.
func (r *deployRun) giveUp(ctx context.Context, l *client.Lease, reason string, failed []string) (bool, error) {
	if r.cfg.role == roleSecondary {
		return false, r.fail(ctx, l, "both runner groups failed; "+r.cfg.group+": "+reason, failed, false)
	}
	r.logf("handing off to the other runner group: %s", reason)
	if _, err := r.step(ctx, l, pb.DeployAction_DEPLOY_ACTION_HANDOFF, reason, failed, nil); err != nil {
		return r.lost(l, err)
	}
	return true, nil
}

// fail records the deployment failed, alerts, and returns errDeployFailed.
func (r *deployRun) fail(ctx context.Context, l *client.Lease, reason string, failed []string, rollback bool) error {
	dep, err := r.step(ctx, l, pb.DeployAction_DEPLOY_ACTION_FAIL, reason, failed, func(st *pb.DeployStep) { st.RollbackRequired = rollback })
	if err != nil {
		_, err = r.lost(l, err)
		return err
	}
	r.logf("FAILED: %s", reason)
	if r.cfg.checks.alert != nil && !rollback { // a failed gate alerted already (pipeline/gate)
		name := "DeployFailedOnBothRunnerGroups"
		labels := map[string]string{"env": r.cfg.env, "domain": r.cfg.domain, "deploy_id": r.id, "release": r.cfg.release,
			"runner_group": r.cfg.group}
		actx, cancel := r.o.withTimeout(context.WithoutCancel(ctx))
		defer cancel()
		if aerr := r.cfg.checks.alert(actx, name, bounded(reason, 512), labels); aerr != nil {
			r.logf("alert: %v", aerr)
		}
	}
	return errors.Join(r.print(dep), errDeployFailed)
}

// lost: the lease ended (or a step was fenced): another runner holds the
// lock. Wait for the deployment's outcome.
func (r *deployRun) lost(l *client.Lease, err error) (bool, error) {
	if l.Check() == nil && !errors.Is(err, client.ErrFenced) && !errors.Is(err, client.ErrLeaseLost) {
		return false, err
	}
	r.logf("lost the deploy lock at epoch %d (%v); the other runner group continues", l.Epoch(), err)
	return true, nil
}

// awaitOutcome waits (watching the domain) for this deployment to succeed
// or fail. done: it did, with the exit it means; otherwise it is still
// unfinished after --outcome-wait and the caller takes the lock back.
func (r *deployRun) awaitOutcome(ctx context.Context) (bool, error) {
	wctx, cancel := context.WithTimeout(ctx, r.cfg.outcomeWait)
	defer cancel()
	w, err := r.c.Watch(wctx, 0, r.cfg.domain)
	if err != nil {
		return true, err
	}
	defer w.Close()
	for {
		dep, err := r.read(wctx)
		if err == nil && dep.GetDeployId() == r.id {
			switch dep.GetStatus() {
			case pb.DeployStatus_DEPLOY_STATUS_SUCCEEDED:
				r.logf("the %s runner group succeeded", dep.GetRunnerGroup())
				return true, r.print(dep)
			case pb.DeployStatus_DEPLOY_STATUS_FAILED:
				r.logf("the deployment failed on the %s runner group: %s", dep.GetRunnerGroup(), dep.GetReason())
				return true, errors.Join(r.print(dep), errDeployFailed)
			}
		}
		for {
			ev, err := w.Next(wctx)
			if err != nil {
				if ctx.Err() != nil {
					return true, ctx.Err()
				}
				r.logf("no outcome within --outcome-wait %s; taking the lock back", r.cfg.outcomeWait)
				return false, nil
			}
			if strings.HasPrefix(ev.GetType(), "deploy.") {
				break // read the record again
			}
		}
	}
}

// runCommand runs CMD in its own process group while the lease holds.
// The group is stopped (SIGTERM, then SIGKILL after --kill-grace) when the
// lease is lost, at --cmd-timeout, or when ctx ends.
func (r *deployRun) runCommand(ctx context.Context, l *client.Lease) error {
	cmd := exec.Command(r.cfg.argv[0], r.cfg.argv[1:]...)
	cmd.Stdout, cmd.Stderr = r.o.stderr, r.o.stderr
	cmd.Env = append(os.Environ(),
		"AUTHORITY_DOMAIN="+r.cfg.domain, "AUTHORITY_EPOCH="+strconv.FormatUint(l.Epoch(), 10),
		"AUTHORITY_DEPLOY_ID="+r.id, "AUTHORITY_ENV="+r.cfg.env, "AUTHORITY_RELEASE="+r.cfg.release,
		"AUTHORITY_RUNNER_GROUP="+r.cfg.group, "AUTHORITY_ROLE="+r.cfg.role)
	// Its own process group (stopped as a whole), killed if this runner
	// dies first (a runner killed with -9 leaves no deploy running).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	r.logf("running %s at epoch %d", r.cfg.argv[0], l.Epoch())
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("deploy command: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	timeout := time.NewTimer(r.cfg.cmdTimeout)
	defer timeout.Stop()
	var why error
	select {
	case err := <-exited:
		if err != nil {
			return fmt.Errorf("deploy command: %w", err)
		}
		return nil
	case <-l.Lost():
		why = fmt.Errorf("deploy command stopped: the deploy lock was lost: %w", l.Err())
	case <-timeout.C:
		why = fmt.Errorf("deploy command stopped after --cmd-timeout %s", r.cfg.cmdTimeout)
	case <-ctx.Done():
		why = fmt.Errorf("deploy command stopped: %w", context.Cause(ctx))
	}
	r.logf("%v", why)
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	grace := time.NewTimer(r.cfg.killGrace)
	defer grace.Stop()
	select {
	case <-exited:
	case <-grace.C:
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-exited
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL) // whatever of the group is left
	return why
}

func takeoverReason(dep *pb.Deployment) string {
	if dep.GetReason() != "" && dep.GetLostUnixMs() != 0 {
		return "handed off: " + dep.GetReason()
	}
	return "its lease expired"
}

func statusName(s pb.DeployStatus) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "DEPLOY_STATUS_"))
}

func eventField(ev *pb.Event, key string) string {
	for _, f := range ev.GetFields() {
		if f.GetKey() == key {
			return f.GetValue()
		}
	}
	return ""
}

// bounded cuts s to at most n bytes on a rune boundary, without control
// characters (it is stored in the record and printed).
func bounded(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
	for len(s) > n {
		s = s[:n]
		s = strings.ToValidUTF8(s, "")
	}
	return s
}

// newDeployGetCmd prints a deploy lock's deployment record.
func newDeployGetCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "get DOMAIN",
		Short: "Print the deployment a deploy lock records (status, runner, failovers, transitions)",
		Args:  exactArgs("DOMAIN"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			d, err := fetchDomain(cmd.Context(), o, args[0])
			if err != nil {
				return err
			}
			if d.GetDeployment() == nil {
				return fmt.Errorf("domain %q records no deployment", args[0])
			}
			return o.printer().Deployment(d.GetDeployment())
		}),
	}
}
