//go:build probe_soak

package service

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aerodb/authority/probe/clock"
	"github.com/aerodb/authority/probe/probetest"
)

type lineCounter struct{ runs atomic.Int64 }

func (l *lineCounter) Write(p []byte) (int, error) {
	l.runs.Add(int64(strings.Count(string(p), `"type":"run"`)))
	return len(p), nil
}

// TestSoak is acceptance item 5, opt-in because it takes minutes:
// PROBE_SOAK=10m go test -tags probe_soak -run TestSoak ./probe/service/
// (make probe-soak). The short deterministic version, run by make test, is
// TestFiftyFlowsGoroutinesFlat.
// 50 flows at 1 s on the real clock; it asserts on-time ≥ 99.9 % and flat
// RSS and goroutines, and writes its numbers to $TMPDIR/probe-soak-last.txt.
func TestSoak(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("PROBE_SOAK"))
	if err != nil || d < time.Minute {
		t.Fatalf("PROBE_SOAK=%q: want a duration of at least 1m (e.g. 10m)", os.Getenv("PROBE_SOAK"))
	}
	app := probetest.Start(nil, 0)
	defer app.Close()
	events := &lineCounter{}
	svc := newSoak(t, clock.Real{}, app, 50, events)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	var report strings.Builder
	fmt.Fprintf(&report, "probe soak: 50 flows at 1s for %s (GOMAXPROCS %d)\n%8s %10s %10s %10s %10s\n", d, runtime.GOMAXPROCS(0), "t", "rss_MiB", "goroutines", "runs", "on_time")
	type sample struct {
		rss float64
		g   int
	}
	var samples []sample
	start := time.Now()
	tk := time.NewTicker(30 * time.Second)
	defer tk.Stop()
	for now := range tk.C {
		el := now.Sub(start)
		s := sample{rss: rssMiB(), g: runtime.NumGoroutine()}
		samples = append(samples, s)
		snap := svc.self.At(time.Now())
		fmt.Fprintf(&report, "%8s %10.1f %10d %10d %10.5f\n", el.Round(time.Second), s.rss, s.g, events.runs.Load(), float64(snap.Good)/float64(snap.Total))
		if el >= d {
			break
		}
	}
	cancel()
	<-done
	snap := svc.self.At(time.Now())
	ratio := float64(snap.Good) / float64(snap.Total)
	var late, skipped float64
	for i := 0; i < 50; i++ {
		late += metric(t, svc.Registry(), "probe_scheduled_runs_total", map[string]string{"flow": fmt.Sprintf("f%02d", i), "timing": "late"})
		skipped += metric(t, svc.Registry(), "probe_scheduled_runs_total", map[string]string{"flow": fmt.Sprintf("f%02d", i), "timing": "skipped"})
	}
	// Flat: after a 1-minute warm-up, the last sample is within 20 % (and
	// 16 MiB) of the warm-up's RSS, and goroutines vary by at most 60
	// (in-flight runs at the sampling instant).
	warm := samples[1]
	last := samples[len(samples)-1]
	minG, maxG := last.g, last.g
	for _, s := range samples[1:] {
		minG, maxG = min(minG, s.g), max(maxG, s.g)
	}
	fmt.Fprintf(&report, "scheduled %d, on time %d (%.5f), late %.0f, skipped %.0f; runs %d; app requests %d, logins %d\n",
		snap.Total, snap.Good, ratio, late, skipped, events.runs.Load(), app.Requests(), app.Logins())
	fmt.Fprintf(&report, "lateness of run starts (cumulative):")
	for _, b := range latenessBuckets(t, svc) {
		fmt.Fprintf(&report, " <=%gs %.5f", b.le, b.frac)
	}
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&report, "\nload average at end: %s", load)
	fmt.Fprintf(&report, "rss %.1f MiB at 1m, %.1f MiB at end; goroutines %d..%d after 1m\n", warm.rss, last.rss, minG, maxG)
	t.Log("\n" + report.String())
	os.WriteFile(filepath.Join(os.TempDir(), "probe-soak-last.txt"), []byte(report.String()), 0o644)
	if ratio < 0.999 {
		t.Errorf("on-time %.5f < 0.999", ratio)
	}
	if last.rss > warm.rss*1.2 && last.rss-warm.rss > 16 {
		t.Errorf("RSS grew from %.1f to %.1f MiB", warm.rss, last.rss)
	}
	if maxG-minG > 60 {
		t.Errorf("goroutines varied %d..%d", minG, maxG)
	}
}

func rssMiB() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

type bucket struct{ le, frac float64 }

func latenessBuckets(t *testing.T, svc *Service) []bucket {
	mfs, err := svc.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []bucket
	for _, mf := range mfs {
		if mf.GetName() != "probe_schedule_lateness_seconds" {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		for _, b := range h.GetBucket() {
			out = append(out, bucket{b.GetUpperBound(), float64(b.GetCumulativeCount()) / float64(h.GetSampleCount())})
		}
	}
	return out
}
