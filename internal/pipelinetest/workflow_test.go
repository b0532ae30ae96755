// Package pipelinetest checks the deployment artefacts of issue 14 (seed
// 002): the GitHub Actions workflow and its scripts under
// deploy/github-actions, the Ansible playbooks under deploy/ansible. The
// Prometheus rules and the deploy dashboard are checked in
// deploy/observability (promtool via `make check-rules`, structure by its Go
// tests).
//
// Every check here also runs against a copy broken on purpose, so a check
// that cannot fail does not pass unnoticed.
package pipelinetest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rhysd/actionlint"
)

// Paths relative to this package.
const (
	actionsRoot  = "../../deploy/github-actions"
	workflowPath = actionsRoot + "/.github/workflows/deploy.yml"
	configPath   = actionsRoot + "/.github/actionlint.yaml"
)

// maxFile bounds what the tests read (a workflow or playbook is a few KiB).
const maxFile = 1 << 20

func readBounded(t *testing.T, path string) []byte {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > maxFile {
		t.Fatalf("%s: %d bytes, more than %d", path, fi.Size(), maxFile)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// lint runs actionlint (the Go library, as `actionlint -config-file`
// would; shellcheck and pyflakes are not used) on content, named as the
// workflow file. configFile "" lints without the label declarations.
func lint(t *testing.T, content []byte, configFile string) []*actionlint.Error {
	t.Helper()
	var out bytes.Buffer
	l, err := actionlint.NewLinter(&out, &actionlint.LinterOptions{
		ConfigFile: configFile,
		Color:      actionlint.ColorOptionKindNever,
		Oneline:    true,
	})
	if err != nil {
		t.Fatalf("actionlint: %v", err)
	}
	// A path that does not exist, so that actionlint looks for no project
	// (and no repository config) around it: only configFile applies.
	errs, err := l.Lint(filepath.Join(t.TempDir(), "deploy.yml"), content, nil)
	if err != nil {
		t.Fatalf("actionlint: %v", err)
	}
	return errs
}

func TestWorkflowActionlint(t *testing.T) {
	b := readBounded(t, workflowPath)
	errs := lint(t, b, configPath)
	for _, e := range errs {
		t.Errorf("actionlint: deploy.yml:%d:%d: %s [%s]", e.Line, e.Column, e.Message, e.Kind)
	}
	t.Logf("actionlint: %d errors", len(errs))

	// The config file is what declares the custom label: without it, the
	// same workflow fails, so the check above did use it.
	if errs := lint(t, b, ""); !anyContains(errs, `label "production" is unknown`) {
		t.Errorf("without %s actionlint should reject the production label, got %v", configPath, messages(errs))
	}
}

// Broken copies: actionlint must reject each.
func TestWorkflowActionlintRejectsBrokenCopies(t *testing.T) {
	b := string(readBounded(t, workflowPath))
	cases := []struct {
		name, old, new, want string
	}{
		{"undeclared label", "labels: [self-hosted, linux, x64, production]", "labels: [self-hosted, linux, x64, prod]", `label "prod" is unknown`},
		{"typo'd job key", "timeout-minutes: 30", "timeout-minute: 30", `unexpected key "timeout-minute"`},
		{"typo'd concurrency key", "cancel-in-progress: false", "cancel-in-progres: false", `unexpected key "cancel-in-progres"`},
		{"unknown context", "${{ secrets.DEPLOY_SSH_KEY != '' }}", "${{ secret.DEPLOY_SSH_KEY != '' }}", `undefined variable "secret"`},
		{"undefined input", "${{ inputs.release ||", "${{ inputs.relase ||", `property "relase" is not defined`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			broken := mutate(t, b, c.old, c.new)
			errs := lint(t, []byte(broken), configPath)
			if !anyContains(errs, c.want) {
				t.Fatalf("actionlint did not report %q; got %v", c.want, messages(errs))
			}
		})
	}
}

func mutate(t *testing.T, s, old, new string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("mutation: %q not in the workflow", old)
	}
	return strings.Replace(s, old, new, 1)
}

func anyContains(errs []*actionlint.Error, want string) bool {
	return slices.ContainsFunc(errs, func(e *actionlint.Error) bool { return strings.Contains(e.Message, want) })
}

func messages(errs []*actionlint.Error) []string {
	var m []string
	for _, e := range errs {
		m = append(m, fmt.Sprintf("%d:%d %s", e.Line, e.Column, e.Message))
	}
	return m
}

// The deploy jobs and what each must run on.
var deployJobs = map[string]struct{ role, group string }{
	"deploy-primary":   {"primary", "production-primary"},
	"deploy-secondary": {"secondary", "production-secondary"},
}

var wantLabels = []string{"self-hosted", "linux", "x64", "production"}

