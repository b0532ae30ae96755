// Package releasee2e runs the rollout controller end to end (issue 16,
// acceptance items 1, 4 and 5): three authorityd, a real Prometheus, two
// versions of a test app per case behind a real HAProxy, and
// release/controller in-process. One shared setup for every case.
package releasee2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/internal/testcluster"
	"github.com/aerodb/authority/release/actuator"
	"github.com/aerodb/authority/release/analysis"
	"github.com/aerodb/authority/release/burnrate"
	"github.com/aerodb/authority/release/controller"
	"github.com/aerodb/authority/release/webhook"
	"github.com/aerodb/authority/validator"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// syncBuf collects controller logs (printed when a case fails).
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 1<<20 {
		s.b.Reset()
	}
	return s.b.Write(p)
}

func (s *syncBuf) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

type ctlRun struct {
	ctl *controller.Controller
	cli *client.Client
	log *syncBuf
}

func (e *env) controller(t *testing.T, r *rollout, yaml string, tweak func(*controller.Options), custom ...string) ctlRun {
	t.Helper()
	cfg, err := controller.Parse([]byte(yaml), custom...)
	if err != nil {
		t.Fatalf("%s: rollouts.yaml: %v\n%s", r.name, err, yaml)
	}
	logs := &syncBuf{}
	cli := e.c.Dial(releaser(r.name))
	o := controller.Options{Config: cfg, Client: cli, Signer: e.signer("controller"), Registerer: prometheus.NewRegistry(),
		Logger: slog.New(slog.NewTextHandler(logs, nil))}
	if tweak != nil {
		tweak(&o)
	}
	ctl, err := controller.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s controller log:\n%s", r.name, logs.String())
		}
	})
	return ctlRun{ctl: ctl, cli: cli, log: logs}
}

func (e *env) release(t *testing.T, ctx context.Context, r *rollout) *pb.ReleaseState {
	t.Helper()
	e.opOnce.Do(func() { e.op = e.c.Dial(testcluster.Operator) })
	d, err := e.op.GetDomain(ctx, r.domain)
	if err != nil {
		t.Fatal(err)
	}
	return d.GetRelease()
}

// drillProbeWindow: the probe-flow window of the odd rollback drills.
const drillProbeWindow = 10 * time.Second // the probe service's resolution

// lastAbort is the index of the last allowed abort decision.
func lastAbort(t *testing.T, rs *pb.ReleaseState) uint64 {
	t.Helper()
	var idx uint64
	for _, d := range rs.GetDecisions() {
		if d.GetAction() == pb.ReleaseAction_RELEASE_ACTION_ABORT && d.GetDecision().GetAllowed() {
			idx = d.GetIndex()
		}
	}
	if idx == 0 {
		t.Fatalf("no abort among the decisions: %v", rs)
	}
	return idx
}

// verdicts is canary_abort_verdict_total{verdict} as every server reports
// it (counted from committed events); it fails the test if they differ.
func (e *env) verdicts(t *testing.T, verdict string) float64 {
	t.Helper()
	v, err := e.serverVerdicts(verdict)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (e *env) serverVerdicts(verdict string) (float64, error) {
	hc := e.c.HTTPClient(testcluster.Reader)
	want := `canary_abort_verdict_total{verdict="` + verdict + `"} `
	var got []float64
	for _, s := range e.c.Servers {
		resp, err := hc.Get(e.c.URL(s, "/metrics"))
		if err != nil {
			return 0, err
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		resp.Body.Close()
		if err != nil {
			return 0, err
		}
		v := -1.0
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, want); ok {
				v, err = strconv.ParseFloat(rest, 64)
				if err != nil {
					return 0, err
				}
			}
		}
		if v < 0 {
			return 0, fmt.Errorf("server %s has no %s", s.ID, want)
		}
		got = append(got, v)
	}
	for _, v := range got[1:] {
		if v != got[0] {
			return 0, fmt.Errorf("servers disagree on %s: %v", want, got)
		}
	}
	return got[0], nil
}

// waitVerdicts waits (bounded) until every server counts before+delta.
func (e *env) waitVerdicts(t *testing.T, verdict string, before, delta float64) {
	t.Helper()
	waitFor(t, 15*time.Second, "canary_abort_verdict_total{verdict="+verdict+"} on every server", func() error {
		v, err := e.serverVerdicts(verdict)
		if err == nil && v != before+delta {
			err = fmt.Errorf("%v, want %v", v, before+delta)
		}
		return err
	})
}

