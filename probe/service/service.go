// Package service is the probe service: a scheduler running each flow of
// one environment on its interval, and the results it streams: Prometheus
// metrics, JSON-lines events, SLO error budgets and burn rates, a status
// page, the verdict API and signed verdicts. Time comes from an injectable
// clock so tests are deterministic without sleeping.
package service

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/aerodb/authority/probe/clock"
	"github.com/aerodb/authority/probe/flow"
	"github.com/aerodb/authority/probe/run"
	"github.com/aerodb/authority/probe/slo"
	"github.com/aerodb/authority/probe/verdict"
)

// SelfSLO is the name of the service's own availability objective: the
// fraction of scheduled runs that started on time.
const SelfSLO = "probed-on-time"

// Options configure a Service.
type Options struct {
	Config *flow.Config
	Runner *run.Runner
	Clock  clock.Clock
	// Events receives one JSON object per line (runs, setup logins,
	// missed schedules). May be nil.
	Events io.Writer
	// Signer signs verdicts requested with ?format=dsse. May be nil.
	Signer *verdict.Signer
	// Spread offsets each flow's first run by a hash of its name within its
	// interval, so flows with the same interval do not fire together.
	Spread bool
	// OnTimeTolerance is how late a run may start and still count as on
	// time; default min(1s, interval/10), at least 50ms.
	OnTimeTolerance time.Duration
	// SelfObjective is the on-time objective (default 0.999) over
	// SelfWindow (default 30d).
	SelfObjective float64
	SelfWindow    time.Duration
	// MaxConcurrent bounds simultaneous runs (default 64).
	MaxConcurrent int
}

// Service schedules and records the flows of one environment.
type Service struct {
	o       Options
	cfg     *flow.Config
	runner  *run.Runner
	clock   clock.Clock
	env     string
	reg     *prometheus.Registry
	m       *metrics
	entries []*entry
	byName  map[string]*entry
	slos    []*sloBinding
	self    *slo.Tracker
	sem     chan struct{}
	wg      sync.WaitGroup

	evMu      sync.Mutex
	events    io.Writer
	evErrors  atomic.Uint64
	loopAlive atomic.Bool
	lastLoop  atomic.Int64
}

type entry struct {
	flow    *flow.Flow
	every   time.Duration
	next    time.Time
	running atomic.Bool
	digest  string
	ring    *slo.Ring // run outcomes, for verdicts

	mu     sync.Mutex
	recent []*run.Result // newest last, at most keepRecent
}

const keepRecent = 20

type sloBinding struct {
	def *flow.SLO
	tr  *slo.Tracker
}

// New builds a service for the runner's environment.
func New(o Options) (*Service, error) {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.SelfObjective == 0 {
		o.SelfObjective = 0.999
	}
	if o.SelfWindow == 0 {
		o.SelfWindow = flow.DefaultSLOWindow
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = 64
	}
	s := &Service{o: o, cfg: o.Config, runner: o.Runner, clock: o.Clock, env: o.Runner.Env(),
		byName: map[string]*entry{}, events: o.Events, sem: make(chan struct{}, o.MaxConcurrent),
		self: slo.NewTracker(SelfSLO, o.SelfObjective, o.SelfWindow)}
	now := s.clock.Now()
	for _, f := range o.Config.Flows {
		if !f.RunsIn(s.env) {
			continue
		}
		def, _ := yaml.Marshal(f) // yaml:"-" leaves file positions out
		e := &entry{flow: f, every: f.Schedule.Every.D(), next: now, digest: verdict.Digest(def),
			ring: slo.NewRing(slo.FineResolution, slo.FineSpan)}
		if o.Spread {
			h := fnv.New64a()
			h.Write([]byte(f.Name))
			e.next = now.Add(time.Duration(h.Sum64() % uint64(e.every)))
		}
		s.entries = append(s.entries, e)
		s.byName[f.Name] = e
	}
	for _, d := range o.Config.SLOs {
		s.slos = append(s.slos, &sloBinding{def: d, tr: slo.NewTracker(d.Name, d.Objective, d.Window.D())})
	}
	s.reg = prometheus.NewRegistry()
	s.m = newMetrics(s)
	return s, nil
}

// Registry is the service's Prometheus registry.
func (s *Service) Registry() *prometheus.Registry { return s.reg }

// Flows lists the scheduled flow names.
func (s *Service) Flows() []string {
	var out []string
	for _, e := range s.entries {
		out = append(out, e.flow.Name)
	}
	return out
}

func (s *Service) tolerance(every time.Duration) time.Duration {
	if s.o.OnTimeTolerance > 0 {
		return s.o.OnTimeTolerance
	}
	t := every / 10
	if t > time.Second {
		t = time.Second
	}
	if t < 50*time.Millisecond {
		t = 50 * time.Millisecond
	}
	return t
}

