package controller

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the controller's: served on releasectl's /metrics.
type Metrics struct {
	// RollbackDuration: decision → traffic on the previous release →
	// probes green.
	RollbackDuration prometheus.Histogram
	// Aborts by reason: analysis_failed, analysis_error.
	Aborts *prometheus.CounterVec
	// canary_abort_verdict_total is not the controller's: it is counted by
	// every server from committed facts (an operator's label, a promotion of
	// an aborted digest), so it survives controller restarts
	// (observability.ReleaseMetrics).
}

// NewMetrics registers the metrics with reg (none if nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		RollbackDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "rollback_duration_seconds",
			Help:    "Rollback: decision to traffic on the previous release to probes green.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}}),
		Aborts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canary_aborts_total",
			Help: "Canaries aborted by the controller, by reason."}, []string{"reason"}),
	}
	for _, r := range []string{"analysis_failed", "analysis_error"} {
		m.Aborts.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.RollbackDuration, m.Aborts)
	}
	return m
}
