package analysis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aerodb/authority/validator"
)

// Clock is the runner's time source.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// RealClock is the wall clock.
type RealClock struct{}

// Now is time.Now.
func (RealClock) Now() time.Time { return time.Now() }

// After is time.After.
func (RealClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// VirtualClock is a deterministic clock for tests and simulations: After
// advances virtual time by d at once and returns a fired channel, so a run
// of any length completes without sleeping.
type VirtualClock struct {
	mu  sync.Mutex
	now time.Time
}

// NewVirtualClock starts at t.
func NewVirtualClock(t time.Time) *VirtualClock { return &VirtualClock{now: t} }

// Now is the virtual time.
func (c *VirtualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After advances the virtual time by d and fires.
func (c *VirtualClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	if d > 0 {
		c.now = c.now.Add(d)
	}
	t := c.now
	c.mu.Unlock()
	ch := make(chan time.Time, 1)
	ch <- t
	return ch
}

// Runner runs an analysis.
type Runner struct {
	Clock Clock
	// Builtin measures prometheus/probe/web metrics; nil: HTTP{}.
	Builtin Source
	// Custom providers by name (provider: {custom: NAME}).
	Custom map[string]Source
}

// Result is a finished (or cancelled) analysis run.
type Result struct {
	Phase           Phase          `json:"phase"`
	Message         string         `json:"message"`
	StartedUnixMs   int64          `json:"started_unix_ms"`
	WindowEndUnixMs int64          `json:"window_end_unix_ms"`
	Metrics         []MetricResult `json:"metrics"`
}

// Action is what the controller does: continue, abort or pause.
func (r Result) Action() string { return r.Phase.Action() }

type metricState struct {
	m    *Metric
	next time.Time
	done bool
}

// Run validates cfg, then measures every metric at its interval up to its
// count (after its initialDelay) and returns the Result. The run ends early
// when a deciding metric completes with a phase other than Successful
// (Failed, Error or Inconclusive). A cancelled context ends the run as
// Inconclusive (never Successful) and returns ctx.Err() with the partial
// Result.
func (rn *Runner) Run(ctx context.Context, cfg *Config) (Result, error) {
	names := make([]string, 0, len(rn.Custom))
	for n := range rn.Custom {
		names = append(names, n)
	}
	if err := cfg.Validate(names...); err != nil {
		// Our own configuration bug pauses (never promotes, never aborts
		// a healthy canary); Parse/Validate catch it before any run.
		return Result{Phase: Inconclusive, Message: "invalid analysis: " + clip(err.Error(), 500)}, err
	}
	clock := rn.Clock
	if clock == nil {
		clock = RealClock{}
	}
	start := clock.Now()
	res := Result{StartedUnixMs: start.UnixMilli(), Metrics: make([]MetricResult, len(cfg.Metrics))}
	st := make([]metricState, len(cfg.Metrics))
	for i := range cfg.Metrics {
		m := &cfg.Metrics[i]
		st[i] = metricState{m: m, next: start.Add(m.InitialDelay.D())}
		res.Metrics[i] = MetricResult{Name: m.Name, DryRun: m.DryRun, Phase: Pending, Message: "no measurement yet", Measurements: make([]Measurement, 0, m.Count)}
	}
	finish := func(terminating bool) Result {
		for i := range st {
			res.Metrics[i].Phase, res.Metrics[i].Message = assess(st[i].m, &res.Metrics[i], terminating)
		}
		res.Phase, _, res.Message = runPhase(cfg.Metrics, res.Metrics)
		res.WindowEndUnixMs = clock.Now().UnixMilli()
		return res
	}
	for {
		// The earliest due metric.
		var due time.Time
		any := false
		for i := range st {
			if !st[i].done && (!any || st[i].next.Before(due)) {
				due, any = st[i].next, true
			}
		}
		if !any {
			return finish(false), nil
		}
		if wait := due.Sub(clock.Now()); wait > 0 {
			select {
			case <-ctx.Done():
				return cancelled(finish(true), ctx.Err())
			case <-clock.After(wait):
			}
		}
		if err := ctx.Err(); err != nil {
			return cancelled(finish(true), err)
		}
		now := clock.Now()
		for i := range st {
			s := &st[i]
			if s.done || s.next.After(now) {
				continue
			}
			ms := rn.measure(ctx, s.m, now)
			r := &res.Metrics[i]
			r.record(ms)
			r.Phase, r.Message = assess(s.m, r, false)
			s.next = s.next.Add(s.m.Interval.D())
			s.done = r.Phase.Completed()
		}
		if _, ended, _ := runPhase(cfg.Metrics, res.Metrics); ended {
			return finish(true), nil
		}
	}
}

func cancelled(r Result, err error) (Result, error) {
	if r.Phase == Running || r.Phase == Successful {
		// A run stopped before its deciding metrics completed never passes.
		r.Phase, r.Message = Inconclusive, "analysis cancelled before completion: "+err.Error()
	}
	return r, err
}

func (rn *Runner) measure(ctx context.Context, m *Metric, now time.Time) Measurement {
	var src Source
	if m.Provider.Custom != "" {
		src = rn.Custom[m.Provider.Custom]
	} else if rn.Builtin != nil {
		src = rn.Builtin
	} else {
		src = HTTP{}
	}
	v, err := safeMeasure(ctx, src, m, now)
	phase, reason := evaluate(m, v, err)
	ms := Measurement{Phase: phase, AtUnixMs: now.UnixMilli(), Samples: v.Samples, Reason: reason}
	// At most 16 values are kept; non-finite values are not (the reason
	// names them, and the Result stays JSON-encodable).
	for i, f := range v.Values {
		if i == 16 {
			break
		}
		if !finite(f) {
			ms.Values = nil
			break
		}
		ms.Values = append(ms.Values, f)
	}
	return ms
}

// safeMeasure turns a provider panic into a query error.
func safeMeasure(ctx context.Context, src Source, m *Metric, now time.Time) (v Value, err error) {
	defer func() {
		if p := recover(); p != nil {
			v, err = Value{}, fmt.Errorf("provider panicked: %v", p)
		}
	}()
	if src == nil {
		return Value{}, errors.New("provider not registered")
	}
	return src.Measure(ctx, m, now)
}

// Verdict maps a result to the analysis evidence verdict: pass only for a
// Successful run; fail for Failed or Error (the controller aborts);
// inconclusive otherwise (the controller pauses; never promotes). metrics
// are the deciding metrics that produced the verdict: every deciding
// metric for pass, the failing (or inconclusive) ones otherwise. dryRun
// metrics never appear.
func Verdict(r Result) (verdict string, metrics []string) {
	switch r.Phase {
	case Successful:
		verdict = "pass"
	case Failed, Error:
		verdict = "fail"
	default:
		verdict = "inconclusive"
	}
	metrics = []string{}
	for _, m := range r.Metrics {
		if m.DryRun {
			continue
		}
		if m.Phase == r.Phase {
			metrics = append(metrics, m.Name)
		}
	}
	if verdict == "pass" && len(metrics) == 0 {
		verdict = "inconclusive" // defensive: a pass must name what passed
	}
	return verdict, metrics
}

// Predicate is the analysis evidence predicate (validator.PredicateAnalysis)
// for the result; signing it is the caller's job.
func Predicate(r Result) validator.AnalysisPredicate {
	v, ms := Verdict(r)
	return validator.AnalysisPredicate{Verdict: v, Metrics: ms, WindowEndUnixMs: r.WindowEndUnixMs}
}
