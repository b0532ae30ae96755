// Package observability holds AeroDB Authority's Prometheus metrics (the
// AeroDB replication_promotion_* names plus authority_*), the explanation
// artifact renderer, and log setup. It observes; it never decides: nothing
// here is consulted by the FSM, the validator or the promotion service.
package observability

import (
	"strconv"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/promotion"
	"github.com/prometheus/client_golang/prometheus"
)

// MaxPrimarySeries bounds replication_current_primary: with 100,000 domains
// a series per (domain, replica) would swamp Prometheus, so the gauge is
// emitted for the first MaxPrimarySeries domains by name and the rest are
// counted in authority_current_primary_series_dropped. Every other metric
// has no per-domain label at all (denials are labelled by reason, fencing by
// kind, renewals by result: small fixed sets).
const MaxPrimarySeries = 1000

// Metrics implements promotion.Observer and the cluster's apply/snapshot
// hooks on a registry of the caller's (no global registry).
type Metrics struct {
	requests     prometheus.Counter
	success      prometheus.Counter
	denied       *prometheus.CounterVec
	crashAbort   prometheus.Counter
	validation   prometheus.Histogram
	epochChanges prometheus.Counter
	renewals     *prometheus.CounterVec
	expiries     prometheus.Counter
	fenced       *prometheus.CounterVec
	advances     prometheus.Counter
	batchSize    prometheus.Histogram
	apply        prometheus.Histogram
	snapshot     prometheus.Histogram
	policy       *prometheus.CounterVec
	refused      *prometheus.CounterVec
	dryRuns      *prometheus.CounterVec
}

var _ promotion.Observer = (*Metrics)(nil)

// NewMetrics registers every metric on reg; f feeds the gauges read at
// scrape time (in-progress requests, current primaries).
func NewMetrics(reg prometheus.Registerer, f *fsm.FSM) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounter(prometheus.CounterOpts{Name: "replication_promotion_requests_total",
			Help: "Promotion requests that entered the lifecycle on this leader (dry runs excluded)."}),
		success: prometheus.NewCounter(prometheus.CounterOpts{Name: "replication_promotion_success_total",
			Help: "Promotions committed as allowed by this leader."}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "replication_promotion_denied_total",
			Help: "Promotions committed as denied by this leader, by denial reason."}, []string{"reason"}),
		crashAbort: prometheus.NewCounter(prometheus.CounterOpts{Name: "replication_promotion_crash_abort_total",
			Help: "Attempts requested under an earlier leader but never decided, aborted by this leader."}),
		validation: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "replication_promotion_validation_duration_ms",
			Help: "Leader-side validation time of an attempt, in milliseconds.", Buckets: []float64{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 50}}),
		epochChanges: prometheus.NewCounter(prometheus.CounterOpts{Name: "authority_epoch_changes_total",
			Help: "Committed grants of a new epoch (initial assignment, lock acquisition, promotion) by this leader."}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authority_lease_renewals_total",
			Help: "Lease renewals served by this leader, by result (ok, fenced, expired, no_lease, not_leader)."}, []string{"result"}),
		expiries: prometheus.NewCounter(prometheus.CounterOpts{Name: "authority_lease_expiries_total",
			Help: "Leases this leader found expired (once per lease)."}),
		fenced: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authority_fencing_rejections_total",
			Help: "Requests from a stale (holder, epoch) refused, by kind."}, []string{"kind"}),
		advances: prometheus.NewCounter(prometheus.CounterOpts{Name: "authority_watermark_advances_total",
			Help: "Watermark advances proposed by this leader."}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "authority_watermark_batch_size",
			Help: "Advances per AdvanceWatermark log entry.", Buckets: prometheus.ExponentialBuckets(1, 4, 7)}),
		apply: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "authority_apply_duration_seconds",
			Help: "FSM apply time of one log entry on this node.", Buckets: prometheus.ExponentialBuckets(1e-6, 4, 10)}),
		snapshot: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "authority_snapshot_duration_seconds",
			Help: "Time to capture and persist one FSM snapshot on this node.", Buckets: prometheus.ExponentialBuckets(1e-3, 4, 8)}),
		policy: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authority_policy_attempts_total",
			Help: "Automatic-policy evaluations of an expired lease on this leader, by result (allowed, denied, skipped, error) and reason (denial reason, skip reason or error class)."},
			[]string{"result", "reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "replication_promotion_refused_total",
			Help: "Promotion requests refused before the lifecycle on this node, by reason (not_leader, not_ready, invalid_request, unknown_domain, globally_disabled, request_id_conflict) and dry_run."},
			[]string{"reason", "dry_run"}),
		dryRuns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "replication_promotion_dry_runs_total",
			Help: "Promotion dry runs evaluated on this leader, by outcome (allowed, denied) and denial reason."},
			[]string{"outcome", "reason"}),
	}
	reg.MustRegister(m.requests, m.success, m.denied, m.crashAbort, m.validation, m.epochChanges, m.renewals,
		m.expiries, m.fenced, m.advances, m.batchSize, m.apply, m.snapshot, m.policy, m.refused, m.dryRuns)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "replication_promotion_in_progress",
		Help: "Promotion requests recorded but not yet decided (all domains)."},
		func() float64 { return float64(len(f.PendingIntents())) }))
	reg.MustRegister(&primaryCollector{f: f}, &spillCollector{f: f})
	return m
}

