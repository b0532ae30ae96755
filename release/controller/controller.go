package controller

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/release/actuator"
	"github.com/aerodb/authority/release/analysis"
	"github.com/aerodb/authority/release/burnrate"
	"github.com/aerodb/authority/release/webhook"
	"github.com/aerodb/authority/validator"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// Outcome of a rollout.
type Outcome string

const (
	Promoted      Outcome = "promoted"       // promoted (and baked, when a bake is configured)
	Aborted       Outcome = "aborted"        // analysis failed: canary cleared, traffic on stable
	Paused        Outcome = "paused"         // inconclusive / no data, or promotion denied: never promoted
	RolledBack    Outcome = "rolled_back"    // the bake window saw a burn: back to the last known good
	AlreadyStable Outcome = "already_stable" // the canary is the stable release already
)

// ErrLeaseLost: the controller lost its lease on the release domain; it
// stops at once (its actuator calls would be refused by epoch anyway).
var ErrLeaseLost = errors.New("controller: lease on the release domain lost")

// Options wires a Controller. Config and Client are required.
type Options struct {
	Config *Config
	Client *client.Client
	// Clock paces pauses, analyses and the bake window (real if nil).
	Clock analysis.Clock
	// Prometheus answers burn-rate and budget queries (Config.Prometheus
	// over HTTP if nil).
	Prometheus burnrate.Querier
	// Target replaces the configured actuator target (still behind the
	// fenced gateway).
	Target actuator.Actuator
	// Builtin / Custom analysis sources (release/analysis defaults if nil).
	Builtin analysis.Source
	Custom  map[string]analysis.Source
	// Signer signs evidence (Config.Signing's key if nil).
	Signer dsse.SignerVerifier
	// Manifest is the canary's manifest envelope (Config.Manifest read if
	// nil).
	Manifest []byte
	// Registerer receives the controller's metrics (none if nil).
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// HTTPClient probes after a rollback (a plain one without keep-alives
	// if nil).
	HTTPClient *http.Client
	// BeforeActuate runs after the lease check, immediately before every
	// gateway call: tests pause the controller there (a stop between the
	// check and the effect, the window only the gateway's fence closes).
	BeforeActuate func(actuator.Call)
	// LeaseOptions are passed to Acquire and KeepLease.
	LeaseOptions []client.LeaseOption
}

// Report is what a rollout did.
type Report struct {
	Outcome   Outcome
	Message   string
	Epoch     uint64   // the controller's epoch at the end
	Decisions []string // one line per transition it submitted
	Analyses  []analysis.Result
	// Rollback, when the bake window rolled back.
	Rollback *RollbackTiming
	// LastIndex is the log index of the last decision (webhooks drain to it).
	LastIndex uint64
}

// RollbackTiming is one rollback's duration, split.
type RollbackTiming struct {
	Decided, TrafficMoved, ProbesGreen time.Time
	Reason                             string
}

// Total is decision → probes green.
func (r RollbackTiming) Total() time.Duration { return r.ProbesGreen.Sub(r.Decided) }

// Controller drives one rollout.
type Controller struct {
	cfg      *Config
	o        Options
	cli      *client.Client
	clock    analysis.Clock
	prom     burnrate.Querier
	gw       *actuator.Gateway
	signer   dsse.SignerVerifier
	manifest []byte
	metrics  *Metrics
	log      *slog.Logger
	http     *http.Client

	mu     sync.Mutex
	lease  *client.Lease
	report Report
}

