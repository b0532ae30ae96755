package releasee2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/internal/testcluster"
	"github.com/aerodb/authority/release/actuator"
	"github.com/aerodb/authority/release/burnrate"
	"github.com/aerodb/authority/release/controller"
	"github.com/aerodb/authority/validator"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

const haproxyBin = "/usr/sbin/haproxy"

// app is one version of the test app: it answers its version, counts
// requests and errors, and fails every errorEvery-th request (0: never).
type app struct {
	name, version string // the case and the version label
	srv           *httptest.Server
	mu            sync.Mutex
	label         string // the version label exported (a drill renames it)
	reqs, errs    map[string]int64
	errorEvery    atomic.Int64
	n             atomic.Int64
}

func newApp(t *testing.T, name, version string) *app {
	a := &app{name: name, version: version, label: version, reqs: map[string]int64{version: 0}, errs: map[string]int64{version: 0}}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n := a.n.Add(1)
		bad := false
		if e := a.errorEvery.Load(); e > 0 && n%e == 0 {
			bad = true
		}
		a.mu.Lock()
		a.reqs[a.label]++
		if bad {
			a.errs[a.label]++
		}
		a.mu.Unlock()
		if bad {
			http.Error(w, "injected error", http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, a.version)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *app) relabel(label string) {
	a.mu.Lock()
	a.label = label
	if _, ok := a.reqs[label]; !ok {
		a.reqs[label], a.errs[label] = 0, 0
	}
	a.mu.Unlock()
}

func (a *app) expose(w io.Writer) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for l, v := range a.reqs {
		fmt.Fprintf(w, "app_requests_total{case=%q,version=%q} %d\n", a.name, l, v)
		fmt.Fprintf(w, "app_errors_total{case=%q,version=%q} %d\n", a.name, l, a.errs[l])
	}
}

// rollout is one case's pair of versions behind its own HAProxy frontend
// and backend, and its release domain.
type rollout struct {
	name           string
	stable, canary *app
	frontend       string // http://127.0.0.1:PORT/
	hp             *actuator.HAProxy
	domain         string
	traffic        atomic.Bool
}

type env struct {
	t        *testing.T
	c        *testcluster.Cluster
	prom     string
	socket   string
	dir      string
	rollouts map[string]*rollout
	keys     map[string]ed25519.PrivateKey
	policy   *pb.Policy
	opOnce   sync.Once
	op       *client.Client
	probed   string // the probe service (cmd/probed), probing the "good" frontend
}

var (
	digestV1 = "sha256:" + strings.Repeat("1", 64)
	digestV2 = "sha256:" + strings.Repeat("2", 64)
)

// freeAddr is a free loopback port below the ephemeral range (outgoing
// connections draw their source ports from that range).
func freeAddr(t *testing.T) string { return testcluster.FreeAddr(t) }

