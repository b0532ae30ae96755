package run

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aerodb/authority/probe/clock"
	"github.com/aerodb/authority/probe/flow"
	"github.com/aerodb/authority/probe/probetest"
)

var t0 = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

type fixture struct {
	app    *probetest.App
	clk    *clock.Fake
	cfg    *flow.Config
	runner *Runner
	mu     sync.Mutex
	events []Event
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	fx := &fixture{clk: clock.NewFake(t0)}
	fx.app = probetest.Start(fx.clk, 12*time.Millisecond)
	t.Cleanup(fx.app.Close)
	dir := filepath.Join("..", "..", "deploy", "probes", "sample-app")
	cfg, ds := flow.LoadFiles(filepath.Join(dir, "environments.yaml"), filepath.Join(dir, "flows.yaml"))
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	fx.cfg = cfg
	r, err := New(Options{Config: cfg, Env: "staging", BaseURL: fx.app.URL(), Clock: fx.clk,
		LookupEnv: func(k string) (string, bool) {
			if k == "PROBE_STAGING_PASSWORD" {
				return probetest.Password, true
			}
			return "", false
		},
		OnEvent: func(e Event) { fx.mu.Lock(); fx.events = append(fx.events, e); fx.mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	fx.runner = r
	return fx
}

func (fx *fixture) run(t *testing.T, name string) *Result {
	t.Helper()
	return fx.runner.Run(context.Background(), fx.cfg.Flow(name), time.Time{})
}

func TestFlowsPassWithSharedLogin(t *testing.T) {
	fx := newFixture(t)
	for _, name := range []string{"browse", "cart", "health", "browse"} {
		res := fx.run(t, name)
		if !res.Success() {
			t.Fatalf("%s: %s: %+v", name, res.Error, res.Steps)
		}
	}
	if fx.app.Logins() != 1 || fx.runner.Logins() != 1 {
		t.Fatalf("logins: app %d runner %d, want 1 (cached across flows)", fx.app.Logins(), fx.runner.Logins())
	}
	res := fx.run(t, "browse")
	// Each request advances the fake clock by 12ms: latency is exact.
	if res.Steps[0].Duration != 12*time.Millisecond || res.Duration != 24*time.Millisecond {
		t.Fatalf("durations: step %v run %v", res.Steps[0].Duration, res.Duration)
	}
}

func TestBrokenStepNamesStepAssertionAndObservedValues(t *testing.T) {
	fx := newFixture(t)
	fx.app.SetBroken(true)
	res := fx.run(t, "browse")
	if res.Result != Fail {
		t.Fatalf("result %s", res.Result)
	}
	t.Logf("error: %s", res.Error)
	for _, want := range []string{`step "get-item"`, `assertion "status == 200" failed`, "observed status = 500",
		`assertion "json.name == vars.item_name" failed`, `json.name = <nil>`} {
		if !strings.Contains(res.Error, want) {
			t.Errorf("error %q lacks %q", res.Error, want)
		}
	}
	if res.Steps[0].Result != Pass || res.Steps[1].Result != Fail || res.Steps[1].Status != 500 {
		t.Fatalf("steps: %+v", res.Steps)
	}
}

func TestExpiredSessionRefreshedOnce(t *testing.T) {
	fx := newFixture(t)
	if res := fx.run(t, "browse"); !res.Success() {
		t.Fatal(res.Error)
	}
	fx.app.ExpireSessions() // server-side expiry before the cached expiry
	res := fx.run(t, "browse")
	if !res.Success() || !res.SetupRefreshed || res.Steps[0].Attempts != 2 {
		t.Fatalf("after expiry: %s refreshed=%v steps=%+v", res.Error, res.SetupRefreshed, res.Steps)
	}
	if fx.app.Logins() != 2 || fx.runner.Refreshes() != 1 {
		t.Fatalf("logins %d refreshes %d, want 2 and 1", fx.app.Logins(), fx.runner.Refreshes())
	}
	// A 401 that persists after the refresh fails the run: one refresh
	// per run, no loop.
	fx.app.SetRejectTokens(true)
	res = fx.run(t, "browse")
	if res.Result != Fail || fx.app.Logins() != 3 || fx.runner.Refreshes() != 2 {
		t.Fatalf("persistent 401: result %s logins %d refreshes %d", res.Result, fx.app.Logins(), fx.runner.Refreshes())
	}
	if !strings.Contains(res.Error, "observed status = 401") {
		t.Fatalf("error %q", res.Error)
	}
}

func TestSetupCacheExpires(t *testing.T) {
	fx := newFixture(t)
	fx.run(t, "browse")
	fx.clk.Advance(299 * time.Second) // expires_in is 300 s, ttl 10m: the shorter wins
	fx.run(t, "browse")
	if fx.app.Logins() != 1 {
		t.Fatalf("logged in again before the expiry: %d", fx.app.Logins())
	}
	fx.clk.Advance(2 * time.Second)
	if res := fx.run(t, "browse"); !res.Success() || res.SetupRefreshed {
		t.Fatalf("%s refreshed=%v", res.Error, res.SetupRefreshed)
	}
	if fx.app.Logins() != 2 {
		t.Fatalf("logins %d, want 2 after the cached login expired", fx.app.Logins())
	}
}

// TestSecretsNeverInOutput: the password, the token and the session cookie
// appear in no result, error, event or observed value, even when a step
// fails on a body that echoes them.
func TestSecretsNeverInOutput(t *testing.T) {
	fx := newFixture(t)
	var out []string
	add := func(v any) { b, _ := json.Marshal(v); out = append(out, string(b)) }
	for _, broken := range []bool{false, true} {
		fx.app.SetBroken(broken)
		add(fx.run(t, "browse"))
		add(fx.run(t, "cart"))
	}
	fx.app.ExpireSessions()
	add(fx.run(t, "browse"))
	// A flow that asserts on the token itself, so a failure would print it.
	cfg := fx.cfg
	leak := &flow.Flow{Name: "leak", Setup: "login", Steps: []*flow.Step{{Name: "echo",
		Request: flow.Request{Method: "GET", URL: "/api/items?t={{ token }}&p={{ secrets.password }}",
			Headers: map[string]string{"Authorization": "Bearer {{ token }}"}},
		Assert: []string{`vars.token == "x"`, `vars.session == "y"`}}}}
	cs, err := compileStep(leak.Steps[0], cfg.Limits)
	if err != nil {
		t.Fatal(err)
	}
	fx.runner.steps[leak.Steps[0]] = cs
	res := fx.runner.Run(context.Background(), leak, time.Time{})
	if res.Result != Fail {
		t.Fatalf("leak flow: %s", res.Result)
	}
	add(res)
	out = append(out, res.Error)
	fx.mu.Lock()
	add(fx.events)
	fx.mu.Unlock()
	all := strings.Join(out, "\n")
	for _, secret := range []string{probetest.Password, "tok-0000", "sess-0000"} {
		if strings.Contains(all, secret) {
			t.Fatalf("secret %q leaked:\n%s", secret, all)
		}
	}
	if !strings.Contains(all, Redacted) {
		t.Fatalf("nothing was redacted (the test would not notice a leak):\n%s", all)
	}
}

func TestMissingSecretNamesTheVariable(t *testing.T) {
	fx := newFixture(t)
	_, err := New(Options{Config: fx.cfg, Env: "prod", LookupEnv: func(string) (string, bool) { return "", false }})
	if err == nil || !strings.Contains(err.Error(), "PROBE_PROD_PASSWORD") {
		t.Fatalf("err %v", err)
	}
}

func TestBodyBound(t *testing.T) {
	fx := newFixture(t)
	fx.cfg.Limits.MaxBodyBytes = 16
	res := fx.run(t, "browse")
	if res.Result != Error || !strings.Contains(res.Error, "more than 16 bytes") {
		t.Fatalf("%s: %s", res.Result, res.Error)
	}
}
