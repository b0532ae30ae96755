package deployobs_test

// The deploy pipeline's rules (deploy-rules.yml), their promtool unit tests
// (deploy-rules.test.yml) and dashboard (deploy-dashboard.json), issue 14.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// deployMetrics are the families the deploy rules and dashboard may query:
// authorityd's deploy metrics (issue 14), the runners' node exporter, and
// Prometheus' own up/ALERTS. Histograms are queried by their _bucket.
var deployMetrics = []string{
	"deploy_attempts_total",
	"deploy_duration_seconds",
	"deploy_failovers_total",
	"deploy_failover_seconds",
	"preflight_failures_total",
	"health_gate_failures_total",
	"node_filesystem_avail_bytes",
	"up",
	"ALERTS",
}

var deployHistograms = []string{"deploy_duration_seconds", "deploy_failover_seconds"}

// The families every deploy file must show (what authorityd exports for
// issue 14).
var deployExported = deployMetrics[:6]

// deployRef matches metric names of the deploy namespace, recording rules
// (level:metric:ops) and the generic series used, where a name may start:
// not after an identifier character or a quote.
var deployRef = regexp.MustCompile(`(?:^|[^A-Za-z0-9_:"])((?:deploy_|preflight_|health_gate_|node_)[A-Za-z0-9_]+|env:[A-Za-z0-9_:]+|up|ALERTS)(?:[^A-Za-z0-9_:(]|$)`)

func deployRefs(t *testing.T, where, expr string, records []string) []string {
	t.Helper()
	var out []string
	// Overlapping matches: scan each position once.
	for _, m := range deployRef.FindAllStringSubmatchIndex(expr, -1) {
		name := expr[m[2]:m[3]]
		if strings.HasPrefix(name, "env:") {
			if !slices.Contains(records, name) {
				t.Errorf("%s: unknown recording rule %q", where, name)
			}
			out = append(out, name)
			continue
		}
		family := name
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suf); ok && slices.Contains(deployHistograms, base) {
				family = base
			}
		}
		if slices.Contains(deployHistograms, family) && family == name {
			t.Errorf("%s: histogram %s used without _bucket/_sum/_count", where, name)
		}
		if !slices.Contains(deployMetrics, family) {
			t.Errorf("%s: unknown metric %q in %q", where, name, expr)
			continue
		}
		out = append(out, family)
	}
	return out
}

type deployRuleFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

const runbook = "../../docs/runbooks/runner-failover.md"

// headingAnchors returns the GitHub-style anchors of a markdown file's
// headings.
func headingAnchors(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	strip := regexp.MustCompile(`[^a-z0-9 _-]`)
	for line := range strings.SplitSeq(string(b), "\n") {
		h, ok := strings.CutPrefix(line, "#")
		if !ok {
			continue
		}
		h = strings.TrimLeft(h, "#")
		a := strip.ReplaceAllString(strings.ToLower(strings.TrimSpace(h)), "")
		out = append(out, strings.ReplaceAll(a, " ", "-"))
	}
	return out
}

func loadDeployRules(t *testing.T) deployRuleFile {
	t.Helper()
	b, err := os.ReadFile("deploy-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	var f deployRuleFile
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("deploy-rules.yml: %v", err)
	}
	return f
}

func TestDeployRules(t *testing.T) {
	f := loadDeployRules(t)
	var records []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				records = append(records, r.Record)
			}
		}
	}
	anchors := headingAnchors(t, runbook)
	used := map[string]bool{}
	seen := map[string]bool{}
	for _, g := range f.Groups {
		if g.Name == "" || len(g.Rules) == 0 {
			t.Errorf("group %q: needs a name and rules", g.Name)
		}
		for _, r := range g.Rules {
			where := g.Name + "/" + r.Alert + r.Record
			if (r.Alert == "") == (r.Record == "") {
				t.Errorf("%s: exactly one of alert and record", where)
			}
			if seen[r.Alert+r.Record] {
				t.Errorf("%s: duplicate", where)
			}
			seen[r.Alert+r.Record] = true
			refs := deployRefs(t, where, r.Expr, records)
			if len(refs) == 0 {
				t.Errorf("%s: references no deploy metric: %q", where, r.Expr)
			}
			for _, m := range refs {
				used[m] = true
			}
			if r.Record != "" {
				if !regexp.MustCompile(`^env:[a-z0-9_]+:[a-z0-9_]+$`).MatchString(r.Record) {
					t.Errorf("%s: recording rule name is not level:metric:operations", where)
				}
				continue
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
			rb, anchor, _ := strings.Cut(r.Annotations["runbook"], "#")
			if rb != "docs/runbooks/runner-failover.md" || !slices.Contains(anchors, anchor) {
				t.Errorf("%s: runbook %q is not a heading of %s", where, r.Annotations["runbook"], runbook)
			}
		}
	}
	for _, m := range deployExported {
		if !used[m] {
			t.Errorf("no rule uses %s", m)
		}
	}
	// The SLOs of seed 002 AC5 and the events of issue 14.
	for _, want := range []string{"DeploySuccessRatioBelowSLO", "DeployDurationP95AboveSLO", "DeployFailoverSuccessRatioBelowSLO",
		"DeployFailedRollbackRequired", "DeployFailoverFailed", "DeployPreflightFailures", "DeployHealthGateFailures"} {
		if !seen[want] {
			t.Errorf("missing alert %s", want)
		}
	}
}

