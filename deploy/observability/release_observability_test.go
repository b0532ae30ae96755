package deployobs_test

// The release rules (release-rules.yml), their promtool unit tests
// (release-rules.test.yml) and the release dashboard
// (release-dashboard.json), issue 16.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// releaseMetrics are the families the release rules and dashboard may
// query: authorityd's release counters (observability/release.go), the
// rollout controller's webhook metrics (release/webhook/metrics.go) and its
// rollback metrics (rollback_duration_seconds, canary_abort_verdict_total),
// the probe service's series (probe/service/metrics.go) and the services'
// own http_* series (the track label set by deploy/rollouts).
var releaseMetrics = []string{
	"release_decisions_total",
	"canary_aborts_total",
	"canary_abort_verdict_total",
	"rollback_duration_seconds",
	"release_webhook_deliveries_total",
	"release_webhook_delivery_seconds",
	"release_webhook_queue_depth",
	"probe_runs_total",
	"probe_verdicts_total",
	"probe_scheduled_runs_total",
	"probe_flow_duration_seconds",
	"probe_scheduler_up",
	"probe_slo_error_budget_remaining",
	"http_requests_total",
	"http_request_duration_seconds",
}

var releaseHistograms = []string{"rollback_duration_seconds", "release_webhook_delivery_seconds", "probe_flow_duration_seconds", "http_request_duration_seconds"}

// releaseRef matches names of the release namespaces and recording rules
// (service_track:…) where a name may start: not after an identifier
// character or a quote.
var releaseRef = regexp.MustCompile(`(?:^|[^A-Za-z0-9_:"])((?:release_|canary_|rollback_|probe_|http_)[A-Za-z0-9_]+|service_track:[A-Za-z0-9_:]+)`)

func releaseRefs(t *testing.T, where, expr string, records []string) []string {
	t.Helper()
	var out []string
	for _, m := range releaseRef.FindAllStringSubmatch(expr, -1) {
		name := m[1]
		if strings.HasPrefix(name, "service_track:") {
			if !slices.Contains(records, name) {
				t.Errorf("%s: unknown recording rule %q", where, name)
			}
			out = append(out, name)
			continue
		}
		family := name
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suf); ok && slices.Contains(releaseHistograms, base) {
				family = base
			}
		}
		if slices.Contains(releaseHistograms, family) && family == name {
			t.Errorf("%s: histogram %s used without _bucket/_sum/_count in %q", where, name, expr)
		}
		if !slices.Contains(releaseMetrics, family) {
			t.Errorf("%s: unknown metric %q in %q", where, name, expr)
			continue
		}
		out = append(out, family)
	}
	return out
}

func loadReleaseRules(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile("release-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("release-rules.yml: %v", err)
	}
	return f
}

func releaseRecords(f ruleFile) []string {
	var out []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				out = append(out, r.Record)
			}
		}
	}
	return out
}

