package controller

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aerodb/authority/release/analysis"
)

// "Probes green" by the probe service's verdict: only a pass over a window
// that began after the traffic moved counts; a pass whose window reaches
// back before the rollback, a fail or an inconclusive verdict does not.
func TestRollbackProbeFlowGreen(t *testing.T) {
	moved := time.Now()
	var calls, passFrom atomic.Int64
	// The fake service: a pass whose window starts at passFrom (unix ns);
	// before the test sets it, fail and inconclusive alternately.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		if r.URL.Path != "/v1/verdicts/home" || r.URL.Query().Get("window") != "10s" || r.URL.Query().Get("min_samples") != "2" {
			http.Error(w, "bad request "+r.URL.String(), http.StatusBadRequest)
			return
		}
		v := map[string]any{"verdict": "fail", "from": moved.Add(-time.Second), "reason": "2 of 3 runs failed"}
		switch {
		case passFrom.Load() != 0:
			v = map[string]any{"verdict": "pass", "from": time.Unix(0, passFrom.Load()), "reason": "ok"}
		case n%2 == 0:
			v["verdict"] = "inconclusive"
		}
		json.NewEncoder(w).Encode(v)
	}))
	defer srv.Close()
	clock := &stepClock{now: moved}
	c := &Controller{cfg: &Config{Rollback: RollbackConfig{Timeout: analysis.Duration(10 * time.Second),
		ProbeFlow: &ProbeFlow{Address: srv.URL, Flow: "home", Window: analysis.Duration(10 * time.Second), MinSamples: 2}}},
		clock: clock, http: srv.Client()}

	// Before a whole window has passed on the controller's clock, the
	// service is not even asked.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	if err := c.probeGreen(ctx, moved); err == nil || calls.Load() != 0 {
		t.Fatalf("green before a window had passed: %v (%d calls)", err, calls.Load())
	}
	cancel()

	// A window later: fail, inconclusive, then a pass whose window began
	// before the traffic moved — none is green.
	clock.set(moved.Add(10 * time.Second))
	passFrom.Store(moved.Add(-time.Millisecond).UnixNano())
	ctx, cancel = context.WithTimeout(context.Background(), 500*time.Millisecond)
	err := c.probeGreen(ctx, moved)
	cancel()
	if err == nil || !strings.Contains(err.Error(), `verdict "pass"`) || calls.Load() == 0 {
		t.Fatalf("a pass reaching back before the rollback was green: %v (%d calls)", err, calls.Load())
	}
	passFrom.Store(0)
	ctx, cancel = context.WithTimeout(context.Background(), 500*time.Millisecond)
	err = c.probeGreen(ctx, moved)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "not green") {
		t.Fatalf("fail/inconclusive was green: %v", err)
	}

	// A pass over a window starting at the move: green.
	passFrom.Store(moved.UnixNano())
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.probeGreen(ctx, moved); err != nil {
		t.Fatalf("a pass after the rollback: %v", err)
	}
}

// stepClock is a clock the test sets.
type stepClock struct {
	mu  atomic.Int64
	now time.Time
}

func (s *stepClock) set(t time.Time) { s.mu.Store(t.UnixNano()) }

func (s *stepClock) Now() time.Time {
	if n := s.mu.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return s.now
}

func (s *stepClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