// New checks the wiring and loads the signing key, manifest and actuator.
func New(o Options) (*Controller, error) {
	if o.Config == nil || o.Client == nil {
		return nil, errors.New("controller: Config and Client are required")
	}
	cfg := o.Config
	c := &Controller{cfg: cfg, o: o, cli: o.Client, clock: o.Clock, prom: o.Prometheus, signer: o.Signer,
		manifest: o.Manifest, log: o.Logger, http: o.HTTPClient}
	if c.clock == nil {
		c.clock = analysis.RealClock{}
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.log = c.log.With("service", cfg.Service, "domain", cfg.Domain)
	if c.http == nil {
		c.http = &http.Client{Transport: &http.Transport{DisableKeepAlives: true},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if c.prom == nil && cfg.Prometheus != "" {
		c.prom = &burnrate.Prometheus{Address: cfg.Prometheus}
	}
	var err error
	if c.signer == nil {
		if c.signer, err = LoadSigner(cfg.Signing.Key, cfg.Signing.KeyID); err != nil {
			return nil, err
		}
	}
	if c.manifest == nil {
		if c.manifest, err = readBounded(cfg.Manifest, validator.MaxEvidenceBytes); err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
	}
	target := o.Target
	if target == nil {
		if target, err = buildTarget(cfg.Actuator); err != nil {
			return nil, err
		}
	}
	gc := actuator.GatewayConfig{StatePath: cfg.Actuator.State, Target: target}
	if cfg.Actuator.CheckAuthority {
		gc.Epochs = actuator.EpochSourceFunc(func(ctx context.Context, d string) (uint64, error) {
			dom, err := c.cli.GetDomain(ctx, d)
			return dom.GetEpoch(), err
		})
	}
	if c.gw, err = actuator.NewGateway(gc); err != nil {
		return nil, err
	}
	c.metrics = NewMetrics(o.Registerer)
	return c, nil
}

func buildTarget(a ActuatorConfig) (actuator.Actuator, error) {
	switch {
	case a.HAProxy != nil:
		h := a.HAProxy
		return actuator.NewHAProxy(actuator.HAProxyConfig{Socket: h.Socket, Backend: h.Backend, Stable: h.Stable,
			Canary: h.Canary, Total: h.Total, Timeout: h.Timeout.D()})
	case a.Script != nil:
		return actuator.NewScript(actuator.ScriptConfig{Argv: a.Script.Argv, Env: a.Script.Env, Timeout: a.Script.Timeout.D()})
	case a.Webhook != nil:
		return actuator.NewWebhook(actuator.WebhookConfig{URL: a.Webhook.URL, Timeout: a.Webhook.Timeout.D()})
	}
	return nil, errors.New("actuator: no target configured")
}

// Metrics are the controller's own (served on its /metrics).
func (c *Controller) Metrics() *Metrics { return c.metrics }

// Epoch is the controller's current epoch (0 without a lease).
func (c *Controller) Epoch() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lease == nil {
		return 0
	}
	return c.lease.Epoch()
}

// Acquire takes the release domain's lease (waiting for another
// controller's, bounded by Config.LeaseWait): one active controller per
// service. Run calls it when no lease is held.
func (c *Controller) Acquire(ctx context.Context) error {
	c.mu.Lock()
	held := c.lease != nil && c.lease.Valid()
	c.mu.Unlock()
	if held {
		return nil
	}
	wait := c.cfg.LeaseWait.D()
	if wait == 0 {
		wait = DefaultLeaseFor
	}
	actx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	l, err := c.cli.Acquire(actx, c.cfg.Domain, c.cfg.holder(), append([]client.LeaseOption{client.WithWait()}, c.o.LeaseOptions...)...)
	if err != nil {
		return fmt.Errorf("acquiring the lease on %q as %q (another controller holds it?): %w", c.cfg.Domain, c.cfg.holder(), err)
	}
	c.mu.Lock()
	c.lease = l
	c.mu.Unlock()
	c.log.Info("holds the release domain", "holder", c.cfg.holder(), "epoch", l.Epoch())
	return nil
}

// Release gives the lease up (best effort, bounded).
func (c *Controller) Release() {
	c.mu.Lock()
	l := c.lease
	c.lease = nil
	c.mu.Unlock()
	if l != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = l.Release(ctx)
	}
}

// regrant follows the epoch a promote, abort or rollback granted: the
// lease is kept at the new epoch, the old one stopped.
func (c *Controller) regrant(ctx context.Context, epoch uint64) error {
	c.mu.Lock()
	old := c.lease
	c.mu.Unlock()
	if old != nil && old.Epoch() == epoch {
		return nil
	}
	var ttl time.Duration
	if old != nil {
		ttl = old.TTL()
	}
	kctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	l, err := c.cli.KeepLease(kctx, c.cfg.Domain, c.cfg.holder(), epoch, ttl, c.o.LeaseOptions...)
	if err != nil {
		return fmt.Errorf("%w: keeping epoch %d: %w", ErrLeaseLost, epoch, err)
	}
	c.mu.Lock()
	c.lease = l
	c.mu.Unlock()
	if old != nil {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		_ = old.Release(rctx) // refused at the old epoch: it only stops the renewals
		rcancel()
	}
	return nil
}

func (c *Controller) currentLease() (*client.Lease, error) {
	c.mu.Lock()
	l := c.lease
	c.mu.Unlock()
	if l == nil {
		return nil, ErrLeaseLost
	}
	if err := l.Check(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLeaseLost, err)
	}
	return l, nil
}

