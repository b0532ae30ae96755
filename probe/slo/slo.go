// Package slo is the error-budget arithmetic of the probe service: bucketed
// good/total counters over sliding windows, compliance, error budget
// remaining and burn rates (burn rate = error ratio ÷ (1 − objective)).
package slo

import (
	"math"
	"sync"
	"time"
)

// Ring counts good and total events in fixed-resolution buckets over a
// bounded span. A window sum covers the buckets that overlap
// (now − window, now]: the current, partial, bucket included, so a window
// is counted to within one resolution.
type Ring struct {
	mu    sync.Mutex
	res   int64 // nanoseconds
	idx   []int64
	good  []uint64
	total []uint64
}

// NewRing returns a ring of resolution res able to answer windows up to span.
func NewRing(res, span time.Duration) *Ring {
	n := int(span/res) + 1
	r := &Ring{res: int64(res), idx: make([]int64, n), good: make([]uint64, n), total: make([]uint64, n)}
	for i := range r.idx {
		r.idx[i] = math.MinInt64
	}
	return r
}

// Span is the longest window the ring answers exactly.
func (r *Ring) Span() time.Duration { return time.Duration(int64(len(r.idx)-1) * r.res) }

// Resolution is the bucket width.
func (r *Ring) Resolution() time.Duration { return time.Duration(r.res) }

// Add counts events at t.
func (r *Ring) Add(t time.Time, good, total uint64) {
	b := t.UnixNano() / r.res
	r.mu.Lock()
	defer r.mu.Unlock()
	s := int(mod(b, int64(len(r.idx))))
	if r.idx[s] != b {
		if r.idx[s] > b {
			return // older than the span
		}
		r.idx[s], r.good[s], r.total[s] = b, 0, 0
	}
	r.good[s] += good
	r.total[s] += total
}

// Sum returns the good and total events of the buckets overlapping
// (now − window, now].
func (r *Ring) Sum(now time.Time, window time.Duration) (good, total uint64) {
	cur := now.UnixNano() / r.res
	k := (int64(window) + r.res - 1) / r.res
	if k > int64(len(r.idx)) {
		k = int64(len(r.idx))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for b := cur - k + 1; b <= cur; b++ {
		s := int(mod(b, int64(len(r.idx))))
		if r.idx[s] == b {
			good += r.good[s]
			total += r.total[s]
		}
	}
	return good, total
}

func mod(a, n int64) int64 {
	m := a % n
	if m < 0 {
		m += n
	}
	return m
}

// ErrorRatio is bad ÷ total; NaN without events (no data is not zero errors).
func ErrorRatio(good, total uint64) float64 {
	if total == 0 {
		return math.NaN()
	}
	return float64(total-good) / float64(total)
}

// BurnRate is how fast the error budget burns: error ratio ÷ (1 − objective).
// 1 spends the budget exactly over the SLO window; NaN without events.
func BurnRate(good, total uint64, objective float64) float64 {
	return ErrorRatio(good, total) / (1 - objective)
}

// Compliance is good ÷ total; NaN without events.
func Compliance(good, total uint64) float64 {
	if total == 0 {
		return math.NaN()
	}
	return float64(good) / float64(total)
}

// BudgetRemaining is the fraction of the error budget left over the SLO
// window: 1 − error ratio ÷ (1 − objective). Negative when overspent; 1
// without events (nothing spent).
func BudgetRemaining(good, total uint64, objective float64) float64 {
	if total == 0 {
		return 1
	}
	return 1 - ErrorRatio(good, total)/(1-objective)
}

// BurnWindows are the multi-window burn rates exported per SLO (the SRE
// workbook's page and ticket tiers: 5m/1h at 14.4, 30m/6h at 6).
var BurnWindows = []struct {
	Name string
	D    time.Duration
}{{"5m", 5 * time.Minute}, {"30m", 30 * time.Minute}, {"1h", time.Hour}, {"6h", 6 * time.Hour}}

// Fine ring resolution and span (burn windows and verdicts); coarse ring
// resolution (the SLO window).
const (
	FineResolution   = 10 * time.Second
	FineSpan         = 6 * time.Hour
	CoarseResolution = time.Minute
)

// Tracker counts the events of one SLO.
type Tracker struct {
	Name      string
	Objective float64
	Window    time.Duration
	fine      *Ring
	coarse    *Ring
}

// NewTracker returns a tracker for an SLO.
func NewTracker(name string, objective float64, window time.Duration) *Tracker {
	return &Tracker{Name: name, Objective: objective, Window: window,
		fine: NewRing(FineResolution, FineSpan), coarse: NewRing(CoarseResolution, window)}
}

// Record counts events at t.
func (t *Tracker) Record(at time.Time, good, total uint64) {
	t.fine.Add(at, good, total)
	t.coarse.Add(at, good, total)
}

// Snapshot is the SLO's state at one instant.
type Snapshot struct {
	Name            string             `json:"name"`
	Objective       float64            `json:"objective"`
	Window          string             `json:"window"`
	Good            uint64             `json:"good"`
	Total           uint64             `json:"total"`
	Compliance      float64            `json:"-"`
	BudgetRemaining float64            `json:"budget_remaining"`
	BurnRates       map[string]float64 `json:"-"`
}

// At computes the snapshot at now.
func (t *Tracker) At(now time.Time) Snapshot {
	g, n := t.coarse.Sum(now, t.Window)
	s := Snapshot{Name: t.Name, Objective: t.Objective, Window: t.Window.String(), Good: g, Total: n,
		Compliance: Compliance(g, n), BudgetRemaining: BudgetRemaining(g, n, t.Objective), BurnRates: map[string]float64{}}
	for _, w := range BurnWindows {
		g, n := t.fine.Sum(now, w.D)
		s.BurnRates[w.Name] = BurnRate(g, n, t.Objective)
	}
	return s
}