// Run schedules flows until ctx ends, then waits for running flows.
func (s *Service) Run(ctx context.Context) {
	s.loopAlive.Store(true)
	defer s.loopAlive.Store(false)
	defer s.wg.Wait()
	for {
		now := s.clock.Now()
		s.lastLoop.Store(now.UnixNano())
		s.dispatch(ctx, now, false)
		next := s.nextDue()
		t := s.clock.NewTimer(next.Sub(now))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
	}
}

func (s *Service) nextDue() time.Time {
	var next time.Time
	for _, e := range s.entries {
		if next.IsZero() || e.next.Before(next) {
			next = e.next
		}
	}
	if next.IsZero() {
		next = s.clock.Now().Add(time.Minute)
	}
	return next
}

// RunDue runs, synchronously, every flow due at the clock's current time
// (a deterministic tick for tests and `run` tooling).
func (s *Service) RunDue(ctx context.Context) {
	s.dispatch(ctx, s.clock.Now(), true)
}

// dispatch starts every due flow. A tick is due when its time has come; if
// the loop fell behind by whole intervals, the skipped ticks are counted as
// missed (scheduled, not on time) and only the latest runs. A tick whose
// previous run is still going is missed too (runs of a flow never overlap).
func (s *Service) dispatch(ctx context.Context, now time.Time, sync bool) {
	for _, e := range s.entries {
		if e.next.After(now) {
			continue
		}
		behind := int64(now.Sub(e.next) / e.every)
		tick := e.next.Add(time.Duration(behind) * e.every)
		e.next = tick.Add(e.every)
		for i := int64(0); i < behind; i++ {
			s.scheduled(e, "skipped", now)
		}
		if behind > 0 {
			s.event(map[string]any{"time": now, "type": "schedule_missed", "flow": e.flow.Name, "env": s.env,
				"missed": behind, "reason": "scheduler behind"})
		}
		if !e.running.CompareAndSwap(false, true) {
			s.scheduled(e, "skipped", now)
			s.event(map[string]any{"time": now, "type": "schedule_missed", "flow": e.flow.Name, "env": s.env,
				"missed": 1, "reason": "previous run still running"})
			continue
		}
		late := now.Sub(tick)
		s.m.lateness.Observe(late.Seconds())
		timing := "on_time"
		if late > s.tolerance(e.every) {
			timing = "late"
		}
		s.scheduled(e, timing, now)
		if sync {
			s.execute(ctx, e, tick, late)
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.execute(ctx, e, tick, late)
		}()
	}
}

func (s *Service) scheduled(e *entry, timing string, now time.Time) {
	s.m.scheduled.WithLabelValues(e.flow.Name, timing).Inc()
	good := uint64(0)
	if timing == "on_time" {
		good = 1
	}
	s.self.Record(now, good, 1)
}

func (s *Service) execute(ctx context.Context, e *entry, tick time.Time, late time.Duration) {
	defer e.running.Store(false)
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-s.sem }()
	res := s.runner.Run(ctx, e.flow, tick)
	if ctx.Err() != nil {
		// Shutting down: a run cut short by our own cancellation says
		// nothing about the target and must not spend its error budget.
		s.event(map[string]any{"time": s.clock.Now(), "type": "run_aborted", "flow": e.flow.Name, "env": s.env,
			"run_id": res.RunID, "reason": "service stopping"})
		return
	}
	s.Record(res, late)
}

// Record accounts one result: metrics, verdict window, SLOs, recent list
// and the event stream.
func (s *Service) Record(res *run.Result, late time.Duration) {
	e := s.byName[res.Flow]
	if e == nil {
		return
	}
	at := res.Start
	ok := res.Success()
	s.m.success.WithLabelValues(res.Flow).Set(b2f(ok))
	s.m.duration.WithLabelValues(res.Flow, "").Set(res.Duration.Seconds())
	s.m.flowHist.WithLabelValues(res.Flow).Observe(res.Duration.Seconds())
	s.m.runs.WithLabelValues(res.Flow, res.Result).Inc()
	s.m.lastRun.WithLabelValues(res.Flow).Set(float64(at.UnixNano()) / 1e9)
	for _, st := range res.Steps {
		if st.Result == run.Skipped {
			s.m.stepSuccess.WithLabelValues(res.Flow, st.Name).Set(0)
			continue
		}
		s.m.duration.WithLabelValues(res.Flow, st.Name).Set(st.Duration.Seconds())
		s.m.stepSuccess.WithLabelValues(res.Flow, st.Name).Set(b2f(st.Result == run.Pass))
	}
	var good uint64
	if ok {
		good = 1
	}
	e.ring.Add(at, good, 1)
	for _, b := range s.slos {
		if !contains(b.def.Flows, res.Flow) {
			continue
		}
		if len(b.def.Steps) == 0 {
			b.tr.Record(at, good, 1)
			continue
		}
		var g, n uint64
		for _, st := range res.Steps {
			if flow.SLOCountsStep(b.def, res.Flow, st.Name) {
				n++
				if st.Result == run.Pass {
					g++
				}
			}
		}
		b.tr.Record(at, g, n)
	}
	e.mu.Lock()
	e.recent = append(e.recent, res)
	if len(e.recent) > keepRecent {
		e.recent = e.recent[len(e.recent)-keepRecent:]
	}
	e.mu.Unlock()
	s.event(runEvent(res, late))
}

