package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

func writeGates(t *testing.T, y string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "gates.yaml")
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestGateCommand(t *testing.T) {
	var posts atomic.Int32
	var lastBody atomic.Value
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		lastBody.Store(string(b))
		posts.Add(1)
	}))
	defer hook.Close()
	pass := writeGates(t, "services:\n  - {name: smoke, command: {argv: [\"true\"]}}\n")
	fail := writeGates(t, "deploy_id: from-file\nservices:\n  - {name: ok, command: {argv: [\"true\"]}}\n  - {name: broken, retries: 0, command: {argv: [\"false\"]}}\n")
	report := filepath.Join(t.TempDir(), "report.json")

	// All pass: exit 0, the JSON report on stdout.
	o, stdout, stderr, dialed := testOptions(nil)
	if code := run(context.Background(), o, []string{"gate", "--config", pass, "-o", "json"}); code != exitOK {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	var rep struct {
		Passed   bool `json:"passed"`
		Services []struct {
			Name     string `json:"name"`
			Passed   bool   `json:"passed"`
			Attempts int    `json:"attempts"`
		} `json:"services"`
		Alert *struct {
			Posted bool `json:"posted"`
		} `json:"alert"`
		DeployID string `json:"deploy_id"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil || !rep.Passed || len(rep.Services) != 1 || rep.Services[0].Attempts != 1 {
		t.Fatalf("report %s (%v)", stdout, err)
	}
	if len(*dialed) != 0 {
		t.Fatal("gate dialed the cluster")
	}

	// A failure: exit 1, the alert posted, flags override the file, --report written.
	o, stdout, stderr, _ = testOptions(nil)
	code := run(context.Background(), o, []string{"gate", "--config", fail, "--alert-webhook", hook.URL + "/api/v2/alerts",
		"--env", "staging", "--deploy-id", "from-flag", "--report", report})
	if code != exitError || !strings.Contains(stderr.String(), "health gates failed: broken") {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	if !strings.Contains(stdout.String(), "broken") || !strings.Contains(stdout.String(), "FAILED") {
		t.Fatalf("text output %s", stdout)
	}
	if posts.Load() != 1 || !strings.Contains(lastBody.Load().(string), `"deploy_id":"from-flag"`) ||
		!strings.Contains(lastBody.Load().(string), `"env":"staging"`) {
		t.Fatalf("%d posts, last %v", posts.Load(), lastBody.Load())
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil || rep.Passed || rep.DeployID != "from-flag" || rep.Alert == nil || !rep.Alert.Posted {
		t.Fatalf("report file %s (%v)", b, err)
	}

	// Config errors and a missing --config are usage errors.
	bad := writeGates(t, "services:\n  - name: a\n    command: {argv: [\"true\"]}\n    retires: 2\n")
	for _, args := range [][]string{
		{"gate", "--config", bad},
		{"gate"},
		{"gate", "--config", pass, "extra"},
		{"gate", "--config", pass, "--alert-webhook", "ftp://x"},
	} {
		o, _, stderr, _ := testOptions(nil)
		if code := run(context.Background(), o, args); code != exitUsage {
			t.Errorf("%v: exit %d, want %d; stderr %s", args, code, exitUsage, stderr)
		}
		if args[len(args)-1] == bad && !strings.Contains(stderr.String(), "line 4: field retires not found") {
			t.Errorf("stderr %s", stderr)
		}
	}
}
