package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aerodb/authority/probe/probetest"
)

var sampleFiles = []string{"../../deploy/probes/sample-app/environments.yaml", "../../deploy/probes/sample-app/flows.yaml"}

func runMain(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = Main(args, &o, &e)
	return code, o.String(), e.String()
}

func TestLintCommand(t *testing.T) {
	code, out, errOut := runMain(append([]string{"lint"}, sampleFiles...)...)
	if code != 0 || !strings.Contains(out, "ok: 2 file(s)") {
		t.Fatalf("valid files: code %d\n%s%s", code, out, errOut)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(`environments:
  prod: {base_url: "http://127.0.0.1:1"}
flows:
  - name: f
    schedule: {every: 5s}
    retries: 3
    steps:
      - name: s
        request: {url: "/{{ missing }}"}
        assert: ["status === 200"]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = runMain("lint", bad)
	t.Logf("lint output:\n%s", errOut)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, want := range []string{bad + `:6:5: flows[0]: unknown field "retries"`, bad + `:9:24: flow f step "s" request.url: undefined variable "missing"`,
		bad + `:10:18: flow f step "s": bad assertion "status === 200"`, "3 error(s)"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("lint output lacks %q", want)
		}
	}
	if code, _, _ := runMain("lint"); code != 2 {
		t.Fatalf("no files: exit %d, want 2", code)
	}
}

func TestRunOnceCommand(t *testing.T) {
	app := probetest.Start(nil, 0)
	defer app.Close()
	t.Setenv("PROBE_STAGING_PASSWORD", probetest.Password)
	args := append([]string{"run", "--once", "--env", "staging", "--flow", "browse", "--target", app.URL()}, sampleFiles...)
	code, out, errOut := runMain(args...)
	t.Logf("run output:\n%s%s", out, errOut)
	if code != 0 || !strings.Contains(out, "1. PASS     list-items  GET "+app.URL()+"/api/items -> 200") ||
		!strings.Contains(out, "2. PASS     get-item") || !strings.Contains(out, "\nPASS in ") {
		t.Fatalf("code %d", code)
	}
	app.SetBroken(true)
	code, out, _ = runMain(args...)
	t.Logf("broken run output:\n%s", out)
	if code != 1 || !strings.Contains(out, `2. FAIL     get-item`) || !strings.Contains(out, `assertion "status == 200" failed (observed status = 500)`) {
		t.Fatalf("broken: code %d", code)
	}
	if strings.Contains(out, probetest.Password) || strings.Contains(out, "tok-0") {
		t.Fatal("secret in output")
	}
	code, _, errOut = runMain("run", "--env", "staging", "--flow", "browse", sampleFiles[0], sampleFiles[1])
	if code != 2 || !strings.Contains(errOut, "needs --once") {
		t.Fatalf("without --once: %d %s", code, errOut)
	}
}
