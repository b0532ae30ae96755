package observability

import (
	"context"
	"strings"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"github.com/prometheus/client_golang/prometheus"
)

// ReleaseMetrics count release decisions from committed events
// (docs/RELEASES.md), like the deploy metrics: every server reports the
// same totals (aggregate with max across servers). Decision counters, not
// only phase gauges: "aborted by analysis" is a counter users can alert on.
type ReleaseMetrics struct {
	decisions *prometheus.CounterVec
	aborts    *prometheus.CounterVec
	verdicts  *prometheus.CounterVec
	labels    labelBound
}

// NewReleaseMetrics registers the release metrics with reg.
func NewReleaseMetrics(reg prometheus.Registerer) *ReleaseMetrics {
	m := &ReleaseMetrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "release_decisions_total",
			Help: "Release transitions decided, by action, result (allowed, denied) and denial reason."}, []string{"action", "result", "reason"}),
		aborts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canary_aborts_total",
			Help: "Canaries aborted, by the reason the controller gave (bounded label values)."}, []string{"reason"}),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "canary_abort_verdict_total",
			Help: "Aborts judged afterwards, from committed facts: false (labelled false by an operator, or the same digest later promoted) or true (labelled true)."}, []string{"verdict"}),
	}
	for _, v := range []string{"false", "true"} {
		m.verdicts.WithLabelValues(v)
	}
	reg.MustRegister(m.decisions, m.aborts, m.verdicts)
	return m
}

// Write counts one committed event (an EventSink, fed by RunSink).
func (m *ReleaseMetrics) Write(_ context.Context, ev *pb.Event) error {
	if ev.Type == fsm.EventReleaseAbortLabelled {
		// The FSM admits only "true" and "false"; anything else is not counted.
		if v := field(ev, "verdict"); v == "true" || v == "false" {
			m.verdicts.WithLabelValues(v).Inc()
		}
		return nil
	}
	if ev.Type != fsm.EventReleaseDecided {
		return nil
	}
	action := field(ev, "action")
	result := "denied"
	if field(ev, "allowed") == "true" {
		result = "allowed"
	}
	m.decisions.WithLabelValues(m.labels.bounded("action", action), result, m.labels.bounded("denial", field(ev, "denial_reason"))).Inc()
	if action == "abort" && result == "allowed" {
		m.aborts.WithLabelValues(m.labels.bounded("abort_reason", clipLabel(field(ev, "reason")))).Inc()
	}
	return nil
}

// clipLabel keeps a free-text reason short enough for a label value.
func clipLabel(s string) string {
	if len(s) > 64 {
		s = strings.ToValidUTF8(s[:64], "")
	}
	return s
}
