package burnrate

import (
	"context"
	"fmt"
	"github.com/aerodb/authority/release/analysis"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// fakeProm answers the error ratio per window from a table (window → ratio;
// NaN: no data).
type fakeProm map[string]float64

func (f fakeProm) Query(_ context.Context, q string, _ time.Time) (float64, bool, error) {
	for w, v := range f {
		if strings.Contains(q, "["+w+"]") {
			if math.IsNaN(v) {
				return 0, false, nil
			}
			return v, true, nil
		}
	}
	return 0, false, fmt.Errorf("unexpected query %q", q)
}

var slo = &SLO{Objective: 0.999, ErrorRatio: `sum(rate(errors_total[$window])) / sum(rate(requests_total[$window]))`}

// The multi-window rule fires only when both of its windows burn at least
// its factor: a short spike alone (the long window calm) and a burn that
// has stopped (the short window calm) do not page. Removing either window's
// condition fails a case below (tried: dropping the short-window check
// fires on "burn over"; dropping the long one fires on "spike").
func TestMultiWindowRules(t *testing.T) {
	nan := math.NaN()
	cases := []struct {
		name  string
		ratio map[string]float64 // 3600s 300s 21600s 1800s
		fire  string
	}{
		{"healthy", map[string]float64{"3600s": 0.0005, "300s": 0.0005, "21600s": 0.0005, "1800s": 0.0005}, ""},
		{"fast burn", map[string]float64{"3600s": 0.02, "300s": 0.03, "21600s": 0.004, "1800s": 0.004}, "fast"},
		{"spike", map[string]float64{"3600s": 0.001, "300s": 0.5, "21600s": 0.001, "1800s": 0.002}, ""},
		{"burn over", map[string]float64{"3600s": 0.02, "300s": 0.0001, "21600s": 0.008, "1800s": 0.0001}, ""},
		{"slow burn", map[string]float64{"3600s": 0.007, "300s": 0.007, "21600s": 0.007, "1800s": 0.007}, "slow"},
		{"just over 14.4x", map[string]float64{"3600s": 0.01441, "300s": 0.01441, "21600s": 0, "1800s": 0}, "fast"},
		{"no traffic", map[string]float64{"3600s": nan, "300s": nan, "21600s": nan, "1800s": nan}, ""},
		{"short no data", map[string]float64{"3600s": 0.05, "300s": nan, "21600s": 0.05, "1800s": nan}, ""},
	}
	for _, c := range cases {
		d, err := Evaluate(context.Background(), fakeProm(c.ratio), slo, time.Unix(1_796_400_000, 0))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if d.Rule != c.fire || d.Firing != (c.fire != "") {
			t.Errorf("%s: firing %v rule %q, want %q: %s", c.name, d.Firing, d.Rule, c.fire, d.Message())
		}
	}
}

func TestRemainingBudget(t *testing.T) {
	s := *slo
	s.BudgetWindow = 0
	for _, c := range []struct {
		ratio, want float64
	}{{0, 1}, {0.0005, 0.5}, {0.001, 0}, {0.003, -2}, {math.NaN(), 1}} {
		got, err := Remaining(context.Background(), fakeProm{"2592000s": c.ratio}, &s, time.Unix(0, 0))
		if err != nil || math.Abs(got-c.want) > 1e-9 {
			t.Errorf("ratio %v: remaining %v (%v), want %v", c.ratio, got, err, c.want)
		}
	}
}

func TestValidateAndCompress(t *testing.T) {
	bad := &SLO{Objective: 1, ErrorRatio: "rate(x[5m])", Rules: []Rule{{Name: "r", Factor: 0, Long: 1, Short: 2}}}
	err := bad.Validate()
	for _, want := range []string{"objective", "$window", "factor", "short < long"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v, want it to name %q", err, want)
		}
	}
	c := Compress(DefaultRules(), 360) // 1h → 10s, 5m → 1s (floor), 6h → 60s, 30m → 5s
	if c[0].Long.D() != 10*time.Second || c[0].Short.D() != time.Second || c[1].Long.D() != time.Minute || c[1].Short.D() != 5*time.Second {
		t.Fatalf("compressed: %+v", c)
	}
	if err := (&SLO{Objective: 0.99, ErrorRatio: slo.ErrorRatio, Rules: c}).Validate(); err != nil {
		t.Fatal(err)
	}
}

