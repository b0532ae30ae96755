package controller

import (
	"os"
	"strings"
	"testing"
)

func TestExampleParses(t *testing.T) {
	b, err := os.ReadFile("testdata/rollouts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Steps) != 7 || c.holder() != "payments-api" || len(c.analysisFor(c.Steps[4].Analysis).Metrics) != 2 {
		t.Fatalf("decoded %+v", c)
	}
}

// Strict decoding and every error at once, each naming its field.
func TestConfigErrors(t *testing.T) {
	b, _ := os.ReadFile("testdata/rollouts.yaml")
	base := string(b)
	cases := []struct {
		name, from, to string
		want           []string
	}{
		{"unknown field", "leaseWait: 2m", "leaseWiat: 2m", []string{"field leaseWiat not found"}},
		{"unknown analysis field", "failureLimit: 1", "failureLimt: 1", []string{"failureLimt"}},
		{"bad digest and weight", "setWeight: 5\n", "setWeight: 500\n", []string{"setWeight: 500 exceeds 100"}},
		{"two kinds in a step", "  - setWeight: 25\n", "  - setWeight: 25\n    pause: {duration: 1m}\n", []string{"exactly one of setWeight, pause, analysis"}},
		{"pause forever", "pause: {duration: 5m}", "pause: {}", []string{"pause.duration"}},
		{"unknown template", "templates: [error-rate]}", "templates: [error-ratio]}", []string{`unknown template "error-ratio"`}},
		{"no actuator", "  haproxy: {socket: /run/haproxy/admin.sock, backend: payments, stable: stable, canary: canary}\n", "", []string{"exactly one of haproxy, script, webhook"}},
		{"burn windows", "{name: canary-fast, factor: 14.4, long: 5m, short: 1m}", "{name: canary-fast, factor: 0, long: 1m, short: 5m}", []string{"factor 0", "short < long"}},
		{"webhook secret inline", "secret_env: CHATOPS_WEBHOOK_SECRET", "secret_env: ''", []string{"secret_env"}},
		{"probe and probeFlow", "  probe: http://127.0.0.1:8080/healthz\n", "  probe: http://127.0.0.1:8080/healthz\n  probeFlow: {address: 'ftp://x', flow: 'a/b', window: 2h, minSamples: -1}\n",
			[]string{"probe and probeFlow are exclusive", "probeFlow.address", "probeFlow.flow", "probeFlow.window", "probeFlow.minSamples"}},
		{"many at once", "canary: sha256:2c26", "canary: latest\nholder: 'bad holder'\n#", []string{"canary: want sha256", "holder:"}},
	}
	for _, c := range cases {
		if !strings.Contains(base, c.from) {
			t.Fatalf("%s: %q not in the example", c.name, c.from)
		}
		_, err := Parse([]byte(strings.Replace(base, c.from, c.to, 1)))
		for _, w := range c.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %v, want it to contain %q", c.name, err, w)
			}
		}
	}
	if _, err := Parse([]byte(base + "---\nservice: x\n")); err == nil || !strings.Contains(err.Error(), "more than one") {
		t.Errorf("two documents: %v", err)
	}
	if _, err := Parse([]byte(strings.Repeat("#", MaxConfigBytes+1))); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Errorf("huge config: %v", err)
	}
	// A custom provider must be registered.
	cust := strings.Replace(base, "provider: {custom: canary-burn}", "provider: {custom: scripted}", 1)
	if _, err := Parse([]byte(cust)); err == nil || !strings.Contains(err.Error(), "scripted") {
		t.Errorf("unregistered custom provider: %v", err)
	}
	if _, err := Parse([]byte(cust), "scripted"); err != nil {
		t.Errorf("registered custom provider: %v", err)
	}
}
