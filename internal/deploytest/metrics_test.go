package deploytest

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aerodb/authority/internal/testcluster"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// deploySeries reads the deploy metrics of one server as "name{labels}" →
// value (counters and histogram counts), the series a dashboard plots.
func deploySeries(t *testing.T, c *testcluster.Cluster, s *testcluster.Server) (map[string]float64, error) {
	t.Helper()
	resp, err := c.HTTPClient(testcluster.Reader).Get(c.URL(s, "/metrics"))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for name, fam := range fams {
		if !strings.HasPrefix(name, "deploy_") && !strings.HasPrefix(name, "preflight_") && !strings.HasPrefix(name, "health_gate_") {
			continue
		}
		for _, m := range fam.GetMetric() {
			key := name + labelString(m)
			switch {
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				out[name+"_count"+labelString(m)] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out, nil
}

func labelString(m *dto.Metric) string {
	var kv []string
	for _, l := range m.GetLabel() {
		kv = append(kv, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
	}
	sort.Strings(kv)
	return "{" + strings.Join(kv, ",") + "}"
}

// checkDeployMetrics waits (bounded) until every server reports want: the
// metrics are counted from committed events, so every server reports the
// same totals once it applied them.
func checkDeployMetrics(t *testing.T, c *testcluster.Cluster, want map[string]float64) {
	t.Helper()
	for _, s := range c.Servers {
		deadline := time.Now().Add(20 * time.Second)
		for {
			got, err := deploySeries(t, c, s)
			if err == nil && matches(got, want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: deploy metrics %v (err %v), want %v", s.ID, got, err, want)
			}
			time.Sleep(100 * time.Millisecond) // polling an observable condition, bounded
		}
	}
}

func matches(got, want map[string]float64) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	for k, v := range got { // nothing counted that should not be
		if _, ok := want[k]; !ok && v != 0 {
			return false
		}
	}
	return true
}