// setup starts everything once: three authorityd, the apps, one HAProxy
// with a frontend+backend per case, one Prometheus scraping the apps.
func setup(t *testing.T, cases ...string) *env {
	if _, err := os.Stat(haproxyBin); err != nil {
		t.Fatalf("%s not found (install the Debian package haproxy): %v", haproxyBin, err)
	}
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus not found: install Debian's prometheus package (apt-get install prometheus)")
	}
	e := &env{t: t, dir: t.TempDir(), rollouts: map[string]*rollout{}, keys: map[string]ed25519.PrivateKey{}}
	for i, k := range []string{"manifest-signer", "controller"} {
		e.keys[k] = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{byte(i + 7)}, ed25519.SeedSize))
	}
	e.c = testcluster.Start(t, 3)

	// Apps and their metrics.
	var all []*app
	for _, n := range cases {
		r := &rollout{name: n, stable: newApp(t, n, "v1"), canary: newApp(t, n, "v2"), domain: "rel." + n}
		e.rollouts[n] = r
		all = append(all, r.stable, r.canary)
	}
	metrics := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprint(w, "# TYPE app_requests_total counter\n# TYPE app_errors_total counter\n")
		for _, a := range all {
			a.expose(w)
		}
	}))
	t.Cleanup(metrics.Close)

	// HAProxy.
	e.socket = filepath.Join(e.dir, "admin.sock")
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "global\n    stats socket %s mode 600 level admin\n    nbthread 1\n    maxconn 1024\ndefaults\n    mode http\n    timeout connect 2s\n    timeout client 5s\n    timeout server 5s\n", e.socket)
	for _, n := range cases {
		r := e.rollouts[n]
		addr := freeAddr(t)
		r.frontend = "http://" + addr + "/"
		fmt.Fprintf(&cfg, "frontend fe_%s\n    bind %s\n    default_backend be_%s\nbackend be_%s\n    balance roundrobin\n    server stable %s weight 100\n    server canary %s weight 0\n",
			n, addr, n, n, strings.TrimPrefix(r.stable.srv.URL, "http://"), strings.TrimPrefix(r.canary.srv.URL, "http://"))
	}
	cfgPath := filepath.Join(e.dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	startProc(t, e.dir, "haproxy", haproxyBin, "-db", "-f", cfgPath)
	for _, n := range cases {
		hp, err := actuator.NewHAProxy(actuator.HAProxyConfig{Socket: e.socket, Backend: "be_" + n, Stable: "stable", Canary: "canary"})
		if err != nil {
			t.Fatal(err)
		}
		e.rollouts[n].hp = hp
	}
	waitFor(t, 20*time.Second, "haproxy's stats socket", func() error {
		_, _, err := e.rollouts[cases[0]].hp.Weights(context.Background())
		return err
	})

	// Prometheus.
	paddr := freeAddr(t)
	pcfg := filepath.Join(e.dir, "prometheus.yml")
	if err := os.WriteFile(pcfg, []byte(fmt.Sprintf("global: {scrape_interval: 1s, evaluation_interval: 1s}\nscrape_configs:\n  - job_name: apps\n    static_configs: [{targets: [%q]}]\n",
		strings.TrimPrefix(metrics.URL, "http://"))), 0o600); err != nil {
		t.Fatal(err)
	}
	startProc(t, e.dir, "prometheus", promBin, "--config.file="+pcfg, "--storage.tsdb.path="+filepath.Join(e.dir, "tsdb"),
		"--web.listen-address="+paddr, "--log.level=warn")
	e.prom = "http://" + paddr
	q := &burnrate.Prometheus{Address: e.prom, Timeout: 2 * time.Second}
	waitFor(t, 60*time.Second, "prometheus scraping the apps", func() error {
		_, ok, err := q.Query(context.Background(), `count(app_requests_total)`, time.Now())
		if err == nil && !ok {
			err = fmt.Errorf("no series yet")
		}
		return err
	})

	// The probe service, probing the good case's frontend every second.
	if r, ok := e.rollouts["good"]; ok {
		flows := filepath.Join(e.dir, "flows.yaml")
		if err := os.WriteFile(flows, []byte(fmt.Sprintf(`environments:
  e2e:
    base_url: %s
flows:
  - name: home
    schedule: {every: 1s}
    timeout: 2s
    verdict: {min_samples: 3, min_success_ratio: 1.0}
    steps:
      - name: get
        request: {url: /}
        assert:
          - status == 200
%s`, strings.TrimSuffix(r.frontend, "/"), bakeFlow(e))), 0o600); err != nil {
			t.Fatal(err)
		}
		addr := freeAddr(t)
		startProc(t, e.dir, "probed", filepath.Join(testcluster.Binaries(t), "probed"), "serve", "--env", "e2e", "--listen", addr, flows)
		e.probed = "http://" + addr
		waitFor(t, 60*time.Second, "the probe service's first pass verdict", func() error {
			resp, err := http.Get(e.probed + "/v1/verdicts/home?window=30s")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			var v struct {
				Verdict string `json:"verdict"`
				Reason  string `json:"reason"`
			}
			if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&v); err != nil {
				return err
			}
			if v.Verdict != "pass" {
				return fmt.Errorf("verdict %s: %s", v.Verdict, v.Reason)
			}
			return nil
		})
	}

	// The release policy: manifests signed by the release signer; analysis
	// and budget evidence by the controller's key.
	pub := func(k string) []byte { return e.keys[k].Public().(ed25519.PublicKey) }
	e.policy = &pb.Policy{LeaseTtlMs: 4000, Release: &pb.ReleasePolicy{Environment: "e2e", RequiredMetrics: []string{"error-rate"},
		AnalysisMaxAgeMs: 120_000, RequireBudget: true, BudgetMaxAgeMs: 120_000,
		Keys: []*pb.TrustedKey{
			{KeyId: "manifest-signer", EvidenceType: validator.EvidenceManifest, Ed25519PublicKey: pub("manifest-signer")},
			{KeyId: "controller", EvidenceType: validator.EvidenceAnalysis, Ed25519PublicKey: pub("controller")},
			{KeyId: "controller", EvidenceType: validator.EvidenceBudget, Ed25519PublicKey: pub("controller")},
		}}}
	return e
}

