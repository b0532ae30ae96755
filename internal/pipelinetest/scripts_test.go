package pipelinetest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The deployment scripts are thin wrappers: run against a fake authorityctl
// that records its arguments, they pass the right ones, validate every
// input before it reaches a command line, and never print a secret.

const scriptsDir = actionsRoot + "/scripts/deployment"

// Secret values planted in the environment; none may appear in any output.
var secrets = map[string]string{
	"DEPLOY_SSH_KEY": "ssh-secret-7f3a91c2",
	"REGISTRY_TOKEN": "registry-secret-55e0d1",
	"ALERT_WEBHOOK":  "https://hooks.example.invalid/webhook-secret-c0ffee",
}

type scriptRun struct {
	argv   []string // what authorityctl was given (nil: not called)
	out    string   // the script's stdout and stderr
	code   int
	repo   string
	report string
}

// runScript runs a deployment script in a fresh application checkout
// (deploy/production/{preflight.yaml,gates.yaml,hosts.yml}, ./deploy.sh) with
// env on top of a base environment holding the planted secrets.
func runScript(t *testing.T, script string, env map[string]string, args ...string) scriptRun {
	t.Helper()
	scripts, err := filepath.Abs(scriptsDir)
	if err != nil {
		t.Fatal(err)
	}
	repo := t.TempDir()
	if err := os.MkdirAll(filepath.Join(repo, "deploy/production"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"preflight.yaml", "gates.yaml", "hosts.yml"} {
		if err := os.WriteFile(filepath.Join(repo, "deploy/production", f), []byte("# test\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(repo, "deploy.sh"), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	argvFile := filepath.Join(bin, "argv")
	// The fake writes its arguments, one per line, to a file (not to the
	// output the test searches for secrets) and prints a fixed record.
	fake := "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > " + argvFile + "\necho '{\"status\":\"succeeded\"}'\n"
	if err := os.WriteFile(filepath.Join(bin, "authorityctl"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	runnerTemp := t.TempDir()
	base := map[string]string{
		"PATH":                bin + ":" + os.Getenv("PATH"),
		"HOME":                t.TempDir(),
		"RUNNER_TEMP":         runnerTemp,
		"DEPLOY_ENV":          "production",
		"DEPLOY_RELEASE":      "sha256:0123456789abcdef",
		"DEPLOY_RUNNER_GROUP": "production-primary",
		"REQUIRED_SECRETS":    "DEPLOY_SSH_KEY REGISTRY_TOKEN",
	}
	for k, v := range secrets {
		base[k] = v
	}
	for k, v := range env {
		base[k] = v
	}
	var kv []string
	for k, v := range base {
		kv = append(kv, k+"="+v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(scripts, script), args...)
	cmd.Dir = repo
	cmd.Env = kv
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err = cmd.Run()
	r := scriptRun{out: out.String(), repo: repo, report: filepath.Join(runnerTemp, "preflight.json")}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", script, err)
	}
	if b, err := os.ReadFile(argvFile); err == nil {
		r.argv = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	}
	for name, v := range secrets {
		if strings.Contains(r.out, v) {
			t.Errorf("%s printed the value of %s:\n%s", script, name, r.out)
		}
	}
	return r
}

func TestPreflightScript(t *testing.T) {
	r := runScript(t, "preflight-checks.sh", nil)
	want := []string{"preflight", "--inventory", "deploy/production/hosts.yml", "--report", r.report,
		"--require-secret", "DEPLOY_SSH_KEY", "--require-secret", "REGISTRY_TOKEN"}
	if r.code != 0 || !slices.Equal(r.argv, want) {
		t.Fatalf("exit %d, authorityctl %q, want %q\n%s", r.code, r.argv, want, r.out)
	}
}

func TestDeployScript(t *testing.T) {
	for _, c := range []struct {
		role, retry string
		tail        []string
	}{
		{"primary", "false", nil},
		{"secondary", "true", []string{"--retry"}},
	} {
		t.Run(c.role, func(t *testing.T) {
			r := runScript(t, "deploy-with-failover.sh", map[string]string{"DEPLOY_RETRY": c.retry}, c.role)
			want := append([]string{"deploy", "run", "--domain", "deploy.production", "--env", "production",
				"--release", "sha256:0123456789abcdef", "--role", c.role, "--runner-group", "production-primary",
				"--preflight", "deploy/production/preflight.yaml", "--gates", "deploy/production/gates.yaml",
				"--alert-webhook", secrets["ALERT_WEBHOOK"]}, c.tail...)
			want = append(want, "--", "./deploy.sh")
			if r.code != 0 || !slices.Equal(r.argv, want) {
				t.Fatalf("exit %d, authorityctl %q, want %q\n%s", r.code, r.argv, want, r.out)
			}
		})
	}
}

func TestHealthGatesScript(t *testing.T) {
	r := runScript(t, "health-gates.sh", nil)
	if want := []string{"gate", "--config", "deploy/production/gates.yaml"}; r.code != 0 || !slices.Equal(r.argv, want) {
		t.Fatalf("exit %d, authorityctl %q, want %q\n%s", r.code, r.argv, want, r.out)
	}

	summary := filepath.Join(t.TempDir(), "summary.md")
	r = runScript(t, "health-gates.sh", map[string]string{
		"GITHUB_STEP_SUMMARY": summary, "HAS_DEPLOY_SSH_KEY": "true", "HAS_REGISTRY_TOKEN": "false",
		"HAS_ODD": secrets["REGISTRY_TOKEN"], // not a boolean: shown as "?"
	}, "--summary")
	if want := []string{"-o", "json", "domain", "get", "deploy.production"}; r.code != 0 || !slices.Equal(r.argv, want) {
		t.Fatalf("exit %d, authorityctl %q, want %q\n%s", r.code, r.argv, want, r.out)
	}
	b, err := os.ReadFile(summary)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"DEPLOY_SSH_KEY=true", "REGISTRY_TOKEN=false", "ODD=?", `{"status":"succeeded"}`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("summary lacks %q:\n%s", want, b)
		}
	}
	if strings.Contains(string(b), secrets["REGISTRY_TOKEN"]) {
		t.Errorf("summary holds a secret:\n%s", b)
	}
}

// Hostile or malformed inputs are refused (exit 2) before authorityctl
// runs, without echoing the value.
func TestScriptsRejectBadInput(t *testing.T) {
	inject := "x$(touch pwned);`touch pwned`"
	cases := []struct {
		name, script string
		env          map[string]string
		args         []string
		want         string
	}{
		{"release with shell syntax", "deploy-with-failover.sh", map[string]string{"DEPLOY_RELEASE": inject}, []string{"primary"}, "DEPLOY_RELEASE does not match"},
		{"release too long", "deploy-with-failover.sh", map[string]string{"DEPLOY_RELEASE": strings.Repeat("a", 201)}, []string{"primary"}, "DEPLOY_RELEASE does not match"},
		{"environment with a path", "preflight-checks.sh", map[string]string{"DEPLOY_ENV": "../../etc"}, nil, "DEPLOY_ENV does not match"},
		{"no environment", "health-gates.sh", map[string]string{"DEPLOY_ENV": ""}, nil, "DEPLOY_ENV is not set"},
		{"runner group with spaces", "deploy-with-failover.sh", map[string]string{"DEPLOY_RUNNER_GROUP": "a b"}, []string{"secondary"}, "DEPLOY_RUNNER_GROUP does not match"},
		{"unknown role", "deploy-with-failover.sh", nil, []string{"tertiary"}, "role must be primary or secondary"},
		{"no role", "deploy-with-failover.sh", nil, nil, "usage"},
		{"retry not a boolean", "deploy-with-failover.sh", map[string]string{"DEPLOY_RETRY": "yes"}, []string{"primary"}, "DEPLOY_RETRY must be true or false"},
		{"secret name with syntax", "preflight-checks.sh", map[string]string{"REQUIRED_SECRETS": "A " + inject}, nil, "invalid variable name"},
		{"missing gates file", "deploy-with-failover.sh", map[string]string{"GATES_CONFIG": "deploy/production/nope.yaml"}, []string{"primary"}, "gates deploy/production/nope.yaml does not exist"},
		{"deploy command not executable", "deploy-with-failover.sh", map[string]string{"DEPLOY_COMMAND": "deploy/production/gates.yaml"}, []string{"primary"}, "is not an executable file"},
		{"summary flag misspelt", "health-gates.sh", nil, []string{"--sumary"}, "usage"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := runScript(t, c.script, c.env, c.args...)
			if r.code != 2 || r.argv != nil || !strings.Contains(r.out, c.want) {
				t.Fatalf("exit %d (want 2), authorityctl %q (want not run), output %q (want %q)", r.code, r.argv, r.out, c.want)
			}
			if strings.Contains(r.out, inject) || strings.Contains(r.out, "aaaaaaaaaa") {
				t.Errorf("the rejected value was echoed: %q", r.out)
			}
			if _, err := os.Stat(filepath.Join(r.repo, "pwned")); err == nil {
				t.Errorf("injected command ran")
			}
		})
	}
}
