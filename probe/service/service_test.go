package service

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/aerodb/authority/probe/clock"
	"github.com/aerodb/authority/probe/flow"
	"github.com/aerodb/authority/probe/probetest"
	"github.com/aerodb/authority/probe/run"
	"github.com/aerodb/authority/probe/verdict"
)

var t0 = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
	ch chan string
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		s.ch <- string(p)
	}
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type fixture struct {
	app    *probetest.App
	clk    *clock.Fake
	cfg    *flow.Config
	svc    *Service
	events *syncBuf
	signer *verdict.Signer
	pub    []byte
}

func newFixture(t *testing.T, events *syncBuf) *fixture {
	t.Helper()
	fx := &fixture{clk: clock.NewFake(t0), events: events}
	if fx.events == nil {
		fx.events = &syncBuf{}
	}
	fx.app = probetest.Start(fx.clk, 12*time.Millisecond)
	t.Cleanup(fx.app.Close)
	dir := filepath.Join("..", "..", "deploy", "probes", "sample-app")
	cfg, ds := flow.LoadFiles(filepath.Join(dir, "environments.yaml"), filepath.Join(dir, "flows.yaml"))
	if len(ds) > 0 {
		t.Fatal(ds)
	}
	fx.cfg = cfg
	var svc *Service
	r, err := run.New(run.Options{Config: cfg, Env: "staging", BaseURL: fx.app.URL(), Clock: fx.clk,
		LookupEnv: func(k string) (string, bool) { return probetest.Password, k == "PROBE_STAGING_PASSWORD" },
		OnEvent:   func(e run.Event) { svc.SetupEvent(e) }})
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(t.TempDir(), "probe")
	if _, err := verdict.GenerateKey(key); err != nil {
		t.Fatal(err)
	}
	fx.signer, err = verdict.LoadSigner(key + ".key")
	if err != nil {
		t.Fatal(err)
	}
	fx.pub, _ = os.ReadFile(key + ".pub")
	svc, err = New(Options{Config: cfg, Runner: r, Clock: fx.clk, Events: fx.events, Signer: fx.signer})
	if err != nil {
		t.Fatal(err)
	}
	fx.svc = svc
	return fx
}