// SetWeight moves the canary's traffic share through the fenced gateway,
// stamped with the controller's epoch. It refuses without a valid lease;
// the gateway refuses an epoch lower than one it already accepted.
func (c *Controller) SetWeight(ctx context.Context, weight uint32) error {
	l, err := c.currentLease()
	if err != nil {
		return err
	}
	call := actuator.Call{Domain: c.cfg.Domain, Epoch: l.Epoch(), Canary: c.cfg.Canary, Weight: weight}
	if c.o.BeforeActuate != nil {
		c.o.BeforeActuate(call)
	}
	// A traffic change once begun is not torn halfway by a cancellation
	// (one HAProxy server set, the other not): it runs to completion,
	// bounded by its own timeout. A call that outlived the lease is
	// refused by the gateway's epoch fence, not by this process.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := c.gw.SetWeight(actx, call); err != nil {
		return fmt.Errorf("setting the canary's weight to %d at epoch %d: %w", weight, call.Epoch, err)
	}
	c.log.Info("traffic moved", "weight", weight, "epoch", call.Epoch)
	return nil
}

// transition submits one transition as the lease holder. A denied decision
// is returned with an error naming its reason (errDenied).
func (c *Controller) transition(ctx context.Context, tr *pb.ReleaseTransition) (*pb.ReleaseTransitionResponse, error) {
	l, err := c.currentLease()
	if err != nil {
		return nil, err
	}
	tr.Domain, tr.Holder, tr.Epoch = c.cfg.Domain, c.cfg.holder(), l.Epoch()
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := c.cli.ReleaseTransition(tctx, tr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", validator.ActionName(tr.Action), err)
	}
	dec := resp.GetDecision().GetDecision()
	line := validator.ActionName(tr.Action)
	if tr.Action == pb.ReleaseAction_RELEASE_ACTION_START_CANARY || tr.Action == pb.ReleaseAction_RELEASE_ACTION_ADVANCE_STEP {
		line += fmt.Sprintf(" step=%d weight=%d", tr.Step, tr.Weight)
	}
	line += fmt.Sprintf(" allowed=%v %s", dec.GetAllowed(), dec.GetDenialReason())
	c.mu.Lock()
	c.report.Decisions = append(c.report.Decisions, strings.TrimSpace(line))
	c.report.LastIndex = max(c.report.LastIndex, resp.GetLogIndex())
	c.mu.Unlock()
	c.log.Info("decision", "action", validator.ActionName(tr.Action), "allowed", dec.GetAllowed(), "reason", dec.GetDenialReason(),
		"epoch", resp.GetEpoch(), "index", resp.GetLogIndex())
	if !dec.GetAllowed() {
		return resp, &DeniedError{Action: validator.ActionName(tr.Action), Reason: dec.GetDenialReason()}
	}
	if resp.GetEpoch() != l.Epoch() {
		if err := c.regrant(ctx, resp.GetEpoch()); err != nil {
			return resp, err
		}
	}
	return resp, nil
}