func startProc(t *testing.T, dir, name, bin string, args ...string) {
	t.Helper()
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("%s pid %d did not exit", name, cmd.Process.Pid)
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 4096 {
				b = b[len(b)-4096:]
			}
			t.Logf("%s log (tail):\n%s", name, b)
		}
	})
}

// waitFor polls an observable condition with a bounded deadline.
func waitFor(t *testing.T, within time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		<-time.After(100 * time.Millisecond)
	}
}

// drive sends requests through the case's frontend on new connections
// (weights apply to new load-balancing decisions) while traffic is on,
// about 25 per second, until ctx ends.
func (r *rollout) drive(ctx context.Context) {
	cl := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	tick := time.NewTicker(40 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !r.traffic.Load() {
			continue
		}
		resp, err := cl.Get(r.frontend)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
}

// answers counts which version answered n requests through the frontend.
func (r *rollout) answers(t *testing.T, n int) map[string]int {
	cl := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	out := map[string]int{}
	for range n {
		resp, err := cl.Get(r.frontend)
		if err != nil {
			t.Fatalf("%s: request through haproxy: %v", r.name, err)
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
		resp.Body.Close()
		if resp.StatusCode != 200 {
			out[fmt.Sprint(resp.StatusCode)]++
			continue
		}
		out[string(b)]++
	}
	return out
}

func (e *env) signer(k string) controller.Ed25519Signer {
	return controller.Ed25519Signer{ID: k, Key: e.keys[k]}
}

// envelope signs an in-toto statement about digest.
func (e *env) envelope(key, predicateType, digest string, predicate any) []byte {
	e.t.Helper()
	pred, _ := json.Marshal(predicate)
	st := validator.Statement{Type: validator.StatementType, PredicateType: predicateType, Predicate: pred,
		Subject: []validator.Subject{{Name: "app", Digest: map[string]string{"sha256": strings.TrimPrefix(digest, "sha256:")}}}}
	body, _ := json.Marshal(st)
	s, err := dsse.NewEnvelopeSigner(e.signer(key))
	if err != nil {
		e.t.Fatal(err)
	}
	env, err := s.SignPayload(context.Background(), validator.PayloadTypeInToto, body)
	if err != nil {
		e.t.Fatal(err)
	}
	b, _ := json.Marshal(env)
	return b
}

func releaser(name string) identity.Identity {
	return identity.Identity{Role: identity.Releaser, Name: name}
}

// bootstrap creates the case's release domain with v1 stable: a
// start-canary and a promote signed by the test (v1 predates the
// controller), then gives the lease up.
func (e *env) bootstrap(ctx context.Context, r *rollout) uint64 {
	t := e.t
	if _, err := e.c.Dial(testcluster.Operator).CreateDomain(ctx, r.domain, pb.DomainKind_DOMAIN_KIND_RELEASE, e.policy); err != nil {
		t.Fatal(err)
	}
	cl := e.c.Dial(releaser(r.name))
	l, err := cl.Acquire(ctx, r.domain, r.name)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	tr := func(a pb.ReleaseAction, canary string, ev ...*pb.Evidence) uint64 {
		resp, err := cl.ReleaseTransition(ctx, &pb.ReleaseTransition{Domain: r.domain, Holder: r.name, Epoch: l.Epoch(), Action: a, Canary: canary, Step: 1, Weight: 0, Evidence: ev, Reason: "bootstrap"})
		if err != nil || !resp.GetDecision().GetDecision().GetAllowed() {
			t.Fatalf("bootstrap %v: %v %v", a, err, resp.GetDecision())
		}
		return resp.GetLogIndex()
	}
	tr(pb.ReleaseAction_RELEASE_ACTION_START_CANARY, digestV1, &pb.Evidence{Type: validator.EvidenceManifest, Envelope: e.envelope("manifest-signer", validator.PredicateManifest, digestV1, map[string]string{"image": "app:v1"})})
	idx := tr(pb.ReleaseAction_RELEASE_ACTION_PROMOTE, "",
		&pb.Evidence{Type: validator.EvidenceAnalysis, Envelope: e.envelope("controller", validator.PredicateAnalysis, digestV1, validator.AnalysisPredicate{Verdict: "pass", Metrics: []string{"error-rate"}, WindowEndUnixMs: now})},
		&pb.Evidence{Type: validator.EvidenceBudget, Envelope: e.envelope("controller", validator.PredicateBudget, digestV1, validator.BudgetPredicate{Objective: 0.99, Remaining: 1, MeasuredAtUnixMs: now})})
	// The promote granted epoch+1: release that one.
	d, err := cl.GetDomain(ctx, r.domain)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := cl.KeepLease(ctx, r.domain, r.name, d.GetEpoch(), 0)
	if err == nil {
		_ = l2.Release(ctx)
	}
	_ = l.Release(ctx)
	return idx
}

// rolloutsYAML is the case's rollouts.yaml.
// bakeFlow: a flow probing the bake case's frontend (absolute URL) every
// second, the rollback drills' "probes green" through the probe service.
func bakeFlow(e *env) string {
	r, ok := e.rollouts["bake"]
	if !ok {
		return ""
	}
	return fmt.Sprintf(`  - name: bake-home
    schedule: {every: 1s}
    timeout: 2s
    verdict: {min_samples: 2, min_success_ratio: 1.0}
    steps:
      - name: get
        request: {url: %s}
        assert:
          - status == 200
`, r.frontend)
}

type spec struct {
	steps      string // YAML list items
	count      int    // measurements per analysis
	bake       bool
	webhooks   string // YAML (indented under webhooks:) or ""
	holder     string
	stateFile  string
	checkEpoch bool
	extraTmpl  string
	label      string // the canary's version label (default v2)
	probeFlow  bool   // rollback: the probe service's verdict on bake-home, not the URL
}

func (e *env) rolloutsYAML(r *rollout, s spec) string {
	sel := func(metric, version string) string {
		return fmt.Sprintf(`%s{case="%s",version="%s"}`, metric, r.name, version)
	}
	errRatio := func(version, window string) string {
		return fmt.Sprintf("sum(rate(%s[%s])) / sum(rate(%s[%s]))", sel("app_errors_total", version), window, sel("app_requests_total", version), window)
	}
	manifest := filepath.Join(e.dir, r.name+".manifest.dsse")
	if err := os.WriteFile(manifest, e.envelope("manifest-signer", validator.PredicateManifest, digestV2, map[string]string{"image": "app:v2"}), 0o600); err != nil {
		e.t.Fatal(err)
	}
	if s.stateFile == "" {
		s.stateFile = filepath.Join(e.dir, r.name+".fence.json")
	}
	if s.count == 0 {
		s.count = 4
	}
	rollbackProbe := fmt.Sprintf("probe: %s\n  successes: 5", r.frontend)
	if s.probeFlow {
		rollbackProbe = fmt.Sprintf("probeFlow: {address: %s, flow: bake-home, window: %s}", e.probed, drillProbeWindow)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `service: %s
domain: %s
canary: %s
manifest: %s
prometheus: %s
signing: {key: unused-key-file, keyId: controller}
leaseWait: 30s
steps:
%s
analysisTemplates:
  error-rate:
    metrics:
      - name: error-rate
        provider:
          prometheus:
            address: %s
            query: '%s'
            countQuery: 'sum(increase(%s[5s]))'
            timeout: 2s
        interval: 1s
        count: %d
        initialDelay: 3s
        successCondition: result[0] < 0.05
        failureCondition: result[0] >= 0.2
        failureLimit: 0
        inconclusiveLimit: 1
        minSamples: 10
%s
actuator:
  state: %s
  checkAuthority: %v
  haproxy: {socket: %s, backend: be_%s, stable: stable, canary: canary, timeout: 2s}
budget:
  objective: 0.99
  errorRatio: '%s'
  budgetWindow: 60s
rollback:
  %s
  timeout: 20s
`, r.name, r.domain, digestV2, manifest, e.prom, s.steps, e.prom, errRatio("$version", "5s"), sel("app_requests_total", "$version"), s.count, s.extraTmpl,
		s.stateFile, s.checkEpoch, e.socket, r.name, errRatio("v1", burnrate.WindowVar), rollbackProbe)
	if s.holder != "" {
		fmt.Fprintf(&b, "holder: %s\n", s.holder)
	}
	if s.bake {
		fmt.Fprintf(&b, `bake:
  duration: 60s
  interval: 500ms
  slo:
    objective: 0.99
    errorRatio: '%s'
    rules:
      - {name: fast, factor: 14.4, long: 10s, short: 3s}
      - {name: slow, factor: 6, long: 20s, short: 5s}
`, errRatio("$version", burnrate.WindowVar))
	}
	if s.webhooks != "" {
		b.WriteString("webhooks:\n" + s.webhooks)
	}
	if s.label == "" {
		s.label = "v2"
	}
	return strings.ReplaceAll(b.String(), "$version", s.label)
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