// The three steps of the seed, in order, and the argument of each per role.
var wantScripts = []string{
	"./scripts/deployment/preflight-checks.sh",
	"./scripts/deployment/deploy-with-failover.sh",
	"./scripts/deployment/health-gates.sh",
}

// checkStructure returns what is wrong with the workflow's structure (nil
// when nothing): the design of docs/runbooks/runner-failover.md.
func checkStructure(content []byte, root string) []string {
	var probs []string
	bad := func(f string, a ...any) { probs = append(probs, fmt.Sprintf(f, a...)) }
	w, errs := actionlint.Parse(content)
	if w == nil || len(errs) > 0 {
		return []string{fmt.Sprintf("parse: %v", messages(errs))}
	}

	// Triggers: manual dispatch with environment and release; push to main.
	var dispatch, push bool
	for _, ev := range w.On {
		switch e := ev.(type) {
		case *actionlint.WorkflowDispatchEvent:
			_, env := e.Inputs["environment"]
			_, rel := e.Inputs["release"]
			dispatch = env && rel
		case *actionlint.WebhookEvent:
			if e.Hook.Value == "push" && e.Branches != nil && slices.ContainsFunc(e.Branches.Values, func(s *actionlint.String) bool { return s.Value == "main" }) {
				push = true
			}
		}
	}
	if !dispatch {
		bad("on: workflow_dispatch with inputs environment and release is missing")
	}
	if !push {
		bad("on: push to main is missing")
	}

	// Workflow-level concurrency, never cancelling a running deploy.
	c := w.Concurrency
	switch {
	case c == nil || c.Group == nil:
		bad("no workflow-level concurrency group")
	case c.Group.Value != "production-deploy":
		bad("concurrency group %q, want production-deploy", c.Group.Value)
	}
	if c != nil && (c.CancelInProgress == nil || c.CancelInProgress.Value || c.CancelInProgress.Expression != nil) {
		bad("concurrency.cancel-in-progress must be the literal false")
	}

	if len(w.Jobs) != len(deployJobs) {
		bad("%d jobs, want exactly %d (one per runner group)", len(w.Jobs), len(deployJobs))
	}
	groups := map[string]string{}
	for id, want := range deployJobs {
		j := w.Jobs[id]
		if j == nil {
			bad("job %s is missing", id)
			continue
		}
		// Both start together: the standby must already run when the
		// primary fails, and `needs` would keep it queued behind a queued
		// primary. Neither job may wait on the other.
		if len(j.Needs) != 0 {
			bad("job %s has needs: %v (the deploy jobs must start together)", id, j.Needs)
		}
		// Both deploy jobs always run, unless their own group is drained
		// (one repository variable: never both).
		if j.If != nil && j.If.Value != drainCondition(want.group) {
			bad("job %s: if: %q; the only condition allowed is %q", id, j.If.Value, drainCondition(want.group))
		}
		if j.Concurrency != nil {
			bad("job %s has its own concurrency group; it would serialise the standby behind the primary", id)
		}
		r := j.RunsOn
		if r == nil || r.Group == nil || r.LabelsExpr != nil {
			bad("job %s: runs-on must name a runner group and literal labels", id)
		} else {
			if r.Group.Value != want.group {
				bad("job %s runs on group %q, want %q", id, r.Group.Value, want.group)
			}
			if other, dup := groups[r.Group.Value]; dup {
				bad("jobs %s and %s share runner group %q", id, other, r.Group.Value)
			}
			groups[r.Group.Value] = id
			var labels []string
			for _, l := range r.Labels {
				labels = append(labels, l.Value)
			}
			if !slices.Equal(labels, wantLabels) {
				bad("job %s labels %v, want %v", id, labels, wantLabels)
			}
		}
		if tm := j.TimeoutMinutes; tm == nil || tm.Expression != nil || tm.Value <= 0 || tm.Value > 120 {
			bad("job %s: timeout-minutes must be a literal in (0, 120]", id)
		}
		if v := envValue(j.Env, "DEPLOY_ROLE"); v != want.role {
			bad("job %s: env DEPLOY_ROLE %q, want %q", id, v, want.role)
		}
		if v := envValue(j.Env, "DEPLOY_RUNNER_GROUP"); r != nil && r.Group != nil && v != r.Group.Value {
			bad("job %s: env DEPLOY_RUNNER_GROUP %q differs from its runs-on group", id, v)
		}
		probs = append(probs, checkSteps(id, want.role, j.Steps, root)...)
	}
	for id := range w.Jobs {
		if _, ok := deployJobs[id]; !ok {
			bad("unexpected job %s", id)
		}
	}
	return probs
}

func drainCondition(group string) string {
	return "${{ vars.DRAINED_RUNNER_GROUP != '" + group + "' }}"
}