// DeniedError is a transition the validator denied.
type DeniedError struct{ Action, Reason string }

func (e *DeniedError) Error() string { return fmt.Sprintf("%s denied: %s", e.Action, e.Reason) }

// Run drives the rollout: start the canary (or resume it), run the steps,
// promote on a passing analysis, abort on a failing one, pause on an
// inconclusive one; then bake. It holds the lease for the whole run and
// releases it at the end.
func (c *Controller) Run(ctx context.Context) (Report, error) {
	if err := c.Acquire(ctx); err != nil {
		return c.snapshot(), err
	}
	defer c.Release()
	l, err := c.currentLease()
	if err != nil {
		return c.snapshot(), err
	}
	// Stop as soon as the lease is lost.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go c.watchLease(ctx, cancel)
	out, msg, err := c.run(ctx, l)
	if cause := context.Cause(ctx); err != nil && errors.Is(cause, ErrLeaseLost) && !errors.Is(err, ErrLeaseLost) {
		err = fmt.Errorf("%w: %w", cause, err)
	}
	c.mu.Lock()
	c.report.Outcome, c.report.Message = out, msg
	c.mu.Unlock()
	return c.snapshot(), err
}

func (c *Controller) watchLease(ctx context.Context, cancel context.CancelCauseFunc) {
	for {
		c.mu.Lock()
		l := c.lease
		c.mu.Unlock()
		if l == nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-l.Lost():
			c.mu.Lock()
			same := c.lease == l
			c.mu.Unlock()
			if same {
				cancel(fmt.Errorf("%w: %v", ErrLeaseLost, l.Err()))
				return
			}
		}
	}
}

func (c *Controller) snapshot() Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.report
	r.Decisions = append([]string(nil), r.Decisions...)
	if c.lease != nil {
		r.Epoch = c.lease.Epoch()
	}
	return r
}

func (c *Controller) run(ctx context.Context, l *client.Lease) (Outcome, string, error) {
	cfg := c.cfg
	gctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	d, err := c.cli.GetDomain(gctx, cfg.Domain)
	cancel()
	if err != nil {
		return "", "", err
	}
	rs := d.GetRelease()
	if rs == nil {
		return "", "", fmt.Errorf("%q is not a release domain", cfg.Domain)
	}
	first := 0 // the config step to run first (0-based); core step = index + 1
	switch {
	case rs.GetCanary() == "" && rs.GetStable() == cfg.Canary:
		return AlreadyStable, "the canary is the stable release already", nil
	case rs.GetCanary() == "":
		if cfg.Stable != "" && rs.GetStable() != "" && rs.GetStable() != cfg.Stable {
			return "", "", fmt.Errorf("stable is %s, the config expects %s: someone else moved it", rs.GetStable(), cfg.Stable)
		}
		w := uint32(0)
		if s := cfg.Steps[0].SetWeight; s != nil {
			w = *s
		}
		if _, err := c.transition(ctx, &pb.ReleaseTransition{Action: pb.ReleaseAction_RELEASE_ACTION_START_CANARY, Canary: cfg.Canary,
			Step: 1, Weight: w, Reason: "releasectl: " + cfg.Service + " canary",
			Evidence: []*pb.Evidence{{Type: validator.EvidenceManifest, Envelope: c.manifest}}}); err != nil {
			return Paused, "start-canary refused", err
		}
	case rs.GetCanary() != cfg.Canary:
		return "", "", fmt.Errorf("another canary (%s) is in progress on %q", rs.GetCanary(), cfg.Domain)
	default: // our canary: resume where the record says
		first = int(rs.GetStep()) - 1
		if first < 0 || first >= len(cfg.Steps) {
			return "", "", fmt.Errorf("the record is at step %d; the config has %d steps", rs.GetStep(), len(cfg.Steps))
		}
		if rs.GetPhase() == pb.ReleasePhase_RELEASE_PHASE_PAUSED {
			if _, err := c.transition(ctx, &pb.ReleaseTransition{Action: pb.ReleaseAction_RELEASE_ACTION_RESUME, Reason: "releasectl: resumed"}); err != nil {
				return Paused, "resume refused", err
			}
		}
		c.log.Info("resuming the canary", "step", rs.GetStep(), "weight", rs.GetWeight())
	}
	weight := rs.GetWeight()
	if first == 0 {
		weight = 0
	}
	var last *analysis.Result
	for i := first; i < len(cfg.Steps); i++ {
		s := cfg.Steps[i]
		if s.SetWeight != nil {
			weight = *s.SetWeight
		}
		if i > first {
			if _, err := c.transition(ctx, &pb.ReleaseTransition{Action: pb.ReleaseAction_RELEASE_ACTION_ADVANCE_STEP,
				Step: uint32(i + 1), Weight: weight, Reason: stepText(s)}); err != nil {
				return c.pauseAfter(ctx, err)
			}
		}
		switch {
		case s.SetWeight != nil || i == first:
			// The first step run (fresh or resumed) reasserts the weight:
			// a new controller's first gateway call fences the old one.
			if err := c.SetWeight(ctx, weight); err != nil {
				return "", "", err
			}
		}
		switch {
		case s.Pause != nil:
			select {
			case <-ctx.Done():
				return "", "", context.Cause(ctx)
			case <-c.clock.After(s.Pause.Duration.D()):
			}
		case s.Analysis != nil:
			res, err := c.analyse(ctx, s.Analysis)
			if cause := context.Cause(ctx); cause != nil {
				return "", "", cause
			}
			_ = err // an invalid analysis is an Inconclusive result (pause)
			switch res.Action() {
			case "continue":
				last = &res
			case "abort":
				return c.abort(ctx, res)
			default:
				return c.pause(ctx, "analysis inconclusive: "+res.Message)
			}
		}
	}
	if last == nil {
		return c.pause(ctx, "no passing analysis")
	}
	return c.promote(ctx, *last)
}