// deploy-rules.test.yml shows every alert firing and not firing.
func TestDeployRuleUnitTestsCoverEveryAlert(t *testing.T) {
	f := loadDeployRules(t)
	b, err := os.ReadFile("deploy-rules.test.yml")
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
	if !slices.Equal(tf.RuleFiles, []string{"deploy-rules.yml"}) {
		t.Errorf("rule_files %v", tf.RuleFiles)
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
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" && !(fires[r.Alert] && silent[r.Alert]) {
				t.Errorf("%s: deploy-rules.test.yml must show it firing (%v) and not firing (%v)", r.Alert, fires[r.Alert], silent[r.Alert])
			}
		}
	}
}

func promtool(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found on PATH: install the Debian package prometheus (apt-get install prometheus; .ci/run does)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// promtool accepts the rules and their unit tests pass (make check-rules
// runs the same two commands).
func TestDeployRulesPromtool(t *testing.T) {
	promtool(t, "check", "rules", "deploy-rules.yml")
	promtool(t, "test", "rules", "deploy-rules.test.yml")
}

func TestDeployDashboard(t *testing.T) {
	b, err := os.ReadFile("deploy-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("deploy-dashboard.json: %v", err)
	}
	if d.SchemaVersion != 39 || d.Title == "" || d.UID == "" || d.UID == "aerodb-authority" {
		t.Errorf("schemaVersion %d title %q uid %q (a uid of its own)", d.SchemaVersion, d.Title, d.UID)
	}
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("want one DS_PROMETHEUS datasource input, got %+v", d.Inputs)
	}
	var records []string
	for _, g := range loadDeployRules(t).Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				records = append(records, r.Record)
			}
		}
	}
	var exprs []string
	for _, v := range d.Templating.List {
		if v.Datasource.UID != "${DS_PROMETHEUS}" {
			t.Errorf("variable %s: datasource %q", v.Name, v.Datasource.UID)
		}
		deployRefs(t, "variable "+v.Name, v.Definition, records)
	}
	used := map[string]bool{}
	ids := map[int]bool{}
	titles := []string{}
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
			refs := deployRefs(t, "panel "+p.Title, tg.Expr, records)
			if len(refs) == 0 {
				t.Errorf("panel %q: target references no deploy metric: %q", p.Title, tg.Expr)
			}
			for _, m := range refs {
				used[m] = true
			}
			exprs = append(exprs, tg.Expr)
		}
	}
	for _, m := range deployExported {
		if !used[m] {
			t.Errorf("no panel shows %s", m)
		}
	}
	for _, want := range []string{"Runners", "Deployments", "Failover", "Preflight and health gates"} {
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
	p := filepath.Join(t.TempDir(), "dashboard-queries.yml")
	if err := os.WriteFile(p, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	promtool(t, "check", "rules", p)
	t.Logf("%d panels, %d queries", len(d.Panels), len(exprs))
}

// The matcher: names in quoted values and substrings do not count; a
// recording rule and a histogram's bucket do.
func TestDeployRef(t *testing.T) {
	got := deployRefs(t, "self-test", `histogram_quantile(0.5, sum by (le) (increase(deploy_duration_seconds_bucket{job=~"deploy_x"}[1d]))) / env:deploy_attempts:increase30d and up{job="a"} and count_up`,
		[]string{"env:deploy_attempts:increase30d"})
	if !slices.Equal(got, []string{"deploy_duration_seconds", "env:deploy_attempts:increase30d", "up"}) {
		t.Fatalf("got %v", got)
	}
}