func runEvent(res *run.Result, late time.Duration) map[string]any {
	steps := make([]map[string]any, 0, len(res.Steps))
	for _, st := range res.Steps {
		m := map[string]any{"name": st.Name, "result": st.Result}
		if st.Status != 0 {
			m["status"] = st.Status
			m["duration_ms"] = ms(st.Duration)
		}
		if st.Attempts > 1 {
			m["attempts"] = st.Attempts
		}
		if st.Error != "" {
			m["error"] = st.Error
		}
		if len(st.Failures) > 0 {
			m["failures"] = st.Failures
		}
		steps = append(steps, m)
	}
	ev := map[string]any{"time": res.Start, "type": "run", "flow": res.Flow, "env": res.Env, "run_id": res.RunID,
		"result": res.Result, "duration_ms": ms(res.Duration), "late_ms": ms(late), "steps": steps}
	if !res.Scheduled.IsZero() {
		ev["scheduled"] = res.Scheduled
	}
	if res.Error != "" {
		ev["error"] = res.Error
	}
	if res.SetupRefreshed {
		ev["setup_refreshed"] = true
	}
	return ev
}

// SetupEvent streams a runner setup event (login, refresh, error).
func (s *Service) SetupEvent(e run.Event) {
	kind := "login"
	if e.Type == "setup_refresh" {
		kind = "refresh"
	}
	if e.Type == "setup_error" {
		kind = "error"
	}
	if s.m != nil {
		s.m.setups.WithLabelValues(e.Setup, kind).Inc()
	}
	m := map[string]any{"time": e.Time, "type": e.Type, "setup": e.Setup, "env": s.env, "flow": e.Flow}
	if e.Error != "" {
		m["error"] = e.Error
	}
	if !e.Expiry.IsZero() {
		m["expiry"] = e.Expiry
	}
	s.event(m)
}

func (s *Service) event(m map[string]any) {
	if s.events == nil {
		return
	}
	b, err := json.Marshal(m)
	if err != nil {
		s.evErrors.Add(1)
		return
	}
	// Every string was redacted when the result was built; redact the line
	// once more in case a value reached it another way.
	line := s.runner.Redactor().String(string(b)) + "\n"
	s.evMu.Lock()
	defer s.evMu.Unlock()
	if _, err := io.WriteString(s.events, line); err != nil {
		s.evErrors.Add(1)
	}
}

// Verdict computes the verdict of a flow over window at the clock's now.
// minSamples < 0 or minRatio < 0 take the flow's defaults.
func (s *Service) Verdict(name string, window time.Duration, minSamples int, minRatio float64) (verdict.Verdict, error) {
	e := s.byName[name]
	if e == nil {
		return verdict.Verdict{}, fmt.Errorf("no flow %q in environment %s", name, s.env)
	}
	if window < slo.FineResolution || window > slo.FineSpan {
		return verdict.Verdict{}, fmt.Errorf("window %s is outside %s..%s", window, slo.FineResolution, slo.FineSpan)
	}
	if minSamples < 0 {
		minSamples = e.flow.Verdict.MinSamples
	}
	if minRatio < 0 {
		minRatio = e.flow.Verdict.MinSuccessRatio
	}
	now := s.clock.Now()
	good, total := e.ring.Sum(now, window)
	v := verdict.Verdict{Flow: name, Env: s.env, Window: window.String(), From: now.Add(-window), To: now,
		Runs: total, Failures: total - good, MinSamples: minSamples, MinSuccessRatio: minRatio, FlowDigest: e.digest}
	v.Decide()
	return v, nil
}

// SLOSnapshots returns every SLO's state (the service's own last).
func (s *Service) SLOSnapshots() []slo.Snapshot {
	now := s.clock.Now()
	var out []slo.Snapshot
	for _, b := range s.slos {
		out = append(out, b.tr.At(now))
	}
	out = append(out, s.self.At(now))
	return out
}

// Recent returns the last results of a flow, newest first.
func (s *Service) Recent(name string) []*run.Result {
	e := s.byName[name]
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]*run.Result, len(e.recent))
	for i, r := range e.recent {
		out[len(out)-1-i] = r
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sortedFlows(s *Service) []*entry {
	out := append([]*entry(nil), s.entries...)
	sort.Slice(out, func(i, j int) bool { return out[i].flow.Name < out[j].flow.Name })
	return out
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