// Every rule carries what an operator needs and queries known series; the
// burn-rate tiers are the SRE workbook's; promtool accepts the rules and
// their unit tests, which show every alert firing and silent.
func TestReleaseRules(t *testing.T) {
	f := loadReleaseRules(t)
	records := releaseRecords(f)
	alerts := map[string]string{}
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			where := g.Name + "/" + r.Alert + r.Record
			if len(releaseRefs(t, where, r.Expr, records)) == 0 {
				t.Errorf("%s: references no release series: %q", where, r.Expr)
			}
			if r.Record != "" {
				continue
			}
			alerts[r.Alert] = r.Expr
			if s := r.Labels["severity"]; !slices.Contains([]string{"critical", "warning", "info"}, s) {
				t.Errorf("%s: severity %q", where, s)
			}
			for _, rb := range regexp.MustCompile(`docs/runbooks/[a-z0-9-]+\.md`).FindAllString(r.Annotations["description"], -1) {
				if _, err := os.Stat(filepath.Join("..", "..", rb)); err != nil {
					t.Errorf("%s: runbook %s: %v", where, rb, err)
				}
			}
			if r.Annotations["summary"] == "" || len(r.Annotations["description"]) < 80 || !strings.Contains(r.Annotations["description"], "docs/runbooks/") && !strings.Contains(r.Annotations["description"], "authorityctl") {
				t.Errorf("%s: needs a summary and a description telling the operator what to do (a runbook or a command)", where)
			}
		}
	}
	for name, want := range map[string][]string{
		"ReleaseErrorBudgetBurnFast": {"rate1h > (14.4 * 0.001)", "rate5m > (14.4 * 0.001)", "http_requests:rate1h"},
		"ReleaseErrorBudgetBurnSlow": {"rate6h > (6 * 0.001)", "rate30m > (6 * 0.001)", "http_requests:rate1h"},
	} {
		for _, w := range want {
			if !strings.Contains(alerts[name], w) {
				t.Errorf("%s: expr lacks %q (the workbook's tiers and a minimum-traffic guard)", name, w)
			}
		}
	}
	for _, want := range []string{"ReleaseCanaryAborted", "ReleasePromotionsDenied", "ReleaseRollbackSlow", "ReleaseWebhookDeliveriesDropped"} {
		if _, ok := alerts[want]; !ok {
			t.Errorf("missing alert %s", want)
		}
	}
	b, err := os.ReadFile("release-rules.test.yml")
	if err != nil {
		t.Fatal(err)
	}
	var tf struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(b, &tf); err != nil {
		t.Fatal(err)
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tc := range tf.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				silent[a.Alertname] = true
			}
		}
	}
	for a := range alerts {
		if !fires[a] || !silent[a] {
			t.Errorf("%s: release-rules.test.yml must show it firing (%v) and silent (%v)", a, fires[a], silent[a])
		}
	}
	promtool(t, "check", "rules", "release-rules.yml")
	promtool(t, "test", "rules", "release-rules.test.yml")
}

// The release dashboard parses, has the four rows seed 003 asks for, every
// query references known series and parses as PromQL (promtool).
func TestReleaseDashboard(t *testing.T) {
	b, err := os.ReadFile("release-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("release-dashboard.json: %v", err)
	}
	if d.SchemaVersion != 39 || d.Title == "" || d.UID != "aerodb-authority-release" {
		t.Errorf("schemaVersion %d title %q uid %q", d.SchemaVersion, d.Title, d.UID)
	}
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("want one DS_PROMETHEUS datasource input, got %+v", d.Inputs)
	}
	records := releaseRecords(loadReleaseRules(t))
	for _, v := range d.Templating.List {
		if v.Datasource.UID != "${DS_PROMETHEUS}" {
			t.Errorf("variable %s: datasource %q", v.Name, v.Datasource.UID)
		}
		releaseRefs(t, "variable "+v.Name, v.Definition, records)
	}
	var exprs, titles []string
	used := map[string]bool{}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel %q: duplicate id %d", p.Title, p.ID)
		}
		ids[p.ID] = true
		titles = append(titles, p.Title)
		if p.GridPos.W < 1 || p.GridPos.X+p.GridPos.W > 24 || p.GridPos.H < 1 {
			t.Errorf("panel %q: gridPos %+v", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${DS_PROMETHEUS}" || p.Datasource.Type != "prometheus" {
			t.Errorf("panel %q: datasource must be the ${DS_PROMETHEUS} input", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: no targets", p.Title)
		}
		for _, tg := range p.Targets {
			refs := releaseRefs(t, "panel "+p.Title, tg.Expr, records)
			if len(refs) == 0 {
				t.Errorf("panel %q: target references no release series: %q", p.Title, tg.Expr)
			}
			for _, m := range refs {
				used[m] = true
			}
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, m := range releaseMetrics {
		if !used[m] && m != "http_requests_total" {
			t.Errorf("no panel shows %s", m)
		}
	}
	for _, want := range []string{"SLO burn", "Canary cohort comparison", "Probe reliability", "Rollback latency"} {
		if !slices.Contains(titles, want) {
			t.Errorf("no row %q", want)
		}
	}
	// Every query is valid PromQL: promtool parses them as recording rules
	// (the dashboard variables sit inside quoted regexes).
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range exprs {
		q, _ := json.Marshal(e)
		fmt.Fprintf(&rules, "      - record: dashboard:query:%d\n        expr: %s\n", i, q)
	}
	p := filepath.Join(t.TempDir(), "release-dashboard-queries.yml")
	if err := os.WriteFile(p, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	promtool(t, "check", "rules", p)
	t.Logf("%d panels, %d queries", len(d.Panels), len(exprs))
}
