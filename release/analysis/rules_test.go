package analysis

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

// step is one scripted provider answer.
type step struct {
	v   Value
	err error
}

func ok(f float64) step           { return step{v: Value{Values: []float64{f}, Samples: 1000}} }
func okN(f float64, n int64) step { return step{v: Value{Values: []float64{f}, Samples: n}} }
func vec(fs ...float64) step      { return step{v: Value{Values: fs, IsVector: true, Samples: 1000}} }
func qerr() step                  { return step{err: errors.New("connection refused")} }
func rep(s step, n int) []step {
	out := make([]step, n)
	for i := range out {
		out[i] = s
	}
	return out
}
func cat(ss ...[]step) (out []step) {
	for _, s := range ss {
		out = append(out, s...)
	}
	return
}

// scripted serves each metric's steps in order (by metric name).
func scripted(t *testing.T, script map[string][]step) Source {
	pos := map[string]int{}
	return SourceFunc(func(_ context.Context, m *Metric, _ time.Time) (Value, error) {
		s := script[m.Name]
		i := pos[m.Name]
		if i >= len(s) {
			t.Fatalf("metric %s measured %d times, script has %d", m.Name, i+1, len(s))
		}
		pos[m.Name]++
		return s[i].v, s[i].err
	})
}

func ip(i int) *int { return &i }

func metric(name string, count int, mod func(*Metric)) Metric {
	m := Metric{Name: name, Provider: Provider{Custom: "script"}, Interval: Duration(time.Minute), Count: count,
		SuccessCondition: "result < 0.01"}
	if mod != nil {
		mod(&m)
	}
	return m
}

