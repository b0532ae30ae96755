package analysis

import (
	"os"
	"strings"
	"testing"
	"time"
)

const exampleYAML = `
metrics:
  - name: error-rate
    provider:
      prometheus:
        address: http://127.0.0.1:9090
        query: sum(rate(http_requests_total{track="canary",code=~"5.."}[1m])) / sum(rate(http_requests_total{track="canary"}[1m]))
        countQuery: sum(increase(http_requests_total{track="canary"}[1m]))
        timeout: 5s
    interval: 1m
    count: 10
    initialDelay: 30s
    successCondition: result[0] < 0.01
    failureCondition: result[0] >= 0.05
    failureLimit: 1
    inconclusiveLimit: 3
    minSamples: 200
    consecutiveSuccesses: 3
  - name: checkout-probe
    provider:
      probe:
        address: http://127.0.0.1:8089
        flow: checkout
        window: 10m
    interval: 2m
    count: 5
    successCondition: result == 1
  - name: p99-latency
    dryRun: true
    provider:
      web:
        url: http://127.0.0.1:8090/api/latency?track=canary
        headers: {Authorization: "Bearer s3cret"}
        jsonPath: $.data.p99
    interval: 1m
    count: 10
    successCondition: result < 0.5
`

func TestParseExample(t *testing.T) {
	c, err := Parse([]byte(exampleYAML))
	if err != nil {
		t.Fatal(err)
	}
	m := c.Metrics[0]
	if m.Interval.D() != time.Minute || m.InitialDelay.D() != 30*time.Second || m.failureLimit() != 1 || m.inconclusiveLimit() != 3 ||
		m.consecErrLimit() != 4 || m.MinSamples != 200 || m.Provider.Prometheus.Timeout.D() != 5*time.Second {
		t.Fatalf("%+v", m)
	}
	if c.Metrics[1].failureLimit() != 0 || c.Metrics[1].inconclusiveLimit() != 0 || !c.Metrics[2].DryRun {
		t.Fatal("defaults")
	}
	if err := c.Require("error-rate", "checkout-probe"); err != nil {
		t.Fatal(err)
	}
	err = c.Require("error-rate", "latency-p95", "p99-latency")
	if err == nil || !strings.Contains(err.Error(), `"latency-p95" is not defined`) || !strings.Contains(err.Error(), `"p99-latency" is dryRun`) {
		t.Fatalf("unknown required metric must be a config error: %v", err)
	}
}

// Every error is reported at once: unknown provider and field names (strict
// decoding), bad conditions, unbounded counts, missing sample counts.
func TestParseReportsEveryError(t *testing.T) {
	bad := `
metrics:
  - name: a
    provider: {datadog: {query: x}}
    count: 0
    successCondition: result <
  - name: b
    provider: {prometheus: {address: http://127.0.0.1:9090, query: up}}
    count: 5
    interval: 1m
    successCondition: result[0] == 1
    minSamples: 10
    failureLimitt: 3
  - name: b
    provider: {custom: nosuch}
    count: 2000
    interval: -1s
    consecutiveSuccesses: 3
  - name: c
    provider: {web: {url: "ftp://x", jsonPath: "data", headers: {X: "secret-token\nInjected: 1"}}}
    count: 1
`
	_, err := Parse([]byte(bad))
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		"field datadog not found", "field failureLimitt not found",
		"metric a: count must be 1..1000", "metric a: successCondition does not compile",
		"metric a: provider must name exactly one",
		"metric b: minSamples needs prometheus.countQuery", "metric b: duplicate metric name",
		`metric b: unknown provider "nosuch"`, "metric b: interval must be positive",
		"metric c: web.url must be an http(s) URL", "metric c: web.jsonPath", "metric c: needs a successCondition or a failureCondition",
		"metric c: web.headers",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "secret-token") {
		t.Error("a header value was echoed")
	}
	if _, err := Parse([]byte(strings.Repeat(" ", MaxConfigBytes+1))); err == nil {
		t.Error("oversized config accepted")
	}
	if _, err := Parse([]byte("metrics: [{name: d, dryRun: true, count: 1, successCondition: 'result > 0', provider: {custom: x}}]"), "x"); err == nil || !strings.Contains(err.Error(), "only dryRun") {
		t.Errorf("dry-run only: %v", err)
	}
	if _, err := Parse([]byte("metrics: []\n---\nmetrics: []")); err == nil {
		t.Error("two documents accepted")
	}
}

func TestJSONPath(t *testing.T) {
	for _, p := range []string{"$", "$.a", "$.a.b[0]", `$["a b"][2].c`} {
		if _, err := parseJSONPath(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	for _, p := range []string{"", "a.b", "$.", "$[x]", "$[-1]", "$[0", "$" + strings.Repeat(".a", 40)} {
		if _, err := parseJSONPath(p); err == nil {
			t.Errorf("%s accepted", p)
		}
	}
}

// The example in docs/CANARY-ANALYSIS.md parses.
func TestDocExampleParses(t *testing.T) {
	doc, err := os.ReadFile("../../docs/CANARY-ANALYSIS.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "## Example\n\n```yaml\n")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("no example block")
	}
	if _, err := Parse([]byte(block)); err != nil {
		t.Fatal(err)
	}
}