func envValue(e *actionlint.Env, name string) string {
	if e == nil {
		return ""
	}
	for _, v := range e.Vars {
		if v.Name.Value == name {
			return v.Value.Value
		}
	}
	return ""
}

// checkSteps: the three scripts of the seed in order, each an executable
// file under root; secrets only reach steps through env (never a run line).
func checkSteps(job, role string, steps []*actionlint.Step, root string) []string {
	var probs []string
	bad := func(f string, a ...any) { probs = append(probs, fmt.Sprintf("job %s: ", job)+fmt.Sprintf(f, a...)) }
	var scripts []string
	for i, s := range steps {
		run, ok := s.Exec.(*actionlint.ExecRun)
		if !ok {
			continue
		}
		text := run.Run.Value
		if strings.Contains(text, "secrets.") || strings.Contains(text, "inputs.") || strings.Contains(text, "github.event") {
			bad("step %d runs an expression over secrets/inputs/event in its script; map it into env instead", i)
		}
		for line := range strings.SplitSeq(text, "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || !strings.HasPrefix(f[0], "./") {
				continue
			}
			scripts = append(scripts, f[0])
			p := filepath.Join(root, filepath.FromSlash(f[0]))
			fi, err := os.Stat(p)
			switch {
			case err != nil:
				bad("step %d: %s: %v", i, f[0], err)
			case !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0:
				bad("step %d: %s is not an executable file (mode %v)", i, f[0], fi.Mode())
			}
			if f[0] == wantScripts[1] && (len(f) != 2 || f[1] != role) {
				bad("step %d: %s must be given the role %q", i, f[0], role)
			}
		}
	}
	if !slices.Equal(scripts, wantScripts) {
		bad("scripts run %v, want %v in this order", scripts, wantScripts)
	}
	return probs
}

func TestWorkflowStructure(t *testing.T) {
	b := readBounded(t, workflowPath)
	for _, p := range checkStructure(b, actionsRoot) {
		t.Error(p)
	}
}

// Each structural property is checked: a copy breaking it is rejected
// (and actionlint alone accepts most of these copies, which is why the
// structure check exists).
func TestWorkflowStructureRejectsBrokenCopies(t *testing.T) {
	b := string(readBounded(t, workflowPath))
	// A scripts tree with preflight-checks.sh not executable.
	noexec := t.TempDir()
	copyTree(t, actionsRoot+"/scripts", filepath.Join(noexec, "scripts"))
	if err := os.Chmod(filepath.Join(noexec, "scripts/deployment/preflight-checks.sh"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, old, new, root, want string
	}{
		{"needs between the deploy jobs", "    timeout-minutes: 60\n", "    timeout-minutes: 60\n    needs: deploy-primary\n", "", "has needs"},
		{"cancel in progress", "cancel-in-progress: false", "cancel-in-progress: true", "", "cancel-in-progress"},
		{"secondary skipped when the primary is drained", "vars.DRAINED_RUNNER_GROUP != 'production-secondary'", "vars.DRAINED_RUNNER_GROUP != 'production-primary'", "", "the only condition allowed"},
		{"secondary conditional on the primary's result", "vars.DRAINED_RUNNER_GROUP != 'production-secondary' }}", "failure() }}", "", "the only condition allowed"},
		{"other concurrency group", "group: production-deploy", "group: deploy", "", "concurrency group"},
		{"same runner group", "group: production-secondary", "group: production-primary", "", "share runner group"},
		{"no timeout", "    timeout-minutes: 30\n", "", "", "timeout-minutes"},
		{"missing script", "run: ./scripts/deployment/health-gates.sh --summary", "run: ./scripts/deployment/health-gate.sh --summary", "", "no such file"},
		{"wrong role", "deploy-with-failover.sh secondary", "deploy-with-failover.sh primary", "", `given the role "secondary"`},
		{"preflight step replaced", "run: ./scripts/deployment/preflight-checks.sh", "run: echo skipped", "", "want [./scripts/deployment/preflight-checks.sh"},
		{"secret in a run line", "run: ./scripts/deployment/health-gates.sh --summary", "run: ./scripts/deployment/health-gates.sh --summary ${{ secrets.REGISTRY_TOKEN }}", "", "map it into env"},
		{"no push trigger", "  push:\n    branches:\n      - main\n", "", "", "push to main"},
		{"script not executable", "", "", noexec, "not an executable file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			broken := b
			if c.old != "" {
				broken = mutate(t, b, c.old, c.new)
			}
			root := actionsRoot
			if c.root != "" {
				root = c.root
			}
			probs := checkStructure([]byte(broken), root)
			if !slices.ContainsFunc(probs, func(p string) bool { return strings.Contains(p, c.want) }) {
				t.Fatalf("structure check did not report %q; got %q", c.want, probs)
			}
		})
	}
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}