// Decided counts a committed decision (dry runs only feed the latency).
func (m *Metrics) Decided(rec *pb.AttemptRecord, committed bool, validation time.Duration) {
	m.validation.Observe(float64(validation.Nanoseconds()) / 1e6)
	if !committed {
		return
	}
	if d := rec.GetDecision(); d.GetAllowed() {
		m.success.Inc()
	} else {
		m.denied.WithLabelValues(d.GetDenialReason()).Inc()
	}
}

func (m *Metrics) Renewed(result string) { m.renewals.WithLabelValues(result).Inc() }

// RenewedN counts n renewals of one result at once (a batched KeepAlive
// message): one counter update instead of n (promotion.RenewCounter).
func (m *Metrics) RenewedN(result string, n int) {
	m.renewals.WithLabelValues(result).Add(float64(n))
}
func (m *Metrics) LeaseExpired(string)         { m.expiries.Inc() }
func (m *Metrics) Fenced(kind string)          { m.fenced.WithLabelValues(kind).Inc() }
func (m *Metrics) Requested(string)            { m.requests.Inc() }
func (m *Metrics) CrashAborted(string, string) { m.crashAbort.Inc() }
func (m *Metrics) EpochChanged(string)         { m.epochChanges.Inc() }
func (m *Metrics) PolicyAttempt(result, reason string) {
	m.policy.WithLabelValues(result, reason).Inc()
}
func (m *Metrics) Refused(reason string, dryRun bool) {
	m.refused.WithLabelValues(reason, strconv.FormatBool(dryRun)).Inc()
}
func (m *Metrics) DryRun(allowed bool, reason string) {
	outcome := "denied"
	if allowed {
		outcome = "allowed"
	}
	m.dryRuns.WithLabelValues(outcome, reason).Inc()
}
func (m *Metrics) Applied(d time.Duration)     { m.apply.Observe(d.Seconds()) }
func (m *Metrics) Snapshotted(d time.Duration) { m.snapshot.Observe(d.Seconds()) }
func (m *Metrics) WatermarkBatch(n int) {
	m.advances.Add(float64(n))
	m.batchSize.Observe(float64(n))
}

// primaryCollector emits replication_current_primary{domain,replica} = 1
// for the holder of each of the first MaxPrimarySeries domains, at scrape
// time from the applied state.
type primaryCollector struct{ f *fsm.FSM }

var (
	primaryDesc = prometheus.NewDesc("replication_current_primary",
		"1 for the current holder (primary) of a domain; the first 1000 domains by name.", []string{"domain", "replica"}, nil)
	droppedDesc = prometheus.NewDesc("authority_current_primary_series_dropped",
		"Domains left out of replication_current_primary to bound its cardinality.", nil, nil)
	domainsDesc = prometheus.NewDesc("authority_domains", "Domains in the replicated state.", nil, nil)
)

func (c *primaryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- primaryDesc
	ch <- droppedDesc
	ch <- domainsDesc
}

func (c *primaryCollector) Collect(ch chan<- prometheus.Metric) {
	summaries, more := c.f.Summaries("", MaxPrimarySeries)
	for _, s := range summaries {
		if s.Holder != "" && !s.Released {
			ch <- prometheus.MustNewConstMetric(primaryDesc, prometheus.GaugeValue, 1, s.Name, s.Holder)
		}
	}
	total := len(summaries)
	if more {
		total = len(c.f.DomainNames())
	}
	ch <- prometheus.MustNewConstMetric(droppedDesc, prometheus.GaugeValue, float64(total-len(summaries)))
	ch <- prometheus.MustNewConstMetric(domainsDesc, prometheus.GaugeValue, float64(total))
}

// spillCollector reports the FSM's history spill files (fsm/spill.go).
type spillCollector struct{ f *fsm.FSM }

var (
	spillBytesDesc = prometheus.NewDesc("authority_history_spill_bytes",
		"Bytes of the attempt history's spill files: file (written, garbage included) and live (what the state uses).", []string{"kind"}, nil)
	spillFailedDesc = prometheus.NewDesc("authority_history_spill_failed",
		"1 when a spill file write failed and spilling stopped (the history stays in memory until a restart).", nil, nil)
)

func (c *spillCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- spillBytesDesc
	ch <- spillFailedDesc
}

func (c *spillCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.f.SpillStats()
	ch <- prometheus.MustNewConstMetric(spillBytesDesc, prometheus.GaugeValue, float64(st.FileBytes), "file")
	ch <- prometheus.MustNewConstMetric(spillBytesDesc, prometheus.GaugeValue, float64(st.LiveBytes), "live")
	failed := 0.0
	if st.Err != nil {
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(spillFailedDesc, prometheus.GaugeValue, failed)
}
