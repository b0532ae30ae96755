// Package rollouts tests the shipped rollouts templates' thresholds with
// the rollout controller's analysis engine (release/analysis): the same
// thresholds as the Argo AnalysisTemplates, and acceptance item 7 — 100
// healthy canaries per service type with realistic metric noise have
// fewer than 2 % false aborts. (Decoding into Argo's own types is the
// separate module ./conformance.)
package rollouts

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aerodb/authority/release/analysis"
	"gopkg.in/yaml.v3"
)

var serviceTypes = []string{"web-api", "worker", "database-proxy"}

// argoHealthMetrics reads the canary-health AnalysisTemplate's metrics of
// a service type's rollouts.yaml (generic YAML: this module does not
// depend on Argo's types).
func argoHealthMetrics(t *testing.T, svc string) map[string]map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("v1", svc, "rollouts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var doc struct {
			Kind     string `yaml:"kind"`
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
			Spec struct {
				Metrics []map[string]any `yaml:"metrics"`
			} `yaml:"spec"`
		}
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if doc.Kind == "AnalysisTemplate" && doc.Metadata.Name == svc+"-canary-health" {
			out := map[string]map[string]any{}
			for _, m := range doc.Spec.Metrics {
				out[fmt.Sprint(m["name"])] = m
			}
			return out
		}
	}
	t.Fatalf("%s: no %s-canary-health AnalysisTemplate", svc, svc)
	return nil
}