// metric returns the value of the series name{labels} in reg.
func metric(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			return value(m)
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return math.NaN()
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// drive runs the scheduler tick by tick: ticks from..to-1 (every 10 s from
// t0), the app broken from tick brokenFrom on.
func (fx *fixture) drive(from, to, brokenFrom int) {
	for k := from; k < to; k++ {
		fx.clk.Set(t0.Add(time.Duration(k) * 10 * time.Second))
		fx.app.SetBroken(k >= brokenFrom)
		fx.svc.RunDue(context.Background())
	}
}

// TestScheduleMetricsSLOsAndVerdicts drives 15 minutes of schedule on a
// fake clock: 10 healthy minutes, then 5 with get-item broken. Counts,
// SLO arithmetic and verdicts are checked against hand-computed values.
func TestScheduleMetricsSLOsAndVerdicts(t *testing.T) {
	fx := newFixture(t, nil)
	reg := fx.svc.Registry()
	// Before any run: no data is inconclusive, never pass.
	v, err := fx.svc.Verdict("browse", 5*time.Minute, -1, -1)
	if err != nil || v.Verdict != verdict.Inconclusive || v.SuccessRatio != nil {
		t.Fatalf("no data: %+v %v", v, err)
	}
	fx.drive(0, 60, 1000)
	// browse every 30 s: ticks 0,3,...,57 → 20 runs; health every 10 s: 60;
	// cart every 1 m: 10.
	for flowName, want := range map[string]float64{"browse": 20, "health": 60, "cart": 10} {
		if got := metric(t, reg, "probe_runs_total", map[string]string{"flow": flowName, "result": "pass", "env": "staging"}); got != want {
			t.Errorf("%s pass runs %v, want %v", flowName, got, want)
		}
	}
	if v, _ := fx.svc.Verdict("browse", 10*time.Minute, -1, -1); v.Verdict != verdict.Pass || v.Runs != 20 {
		t.Fatalf("healthy: %+v", v)
	}
	fx.drive(60, 90, 60) // ticks 60..89 broken
	// browse: ticks 60,63,...,87 → 10 more runs, all failing at get-item.
	if got := metric(t, reg, "probe_runs_total", map[string]string{"flow": "browse", "result": "fail"}); got != 10 {
		t.Fatalf("browse fail runs %v, want 10", got)
	}
	if got := metric(t, reg, "probe_success", map[string]string{"flow": "browse"}); got != 0 {
		t.Fatalf("probe_success %v", got)
	}
	if got := metric(t, reg, "probe_step_success", map[string]string{"flow": "browse", "step": "list-items"}); got != 1 {
		t.Fatalf("list-items step success %v", got)
	}
	if got := metric(t, reg, "probe_duration_seconds", map[string]string{"flow": "browse", "step": "get-item"}); !near(got, 0.012) {
		t.Fatalf("get-item duration %v, want 0.012 (the app advances the clock 12 ms per request)", got)
	}
	if got := metric(t, reg, "probe_duration_seconds", map[string]string{"flow": "browse", "step": ""}); !near(got, 0.024) {
		t.Fatalf("flow duration %v, want 0.024", got)
	}
	// browse-availability (0.995): 30 runs, 10 bad.
	// compliance 20/30; error ratio 1/3; budget left 1 − (1/3)/0.005 = −65.666…
	// 5m window = buckets 60..89 → browse runs at ticks 60..87: 10 runs, 10 bad
	// → burn 1/0.005 = 200. 30m/1h/6h: 10/30 bad → (1/3)/0.005 = 66.666…
	lb := map[string]string{"slo": "browse-availability"}
	if got := metric(t, reg, "probe_slo_compliance", lb); !near(got, 20.0/30) {
		t.Errorf("compliance %v", got)
	}
	if got := metric(t, reg, "probe_slo_error_budget_remaining", lb); !near(got, 1-(1.0/3)/0.005) {
		t.Errorf("budget remaining %v", got)
	}
	for w, want := range map[string]float64{"5m": 200, "30m": (1.0 / 3) / 0.005, "1h": (1.0 / 3) / 0.005, "6h": (1.0 / 3) / 0.005} {
		if got := metric(t, reg, "probe_slo_burn_rate", map[string]string{"slo": "browse-availability", "window": w}); !near(got, want) {
			t.Errorf("burn %s = %v, want %v", w, got, want)
		}
	}
	// item-page counts only browse/get-item steps: same 10/30 bad at 0.999.
	if got := metric(t, reg, "probe_slo_burn_rate", map[string]string{"slo": "item-page", "window": "1h"}); !near(got, (1.0/3)/0.001) {
		t.Errorf("item-page burn 1h = %v", got)
	}
	// The service's own on-time SLO: every tick ran exactly on time.
	if got := metric(t, reg, "probe_slo_compliance", map[string]string{"slo": SelfSLO}); got != 1 {
		t.Errorf("on-time compliance %v", got)
	}
	// Verdicts.
	if v, _ := fx.svc.Verdict("browse", 5*time.Minute, -1, -1); v.Verdict != verdict.Fail || v.Runs != 10 || v.Failures != 10 {
		t.Fatalf("broken 5m: %+v", v)
	}
	if v, _ := fx.svc.Verdict("health", 5*time.Minute, -1, -1); v.Verdict != verdict.Pass {
		t.Fatalf("health: %+v", v)
	}
	// 30 s window holds one browse run; min_samples 3 ⇒ inconclusive.
	if v, _ := fx.svc.Verdict("browse", 30*time.Second, -1, -1); v.Verdict != verdict.Inconclusive || v.Runs != 1 {
		t.Fatalf("few samples: %+v", v)
	}
	// 15m window: 20/30 pass; a 0.6 threshold passes, the default 1.0 fails.
	if v, _ := fx.svc.Verdict("browse", 15*time.Minute, 3, 0.6); v.Verdict != verdict.Pass {
		t.Fatalf("threshold 0.6: %+v", v)
	}
	// Logins: one, cached across flows (expires_in 300 s means one re-login
	// every 5 minutes: at 0, 300, 600 s → 3).
	if got := fx.app.Logins(); got != 3 {
		t.Errorf("logins %d, want 3", got)
	}
}

func TestMissedAndLateTicks(t *testing.T) {
	fx := newFixture(t, nil)
	reg := fx.svc.Registry()
	fx.svc.RunDue(context.Background()) // t0: every flow runs on time
	fx.clk.Set(t0.Add(35 * time.Second))
	fx.svc.RunDue(context.Background())
	// health (10 s): ticks 10 s and 20 s skipped, 30 s runs 5 s late.
	lb := func(timing string) map[string]string { return map[string]string{"flow": "health", "timing": timing} }
	if metric(t, reg, "probe_scheduled_runs_total", lb("on_time")) != 1 || metric(t, reg, "probe_scheduled_runs_total", lb("skipped")) != 2 ||
		metric(t, reg, "probe_scheduled_runs_total", lb("late")) != 1 {
		t.Fatalf("timings: on_time %v skipped %v late %v", metric(t, reg, "probe_scheduled_runs_total", lb("on_time")),
			metric(t, reg, "probe_scheduled_runs_total", lb("skipped")), metric(t, reg, "probe_scheduled_runs_total", lb("late")))
	}
	// Self SLO: scheduled health 4 (1 good), browse 2 (1 good: the 30 s
	// tick ran 5 s late), cart 1 (good) → 3 good of 7.
	if got := metric(t, reg, "probe_slo_compliance", map[string]string{"slo": SelfSLO}); !near(got, 3.0/7) {
		t.Fatalf("on-time compliance %v, want 3/7", got)
	}
	if !strings.Contains(fx.events.String(), `"type":"schedule_missed"`) {
		t.Fatal("no schedule_missed event")
	}
}

// TestSchedulerLoop runs the real loop on the fake clock: each Advance
// fires the loop's timer; runs are awaited through the event stream.
func TestSchedulerLoop(t *testing.T) {
	ev := &syncBuf{ch: make(chan string, 64)}
	fx := newFixture(t, ev)
	srv := httptest.NewServer(fx.svc.Handler())
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { fx.svc.Run(ctx); close(done) }()
	waitRuns := func(n int) {
		for n > 0 {
			if strings.Contains(<-ev.ch, `"type":"run"`) {
				n--
			}
		}
		// A run's event is written just before its goroutine marks the
		// flow idle; wait for that too, or the next tick would find the
		// flow still running and skip it.
		fx.svc.wg.Wait()
	}
	fx.clk.WaitTimers(1) // first dispatch at t0 done, timer armed
	waitRuns(3)          // browse, cart, health at t0
	timers := 1
	for i := 0; i < 5; i++ { // five more health ticks (10 s), browse at 30 s
		fx.clk.WaitTimers(timers)
		fx.clk.Advance(10 * time.Second)
		timers++
		want := 1
		if i == 2 {
			want = 2
		}
		waitRuns(want)
	}
	fx.clk.WaitTimers(timers)
	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz %v %v", resp, err)
	}
	resp.Body.Close()
	if got := metric(t, fx.svc.Registry(), "probe_runs_total", map[string]string{"flow": "health", "result": "pass"}); got != 6 {
		t.Fatalf("health runs %v", got)
	}
	cancel()
	<-done
	resp, _ = http.Get(srv.URL + "/healthz")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("healthz after stop: %d", resp.StatusCode)
	}
	resp.Body.Close()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestVerdictAPIAndSigning covers acceptance item 4: pass, fail and