func stepText(s Step) string {
	switch {
	case s.SetWeight != nil:
		return fmt.Sprintf("setWeight %d", *s.SetWeight)
	case s.Pause != nil:
		return "pause " + s.Pause.Duration.D().String()
	default:
		return "analysis " + strings.Join(s.Analysis.Templates, ",")
	}
}

func (c *Controller) analyse(ctx context.Context, s *AnalysisStep) (analysis.Result, error) {
	custom := map[string]analysis.Source{}
	for k, v := range c.o.Custom {
		custom[k] = v
	}
	if c.cfg.CanaryBurn != nil {
		custom[CanaryBurnProvider] = analysis.SourceFunc(c.canaryBurn)
	}
	rn := &analysis.Runner{Clock: c.clock, Builtin: c.o.Builtin, Custom: custom}
	res, err := rn.Run(ctx, c.cfg.analysisFor(s))
	c.mu.Lock()
	c.report.Analyses = append(c.report.Analyses, res)
	c.mu.Unlock()
	c.log.Info("analysis", "phase", res.Phase, "message", res.Message)
	return res, err
}

// canaryBurn is the "canary-burn" analysis provider: 1 when a canary burn
// rule fires, 0 when none does, no data when no window had data.
func (c *Controller) canaryBurn(ctx context.Context, _ *analysis.Metric, now time.Time) (analysis.Value, error) {
	if c.prom == nil {
		return analysis.Value{}, errors.New("no prometheus configured")
	}
	d, err := burnrate.Evaluate(ctx, c.prom, c.cfg.CanaryBurn, now)
	if err != nil {
		return analysis.Value{}, err
	}
	if d.Firing {
		return analysis.Value{Values: []float64{1}, Samples: -1}, nil
	}
	for _, r := range d.Results {
		if r.LongOK || r.ShortOK {
			return analysis.Value{Values: []float64{0}, Samples: -1}, nil
		}
	}
	return analysis.Value{Samples: -1, NoData: "no canary traffic in any burn window"}, nil
}

