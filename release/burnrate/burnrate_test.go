package burnrate

import (
	"context"
	"fmt"
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
