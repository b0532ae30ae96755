package analysis

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func runOne(t *testing.T, m Metric) Result {
	t.Helper()
	rn := &Runner{Clock: NewVirtualClock(t0)}
	res, err := rn.Run(context.Background(), &Config{Metrics: []Metric{m}})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// The probe provider against an httptest server speaking the probe
// service's verdict API: pass ⇒ 1, fail ⇒ 0, inconclusive ⇒ no data.
func TestProbeProvider(t *testing.T) {
	verdicts := map[string]map[string]any{
		"good":  {"flow": "good", "verdict": "pass", "runs": 60},
		"bad":   {"flow": "bad", "verdict": "fail", "runs": 60},
		"quiet": {"flow": "quiet", "verdict": "inconclusive", "runs": 2, "reason": "2 runs < min_samples 5"},
		"weird": {"flow": "weird", "verdict": "maybe"},
	}
	var gotWindow string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ok := strings.CutPrefix(r.URL.Path, "/v1/verdicts/")
		v, found := verdicts[name]
		if !ok || !found || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		gotWindow = r.URL.Query().Get("window")
		json.NewEncoder(w).Encode(v)
	}))
	defer srv.Close()
	probe := func(flow string, mod func(*Metric)) Metric {
		m := Metric{Name: "probe-" + flow, Count: 1, SuccessCondition: "result == 1", ConsecutiveErrorLimit: ip(0),
			Provider: Provider{Probe: &ProbeProvider{Address: srv.URL, Flow: flow, Window: "10m"}}}
		if mod != nil {
			mod(&m)
		}
		return m
	}
	cases := []struct {
		m    Metric
		want Phase
		in   string
	}{
		{probe("good", nil), Successful, ""},
		{probe("bad", nil), Failed, "did not meet"},
		{probe("quiet", nil), Inconclusive, "probe verdict inconclusive: 2 runs"},
		{probe("good", func(m *Metric) { m.MinSamples = 100 }), Inconclusive, "60 samples < minSamples 100"},
		{probe("weird", nil), Error, "not pass, fail or inconclusive"},
		{probe("missing", nil), Error, "HTTP status 404"},
	}
	for _, c := range cases {
		res := runOne(t, c.m)
		mr := res.Metrics[0]
		if mr.Phase != c.want || !strings.Contains(mr.Message, c.in) {
			t.Errorf("%s: %s %q, want %s %q", c.m.Provider.Probe.Flow, mr.Phase, mr.Message, c.want, c.in)
		}
	}
	if gotWindow != "10m" {
		t.Errorf("window %q", gotWindow)
	}
}

func TestWebProvider(t *testing.T) {
	var gotAuth, gotMethod, gotBody string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth, gotMethod = r.Header.Get("Authorization"), r.Method
		b := make([]byte, 100)
		n, _ := r.Body.Read(b)
		gotBody = string(b[:n])
		switch r.URL.Path {
		case "/ok":
			w.Write([]byte(`{"data":{"p99":0.12,"list":[0.1,0.2],"n":500,"nan":"NaN","null":null}}`))
		case "/huge":
			w.Write([]byte(`{"data":"` + strings.Repeat("x", MaxResponseBytes) + `"}`))
		case "/500":
			http.Error(w, "boom", 500)
		default:
			w.Write([]byte("not json"))
		}
	}))
	defer srv.Close()
	web := func(path, jp, cond string, mod func(*WebProvider)) Metric {
		w := &WebProvider{URL: srv.URL + path, JSONPath: jp, Headers: map[string]string{"Authorization": "Bearer t0ken"}}
		if mod != nil {
			mod(w)
		}
		return Metric{Name: "web", Count: 1, SuccessCondition: cond, ConsecutiveErrorLimit: ip(0), Provider: Provider{Web: w}}
	}
	cases := []struct {
		name string
		m    Metric
		want Phase
		in   string
	}{
		{"scalar", web("/ok", "$.data.p99", "result < 0.5", nil), Successful, ""},
		{"list", web("/ok", "$.data.list", "all(result, # < 0.5)", nil), Successful, ""},
		{"list index", web("/ok", "$.data.list[1]", "result < 0.15", nil), Failed, ""},
		{"POST with samples", web("/ok", "$.data.p99", "result < 0.5", func(w *WebProvider) { w.Method = "POST"; w.Body = `{"q":1}`; w.SamplesJSONPath = "$.data.n" }), Successful, ""},
		{"missing key is no data", web("/ok", "$.data.p95", "result < 0.5", nil), Inconclusive, "selects nothing"},
		{"index out of range is no data", web("/ok", "$.data.list[7]", "result < 0.5", nil), Inconclusive, "selects nothing"},
		{"NaN string is no data", web("/ok", "$.data.nan", "result < 0.5", nil), Inconclusive, "NaN"},
		{"null is no data", web("/ok", "$.data.null", "result < 0.5", nil), Inconclusive, "null"},
		{"bounded body", web("/huge", "$.data", "result < 0.5", nil), Error, "exceeds"},
		{"HTTP error", web("/500", "$.data", "result < 0.5", nil), Error, "status 500"},
		{"not JSON", web("/text", "$.data", "result < 0.5", nil), Error, "not JSON"},
	}
	for _, c := range cases {
		if c.m.Provider.Web.SamplesJSONPath != "" {
			c.m.MinSamples = 400
		}
		if err := (&Config{Metrics: []Metric{c.m}}).Validate(); err != nil {
			t.Fatal(c.name, err)
		}
		res := runOne(t, c.m)
		mr := res.Metrics[0]
		if mr.Phase != c.want || !strings.Contains(mr.Message, c.in) {
			t.Errorf("%s: %s %q, want %s %q", c.name, mr.Phase, mr.Message, c.want, c.in)
		}
		if strings.Contains(mr.Message, "t0ken") {
			t.Errorf("%s: header value echoed", c.name)
		}
	}
	if gotAuth != "Bearer t0ken" || gotMethod != "GET" || gotBody != "" {
		t.Errorf("last request %q %q %q", gotAuth, gotMethod, gotBody)
	}
}