func loadAnalysis(t *testing.T, svc string) *analysis.Config {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("v1", svc, "analysis.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := analysis.Parse(b)
	if err != nil {
		t.Fatalf("%s/analysis.yaml: %v", svc, err)
	}
	return cfg
}

// The controller's analysis.yaml and Argo's AnalysisTemplate of each
// service type decide on the same metrics with the same thresholds.
func TestThresholdsMatchArgoTemplates(t *testing.T) {
	for _, svc := range serviceTypes {
		argo := argoHealthMetrics(t, svc)
		cfg := loadAnalysis(t, svc)
		if len(cfg.Metrics) != len(argo) {
			t.Errorf("%s: %d metrics in analysis.yaml, %d in the AnalysisTemplate", svc, len(cfg.Metrics), len(argo))
		}
		for _, m := range cfg.Metrics {
			a, ok := argo[m.Name]
			if !ok {
				t.Errorf("%s: metric %s is not in the AnalysisTemplate", svc, m.Name)
				continue
			}
			pairs := []struct {
				field string
				ours  any
			}{
				{"successCondition", m.SuccessCondition}, {"failureCondition", m.FailureCondition},
				{"count", m.Count}, {"interval", m.Interval.D().String()}, {"initialDelay", m.InitialDelay.D().String()},
				{"failureLimit", deref(m.FailureLimit)}, {"inconclusiveLimit", deref(m.InconclusiveLimit)},
			}
			for _, p := range pairs {
				theirs := a[p.field]
				if s, ok := theirs.(string); ok && (p.field == "interval" || p.field == "initialDelay") {
					d, err := time.ParseDuration(s)
					if err != nil {
						t.Errorf("%s %s: %s %q", svc, m.Name, p.field, s)
					}
					theirs = d.String()
				}
				if theirs == nil {
					theirs = map[string]any{"failureLimit": 0, "inconclusiveLimit": 0, "initialDelay": "0s"}[p.field]
				}
				if fmt.Sprint(theirs) != fmt.Sprint(p.ours) {
					t.Errorf("%s %s: %s %v in analysis.yaml, %v in the AnalysisTemplate", svc, m.Name, p.field, p.ours, theirs)
				}
			}
		}
	}
}

func deref(p *int) int {
	if p == nil {
		return 0
	}
	return *p
}

// simSeed is the fixed seed of the template simulation (printed).
const simSeed = 20261205

// canary simulates one canary's metrics as Prometheus would return them:
// per measurement window a request count ~ Poisson(rate × window) (with
// 5 % low-traffic dips to 5 % of the rate), errors ~ Poisson(n × p),
// a lognormal p99 latency with 2 % GC spikes (×2.5), a lognormal queue
// lag, 3 % scrape gaps (an empty vector: no series in the window) and
// 1 % query errors (Prometheus unreachable).
type canary struct {
	rng     *rand.Rand
	rate    float64 // requests (jobs, queries) per second
	p       float64 // error probability
	p99     float64 // seconds
	lag     float64 // seconds
	windowS float64
}

func (c *canary) poisson(lambda float64) float64 {
	if lambda > 500 {
		return math.Max(0, math.Round(lambda+math.Sqrt(lambda)*c.rng.NormFloat64()))
	}
	l, k, p := math.Exp(-lambda), 0.0, 1.0
	for {
		p *= c.rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

func (c *canary) measure(_ context.Context, m *analysis.Metric, _ time.Time) (analysis.Value, error) {
	switch u := c.rng.Float64(); {
	case u < 0.01:
		return analysis.Value{}, errors.New("simulated: connection refused")
	case u < 0.04:
		return analysis.Value{IsVector: true, Samples: 0}, nil // a scrape gap: no series
	}
	rate := c.rate
	if c.rng.Float64() < 0.05 {
		rate *= 0.05
	}
	n := c.poisson(rate * c.windowS)
	samples := int64(n)
	if m.Provider.Prometheus.CountQuery == "" {
		samples = -1
	}
	var v float64
	switch m.Name {
	case "error-rate", "job-failure-rate", "query-error-rate":
		v = c.poisson(n*c.p) / n // 0/0 = NaN without traffic: no data
	case "latency-p99", "query-latency-p99":
		v = math.Exp(math.Log(c.p99) + 0.25*c.rng.NormFloat64())
		if c.rng.Float64() < 0.02 {
			v *= 2.5
		}
	case "queue-lag":
		v = math.Exp(math.Log(c.lag) + 0.5*c.rng.NormFloat64())
	default:
		return analysis.Value{}, fmt.Errorf("simulated: no series for metric %s", m.Name)
	}
	return analysis.Value{Values: []float64{v}, IsVector: true, Samples: samples}, nil
}

// profile draws a canary of a service type: healthy, or bad (an error
// probability at twice the failure threshold).
func profile(rng *rand.Rand, svc string, bad bool) *canary {
	ln := func(mean, sigma float64) float64 { return mean * math.Exp(sigma*rng.NormFloat64()-sigma*sigma/2) }
	c := &canary{rng: rng}
	switch svc {
	case "web-api":
		c.rate, c.p, c.p99, c.windowS = 5+rng.Float64()*45, ln(0.001, 0.5), 0.1+rng.Float64()*0.1, 120
		if bad {
			c.p = 0.10
		}
	case "worker":
		c.rate, c.p, c.lag, c.windowS = 1+rng.Float64()*9, ln(0.003, 0.5), 20+rng.Float64()*70, 300
		if bad {
			c.p = 0.20
		}
	case "database-proxy":
		c.rate, c.p, c.p99, c.windowS = 50+rng.Float64()*450, ln(0.0005, 0.5), 0.006+rng.Float64()*0.008, 120
		if bad {
			c.p = 0.04
		}
	}
	return c
}

type tally struct{ continued, aborted, paused int }

func simulate(t *testing.T, rng *rand.Rand, svc string, n int, bad bool) tally {
	t.Helper()
	cfg := loadAnalysis(t, svc)
	t0 := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	var s tally
	for i := range n {
		c := profile(rng, svc, bad)
		rn := &analysis.Runner{Clock: analysis.NewVirtualClock(t0.Add(time.Duration(i) * time.Hour)), Builtin: analysis.SourceFunc(c.measure)}
		res, err := rn.Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		switch res.Action() {
		case "continue":
			s.continued++
		case "abort":
			s.aborted++
			if !bad {
				t.Logf("%s healthy canary %d (rate %.0f/s, p %.5f) aborted: %s", svc, i, c.rate, c.p, res.Message)
			}
		default:
			s.paused++
		}
	}
	return s
}

// Acceptance item 7 with the thresholds shipped in the templates: 100
// healthy canaries per service type, realistic noise, fewer than 2 %
// false aborts (reported); 100 bad canaries per type are caught.
func TestSimulatedCanariesOnShippedThresholds(t *testing.T) {
	t.Logf("seed %d", simSeed)
	rng := rand.New(rand.NewPCG(simSeed, simSeed^0x9e3779b97f4a7c15))
	totalFalse, totalHealthy := 0, 0
	for _, svc := range serviceTypes {
		h := simulate(t, rng, svc, 100, false)
		b := simulate(t, rng, svc, 100, true)
		totalFalse += h.aborted
		totalHealthy += 100
		t.Logf("%-15s healthy: %3d promoted-eligible, %d false aborts (%.1f %%), %d paused (inconclusive, never promoted) | bad: %3d aborted, %d paused, %d passed",
			svc, h.continued, h.aborted, float64(h.aborted), h.paused, b.aborted, b.paused, b.continued)
		if h.aborted >= 2 {
			t.Errorf("%s: %d false aborts of 100 healthy canaries (want < 2 %%)", svc, h.aborted)
		}
		if b.continued > 0 || b.aborted < 95 {
			t.Errorf("%s: bad canaries: %d aborted, %d passed (want ≥ 95 aborted, none passed)", svc, b.aborted, b.continued)
		}
	}
	t.Logf("false aborts: %d of %d healthy canaries (%.2f %%)", totalFalse, totalHealthy, 100*float64(totalFalse)/float64(totalHealthy))
}
