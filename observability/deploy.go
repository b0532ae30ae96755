package observability

import (
	"context"
	"strconv"
	"strings"
	"sync"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"github.com/prometheus/client_golang/prometheus"
)

// DeployMetrics are the deploy pipeline's metrics (docs/DEPLOY.md), counted
// from committed deploy events. Every server counts the same committed
// events, so every server reports the same totals (aggregate with max, not
// sum, across servers); a restarted server counts from its snapshot on.
type DeployMetrics struct {
	attempts         *prometheus.CounterVec
	duration         *prometheus.HistogramVec
	failovers        *prometheus.CounterVec
	failoverSeconds  *prometheus.HistogramVec
	preflightFailure *prometheus.CounterVec
	gateFailure      *prometheus.CounterVec

	labels labelBound
}

// labelBound bounds each label's distinct values: a deployer or a release
// controller names environments, checks and reasons, and must not be able
// to grow the metric set without bound. Further values count as "other".
type labelBound struct {
	mu   sync.Mutex
	seen map[string]map[string]bool // per label kind: values seen
}

// maxLabelValues bounds each label's distinct values (labelBound).
const maxLabelValues = 64

// NewDeployMetrics registers the deploy metrics with reg.
func NewDeployMetrics(reg prometheus.Registerer) *DeployMetrics {
	m := &DeployMetrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deploy_attempts_total",
			Help: "Deployments that ended, by environment and result (succeeded, failed)."}, []string{"env", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "deploy_duration_seconds",
			Help:    "Time from a deployment's start to its end (leader-stamped), by environment.",
			Buckets: []float64{5, 10, 30, 60, 120, 180, 300, 450, 600, 900, 1200}}, []string{"env"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "deploy_failovers_total",
			Help: "Runner failovers of deployments that ended, by environment and the deployment's result."}, []string{"env", "result"}),
		failoverSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "deploy_failover_seconds",
			Help:    "Time from losing a deployment's runner (lease expiry or handoff) to another runner's takeover.",
			Buckets: []float64{0.25, 0.5, 1, 2, 5, 10, 15, 20, 30, 45, 60, 120}}, []string{"env"}),
		preflightFailure: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "preflight_failures_total",
			Help: "Preflight checks that failed on a runner holding a deploy lock, by check."}, []string{"check"}),
		gateFailure: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "health_gate_failures_total",
			Help: "Health gates that failed after a deploy, by service."}, []string{"service"}),
	}
	reg.MustRegister(m.attempts, m.duration, m.failovers, m.failoverSeconds, m.preflightFailure, m.gateFailure)
	return m
}

// Write counts one committed event (an EventSink, fed by RunSink).
func (m *DeployMetrics) Write(_ context.Context, ev *pb.Event) error {
	switch ev.Type {
	case fsm.EventDeploySucceeded, fsm.EventDeployFailed:
		result := "succeeded"
		if ev.Type == fsm.EventDeployFailed {
			result = "failed"
		}
		env := m.labels.bounded("env", field(ev, "env"))
		m.attempts.WithLabelValues(env, result).Inc()
		if ms, err := strconv.ParseInt(field(ev, "duration_ms"), 10, 64); err == nil {
			m.duration.WithLabelValues(env).Observe(float64(ms) / 1000)
		}
		if n, err := strconv.ParseUint(field(ev, "failovers"), 10, 32); err == nil && n > 0 {
			m.failovers.WithLabelValues(env, result).Add(float64(n))
		}
		m.failedChecks(field(ev, "failed_checks"))
	case fsm.EventDeployFailover:
		if ms, err := strconv.ParseInt(field(ev, "failover_ms"), 10, 64); err == nil {
			m.failoverSeconds.WithLabelValues(m.labels.bounded("env", field(ev, "env"))).Observe(float64(ms) / 1000)
		}
	case fsm.EventDeployHandoff:
		m.failedChecks(field(ev, "failed_checks"))
	}
	return nil
}

// failedChecks counts "preflight:CHECK" and "gate:SERVICE" entries.
func (m *DeployMetrics) failedChecks(list string) {
	for _, c := range strings.Split(list, ",") {
		if name, ok := strings.CutPrefix(c, "preflight:"); ok {
			m.preflightFailure.WithLabelValues(m.labels.bounded("check", name)).Inc()
		} else if name, ok := strings.CutPrefix(c, "gate:"); ok {
			m.gateFailure.WithLabelValues(m.labels.bounded("service", name)).Inc()
		}
	}
}

func (b *labelBound) bounded(kind, v string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.seen == nil {
		b.seen = map[string]map[string]bool{}
	}
	seen := b.seen[kind]
	if seen == nil {
		seen = map[string]bool{}
		b.seen[kind] = seen
	}
	if !seen[v] && len(seen) >= maxLabelValues {
		return "other"
	}
	seen[v] = true
	return v
}

func field(ev *pb.Event, key string) string {
	for _, f := range ev.Fields {
		if f.Key == key {
			return f.Value
		}
	}
	return ""
}