// The HTTP querier against a stub of Prometheus' API: vector, scalar,
// empty, NaN, several series, errors; bounded answers.
func TestPrometheusQuerier(t *testing.T) {
	answers := map[string]string{
		"vec":   `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.25"]}]}}`,
		"sc":    `{"status":"success","data":{"resultType":"scalar","result":[1,"0.5"]}}`,
		"empty": `{"status":"success","data":{"resultType":"vector","result":[]}}`,
		"nan":   `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}`,
		"two":   `{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"1"]},{"value":[1,"2"]}]}}`,
		"bad":   `{"status":"error","errorType":"bad_data","error":"parse error"}`,
		"huge":  `{"status":"success","pad":"` + strings.Repeat("x", MaxResponseBytes) + `"}`,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		fmt.Fprint(w, answers[r.Form.Get("query")])
	}))
	defer srv.Close()
	p := &Prometheus{Address: srv.URL, Timeout: 2 * time.Second}
	for _, c := range []struct {
		q      string
		v      float64
		ok     bool
		errHas string
	}{{"vec", 0.25, true, ""}, {"sc", 0.5, true, ""}, {"empty", 0, false, ""}, {"nan", 0, false, ""},
		{"two", 0, false, "2 series"}, {"bad", 0, false, "bad_data"}, {"huge", 0, false, "exceeds"}} {
		v, ok, err := p.Query(context.Background(), c.q, time.Now())
		if v != c.v || ok != c.ok || (c.errHas == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.errHas)) {
			t.Errorf("%s: %v %v %v", c.q, v, ok, err)
		}
	}
}

// timeline is a fake Prometheus whose error ratio over a window ending at
// `at` is the mean of a per-second error ratio function over the window.
type timeline struct {
	start time.Time
	ratio func(sec int) float64 // error ratio during second sec after start
	fail  func(sec int) bool    // the query fails at this second
	calls int
}

func (tl *timeline) Query(_ context.Context, q string, at time.Time) (float64, bool, error) {
	tl.calls++
	i := strings.LastIndex(q, "[")
	j := strings.Index(q[i:], "s]")
	w, _ := time.ParseDuration(q[i+1:i+j] + "s")
	end := int(at.Sub(tl.start) / time.Second)
	if tl.fail != nil && tl.fail(end) {
		return 0, false, fmt.Errorf("prometheus unreachable")
	}
	n, sum := 0, 0.0
	for s := end - int(w/time.Second); s < end; s++ {
		if s >= 0 {
			sum += tl.ratio(s)
			n++
		}
	}
	if n == 0 {
		return 0, false, nil
	}
	return sum / float64(n), true, nil
}

// The bake window on a virtual clock (seed-free: the timelines are fixed):
// a release that starts failing 5 % of requests 40 minutes into a 2 h bake
// is caught by the fast rule (14.4× over 1 h and 5 m) once the hour's mean
// crosses 1.44 %; a 30-second spike of 100 % errors is not (the hour burns
// 8.3×: a full minute would burn 16.7× and page); query errors never
// fire; a burn after the window ends is not seen.
func TestWatchBakeWindow(t *testing.T) {
	t0 := time.Unix(1_796_400_000, 0)
	s := &SLO{Objective: 0.999, ErrorRatio: `sum(rate(e[$window]))/sum(rate(r[$window]))`}
	run := func(tl *timeline, bake time.Duration) (Decision, bool, int, time.Duration) {
		clock := analysis.NewVirtualClock(t0)
		tl.start = t0.Add(-2 * time.Hour) // two healthy hours of history
		errs := 0
		d, fired, err := Watch(context.Background(), clock, tl, s, bake, 30*time.Second, func(error) { errs++ })
		if err != nil {
			t.Fatal(err)
		}
		return d, fired, errs, clock.Now().Sub(t0)
	}
	healthy := func(int) float64 { return 0.0002 }
	at := func(from, to int, bad float64) func(int) float64 {
		return func(s int) float64 {
			if s >= from && s < to {
				return bad
			}
			return 0.0002
		}
	}
	h2 := 7200 // seconds of history before the bake starts
	if _, fired, _, took := run(&timeline{ratio: healthy}, 2*time.Hour); fired || took != 2*time.Hour {
		t.Fatalf("healthy release fired (%v) or the window did not last (%v)", fired, took)
	}
	d, fired, _, took := run(&timeline{ratio: at(h2+40*60, 1<<30, 0.05)}, 2*time.Hour)
	if !fired || d.Rule != "fast" {
		t.Fatalf("a 5%% burn was not caught by the fast rule: %v %s", fired, d.Message())
	}
	// 1.44 % of an hour at 5 % errors: after ~17.3 minutes of burn.
	if burn := took - 40*time.Minute; burn < 17*time.Minute || burn > 18*time.Minute {
		t.Fatalf("fired %v after the burn began, want about 17.3 minutes", burn)
	}
	t.Logf("5%% errors from minute 40: %s, %v after the burn began", d.Message(), took-40*time.Minute)
	if d, fired, _, _ := run(&timeline{ratio: at(h2+600, h2+630, 1)}, time.Hour); fired {
		t.Fatalf("a 30-second spike fired: %s", d.Message())
	}
	tl := &timeline{ratio: at(h2, 1<<30, 0.5), fail: func(int) bool { return true }}
	if _, fired, errs, _ := run(tl, 10*time.Minute); fired || errs != 20 {
		t.Fatalf("query errors: fired %v, %d errors reported (want 20, one per evaluation)", fired, errs)
	}
	if _, fired, _, _ := run(&timeline{ratio: at(h2+3600, 1<<30, 1)}, time.Hour); fired {
		t.Fatal("a burn after the bake window was seen")
	}
}
