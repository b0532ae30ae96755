package service

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/aerodb/authority/probe/slo"
)

type metrics struct {
	success     *prometheus.GaugeVec
	stepSuccess *prometheus.GaugeVec
	duration    *prometheus.GaugeVec
	flowHist    *prometheus.HistogramVec
	runs        *prometheus.CounterVec
	lastRun     *prometheus.GaugeVec
	scheduled   *prometheus.CounterVec
	setups      *prometheus.CounterVec
	verdicts    *prometheus.CounterVec
	lateness    prometheus.Histogram
}

func newMetrics(s *Service) *metrics {
	m := &metrics{
		success: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "probe_success",
			Help: "1 if the flow's last run passed, else 0."}, []string{"flow"}),
		stepSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "probe_step_success",
			Help: "1 if the step passed in the flow's last run, else 0 (failed or not reached)."}, []string{"flow", "step"}),
		duration: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "probe_duration_seconds",
			Help: "Duration of the last run: of the whole flow (step=\"\") and of each step."}, []string{"flow", "step"}),
		flowHist: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "probe_flow_duration_seconds",
			Help: "Distribution of flow run durations.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}, []string{"flow"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "probe_runs_total",
			Help: "Flow runs by result: pass, fail (an assertion or extraction failed), error (request or setup failed)."}, []string{"flow", "result"}),
		lastRun: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "probe_last_run_timestamp_seconds",
			Help: "Start time of the flow's last run."}, []string{"flow"}),
		scheduled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "probe_scheduled_runs_total",
			Help: "Scheduled runs by timing: on_time, late (started after the tolerance), skipped (never started)."}, []string{"flow", "timing"}),
		setups: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "probe_setup_logins_total",
			Help: "Setup (login) executions by kind: login, refresh (after a 401), error."}, []string{"setup", "kind"}),
		lateness: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "probe_schedule_lateness_seconds",
			Help:    "How long after its due time each scheduled run started.",
			Buckets: []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}}),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "probe_verdicts_total",
			Help: "Verdicts answered, by outcome."}, []string{"flow", "verdict"}),
	}
	// Every series carries the environment.
	r := prometheus.WrapRegistererWith(prometheus.Labels{"env": s.env}, s.reg)
	r.MustRegister(m.success, m.stepSuccess, m.duration, m.flowHist, m.runs, m.lastRun, m.scheduled, m.setups, m.verdicts, m.lateness,
		&sloCollector{s: s}, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "probe_event_write_errors_total",
			Help: "JSON-lines events that could not be written."}, func() float64 { return float64(s.evErrors.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "probe_scheduler_up",
			Help: "1 while the scheduler loop runs."}, func() float64 { return b2f(s.loopAlive.Load()) }))
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Series exist from the start: a flow that never ran shows 0 runs.
	for _, e := range s.entries {
		for _, res := range []string{"pass", "fail", "error"} {
			m.runs.WithLabelValues(e.flow.Name, res)
		}
		for _, t := range []string{"on_time", "late", "skipped"} {
			m.scheduled.WithLabelValues(e.flow.Name, t)
		}
	}
	return m
}

var (
	sloObjective = prometheus.NewDesc("probe_slo_objective", "The SLO's objective (target good ratio).", []string{"slo"}, nil)
	sloWindow    = prometheus.NewDesc("probe_slo_window_seconds", "The SLO's compliance window.", []string{"slo"}, nil)
	sloGood      = prometheus.NewDesc("probe_slo_good_events", "Good events in the SLO window.", []string{"slo"}, nil)
	sloTotal     = prometheus.NewDesc("probe_slo_total_events", "Events in the SLO window.", []string{"slo"}, nil)
	sloComp      = prometheus.NewDesc("probe_slo_compliance", "Good ÷ total events over the SLO window (NaN without events).", []string{"slo"}, nil)
	sloBudget    = prometheus.NewDesc("probe_slo_error_budget_remaining", "1 − error ratio ÷ (1 − objective) over the SLO window; negative when overspent, 1 without events.", []string{"slo"}, nil)
	sloBurn      = prometheus.NewDesc("probe_slo_burn_rate", "Error ratio over the window ÷ (1 − objective) (NaN without events).", []string{"slo", "window"}, nil)
)

// sloCollector computes SLO series at scrape time from the trackers, at the
// service clock's now.
type sloCollector struct{ s *Service }

func (c *sloCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sloObjective, sloWindow, sloGood, sloTotal, sloComp, sloBudget, sloBurn} {
		ch <- d
	}
}

func (c *sloCollector) Collect(ch chan<- prometheus.Metric) {
	for _, snap := range c.s.SLOSnapshots() {
		g := func(d *prometheus.Desc, v float64, lv ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{snap.Name}, lv...)...)
		}
		g(sloObjective, snap.Objective)
		g(sloWindow, windowOf(c.s, snap.Name).Seconds())
		g(sloGood, float64(snap.Good))
		g(sloTotal, float64(snap.Total))
		g(sloComp, snap.Compliance)
		g(sloBudget, snap.BudgetRemaining)
		for _, w := range slo.BurnWindows {
			g(sloBurn, snap.BurnRates[w.Name], w.Name)
		}
	}
}

func windowOf(s *Service, name string) interface{ Seconds() float64 } {
	for _, b := range s.slos {
		if b.def.Name == name {
			return b.def.Window.D()
		}
	}
	return s.self.Window
}