func (c *Controller) pauseAfter(ctx context.Context, err error) (Outcome, string, error) {
	var den *DeniedError
	if errors.As(err, &den) {
		return c.pause(ctx, err.Error())
	}
	return "", "", err
}

// pause records the pause; traffic stays where it is.
func (c *Controller) pause(ctx context.Context, why string) (Outcome, string, error) {
	why = clipReason(why)
	if _, err := c.transition(ctx, &pb.ReleaseTransition{Action: pb.ReleaseAction_RELEASE_ACTION_PAUSE, Reason: why}); err != nil {
		return Paused, why, err
	}
	return Paused, why, nil
}

// abort clears the canary and moves every request back to stable.
func (c *Controller) abort(ctx context.Context, res analysis.Result) (Outcome, string, error) {
	reason := "analysis_failed"
	if res.Phase == analysis.Error {
		reason = "analysis_error"
	}
	why := clipReason("analysis " + string(res.Phase) + ": " + res.Message)
	if _, err := c.transition(ctx, &pb.ReleaseTransition{Action: pb.ReleaseAction_RELEASE_ACTION_ABORT, Reason: why}); err != nil {
		return Aborted, why, err
	}
	c.metrics.Aborts.WithLabelValues(reason).Inc()
	if err := c.SetWeight(ctx, 0); err != nil {
		return Aborted, why, fmt.Errorf("aborted, but moving traffic back to stable failed: %w", err)
	}
	return Aborted, why, nil
}

func (c *Controller) promote(ctx context.Context, res analysis.Result) (Outcome, string, error) {
	ev := []*pb.Evidence{}
	a, err := c.sign(validator.PredicateAnalysis, analysis.Predicate(res))
	if err != nil {
		return "", "", err
	}
	ev = append(ev, &pb.Evidence{Type: validator.EvidenceAnalysis, Envelope: a})
	if c.cfg.Budget != nil {
		b, err := c.budgetEvidence(ctx)
		if err != nil {
			return c.pause(ctx, "error budget unknown: "+err.Error())
		}
		ev = append(ev, &pb.Evidence{Type: validator.EvidenceBudget, Envelope: b})
	}
	_, err = c.transition(ctx, &pb.ReleaseTransition{Action: pb.ReleaseAction_RELEASE_ACTION_PROMOTE,
		Reason: clipReason("analysis passed: " + res.Message), Evidence: ev})
	if err != nil {
		return c.pauseAfter(ctx, err)
	}
	if err := c.SetWeight(ctx, 100); err != nil {
		return Promoted, "promoted, but moving all traffic failed", err
	}
	if c.cfg.Bake == nil {
		return Promoted, "promoted", nil
	}
	return c.bake(ctx)
}

// BudgetPredicate measures the error budget left over Config.Budget.
func (c *Controller) budgetEvidence(ctx context.Context) ([]byte, error) {
	if c.prom == nil {
		return nil, errors.New("no prometheus configured")
	}
	now := c.clock.Now()
	rem, err := burnrate.Remaining(ctx, c.prom, c.cfg.Budget, now)
	if err != nil {
		return nil, err
	}
	return c.sign(validator.PredicateBudget, validator.BudgetPredicate{Objective: c.cfg.Budget.Objective, Remaining: rem, MeasuredAtUnixMs: now.UnixMilli()})
}

// bake watches the new stable release for Bake.Duration; a firing rule
// rolls back at once.
func (c *Controller) bake(ctx context.Context) (Outcome, string, error) {
	b := c.cfg.Bake
	errs := 0
	d, fired, err := burnrate.Watch(ctx, c.clock, c.prom, &b.SLO, b.Duration.D(), b.Interval.D(), func(err error) {
		errs++
		c.log.Warn("bake: burn-rate query failed", "err", err, "errors", errs)
	})
	if err != nil {
		return "", "", err
	}
	if !fired {
		return Promoted, fmt.Sprintf("promoted and baked %v without a burn (%d query errors)", b.Duration.D(), errs), nil
	}
	t, err := c.Rollback(ctx, d.Message(), c.clock.Now())
	if err != nil {
		return RolledBack, d.Message(), err
	}
	c.mu.Lock()
	c.report.Rollback = &t
	c.mu.Unlock()
	return RolledBack, d.Message(), nil
}