func runScript(t *testing.T, script map[string][]step, ms ...Metric) Result {
	t.Helper()
	rn := &Runner{Clock: NewVirtualClock(t0), Custom: map[string]Source{"script": scripted(t, script)}}
	res, err := rn.Run(context.Background(), &Config{Metrics: ms})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestMetricRules(t *testing.T) {
	both := func(m *Metric) { m.FailureCondition = "result >= 0.05" } // 0.01..0.05: neither ⇒ inconclusive
	cases := []struct {
		name  string
		m     Metric
		steps []step
		want  Phase
		in    string // substring of the metric message
	}{
		// failureLimit: default 0, cumulative.
		{"failureLimit default 0: one failure fails", metric("m", 5, nil), cat(rep(ok(0.001), 2), []step{ok(0.2)}), Failed, "failureLimit 0"},
		{"failureLimit 2: two failures pass", metric("m", 5, func(m *Metric) { m.FailureLimit = ip(2) }),
			[]step{ok(0.2), ok(0.001), ok(0.2), ok(0.001), ok(0.001)}, Successful, "3 of 5"},
		{"failureLimit 2 is cumulative, not consecutive", metric("m", 6, func(m *Metric) { m.FailureLimit = ip(2) }),
			[]step{ok(0.2), ok(0.001), ok(0.2), ok(0.001), ok(0.2)}, Failed, "3 failed"},
		// inconclusiveLimit: default 0.
		{"inconclusiveLimit default 0", metric("m", 5, both), []step{ok(0.001), ok(0.02)}, Inconclusive, "inconclusiveLimit 0"},
		{"inconclusiveLimit 1 tolerates one", metric("m", 3, func(m *Metric) { both(m); m.InconclusiveLimit = ip(1) }),
			[]step{ok(0.02), ok(0.001), ok(0.001)}, Successful, ""},
		// consecutiveErrorLimit: default 4; errors are not failures.
		{"4 consecutive errors tolerated", metric("m", 5, nil), cat(rep(qerr(), 4), []step{ok(0.001)}), Successful, ""},
		{"5 consecutive errors ⇒ Error", metric("m", 9, nil), rep(qerr(), 5), Error, "consecutiveErrorLimit 4"},
		{"errors reset by a success", metric("m", 10, nil), cat(rep(qerr(), 4), []step{ok(0.001)}, rep(qerr(), 4), []step{ok(0.001)}), Successful, ""},
		{"consecutiveErrorLimit 0", metric("m", 3, func(m *Metric) { m.ConsecutiveErrorLimit = ip(0) }), []step{qerr()}, Error, ""},
		// minSamples: too little traffic ⇒ Inconclusive, never Failed/Error.
		{"minSamples not met ⇒ Inconclusive", metric("m", 3, func(m *Metric) { m.MinSamples = 100 }), []step{okN(0.5, 10)}, Inconclusive, "10 samples < minSamples 100"},
		{"minSamples met", metric("m", 1, func(m *Metric) { m.MinSamples = 100 }), []step{okN(0.001, 100)}, Successful, ""},
		{"minSamples with unknown count", metric("m", 1, func(m *Metric) { m.MinSamples = 1 }), []step{{v: Value{Values: []float64{0}, Samples: -1}}}, Inconclusive, "unknown"},
		// No data is explicit (Argo/Flagger failures).
		{"empty vector with result[0] is Inconclusive, not an index Error", metric("m", 5, func(m *Metric) { m.SuccessCondition = "result[0] < 0.01" }), []step{vec()}, Inconclusive, "empty result"},
		{"empty vector never reads as 0 under a failure condition", metric("m", 1, func(m *Metric) { m.SuccessCondition = ""; m.FailureCondition = "result[0] > 0.01" }), []step{vec()}, Inconclusive, "empty"},
		{"NaN is not 0 (failure condition only)", metric("m", 1, func(m *Metric) { m.SuccessCondition = ""; m.FailureCondition = "result > 0.01" }), []step{ok(math.NaN())}, Inconclusive, "NaN"},
		{"NaN is not a failure (success condition only)", metric("m", 1, nil), []step{ok(math.NaN())}, Inconclusive, "NaN"},
		{"+Inf is no data", metric("m", 1, nil), []step{ok(math.Inf(1))}, Inconclusive, "+Inf"},
		{"NaN inside a vector", metric("m", 1, func(m *Metric) { m.SuccessCondition = "all(result, # < 0.01)" }), []step{vec(0.001, math.NaN())}, Inconclusive, "NaN"},
		{"provider no data", metric("m", 1, nil), []step{{v: Value{NoData: "probe verdict inconclusive"}}}, Inconclusive, "probe verdict"},
		{"all no data within a generous inconclusiveLimit never passes", metric("m", 5, func(m *Metric) { m.InconclusiveLimit = ip(10) }), rep(vec(), 5), Inconclusive, "no successful measurement"},
		{"repeated no data is never an Error", metric("m", 10, func(m *Metric) { m.InconclusiveLimit = ip(10) }), rep(ok(math.NaN()), 10), Inconclusive, "no successful"},
		// Hysteresis.
		{"consecutiveSuccesses 3 met at the end", metric("m", 4, func(m *Metric) { m.ConsecutiveSuccesses = 3; m.FailureLimit = ip(1) }),
			[]step{ok(0.2), ok(0.001), ok(0.001), ok(0.001)}, Successful, ""},
		{"consecutiveSuccesses 3 broken by a late failure", metric("m", 5, func(m *Metric) { m.ConsecutiveSuccesses = 3; m.FailureLimit = ip(1) }),
			[]step{ok(0.001), ok(0.001), ok(0.001), ok(0.2), ok(0.001)}, Inconclusive, "1 consecutive successes"},
		// Conditions (Argo's rules).
		{"only success condition, not met ⇒ Failed", metric("m", 1, nil), []step{ok(0.5)}, Failed, "did not meet successCondition"},
		{"only failure condition, not met ⇒ Successful", metric("m", 1, func(m *Metric) { m.SuccessCondition = ""; m.FailureCondition = "result > 0.01" }), []step{ok(0.001)}, Successful, ""},
		{"both met ⇒ Failed", metric("m", 1, func(m *Metric) { m.SuccessCondition = "result > 0"; m.FailureCondition = "result > 0.01" }), []step{ok(0.5)}, Failed, "met failureCondition"},
		{"vector condition", metric("m", 1, func(m *Metric) { m.SuccessCondition = "all(result, # < 0.01)" }), []step{vec(0.001, 0.002)}, Successful, ""},
		{"type error in a condition is an Error, not a failure", metric("m", 1, func(m *Metric) { m.ConsecutiveErrorLimit = ip(0) }), []step{vec(0.001, 0.002)}, Error, "successCondition"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := runScript(t, map[string][]step{"m": c.steps}, c.m)
			mr := res.Metrics[0]
			if mr.Phase != c.want || res.Phase != c.want || !strings.Contains(mr.Message, c.in) {
				t.Fatalf("metric %s (%s), run %s; want %s containing %q; measurements %+v", mr.Phase, mr.Message, res.Phase, c.want, c.in, mr.Measurements)
			}
			if c.want != Successful && !strings.Contains(res.Message, `metric "m"`) {
				t.Fatalf("run message %q does not name the metric", res.Message)
			}
		})
	}
}

