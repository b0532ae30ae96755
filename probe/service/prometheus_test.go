package service

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aerodb/authority/internal/testcluster"
)

// TestRealPrometheusScrapes is the second half of acceptance item 3: a real
// Prometheus (Debian's prometheus package) scrapes the service on loopback
// and PromQL returns the hand-computed values. The service runs on the fake
// clock, so the values do not depend on when Prometheus scrapes.
func TestRealPrometheusScrapes(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus not found: install Debian's prometheus package (apt-get install prometheus); .ci/run must install it")
	}
	fx := newFixture(t, nil)
	fx.drive(0, 90, 60) // as in TestScheduleMetricsSLOsAndVerdicts
	target := httptest.NewServer(fx.svc.Handler())
	defer target.Close()

	dir := t.TempDir()
	cfg := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: probed
    static_configs: [{targets: [%q]}]
`, strings.TrimPrefix(target.URL, "http://"))
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	var logs bytes.Buffer
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", logs.String())
		}
	}()
	queries := []struct {
		q    string
		want float64
	}{
		{`probe_slo_burn_rate{job="probed",slo="browse-availability",window="5m"}`, 200},
		{`probe_slo_burn_rate{job="probed",slo="browse-availability",window="1h"}`, (1.0 / 3) / 0.005},
		{`probe_slo_error_budget_remaining{slo="browse-availability"}`, 1 - (1.0/3)/0.005},
		{`sum(probe_runs_total{flow="browse",result="fail"}) / sum(probe_runs_total{flow="browse"})`, 1.0 / 3},
		// The page-tier alert of the SRE workbook: both windows above 14.4×.
		{`count(probe_slo_burn_rate{window="5m"} > 14.4 and on(slo) probe_slo_burn_rate{window="1h"} > 14.4)`, 2},
	}
	// Wait (bounded) for Prometheus to start and scrape: it is an external
	// process with no readiness notification, so the query is retried.
	deadline := time.Now().Add(60 * time.Second)
	for _, q := range queries {
		for {
			v, err := promQuery(addr, q.q)
			if err == nil && near(v, q.want) {
				t.Logf("%s = %v", q.q, v)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: got %v (%v), want %v", q.q, v, err, q.want)
			}
			<-time.After(250 * time.Millisecond)
		}
	}
}

// freeAddr is a free loopback port below the ephemeral range (outgoing
// connections draw their source ports from that range).
func freeAddr(t *testing.T) string { return testcluster.FreeAddr(t) }

func promQuery(addr, q string) (float64, error) {
	resp, err := http.Get("http://" + addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Data   struct {
			Result []struct {
				Value [2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, err
	}
	if len(r.Data.Result) != 1 {
		return 0, fmt.Errorf("%d series", len(r.Data.Result))
	}
	s, _ := r.Data.Result[0].Value[1].(string)
	return strconv.ParseFloat(s, 64)
}
