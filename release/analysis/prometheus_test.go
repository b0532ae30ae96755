package analysis

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startPrometheus starts Debian's prometheus on loopback scraping target
// every second and waits (bounded) until the target is up.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus not found: install Debian's prometheus package (apt-get install prometheus)")
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf("global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n  - job_name: canary\n    static_configs: [{targets: [%q]}]\n", target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var logs bytes.Buffer
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", logs.String())
		}
	})
	// Prometheus has no readiness notification: poll an observable
	// condition (the target is up and scraped) with a bounded deadline.
	p := &PrometheusProvider{Address: "http://" + addr, Timeout: Duration(2 * time.Second)}
	deadline := time.Now().Add(60 * time.Second)
	for {
		v, err := HTTP{}.promQuery(context.Background(), p, `up{job="canary"} == 1 and on() count(canary_requests_total) == 1`, time.Now(), false)
		if err == nil && len(v.Values) == 1 {
			return "http://" + addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus did not scrape the target within 60s: %v %v", v, err)
		}
		<-time.After(200 * time.Millisecond)
	}
}

// The prometheus provider against a real Prometheus scraping an endpoint
// whose values the test controls.
func TestPrometheusProvider(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprint(w, `# TYPE canary_error_ratio gauge
canary_error_ratio{track="canary"} 0.002
# TYPE canary_requests_total counter
canary_requests_total{track="canary"} 5000
# TYPE canary_latency_p99_seconds gauge
canary_latency_p99_seconds{track="canary"} 0.9
# TYPE canary_nan_ratio gauge
canary_nan_ratio{track="canary"} NaN
`)
	}))
	defer target.Close()
	addr := startPrometheus(t, strings.TrimPrefix(target.URL, "http://"))

	prom := func(name, q, cq string, minSamples int64, succ, fail string, rng *PromRange) Metric {
		return Metric{Name: name, Count: 1, SuccessCondition: succ, FailureCondition: fail, MinSamples: minSamples, ConsecutiveErrorLimit: ip(0),
			Provider: Provider{Prometheus: &PrometheusProvider{Address: addr, Query: q, CountQuery: cq, Timeout: Duration(5 * time.Second), Range: rng}}}
	}
	cases := []struct {
		m       Metric
		want    Phase
		in      string
		samples int64
	}{
		{prom("success", `canary_error_ratio{track="canary"}`, `sum(canary_requests_total)`, 1000, "result[0] < 0.01", "result[0] >= 0.05", nil), Successful, "[0.002] met successCondition", 5000},
		{prom("scalar", `scalar(canary_error_ratio)`, "", 0, "result < 0.01", "", nil), Successful, "0.002 met", -1},
		{prom("failure", `canary_latency_p99_seconds`, "", 0, "result[0] <= 0.5", "result[0] > 0.5", nil), Failed, "[0.9] met failureCondition", -1},
		{prom("empty", `canary_unknown_metric{track="canary"}`, "", 0, "result[0] < 0.01", "result[0] >= 0.05", nil), Inconclusive, "empty result", -1},
		{prom("nan", `canary_nan_ratio`, "", 0, "", "result[0] > 0.01", nil), Inconclusive, "NaN", -1},
		{prom("low-traffic", `canary_error_ratio`, `sum(canary_requests_total)`, 10000, "result[0] < 0.01", "", nil), Inconclusive, "5000 samples < minSamples 10000", 5000},
		{prom("no-traffic", `canary_error_ratio`, `sum(canary_unknown_total)`, 1, "result[0] < 0.01", "", nil), Inconclusive, "0 samples < minSamples 1", 0},
		{prom("range", `canary_error_ratio`, "", 0, "all(result, # < 0.01)", "", &PromRange{Start: Duration(5 * time.Second), Step: Duration(time.Second)}), Successful, "met", -1},
		{prom("bad-promql", `sum(`, "", 0, "result[0] < 0.01", "", nil), Error, "prometheus bad_data", 0},
	}
	for _, c := range cases {
		rn := &Runner{Clock: NewVirtualClock(time.Now())}
		res, err := rn.Run(context.Background(), &Config{Metrics: []Metric{c.m}})
		if err != nil {
			t.Fatal(c.m.Name, err)
		}
		if _, err := json.Marshal(res); err != nil {
			t.Fatalf("%s: the result is not JSON-encodable: %v", c.m.Name, err)
		}
		mr := res.Metrics[0]
		ms := mr.Measurements[0]
		t.Logf("%s: %s %s (values %v, samples %d)", c.m.Name, mr.Phase, ms.Reason, ms.Values, ms.Samples)
		if mr.Phase != c.want || !strings.Contains(ms.Reason, c.in) || ms.Samples != c.samples {
			t.Errorf("%s: %s %q samples %d; want %s %q samples %d", c.m.Name, mr.Phase, ms.Reason, ms.Samples, c.want, c.in, c.samples)
		}
	}
	// An unreachable Prometheus is a query error (counted toward
	// consecutiveErrorLimit), not a failure.
	m := prom("down", "up", "", 0, "result[0] == 1", "", nil)
	m.Provider.Prometheus.Address = "http://127.0.0.1:1"
	m.ConsecutiveErrorLimit = nil
	m.Count = 3
	m.Interval = Duration(time.Minute)
	res, _ := (&Runner{Clock: NewVirtualClock(time.Now())}).Run(context.Background(), &Config{Metrics: []Metric{m}})
	if res.Phase != Inconclusive || res.Metrics[0].Error != 3 || res.Metrics[0].Failed != 0 {
		t.Errorf("3 errors within the default limit 4 must not fail: %s %s %+v", res.Phase, res.Message, res.Metrics[0])
	}
}