// Rollback moves the release back to the last known good without
// re-running analysis: the Rollback transition (never blocked by a window
// or a freeze), traffic back to the previous release, then the probe until
// green. decided is when the decision was taken (the burn observed); the
// whole span is observed in rollback_duration_seconds.
func (c *Controller) Rollback(ctx context.Context, reason string, decided time.Time) (RollbackTiming, error) {
	t := RollbackTiming{Decided: decided, Reason: clipReason(reason)}
	if _, err := c.transition(ctx, &pb.ReleaseTransition{Action: pb.ReleaseAction_RELEASE_ACTION_ROLLBACK, Reason: t.Reason}); err != nil {
		return t, err
	}
	if err := c.SetWeight(ctx, 0); err != nil {
		return t, fmt.Errorf("rolled back, but moving traffic failed: %w", err)
	}
	t.TrafficMoved = c.clock.Now()
	if err := c.probeGreen(ctx, t.TrafficMoved); err != nil {
		return t, err
	}
	t.ProbesGreen = c.clock.Now()
	c.metrics.RollbackDuration.Observe(t.Total().Seconds())
	c.log.Info("rolled back", "reason", t.Reason, "traffic_s", t.TrafficMoved.Sub(t.Decided).Seconds(), "green_s", t.Total().Seconds())
	return t, nil
}

func (c *Controller) probeGreen(ctx context.Context, moved time.Time) error {
	r := c.cfg.Rollback
	if r.ProbeFlow != nil {
		return c.probeFlowGreen(ctx, r.ProbeFlow, moved)
	}
	if r.Probe == "" {
		return nil
	}
	need := r.Successes
	if need == 0 {
		need = 5
	}
	timeout := r.Timeout.D()
	if timeout == 0 {
		timeout = time.Minute
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	streak, tries := 0, 0
	for streak < need {
		tries++
		req, err := http.NewRequestWithContext(pctx, http.MethodGet, r.Probe, nil)
		if err != nil {
			return fmt.Errorf("rollback probe: %w", err)
		}
		resp, err := c.http.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				streak++
				continue
			}
		}
		streak = 0
		if pctx.Err() != nil {
			return fmt.Errorf("rollback probe not green within %v (%d tries)", timeout, tries)
		}
		select {
		case <-pctx.Done():
			return fmt.Errorf("rollback probe not green within %v (%d tries)", timeout, tries)
		case <-time.After(20 * time.Millisecond): // probe pacing (real network), bounded by pctx
		}
	}
	return nil
}

// probeFlowGreen waits for the probe service's verdict on the flow to be
// pass over a window that began after the traffic moved (moved + window on
// the controller's clock and, on the service's, a window starting at or
// after moved): runs before the rollback never make it green.
func (c *Controller) probeFlowGreen(ctx context.Context, pf *ProbeFlow, moved time.Time) error {
	window := pf.Window.D()
	if window == 0 {
		window = 30 * time.Second
	}
	timeout := c.cfg.Rollback.Timeout.D()
	if timeout == 0 {
		timeout = time.Minute
	}
	pctx, cancel := context.WithTimeout(ctx, timeout+window)
	defer cancel()
	u := strings.TrimRight(pf.Address, "/") + "/v1/verdicts/" + url.PathEscape(pf.Flow) + "?window=" + url.QueryEscape(window.String())
	if pf.MinSamples > 0 {
		u += "&min_samples=" + strconv.Itoa(pf.MinSamples)
	}
	last, tries := "no answer yet", 0
	for {
		if !c.clock.Now().Before(moved.Add(window)) {
			tries++
			v, err := c.flowVerdict(pctx, u)
			switch {
			case err != nil:
				last = err.Error()
			case v.Verdict == "pass" && !v.From.Before(moved):
				return nil
			default:
				last = fmt.Sprintf("verdict %.20q from %s: %s", v.Verdict, v.From.UTC().Format(time.RFC3339Nano), clip(v.Reason))
			}
		}
		select {
		case <-pctx.Done():
			return fmt.Errorf("rollback probe flow %q not green within %v after the window (%d tries; last: %s)", clip(pf.Flow), timeout, tries, last)
		case <-time.After(100 * time.Millisecond): // polling pace (real network), bounded by pctx
		}
	}
}