// inconclusive over HTTP; a signed verdict verifies, a tampered one not.
func TestVerdictAPIAndSigning(t *testing.T) {
	fx := newFixture(t, nil)
	srv := httptest.NewServer(fx.svc.Handler())
	defer srv.Close()
	verdictOf := func(q string) verdict.Verdict {
		code, body := get(t, srv.URL+"/v1/verdicts/"+q)
		if code != 200 {
			t.Fatalf("%s: %d %s", q, code, body)
		}
		var v verdict.Verdict
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := verdictOf("browse?window=5m"); v.Verdict != "inconclusive" {
		t.Fatalf("no data: %+v", v)
	}
	fx.drive(0, 30, 1000)
	if v := verdictOf("browse?window=5m"); v.Verdict != "pass" || v.Runs != 10 {
		t.Fatalf("healthy: %+v", v)
	}
	fx.drive(30, 36, 30)
	if v := verdictOf("browse?window=1m&min_samples=2"); v.Verdict != "fail" || v.Failures != 2 {
		t.Fatalf("broken: %+v", v)
	}
	// The flow's own min_samples is 3: two failing runs are not enough to decide.
	if v := verdictOf("browse?window=1m"); v.Verdict != "inconclusive" {
		t.Fatalf("min_samples: %+v", v)
	}
	for q, code := range map[string]int{"nope?window=5m": 404, "browse?window=5x": 400, "browse?window=7h": 400,
		"browse?min_success_ratio=2": 400, "browse?format=xml": 400} {
		if got, body := get(t, srv.URL+"/v1/verdicts/"+q); got != code {
			t.Errorf("%s: %d %s, want %d", q, got, body, code)
		}
	}
	// Signed.
	code, body := get(t, srv.URL+"/v1/verdicts/browse?window=1m&min_samples=2&format=dsse")
	if code != 200 {
		t.Fatalf("dsse: %d %s", code, body)
	}
	var env dsse.Envelope
	if err := json.Unmarshal([]byte(body), &env); err != nil {
		t.Fatal(err)
	}
	st, err := verdict.Verify(context.Background(), &env, fx.pub)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if st.Predicate.Verdict != "fail" || st.Predicate.Flow != "browse" || st.Subject[0].Digest["sha256"] != st.Predicate.FlowDigest {
		t.Fatalf("statement %+v", st)
	}
	// Tampered: flip the verdict inside the payload, keep the signature.
	payload, _ := env.DecodeB64Payload()
	forged := strings.Replace(string(payload), `"verdict":"fail"`, `"verdict":"pass"`, 1)
	if forged == string(payload) {
		t.Fatal("tamper did not change the payload")
	}
	bad := env
	bad.Payload = b64(forged)
	if _, err := verdict.Verify(context.Background(), &bad, fx.pub); err == nil {
		t.Fatal("tampered verdict verified")
	}
	// Another key does not verify it either.
	other := filepath.Join(t.TempDir(), "other")
	verdict.GenerateKey(other)
	otherPub, _ := os.ReadFile(other + ".pub")
	if _, err := verdict.Verify(context.Background(), &env, otherPub); err == nil {
		t.Fatal("verified with the wrong key")
	}
}

// TestNoSecretsInMetricsEventsOrPages: password, tokens and session cookies
// never reach /metrics, the event stream, the status pages or /v1/slos.
func TestNoSecretsInMetricsEventsOrPages(t *testing.T) {
	fx := newFixture(t, nil)
	srv := httptest.NewServer(fx.svc.Handler())
	defer srv.Close()
	fx.drive(0, 12, 6)
	fx.app.ExpireSessions()
	fx.clk.Set(t0.Add(120 * time.Second))
	fx.svc.RunDue(context.Background())
	var all []string
	for _, p := range []string{"/metrics", "/", "/status/browse", "/status/cart", "/v1/slos", "/v1/verdicts/browse"} {
		code, body := get(t, srv.URL+p)
		if code != 200 {
			t.Fatalf("%s: %d", p, code)
		}
		all = append(all, body)
	}
	all = append(all, fx.events.String())
	joined := strings.Join(all, "\n")
	for _, s := range []string{probetest.Password, "tok-0", "sess-0"} {
		if strings.Contains(joined, s) {
			t.Fatalf("secret %q leaked", s)
		}
	}
	// The output is not empty of what matters.
	for _, want := range []string{`"type":"setup_refresh"`, `"type":"setup_login"`, `assertion \"status == 200\" failed`, "probe_slo_burn_rate", "get-item"} {
		if !strings.Contains(joined, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
