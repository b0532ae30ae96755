package service

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/aerodb/authority/probe/clock"
	"github.com/aerodb/authority/probe/flow"
	"github.com/aerodb/authority/probe/probetest"
	"github.com/aerodb/authority/probe/run"
)

// soakFlows is n flows at 1 s: even ones a health check, odd ones the
// two-step browse journey behind the shared login.
func soakFlows(base string, n int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, `environments:
  soak:
    base_url: %s
    variables: {user: probe-bot}
    secrets: {password: {env: PROBE_SOAK_PASSWORD}}
setups:
  login:
    steps:
      - name: login
        request: {method: POST, url: /login, body: '{"user": "{{ user }}", "password": "{{ secrets.password }}"}'}
        extract: [{var: token, json: $.token, secret: true}]
        assert: [status == 200]
    exports: [token]
    cache: {ttl: 5m}
flows:
`, base)
	for i := 0; i < n; i++ {
		if i%2 == 0 {
			fmt.Fprintf(&b, `  - name: f%02d
    schedule: {every: 1s}
    steps: [{name: healthz, request: {url: /healthz, timeout: 2s}, assert: [status == 200]}]
`, i)
			continue
		}
		fmt.Fprintf(&b, `  - name: f%02d
    setup: login
    schedule: {every: 1s}
    steps:
      - name: list
        request: {url: /api/items, headers: {Authorization: "Bearer {{ token }}"}}
        extract: [{var: id, json: "$.items[0].id"}]
        assert: [status == 200]
      - name: item
        request: {url: "/api/items/{{ id }}", headers: {Authorization: "Bearer {{ token }}"}}
        assert: [status == 200, json.name == "widget"]
`, i)
	}
	fmt.Fprintf(&b, "slos:\n  - {name: soak, objective: 0.999, window: 1h, flows: [f00, f01]}\n")
	return []byte(b.String())
}

func newSoak(t *testing.T, clk clock.Clock, app *probetest.App, n int, events io.Writer) *Service {
	t.Helper()
	cfg, ds := flow.Load(flow.Source{Name: "soak.yaml", Data: soakFlows(app.URL(), n)})
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	r, err := run.New(run.Options{Config: cfg, Env: "soak", Clock: clk,
		LookupEnv: func(k string) (string, bool) { return probetest.Password, k == "PROBE_SOAK_PASSWORD" }})
	if err != nil {
		t.Fatal(err)
	}
	_, isFake := clk.(*clock.Fake)
	svc, err := New(Options{Config: cfg, Runner: r, Clock: clk, Events: events, Spread: !isFake})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// ourGoroutines counts live goroutines running probe code, other than test
// functions (HTTP connection goroutines come and go on their own and are
// not counted).
func ourGoroutines() int {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if ours(g) && !strings.Contains(g, "testing.tRunner(") {
			n++
		}
	}
	return n
}

// settledGoroutines is ourGoroutines once it reaches the one goroutine
// expected between ticks, or after 2 s: a goroutine that has done its work
// may still be on its way out when the count is taken; a leaked one stays.
func settledGoroutines() int {
	deadline := time.Now().Add(2 * time.Second)
	n := ourGoroutines()
	for n > 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		n = ourGoroutines()
	}
	return n
}

// ours: a goroutine running code of the probe's packages. The test app's
// (probetest) server goroutines are not the probe's: one may still be
// returning from a handler after the run it answered has been recorded.
func ours(stack string) bool {
	for _, line := range strings.Split(stack, "\n") {
		if strings.Contains(line, "aerodb/authority/probe/") && !strings.Contains(line, "aerodb/authority/probe/probetest") {
			return true
		}
	}
	return false
}

// TestFiftyFlowsGoroutinesFlat drives the real scheduler loop (fake clock)
// through 60 one-second ticks of 50 flows: every tick runs every flow on
// time, and the goroutine count after tick 10 equals the one after tick 60.
func TestFiftyFlowsGoroutinesFlat(t *testing.T) {
	app := probetest.Start(nil, 0)
	defer app.Close()
	clk := clock.NewFake(t0)
	ev := &syncBuf{ch: make(chan string, 256)}
	svc := newSoak(t, clk, app, 50, ev)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { svc.Run(ctx); close(done) }()
	waitRuns := func(n int) {
		for n > 0 {
			if strings.Contains(<-ev.ch, `"type":"run"`) {
				n--
			}
		}
	}
	var g10 int
	for tick := 0; tick < 60; tick++ {
		if tick > 0 {
			clk.WaitTimers(tick) // the loop armed its timer for this tick
			clk.Advance(time.Second)
		}
		waitRuns(50)
		// Runs are recorded before their goroutine exits; wait for the
		// dispatch of this tick to finish before counting.
		svc.wg.Wait()
		if tick == 10 {
			g10 = settledGoroutines()
		}
	}
	g60 := settledGoroutines()
	cancel()
	<-done
	// Between ticks only the scheduler loop is left: no run, timer or
	// request goroutine of ours survives a tick.
	if g10 != 1 || g60 != 1 {
		t.Errorf("probe goroutines: %d after tick 10, %d after tick 60, want 1 (the loop)", g10, g60)
	}
	on := 0.0
	for i := 0; i < 50; i++ {
		on += metric(t, svc.Registry(), "probe_scheduled_runs_total", map[string]string{"flow": fmt.Sprintf("f%02d", i), "timing": "on_time"})
	}
	if on != 3000 {
		t.Fatalf("on-time runs %v, want 3000", on)
	}
	t.Logf("probe goroutines: %d after tick 10, %d after tick 60; %d app requests; logins %d", g10, g60, app.Requests(), app.Logins())
}
