// Package deployobs_test checks the Prometheus alerting rules and the
// Grafana dashboard shipped in deploy/observability: both parse, every rule
// carries what an operator needs, and every metric they query is one that
// authorityd exports.
package deployobs_test

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// knownMetrics are the metric families authorityd exports (observability
// package and cmd/authorityd's raft gauges). A histogram is listed by its
// family name; queries use its _bucket, _sum and _count series.
var knownMetrics = []string{
	"replication_promotion_requests_total",
	"replication_promotion_success_total",
	"replication_promotion_denied_total",
	"replication_promotion_crash_abort_total",
	"replication_promotion_in_progress",
	"replication_current_primary",
	"replication_promotion_validation_duration_ms",
	"authority_epoch_changes_total",
	"authority_lease_renewals_total",
	"authority_lease_expiries_total",
	"authority_fencing_rejections_total",
	"authority_watermark_advances_total",
	"authority_watermark_batch_size",
	"authority_apply_duration_seconds",
	"authority_snapshot_duration_seconds",
	"authority_raft_term",
	"authority_raft_commit_index",
	"authority_raft_applied_index",
	"authority_raft_is_leader",
	"authority_leader_ready",
	"authority_raft_last_contact_seconds",
	"authority_leases",
}

var histograms = []string{
	"replication_promotion_validation_duration_ms",
	"authority_watermark_batch_size",
	"authority_apply_duration_seconds",
	"authority_snapshot_duration_seconds",
}

// metricRef matches identifiers of our two namespaces in a PromQL
// expression: the name must start the expression or follow a character that
// cannot be part of an identifier or open a quoted label value, so
// substrings of other names and values like job="authority_x" do not count.
var metricRef = regexp.MustCompile(`(?:^|[^A-Za-z0-9_:"])((?:authority|replication)_[A-Za-z0-9_:]+)`)

// metricsIn returns the metric families an expression references, and
// fails the test on an unknown one.
func metricsIn(t *testing.T, where, expr string) []string {
	t.Helper()
	var out []string
	for _, m := range metricRef.FindAllStringSubmatch(expr, -1) {
		name := m[1]
		family := name
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suf); ok && slices.Contains(histograms, base) {
				family = base
			}
		}
		if slices.Contains(histograms, family) && family == name {
			t.Errorf("%s: histogram %s used without _bucket/_sum/_count in %q", where, name, expr)
		}
		if !slices.Contains(knownMetrics, family) {
			t.Errorf("%s: unknown metric %q in %q", where, name, expr)
			continue
		}
		out = append(out, family)
	}
	return out
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func TestPrometheusRules(t *testing.T) {
	b, err := os.ReadFile("prometheus-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true) // a misspelt key (e.g. "annotation") is an error
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("prometheus-rules.yml: %v", err)
	}
	seen := map[string]bool{}
	used := map[string]bool{}
	n := 0
	for _, g := range f.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q: needs a name and rules", g.Name)
		}
		for _, r := range g.Rules {
			n++
			where := g.Name + "/" + r.Alert
			if r.Alert == "" || r.Record != "" {
				t.Errorf("%s: every rule here is an alerting rule with a name", where)
			}
			if seen[r.Alert] {
				t.Errorf("%s: duplicate alert name", where)
			}
			seen[r.Alert] = true
			if strings.TrimSpace(r.Expr) == "" {
				t.Errorf("%s: no expr", where)
			}
			if !regexp.MustCompile(`^[0-9]+(ms|s|m|h)$`).MatchString(r.For) {
				t.Errorf("%s: for %q is not a duration", where, r.For)
			}
			if s := r.Labels["severity"]; !slices.Contains([]string{"critical", "warning", "info"}, s) {
				t.Errorf("%s: severity %q", where, s)
			}
			if r.Annotations["summary"] == "" || len(r.Annotations["description"]) < 80 {
				t.Errorf("%s: needs a summary and a description telling the operator what to do", where)
			}
			refs := metricsIn(t, where, r.Expr)
			if len(refs) == 0 {
				t.Errorf("%s: expr references no authority metric: %q", where, r.Expr)
			}
			for _, m := range refs {
				used[m] = true
			}
		}
	}
	// The alerts the runbook relies on.
	for _, want := range []string{"AuthorityNoLeader", "AuthorityLeaderChurn", "AuthorityFencingRejections",
		"AuthorityLeaseExpiries", "AuthorityPromotionDenied", "AuthorityPromotionCrashAbort", "AuthorityFollowerLagging"} {
		if !seen[want] {
			t.Errorf("missing alert %s", want)
		}
	}
	t.Logf("%d rules over %d metric families", n, len(used))
}

type dashboard struct {
	Inputs []struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		PluginID string `json:"pluginId"`
	} `json:"__inputs"`
	SchemaVersion int     `json:"schemaVersion"`
	Title         string  `json:"title"`
	UID           string  `json:"uid"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string `json:"name"`
			Definition string `json:"definition"`
			Datasource struct {
				UID string `json:"uid"`
			} `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // collapsed rows
}

func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	if d.SchemaVersion != 39 || d.Title == "" || d.UID == "" {
		t.Errorf("schemaVersion %d title %q uid %q", d.SchemaVersion, d.Title, d.UID)
	}
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("want one DS_PROMETHEUS datasource input, got %+v", d.Inputs)
	}
	for _, v := range d.Templating.List {
		if v.Datasource.UID != "${DS_PROMETHEUS}" {
			t.Errorf("variable %s: datasource %q", v.Name, v.Datasource.UID)
		}
		metricsIn(t, "variable "+v.Name, v.Definition)
	}
	var all []panel
	for _, p := range d.Panels {
		all = append(all, p)
		all = append(all, p.Panels...)
	}
	used := map[string]bool{}
	ids := map[int]bool{}
	queried := 0
	for _, p := range all {
		if ids[p.ID] {
			t.Errorf("panel %q: duplicate id %d", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W < 1 || p.GridPos.X+p.GridPos.W > 24 || p.GridPos.H < 1 {
			t.Errorf("panel %q: gridPos %+v", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		queried++
		if p.Datasource == nil || p.Datasource.UID != "${DS_PROMETHEUS}" || p.Datasource.Type != "prometheus" {
			t.Errorf("panel %q: datasource must be the ${DS_PROMETHEUS} input", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: no targets", p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: refId %q missing or repeated", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			ms := metricsIn(t, "panel "+p.Title, tg.Expr)
			if len(ms) == 0 {
				t.Errorf("panel %q: target references no authority metric: %q", p.Title, tg.Expr)
			}
			for _, m := range ms {
				used[m] = true
			}
		}
	}
	// Every exported family is on the dashboard somewhere.
	for _, m := range knownMetrics {
		if !used[m] {
			t.Errorf("no panel shows %s", m)
		}
	}
	t.Logf("%d panels with queries", queried)
}

// The matcher itself: names inside quoted label values or as substrings of
// other identifiers are not metric references.
func TestMetricRef(t *testing.T) {
	got := metricsIn(t, "self-test", `histogram_quantile(0.5, sum by (le) (rate(authority_apply_duration_seconds_bucket{job=~"authority_x"}[5m]))) / authority_raft_term`)
	if !slices.Equal(got, []string{"authority_apply_duration_seconds", "authority_raft_term"}) {
		t.Fatalf("got %v", got)
	}
}