type flowVerdict struct {
	Verdict string    `json:"verdict"`
	From    time.Time `json:"from"`
	Reason  string    `json:"reason"`
}

func (c *Controller) flowVerdict(ctx context.Context, u string) (flowVerdict, error) {
	var v flowVerdict
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
	if err != nil {
		return v, fmt.Errorf("probe verdict request: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return v, fmt.Errorf("probe verdict: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return v, fmt.Errorf("probe verdict: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return v, fmt.Errorf("probe verdict: HTTP %d", resp.StatusCode)
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return v, fmt.Errorf("probe answer is not a verdict: %w", err)
	}
	return v, nil
}

func (c *Controller) sign(predicateType string, predicate any) ([]byte, error) {
	pred, err := json.Marshal(predicate)
	if err != nil {
		return nil, err
	}
	st := validator.Statement{Type: validator.StatementType, PredicateType: predicateType, Predicate: pred,
		Subject: []validator.Subject{{Name: c.cfg.Service, Digest: map[string]string{"sha256": strings.TrimPrefix(c.cfg.Canary, "sha256:")}}}}
	body, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	s, err := dsse.NewEnvelopeSigner(c.signer)
	if err != nil {
		return nil, err
	}
	env, err := s.SignPayload(context.Background(), validator.PayloadTypeInToto, body)
	if err != nil {
		return nil, fmt.Errorf("signing %s evidence: %w", predicateType, err)
	}
	return json.Marshal(env)
}

// RunWebhooks delivers the domain's release events to Config.Webhooks'
// endpoints until ctx ends (release/webhook's at-least-once dispatcher).
// onSettled (optional) sees every settled delivery.
func (c *Controller) RunWebhooks(ctx context.Context, onSettled func(endpoint string, pos webhook.Position, key, result string)) error {
	w := c.cfg.Webhooks
	if w == nil {
		return nil
	}
	d, err := webhook.New(webhook.Options{Endpoints: w.Endpoints, Namespace: w.Namespace,
		Subscribe: webhook.WatchSubscribe(c.cli, c.cfg.Domain), FromIndex: w.FromIndex, StatePath: w.State,
		Registerer: c.o.Registerer, Logger: c.log, OnSettled: onSettled})
	if err != nil {
		return err
	}
	return d.Run(ctx)
}

// LoadSigner reads an Ed25519 PKCS#8 PEM key (authorityctl evidence keygen).
func LoadSigner(path, keyID string) (dsse.SignerVerifier, error) {
	b, err := readBounded(path, 64<<10)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("signing key %s: no PEM block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("signing key %s: not an Ed25519 key", path)
	}
	return Ed25519Signer{ID: keyID, Key: priv}, nil
}

// Ed25519Signer signs DSSE envelopes.
type Ed25519Signer struct {
	ID  string
	Key ed25519.PrivateKey
}

func (s Ed25519Signer) Sign(_ context.Context, data []byte) ([]byte, error) {
	return ed25519.Sign(s.Key, data), nil
}
func (s Ed25519Signer) Verify(_ context.Context, data, sig []byte) error {
	if !ed25519.Verify(s.Key.Public().(ed25519.PublicKey), data, sig) {
		return errors.New("bad signature")
	}
	return nil
}
func (s Ed25519Signer) KeyID() (string, error)   { return s.ID, nil }
func (s Ed25519Signer) Public() crypto.PublicKey { return s.Key.Public() }

func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return b, nil
}

func clipReason(s string) string {
	if len(s) > 400 {
		return s[:400] + "…"
	}
	return s
}