// Worst-of: the run phase is the worst deciding metric (Failed > Error >
// Inconclusive > Successful); dryRun metrics never decide.
func TestRunWorstOfAndDryRun(t *testing.T) {
	ce0 := func(m *Metric) { m.ConsecutiveErrorLimit = ip(0) }
	cases := []struct {
		name    string
		ms      []Metric
		script  map[string][]step
		want    Phase
		metrics []string // Verdict metrics
		verdict string
	}{
		{"all successful", []Metric{metric("a", 1, nil), metric("b", 1, nil)},
			map[string][]step{"a": {ok(0)}, "b": {ok(0)}}, Successful, []string{"a", "b"}, "pass"},
		{"inconclusive beats successful", []Metric{metric("a", 1, nil), metric("b", 1, nil)},
			map[string][]step{"a": {ok(0)}, "b": {vec()}}, Inconclusive, []string{"b"}, "inconclusive"},
		{"error beats inconclusive", []Metric{metric("a", 1, nil), metric("b", 1, nil), metric("c", 1, ce0)},
			map[string][]step{"a": {ok(0)}, "b": {vec()}, "c": {qerr()}}, Error, []string{"c"}, "fail"},
		{"failed beats error", []Metric{metric("a", 1, nil), metric("b", 1, ce0), metric("c", 1, nil), metric("d", 1, nil)},
			map[string][]step{"a": {ok(0)}, "b": {qerr()}, "c": {ok(1)}, "d": {vec()}}, Failed, []string{"c"}, "fail"},
		{"dryRun failure does not decide", []Metric{metric("a", 1, nil), metric("dry", 1, func(m *Metric) { m.DryRun = true })},
			map[string][]step{"a": {ok(0)}, "dry": {ok(1)}}, Successful, []string{"a"}, "pass"},
		{"dryRun success does not rescue", []Metric{metric("a", 1, nil), metric("dry", 1, func(m *Metric) { m.DryRun = true })},
			map[string][]step{"a": {ok(1)}, "dry": {ok(0)}}, Failed, []string{"a"}, "fail"},
		{"a failure ends the run early", []Metric{metric("a", 10, nil), metric("b", 10, nil)},
			map[string][]step{"a": {ok(0), ok(1)}, "b": {ok(0), ok(0)}}, Failed, []string{"a"}, "fail"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := runScript(t, c.script, c.ms...)
			v, ms := Verdict(res)
			if res.Phase != c.want || v != c.verdict || strings.Join(ms, ",") != strings.Join(c.metrics, ",") {
				t.Fatalf("run %s (%s) verdict %s %v; want %s %s %v", res.Phase, res.Message, v, ms, c.want, c.verdict, c.metrics)
			}
			for _, m := range res.Metrics {
				if m.Count < c.ms[0].Count && m.Phase != Inconclusive && m.Phase != Failed {
					t.Fatalf("metric %s stopped early reported %s, want Inconclusive (never Successful)", m.Name, m.Phase)
				}
				if m.DryRun && m.Phase == Pending {
					t.Fatalf("dryRun metric %s was not measured/reported", m.Name)
				}
			}
		})
	}
}

func TestScheduleAndVirtualClock(t *testing.T) {
	var at []time.Time
	src := SourceFunc(func(_ context.Context, m *Metric, now time.Time) (Value, error) {
		at = append(at, now)
		return Value{Values: []float64{0}, Samples: 1}, nil
	})
	rn := &Runner{Clock: NewVirtualClock(t0), Custom: map[string]Source{"s": src}}
	m := metric("m", 3, func(m *Metric) { m.Provider.Custom = "s"; m.InitialDelay = Duration(30 * time.Second) })
	res, err := rn.Run(context.Background(), &Config{Metrics: []Metric{m}})
	if err != nil || res.Phase != Successful {
		t.Fatal(res, err)
	}
	want := []time.Duration{30 * time.Second, 90 * time.Second, 150 * time.Second}
	for i, w := range want {
		if got := at[i].Sub(t0); got != w {
			t.Fatalf("measurement %d at +%s, want +%s", i, got, w)
		}
	}
	if res.WindowEndUnixMs != t0.Add(150*time.Second).UnixMilli() {
		t.Fatalf("window end %d", res.WindowEndUnixMs)
	}
	p := Predicate(res)
	if p.Verdict != "pass" || p.WindowEndUnixMs != res.WindowEndUnixMs || len(p.Metrics) != 1 {
		t.Fatalf("%+v", p)
	}
	if res.Action() != "continue" || Failed.Action() != "abort" || Error.Action() != "abort" || Inconclusive.Action() != "pause" || Running.Action() != "pause" {
		t.Fatal("actions")
	}
}

// A cancelled run is Inconclusive, never Successful (Argo marks a
// terminated run's running metrics Successful).
func TestCancelledRunNeverPasses(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	src := SourceFunc(func(context.Context, *Metric, time.Time) (Value, error) {
		n++
		if n == 2 {
			cancel()
		}
		return Value{Values: []float64{0}, Samples: 1}, nil
	})
	rn := &Runner{Clock: NewVirtualClock(t0), Custom: map[string]Source{"s": src}}
	res, err := rn.Run(ctx, &Config{Metrics: []Metric{metric("m", 5, func(m *Metric) { m.Provider.Custom = "s" })}})
	if !errors.Is(err, context.Canceled) || res.Phase != Inconclusive {
		t.Fatalf("%v %s %s", err, res.Phase, res.Message)
	}
	if v, _ := Verdict(res); v != "inconclusive" {
		t.Fatal(v)
	}
}

// An invalid configuration handed to Run is an error and a pause, never a
// pass and never an abort of the canary.
func TestRunRejectsInvalidConfig(t *testing.T) {
	rn := &Runner{Clock: NewVirtualClock(t0)}
	res, err := rn.Run(context.Background(), &Config{Metrics: []Metric{metric("m", 1, nil)}}) // custom "script" not registered
	if err == nil || res.Phase != Inconclusive || res.Action() != "pause" || !strings.Contains(err.Error(), `unknown provider "script"`) {
		t.Fatalf("%v %s", err, res.Phase)
	}
	if v, _ := Verdict(res); v != "inconclusive" {
		t.Fatal(v)
	}
}
