package slo

import (
	"math"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// TestArithmeticHandComputed checks the formulas against values worked out
// by hand (acceptance item 3).
func TestArithmeticHandComputed(t *testing.T) {
	cases := []struct {
		good, total uint64
		objective   float64
		errRatio    float64
		burn        float64
		remaining   float64
	}{
		// 1 bad in 1000 at 99.9 %: exactly on budget.
		{999, 1000, 0.999, 0.001, 1, 0},
		// 36 bad in 1000 at 99.9 %: 0.036 / 0.001 = 36 (pages: > 14.4).
		{964, 1000, 0.999, 0.036, 36, -35},
		// 1 bad in 200 at 99 %: 0.005 / 0.01 = 0.5, half the budget left.
		{199, 200, 0.99, 0.005, 0.5, 0.5},
		// 3 bad in 120 at 95 %: 0.025 / 0.05 = 0.5.
		{117, 120, 0.95, 0.025, 0.5, 0.5},
		// all good.
		{50, 50, 0.999, 0, 0, 1},
	}
	for _, c := range cases {
		if got := ErrorRatio(c.good, c.total); !near(got, c.errRatio) {
			t.Errorf("ErrorRatio(%d,%d)=%v want %v", c.good, c.total, got, c.errRatio)
		}
		if got := BurnRate(c.good, c.total, c.objective); !near(got, c.burn) {
			t.Errorf("BurnRate(%d,%d,%v)=%v want %v", c.good, c.total, c.objective, got, c.burn)
		}
		if got := BudgetRemaining(c.good, c.total, c.objective); !near(got, c.remaining) {
			t.Errorf("BudgetRemaining(%d,%d,%v)=%v want %v", c.good, c.total, c.objective, got, c.remaining)
		}
	}
	if !math.IsNaN(BurnRate(0, 0, 0.999)) || !math.IsNaN(Compliance(0, 0)) || BudgetRemaining(0, 0, 0.999) != 1 {
		t.Error("no data must be NaN (not zero errors) for ratios and burn rates")
	}
}

func TestRingWindows(t *testing.T) {
	r := NewRing(10*time.Second, time.Hour)
	// One event per second for 10 minutes; every 10th is bad.
	for i := 0; i < 600; i++ {
		good := uint64(1)
		if i%10 == 0 {
			good = 0
		}
		r.Add(t0.Add(time.Duration(i)*time.Second), good, 1)
	}
	now := t0.Add(599 * time.Second)
	g, n := r.Sum(now, 5*time.Minute)
	if n != 300 || g != 270 {
		t.Fatalf("5m: good %d total %d, want 270/300", g, n)
	}
	g, n = r.Sum(now, time.Hour)
	if n != 600 || g != 540 {
		t.Fatalf("1h: good %d total %d, want 540/600", g, n)
	}
	// An hour and a bucket later everything has left the window.
	if _, n := r.Sum(now.Add(time.Hour+10*time.Second), time.Hour); n != 0 {
		t.Fatalf("stale buckets counted: %d", n)
	}
	// Bucket reuse after wrap-around does not mix old counts in.
	r.Add(now.Add(2*time.Hour), 1, 1)
	if g, n := r.Sum(now.Add(2*time.Hour), time.Hour); g != 1 || n != 1 {
		t.Fatalf("after wrap: %d/%d", g, n)
	}
}

func TestTrackerSnapshot(t *testing.T) {
	tr := NewTracker("s", 0.99, 24*time.Hour)
	// 6 hours ago: 100 events, 10 bad (outside 5m/30m/1h, inside 6h).
	tr.Record(t0.Add(-5*time.Hour), 90, 100)
	// Last 5 minutes: 100 events, 2 bad.
	tr.Record(t0.Add(-2*time.Minute), 98, 100)
	s := tr.At(t0)
	if s.Good != 188 || s.Total != 200 || !near(s.Compliance, 0.94) {
		t.Fatalf("window: %+v", s)
	}
	// error ratio 12/200 = 0.06; budget 0.01 ⇒ remaining 1 − 6 = −5.
	if !near(s.BudgetRemaining, -5) {
		t.Fatalf("remaining %v", s.BudgetRemaining)
	}
	// 5m: 2/100 = 0.02 ÷ 0.01 = 2; 6h: 12/200 = 0.06 ÷ 0.01 = 6.
	if !near(s.BurnRates["5m"], 2) || !near(s.BurnRates["1h"], 2) || !near(s.BurnRates["6h"], 6) {
		t.Fatalf("burn rates %v", s.BurnRates)
	}
}
