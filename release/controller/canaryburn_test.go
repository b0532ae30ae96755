package controller

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/aerodb/authority/release/analysis"
	"github.com/aerodb/authority/release/burnrate"
)

// fakeProm answers every query with the canary's error ratio at the query
// time (NaN: no traffic).
type fakeProm func(at time.Time) float64

func (f fakeProm) Query(_ context.Context, _ string, at time.Time) (float64, bool, error) {
	v := f(at)
	if math.IsNaN(v) {
		return 0, false, nil
	}
	return v, true, nil
}

// The short canary-only burn windows during analysis: the "canary-burn"
// provider on a virtual clock with a fake Prometheus. A canary that starts
// burning 20× its budget two minutes in fails the analysis (abort); a
// healthy one passes; one without traffic is inconclusive (pause), never a
// pass.
func TestCanaryBurnProvider(t *testing.T) {
	slo := &burnrate.SLO{Objective: 0.999, ErrorRatio: `sum(rate(errors{track="canary"}[$window])) / sum(rate(requests{track="canary"}[$window]))`,
		Rules: []burnrate.Rule{{Name: "canary-fast", Factor: 14.4, Long: analysis.Duration(5 * time.Minute), Short: analysis.Duration(time.Minute)}}}
	cfg, err := analysis.Parse([]byte(`metrics:
  - name: canary-burn
    provider: {custom: canary-burn}
    interval: 30s
    count: 10
    failureCondition: result == 1
`), CanaryBurnProvider)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_796_400_000, 0)
	for _, c := range []struct {
		name  string
		ratio func(time.Time) float64
		want  analysis.Phase
	}{
		{"burning", func(at time.Time) float64 {
			if at.Sub(t0) >= 2*time.Minute {
				return 0.02
			}
			return 0.0001
		}, analysis.Failed},
		{"healthy", func(time.Time) float64 { return 0.0005 }, analysis.Successful},
		{"no traffic", func(time.Time) float64 { return math.NaN() }, analysis.Inconclusive},
	} {
		ctl := &Controller{cfg: &Config{CanaryBurn: slo}, prom: fakeProm(c.ratio)}
		rn := &analysis.Runner{Clock: analysis.NewVirtualClock(t0), Custom: map[string]analysis.Source{CanaryBurnProvider: analysis.SourceFunc(ctl.canaryBurn)}}
		res, err := rn.Run(context.Background(), cfg)
		if err != nil || res.Phase != c.want {
			t.Fatalf("%s: %s (%s) %v, want %s", c.name, res.Phase, res.Message, err, c.want)
		}
		if c.want == analysis.Failed && !strings.Contains(res.Message, "failureCondition") {
			t.Fatalf("%s: %s", c.name, res.Message)
		}
		t.Logf("%s: %s after %d measurements: %s", c.name, res.Phase, len(res.Metrics[0].Measurements), res.Message)
	}
}
