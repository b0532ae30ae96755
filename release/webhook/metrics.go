package webhook

import "github.com/prometheus/client_golang/prometheus"

// Results of release_webhook_deliveries_total.
const (
	ResultDelivered = "delivered" // a 2xx answer
	ResultRetried   = "retried"   // a failed attempt that will be retried
	ResultDropped   = "dropped"   // given up: a 4xx other than 429, a redirect, or attempts exhausted
)

// Metrics are the dispatcher's collectors.
type Metrics struct {
	Deliveries *prometheus.CounterVec   // release_webhook_deliveries_total{endpoint,result}
	Seconds    *prometheus.HistogramVec // release_webhook_delivery_seconds{endpoint}
	QueueDepth *prometheus.GaugeVec     // release_webhook_queue_depth{endpoint}
}

// NewMetrics creates the collectors and registers them on reg (if not nil).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		Deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "release_webhook_deliveries_total",
			Help: "Release webhook delivery attempts by endpoint and result (delivered, retried, dropped).",
		}, []string{"endpoint", "result"}),
		Seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "release_webhook_delivery_seconds",
			Help:    "Duration of one release webhook delivery attempt.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"endpoint"}),
		QueueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "release_webhook_queue_depth",
			Help: "Release events read ahead and waiting for delivery, by endpoint.",
		}, []string{"endpoint"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.Deliveries, m.Seconds, m.QueueDepth} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