// authorityctl runs the authorityctl binary as id; its combined output.
func (e *env) authorityctl(ctx context.Context, id identity.Identity, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(testcluster.Binaries(e.t), "authorityctl"), args...)
	cmd.Env = append(os.Environ(), e.c.CtlEnv(id)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func weights(t *testing.T, r *rollout) (uint32, uint32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, c, err := r.hp.Weights(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

// hookReceiver is a webhook endpoint: signatures verified, de-duplicated on
// the delivery key; it refuses the first attempt of every third delivery
// with 503 and "loses" the answer of every third other one (handled, then
// 500), so retries and de-duplication both happen.
type hookReceiver struct {
	mu                        sync.Mutex
	handled                   map[string]webhook.Payload
	handleCalls               int
	attempts                  map[string]int
	refused, lost, badSig, ok int
	secret                    []byte
	rc                        *webhook.Receiver
	srv                       *httptest.Server
}

func newHookReceiver(t *testing.T, secret string) *hookReceiver {
	h := &hookReceiver{handled: map[string]webhook.Payload{}, attempts: map[string]int{}, secret: []byte(secret)}
	h.rc = &webhook.Receiver{Secret: h.secret, Dedupe: webhook.NewDeduper(1000), MaxBody: webhook.MaxBodyBytes,
		Handle: func(key string, p webhook.Payload) error {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.handleCalls++
			h.handled[key] = p
			return nil
		}}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, webhook.MaxBodyBytes))
		key := r.Header.Get(webhook.HeaderDelivery)
		h.mu.Lock()
		if !webhook.VerifySignature(h.secret, body, r.Header.Get(webhook.HeaderSignature)) {
			h.badSig++
		}
		h.attempts[key]++
		n, first := len(h.attempts), h.attempts[key] == 1
		h.mu.Unlock()
		if first && n%3 == 0 {
			h.mu.Lock()
			h.refused++
			h.mu.Unlock()
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		rec := httptest.NewRecorder()
		h.rc.ServeHTTP(rec, r)
		if first && n%3 == 1 && rec.Code/100 == 2 {
			h.mu.Lock()
			h.lost++
			h.mu.Unlock()
			http.Error(w, "answer lost", http.StatusInternalServerError)
			return
		}
		h.mu.Lock()
		h.ok++
		h.mu.Unlock()
		w.WriteHeader(rec.Code)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// processFiles writes the signing key, a rollouts.yaml and a controller.yaml
// for running the releasectl binary on the case.
func (e *env) processFiles(t *testing.T, r *rollout, steps string, webhooks ...string) (rollouts, keyPath, rpath, cpath string) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(e.keys["controller"])
	if err != nil {
		t.Fatal(err)
	}
	keyPath = filepath.Join(e.dir, "controller.pem")
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	sp := spec{steps: steps}
	if len(webhooks) > 0 {
		sp.webhooks = webhooks[0]
	}
	rollouts = strings.Replace(e.rolloutsYAML(r, sp), "key: unused-key-file", "key: "+keyPath, 1)
	rpath, cpath = filepath.Join(e.dir, r.name+".rollouts.yaml"), filepath.Join(e.dir, r.name+".controller.yaml")
	f := testcluster.Files(t, releaser(r.name))
	ccfg := fmt.Sprintf("rollouts: %s\nauthority:\n  endpoints: [%s]\n  caCert: %s\n  cert: %s\n  key: %s\nmetricsAddr: 127.0.0.1:0\ndrain: 30s\n",
		rpath, strings.Join(e.c.Endpoints(), ", "), f.CA, f.Cert, f.Key)
	if err := errors.Join(os.WriteFile(rpath, []byte(rollouts), 0o600), os.WriteFile(cpath, []byte(ccfg), 0o600)); err != nil {
		t.Fatal(err)
	}
	return rollouts, keyPath, rpath, cpath
}

func TestReleaseControllerEndToEnd(t *testing.T) {
	drills := 3
	if v := os.Getenv("RELEASE_DRILLS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			t.Fatalf("RELEASE_DRILLS=%q: want 1..100", v)
		}
		drills = n
	}
	e := setup(t, "good", "bad", "idle", "bake", "fence", "budget", "sigstop")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, r := range e.rollouts {
		go r.drive(ctx)
	}

	t.Run("GoodCanaryPromotesThroughItsStepsWithWebhooks", func(t *testing.T) {
		r := e.rollouts["good"]
		from := e.bootstrap(ctx, r) + 1
		r.traffic.Store(true)
		defer r.traffic.Store(false)
		const secret = "e2e-webhook-secret"
		os.Setenv("E2E_HOOK_SECRET", secret)
		hooks := []*hookReceiver{newHookReceiver(t, secret), newHookReceiver(t, secret)}
		wh := fmt.Sprintf(`  namespace: e2e
  state: %s
  fromIndex: %d
  endpoints:
    - {name: ops, url: %s, secret_env: E2E_HOOK_SECRET, backoff_base: 50ms, backoff_max: 400ms, max_attempts: 20}
    - {name: audit, url: %s, secret_env: E2E_HOOK_SECRET, backoff_base: 50ms, backoff_max: 400ms, max_attempts: 20}
`, filepath.Join(e.dir, "hooks.state"), from, hooks[0].srv.URL, hooks[1].srv.URL)
		// The second analysis also asks the probe service for its verdict.
		probe := fmt.Sprintf(`  home-probe:
    metrics:
      - name: home-probe
        provider: {probe: {address: %s, flow: home, window: 30s}}
        count: 1
        successCondition: result == 1`, e.probed)
		run := e.controller(t, r, e.rolloutsYAML(r, spec{steps: `  - setWeight: 30
  - analysis: {templates: [error-rate]}
  - setWeight: 60
  - analysis: {templates: [error-rate, home-probe]}`, webhooks: wh, extraTmpl: probe}), nil)
		wctx, wcancel := context.WithCancel(ctx)
		wdone := make(chan error, 1)
		go func() { wdone <- run.ctl.RunWebhooks(wctx, nil) }()
		defer func() { wcancel(); <-wdone }()

		rep, err := run.ctl.Run(ctx)
		if err != nil || rep.Outcome != controller.Promoted {
			t.Fatalf("good canary: %s %q %v\n%s\nanalyses: %+v", rep.Outcome, rep.Message, err, strings.Join(rep.Decisions, "\n"), rep.Analyses)
		}
		rs := e.release(t, ctx, r)
		if rs.GetStable() != digestV2 || rs.GetPhase() != pb.ReleasePhase_RELEASE_PHASE_PROMOTED || rs.GetKnownGood()[0] != digestV1 {
			t.Fatalf("after promotion: %v", rs)
		}
		if s, c := weights(t, r); s != 0 || c != 100 {
			t.Fatalf("haproxy weights after promotion: stable %d canary %d", s, c)
		}
		if a := r.answers(t, 20); a["v2"] != 20 {
			t.Fatalf("after promotion, answers %v", a)
		}
		want := []string{"start_canary step=1 weight=30", "advance_step step=2 weight=30", "advance_step step=3 weight=60", "advance_step step=4 weight=60", "promote allowed=true"}
		if len(rep.Decisions) != len(want) {
			t.Fatalf("decisions %q, want %q", rep.Decisions, want)
		}
		for i, w := range want {
			if !strings.HasPrefix(rep.Decisions[i], w) {
				t.Fatalf("decision %d %q, want %q", i, rep.Decisions[i], w)
			}
		}
		t.Logf("promoted through %d steps: %s", len(want)-1, strings.Join(rep.Decisions, "; "))
		if last := rep.Analyses[len(rep.Analyses)-1]; len(last.Metrics) != 2 || last.Metrics[1].Name != "home-probe" || last.Metrics[1].Phase != analysis.Successful {
			t.Fatalf("the last analysis did not pass the probe service's verdict: %+v", last)
		}

		// Acceptance 4: every event exactly once per receiver, signed,
		// with retries on 5xx.
		waitFor(t, 60*time.Second, "webhook deliveries", func() error {
			for i, h := range hooks {
				h.mu.Lock()
				n := len(h.handled)
				h.mu.Unlock()
				if n < len(want) {
					return fmt.Errorf("receiver %d handled %d of %d events", i, n, len(want))
				}
			}
			return nil
		})
		for i, h := range hooks {
			h.mu.Lock()
			if h.handleCalls != len(want) || len(h.handled) != len(want) || h.badSig != 0 || h.refused == 0 || h.lost == 0 {
				t.Errorf("receiver %d: %d handle calls for %d keys (want %d each), %d bad signatures, %d refused (503), %d answers lost",
					i, h.handleCalls, len(h.handled), len(want), h.badSig, h.refused, h.lost)
			}
			idx := map[uint64]bool{}
			for _, p := range h.handled {
				if p.Domain != r.domain || p.LogIndex < from || p.LogIndex > rep.LastIndex {
					t.Errorf("receiver %d: unexpected event %+v", i, p)
				}
				idx[p.LogIndex] = true
			}
			if len(idx) != len(want) {
				t.Errorf("receiver %d: %d distinct log indexes, want %d", i, len(idx), len(want))
			}
			t.Logf("webhook receiver %d: %d events handled once each, %d attempts (%d refused with 503, %d answers lost and re-sent, de-duplicated), 0 bad signatures",
				i, len(h.handled), h.refused+h.lost+h.ok, h.refused, h.lost)
			h.mu.Unlock()
		}
	})

	t.Run("BadCanaryIsAbortedAndTrafficReturnsToStable", func(t *testing.T) {
		r := e.rollouts["bad"]
		e.bootstrap(ctx, r)
		r.canary.errorEvery.Store(2) // 50 % errors on v2
		r.traffic.Store(true)
		defer r.traffic.Store(false)
		run := e.controller(t, r, e.rolloutsYAML(r, spec{steps: `  - setWeight: 30
  - analysis: {templates: [error-rate]}
  - setWeight: 100
  - analysis: {templates: [error-rate]}`}), nil)
		rep, err := run.ctl.Run(ctx)
		if err != nil || rep.Outcome != controller.Aborted {
			t.Fatalf("bad canary: %s %q %v\n%s", rep.Outcome, rep.Message, err, strings.Join(rep.Decisions, "\n"))
		}
		rs := e.release(t, ctx, r)
		if rs.GetStable() != digestV1 || rs.GetCanary() != "" || rs.GetPhase() != pb.ReleasePhase_RELEASE_PHASE_ABORTED {
			t.Fatalf("after abort: %v", rs)
		}
		if s, c := weights(t, r); s != 100 || c != 0 {
			t.Fatalf("haproxy weights after abort: stable %d canary %d", s, c)
		}
		if a := r.answers(t, 20); a["v1"] != 20 {
			t.Fatalf("after abort, answers %v", a)
		}
		if n := testutil.ToFloat64(run.ctl.Metrics().Aborts.WithLabelValues("analysis_failed")); n != 1 {
			t.Fatalf("canary_aborts_total{reason=analysis_failed} = %v", n)
		}
		t.Logf("aborted: %s", rep.Message)
		abortIdx := lastAbort(t, rs)
		falseBefore := e.verdicts(t, "false")

		// The same digest, fixed, retried by the same controller: promoted,
		// and the abort is counted as a false one.
		r.canary.errorEvery.Store(0)
		q := &burnrate.Prometheus{Address: e.prom, Timeout: 2 * time.Second}
		waitFor(t, 30*time.Second, "the injected errors to leave the analysis window", func() error {
			v, ok, err := q.Query(ctx, `sum(rate(app_errors_total{case="bad",version="v2"}[5s]))`, time.Now())
			if err == nil && ok && v > 0 {
				err = fmt.Errorf("error rate %v", v)
			}
			return err
		})
		rep, err = run.ctl.Run(ctx)
		if err != nil || rep.Outcome != controller.Promoted {
			t.Fatalf("retry of the aborted digest: %s %q %v\n%s", rep.Outcome, rep.Message, err, strings.Join(rep.Decisions, "\n"))
		}
		// The verdict is a committed fact, not the controller's memory: the
		// promotion judged the abort false on every server.
		rs = e.release(t, ctx, r)
		var judged *pb.ReleaseDecision
		for _, d := range rs.GetDecisions() {
			if d.GetIndex() == abortIdx {
				judged = d
			}
		}
		if judged.GetAbortVerdict() != "false" || judged.GetAbortedCanary() != digestV2 || !strings.Contains(judged.GetAbortVerdictReason(), "promoted") {
			t.Fatalf("the retried abort %d is not judged false: %v", abortIdx, judged)
		}
		e.waitVerdicts(t, "false", falseBefore, 1)
		// An operator cannot judge it a second time.
		if out, err := e.authorityctl(ctx, testcluster.Operator, "release", "label-abort", r.domain, "--decision-index", fmt.Sprint(abortIdx),
			"--verdict", "true", "--reason", "late label"); err == nil || !strings.Contains(out, "already judged") {
			t.Fatalf("a second label of abort %d: %v\n%s", abortIdx, err, out)
		}
	})

	t.Run("ExhaustedErrorBudgetFreezesPromotion", func(t *testing.T) {
		// The stable release fails 5 % of its requests against a 99 %
		// objective: the controller's signed budget evidence says the
		// budget is exhausted, the validator denies the promotion of a
		// healthy canary, and the controller pauses.
		r := e.rollouts["budget"]
		e.bootstrap(ctx, r)
		r.stable.errorEvery.Store(20)
		r.traffic.Store(true)
		defer r.traffic.Store(false)
		run := e.controller(t, r, e.rolloutsYAML(r, spec{steps: `  - setWeight: 50
  - analysis: {templates: [error-rate]}`}), nil)
		rep, err := run.ctl.Run(ctx)
		if err != nil || rep.Outcome != controller.Paused || !strings.Contains(rep.Message, validator.ReasonErrorBudgetExhausted) {
			t.Fatalf("promotion on an exhausted budget: %s %q %v\n%s", rep.Outcome, rep.Message, err, strings.Join(rep.Decisions, "\n"))
		}
		rs := e.release(t, ctx, r)
		if rs.GetStable() != digestV1 || rs.GetPhase() != pb.ReleasePhase_RELEASE_PHASE_PAUSED {
			t.Fatalf("after a frozen promotion: %v", rs)
		}
		t.Logf("frozen: %s", rep.Message)
	})

	t.Run("CanaryWithoutTrafficPausesAndNeverPromotes", func(t *testing.T) {
		// This one runs the releasectl binary: lint, then run (exit 4: paused).
		r := e.rollouts["idle"]
		from := e.bootstrap(ctx, r) + 1
		// The process's own webhook dispatcher delivers its decisions to a
		// receiver here (refusing and "losing" some answers), drained
		// before the process exits.
		const secret = "e2e-process-hook-secret"
		os.Setenv("E2E_PROC_HOOK_SECRET", secret)
		hook := newHookReceiver(t, secret)
		wh := fmt.Sprintf(`  namespace: e2e-process
  state: %s
  fromIndex: %d
  endpoints:
    - {name: ops, url: %s, secret_env: E2E_PROC_HOOK_SECRET, backoff_base: 50ms, backoff_max: 400ms, max_attempts: 20}
`, filepath.Join(e.dir, "proc-hooks.state"), from, hook.srv.URL)
		rollouts, keyPath, rpath, cpath := e.processFiles(t, r, `  - setWeight: 50
  - analysis: {templates: [error-rate]}`, wh)
		if err := os.WriteFile(rpath+".bad", []byte(strings.Replace(rollouts, "setWeight: 50", "setWeight: 500", 1)+"bogus: 1\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		bin := filepath.Join(testcluster.Binaries(t), "releasectl")
		releasectl := func(want int, args ...string) string {
			t.Helper()
			cmd := exec.CommandContext(ctx, bin, args...)
			out, _ := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != want {
				t.Fatalf("releasectl %v: exit %d, want %d:\n%s", args, code, want, out)
			}
			return string(out)
		}
		releasectl(0, "lint", rpath)
		if out := releasectl(2, "lint", rpath+".bad"); !strings.Contains(out, "bogus") {
			t.Fatalf("lint of a bad file:\n%s", out)
		}
		// run, scraping its /metrics while it runs.
		cmd := exec.CommandContext(ctx, bin, "run", "--config", cpath)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		first, err := bufio.NewReader(stdout).ReadString('\n')
		var metricsText string
		if m := regexp.MustCompile(`metrics on (http://\S+)`).FindStringSubmatch(first); err == nil && m != nil {
			if resp, err := http.Get(m[1]); err == nil {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
				resp.Body.Close()
				metricsText = string(b)
			}
		}
		rest, _ := io.ReadAll(stdout)
		_ = cmd.Wait()
		out := first + string(rest) + stderr.String()
		if code := cmd.ProcessState.ExitCode(); code != 4 || !strings.Contains(out, "outcome: paused") {
			t.Fatalf("releasectl run: exit %d, want 4 (paused):\n%s", code, out)
		}
		for _, m := range []string{"rollback_duration_seconds_count 0", `canary_aborts_total{reason="analysis_failed"} 0`} {
			if !strings.Contains(metricsText, m) {
				t.Fatalf("releasectl's /metrics lacks %q:\n%s", m, metricsText)
			}
		}
		rep := controller.Report{Message: out}
		for _, l := range strings.Split(out, "\n") {
			if d, ok := strings.CutPrefix(l, "decision: "); ok {
				rep.Decisions = append(rep.Decisions, d)
			}
		}
		rs := e.release(t, ctx, r)
		if rs.GetStable() != digestV1 || rs.GetCanary() != digestV2 || rs.GetPhase() != pb.ReleasePhase_RELEASE_PHASE_PAUSED {
			t.Fatalf("after an inconclusive analysis: %v", rs)
		}
		for _, d := range rep.Decisions {
			if strings.HasPrefix(d, "promote") {
				t.Fatalf("a canary without data was promoted: %q", rep.Decisions)
			}
		}
		if !strings.Contains(rep.Message, "no data") {
			t.Fatalf("pause reason %q does not say no data", rep.Message)
		}
		t.Logf("releasectl run (exit 4, paused):\n%s", out)

		// The process's webhooks: every decision it took, exactly once after
		// de-duplication, signed, with retries.
		hook.mu.Lock()
		if hook.handleCalls != len(rep.Decisions) || len(hook.handled) != len(rep.Decisions) || hook.badSig != 0 || hook.refused+hook.lost == 0 {
			t.Errorf("the releasectl process's webhooks: %d handle calls for %d keys (want %d each: %q), %d bad signatures, %d refused (503), %d answers lost",
				hook.handleCalls, len(hook.handled), len(rep.Decisions), rep.Decisions, hook.badSig, hook.refused, hook.lost)
		}
		idx, phases := map[uint64]bool{}, map[string]int{}
		for _, p := range hook.handled {
			if p.Domain != r.domain || p.LogIndex < from || p.Namespace != "e2e-process" {
				t.Errorf("the releasectl process delivered an unexpected event %+v", p)
			}
			idx[p.LogIndex] = true
			phases[p.Phase]++
		}
		if len(idx) != len(rep.Decisions) {
			t.Errorf("%d distinct log indexes delivered, want %d", len(idx), len(rep.Decisions))
		}
		t.Logf("releasectl process webhooks: %d events handled once each (phases %v), %d refused with 503, %d answers lost and re-sent",
			len(hook.handled), phases, hook.refused, hook.lost)
		hook.mu.Unlock()

		// Pause when no data, resume when data: with traffic, a new run
		// resumes the paused canary at its step and promotes it.
		r.traffic.Store(true)
		defer r.traffic.Store(false)
		run := e.controller(t, r, strings.Replace(rollouts, "key: "+keyPath, "key: unused-key-file", 1), nil)
		rep2, err := run.ctl.Run(ctx)
		if err != nil || rep2.Outcome != controller.Promoted || len(rep2.Decisions) != 2 || !strings.HasPrefix(rep2.Decisions[0], "resume") {
			t.Fatalf("resumed canary: %s %q %v\n%s", rep2.Outcome, rep2.Message, err, strings.Join(rep2.Decisions, "\n"))
		}
		t.Logf("resumed with traffic: %s", strings.Join(rep2.Decisions, "; "))
	})

	t.Run("BurnInTheBakeWindowRollsBack", func(t *testing.T) {
		r := e.rollouts["bake"]
		e.bootstrap(ctx, r)
		r.traffic.Store(true)
		defer r.traffic.Store(false)
		var totals, traffic []float64
		for i := range drills {
			label := fmt.Sprintf("v2-d%d", i)
			r.canary.relabel(label)
			r.canary.errorEvery.Store(0)
			run := e.controller(t, r, e.rolloutsYAML(r, spec{steps: `  - setWeight: 50
  - analysis: {templates: [error-rate]}`, count: 2, bake: true, label: label, probeFlow: i%2 == 1}), nil)
			type result struct {
				rep controller.Report
				err error
			}
			done := make(chan result, 1)
			go func() { rep, err := run.ctl.Run(ctx); done <- result{rep, err} }()
			// Once promoted, the new stable starts failing half its requests.
			waitFor(t, 60*time.Second, "the promotion", func() error {
				if rs := e.release(t, ctx, r); rs.GetPhase() != pb.ReleasePhase_RELEASE_PHASE_PROMOTED || rs.GetStable() != digestV2 {
					return fmt.Errorf("phase %v", rs.GetPhase())
				}
				return nil
			})
			r.canary.errorEvery.Store(2)
			var res result
			select {
			case res = <-done:
			case <-time.After(90 * time.Second):
				t.Fatalf("drill %d: no rollback within 90s", i)
			}
			r.canary.errorEvery.Store(0)
			if res.err != nil || res.rep.Outcome != controller.RolledBack || res.rep.Rollback == nil {
				t.Fatalf("drill %d: %s %q %v\n%s", i, res.rep.Outcome, res.rep.Message, res.err, strings.Join(res.rep.Decisions, "\n"))
			}
			rs := e.release(t, ctx, r)
			if rs.GetStable() != digestV1 || rs.GetPhase() != pb.ReleasePhase_RELEASE_PHASE_ROLLED_BACK {
				t.Fatalf("drill %d: after rollback: %v", i, rs)
			}
			if s, c := weights(t, r); s != 100 || c != 0 {
				t.Fatalf("drill %d: haproxy weights after rollback: stable %d canary %d", i, s, c)
			}
			h := res.rep.Rollback
			if i%2 == 1 {
				// Green by the probe service's verdict: a pass over a whole
				// window of runs after the traffic moved, never earlier.
				if g := h.ProbesGreen.Sub(h.TrafficMoved); g < drillProbeWindow {
					t.Fatalf("drill %d: probes green %v after the traffic moved, before a whole %v window of probe runs", i, g, drillProbeWindow)
				}
				t.Logf("drill %d: probes green by the probe service's verdict %.3fs after the traffic moved", i, h.ProbesGreen.Sub(h.TrafficMoved).Seconds())
			}
			totals = append(totals, h.Total().Seconds())
			traffic = append(traffic, h.TrafficMoved.Sub(h.Decided).Seconds())
			if n := testutil.CollectAndCount(run.ctl.Metrics().RollbackDuration); n != 1 {
				t.Fatalf("rollback_duration_seconds: %d series", n)
			}
			if i == 0 {
				if a := r.answers(t, 20); a["v1"] != 20 {
					t.Fatalf("after rollback, answers %v", a)
				}
				t.Logf("drill 0: %s", res.rep.Message)
			}
		}
		maxT := 0.0
		for _, v := range totals {
			maxT = max(maxT, v)
		}
		t.Logf("rollback duration over %d drills (decision -> traffic on the previous release -> probes green, real seconds): median %.3fs, max %.3fs; decision -> traffic moved: median %.3fs",
			drills, median(totals), maxT, median(traffic))
	})

	t.Run("PausedControllerPastItsLeaseIsFencedByEpoch", func(t *testing.T) {
		r := e.rollouts["fence"]
		e.bootstrap(ctx, r)
		steps := `  - setWeight: 10
  - setWeight: 20
  - analysis: {templates: [verdict]}`
		verdict := `  verdict:
    metrics:
      - name: error-rate
        provider: {custom: scripted}
        count: 1
        successCondition: result == 1`
		yaml := e.rolloutsYAML(r, spec{steps: steps, extraTmpl: verdict})
		paused, resume := make(chan actuator.Call, 1), make(chan struct{})
		a := e.controller(t, r, yaml, func(o *controller.Options) {
			o.Custom = map[string]analysis.Source{"scripted": analysis.SourceFunc(func(context.Context, *analysis.Metric, time.Time) (analysis.Value, error) {
				return analysis.Value{Values: []float64{1}, Samples: -1}, nil
			})}
			o.BeforeActuate = func(c actuator.Call) {
				if c.Weight == 20 { // stopped between its lease check and the traffic change
					paused <- c
					<-resume
				}
			}
		}, "scripted")
		aDone := make(chan error, 1)
		go func() { _, err := a.ctl.Run(ctx); aDone <- err }()
		var stale actuator.Call
		select {
		case stale = <-paused:
		case err := <-aDone:
			t.Fatalf("controller A ended before pausing: %v", err)
		case <-time.After(60 * time.Second):
			t.Fatal("controller A did not reach its second traffic change")
		}
		a.cli.Close() // A's lease is no longer renewed: it lapses on the service

		// B, the next controller of the same service: it takes the lease
		// once A's lapsed (a new epoch), resumes at the recorded step,
		// reasserts the weight, and its analysis fails: abort, weight 0.
		b := e.controller(t, r, yaml, func(o *controller.Options) {
			o.Custom = map[string]analysis.Source{"scripted": analysis.SourceFunc(func(context.Context, *analysis.Metric, time.Time) (analysis.Value, error) {
				return analysis.Value{Values: []float64{0}, Samples: -1}, nil
			})}
		}, "scripted")
		rep, err := b.ctl.Run(ctx)
		if err != nil || rep.Outcome != controller.Aborted {
			t.Fatalf("controller B: %s %q %v\n%s", rep.Outcome, rep.Message, err, strings.Join(rep.Decisions, "\n"))
		}
		if rep.Epoch <= stale.Epoch {
			t.Fatalf("B's epoch %d is not above A's %d", rep.Epoch, stale.Epoch)
		}
		if s, c := weights(t, r); s != 100 || c != 0 {
			t.Fatalf("after B's abort: stable %d canary %d", s, c)
		}
		// A resumes: its traffic change (weight 20 at its old epoch) is
		// refused by the gateway, and the traffic stays where B put it.
		close(resume)
		var aErr error
		select {
		case aErr = <-aDone:
		case <-time.After(60 * time.Second):
			t.Fatal("controller A did not end after resuming")
		}
		if s, c := weights(t, r); s != 100 || c != 0 {
			t.Fatalf("the stale controller moved traffic: stable %d canary %d", s, c)
		}
		var fe *actuator.FencedError
		if !errors.As(aErr, &fe) || fe.Epoch != stale.Epoch {
			t.Fatalf("A's stale call: %v, want a FencedError at epoch %d", aErr, stale.Epoch)
		}
		t.Logf("stale controller at epoch %d refused: %v (B at epoch %d)", stale.Epoch, fe, rep.Epoch)

		// An operator judges B's abort (a scripted failure: right) through
		// authorityctl; every server counts it.
		trueBefore := e.verdicts(t, "true")
		idx := lastAbort(t, e.release(t, ctx, r))
		if out, err := e.authorityctl(ctx, releaser("ops"), "release", "label-abort", r.domain, "--decision-index", fmt.Sprint(idx),
			"--verdict", "true"); err == nil || !strings.Contains(out, "PermissionDenied") && !strings.Contains(out, "permission") {
			t.Fatalf("a releaser labelled an abort: %v\n%s", err, out)
		}
		out, err := e.authorityctl(ctx, testcluster.Operator, "release", "label-abort", r.domain, "--decision-index", fmt.Sprint(idx),
			"--verdict", "true", "--reason", "the scripted analysis failed on purpose")
		if err != nil || !strings.Contains(out, "abort verdict true") {
			t.Fatalf("label-abort: %v\n%s", err, out)
		}
		e.waitVerdicts(t, "true", trueBefore, 1)
	})

	t.Run("StoppedReleasectlProcessCannotMoveTraffic", func(t *testing.T) {
		// A releasectl process is stopped (SIGSTOP) during a pause step,
		// past its lease; another controller takes over and moves the
		// canary to 40 %. A is continued (SIGCONT): it learns it lost the
		// lease and exits without touching the traffic again.
		r := e.rollouts["sigstop"]
		e.bootstrap(ctx, r)
		steps := `  - setWeight: 10
  - pause: {duration: 20s}
  - setWeight: 40
  - analysis: {templates: [error-rate]}`
		_, _, _, cpath := e.processFiles(t, r, steps)
		var out syncBuf
		cmd := exec.Command(filepath.Join(testcluster.Binaries(t), "releasectl"), "run", "--config", cpath)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGCONT)
			_ = cmd.Process.Kill()
			<-exited
			if t.Failed() {
				t.Logf("releasectl A:\n%s", out.String())
			}
		})
		waitFor(t, 30*time.Second, "A moving the canary to 10 %", func() error {
			if _, c := weights(t, r); c != 10 {
				return fmt.Errorf("canary weight %d", c)
			}
			return nil
		})
		if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		b := e.controller(t, r, e.rolloutsYAML(r, spec{steps: strings.Replace(steps, "duration: 20s", "duration: 1s", 1)}), nil)
		rep, err := b.ctl.Run(ctx) // no traffic: B pauses after moving the canary to 40 %
		if err != nil || rep.Outcome != controller.Paused {
			t.Fatalf("controller B: %s %q %v\n%s", rep.Outcome, rep.Message, err, strings.Join(rep.Decisions, "\n"))
		}
		if _, c := weights(t, r); c != 40 {
			t.Fatalf("B did not move the canary to 40 %%: %d", c)
		}
		if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			t.Fatal("releasectl A did not exit after SIGCONT")
		}
		if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(out.String(), "lease") {
			t.Fatalf("releasectl A: exit %d, want 1 naming its lost lease:\n%s", code, out.String())
		}
		if _, c := weights(t, r); c != 40 {
			t.Fatalf("the stopped controller moved traffic after SIGCONT: canary %d", c)
		}
		last := strings.TrimSpace(out.String())
		if i := strings.LastIndex(last, "\n"); i >= 0 {
			last = last[i+1:]
		}
		t.Logf("releasectl A after SIGCONT: exit 1: %s", last)
	})
}
