// Package runner runs one fault-injection scenario end to end: a cluster of
// real authorityd processes behind per-link raft proxies, lease-holder
// agent processes writing to a fenced resource, the logical-client
// workload, the scenario's faults, healing, convergence, then every checker
// over the merged history and every node's final event log, and the report.
// Everything runs on mutual TLS (internal/testcluster's test CA): setup as
// testcluster.Operator, the initial watermark as node:n1, each agent as
// node:<agent name>, the workload's clients as their holders (workload
// package), status reads as testcluster.Reader.
package runner

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/internal/testcluster"
	"github.com/aerodb/authority/jepsen-like/checker"
	"github.com/aerodb/authority/jepsen-like/fenced"
	"github.com/aerodb/authority/jepsen-like/history"
	"github.com/aerodb/authority/jepsen-like/nemesis"
	"github.com/aerodb/authority/jepsen-like/report"
	"github.com/aerodb/authority/jepsen-like/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// minOps is the liveness checker's minimum of ok operations before the
// first fault and after the last heal; liveWait bounds the wait for them.
const (
	minOps   = 20
	liveWait = 30 * time.Second
)

// awaitOKs returns once the workload completed want ok operations, or
// after bound.
func awaitOKs(wl *workload.Workload, want int64, bound time.Duration) {
	deadline := time.Now().Add(bound)
	for wl.OKs.Load() < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// Scenario is one run.
type Scenario struct {
	Name  string
	Seed  uint64
	Nodes int // default 3
	// Faults runs the scenario's faults (between warm-up and recovery).
	Faults func(e *nemesis.Env, r *Run)
	// Prove returns an error unless the fault demonstrably happened.
	Prove func(r *Result) error
	// ExpectStaleRejections: a pause-holder run.
	ExpectStaleRejections bool
	// Fenced, if set, starts the fenced resource (negative controls).
	Fenced func(*history.Writer) (*fenced.Server, error)
	// Warmup and Recovery are the traffic before the faults and after the
	// last heal (defaults 3 s and 4 s).
	Warmup, Recovery time.Duration
	// Repro is the one-line command that re-runs it.
	Repro string
	// ServerEnv is added to every server's environment (e.g.
	// AUTHORITYD_TEST_CLOCK_RATE); AgentArgs to every agent's flags.
	ServerEnv, AgentArgs []string
	// HandoverBound, if set, is checker.Input.HandoverBound: a holder
	// paused longer than it must have lost its domain to another holder
	// within it.
	HandoverBound time.Duration
	// StaleOneIn is workload.Config.StaleOneIn (0: the workload's default).
	StaleOneIn int
	// DBMutant is workload.Config.DBMutant: a negative control of the
	// replica-quorum domain's simulated database (tag jepsen_mutants).
	DBMutant string
}

// Run is a running scenario (what Faults may use).
type Run struct {
	Fenced   *fenced.Server
	Workload *workload.Workload
}

// Agent names (also their client names on the network).
var agentNames = []string{"agent-a", "agent-b"}

// Result of a scenario.
type Result struct {
	Dir      string
	Input    checker.Input
	Results  []checker.Result
	Elapsed  time.Duration
	Leaders  []history.Record
	Scenario Scenario
	// Counters are the faults' proof counters (nemesis.Env.Counters).
	Counters map[string]int
}

// Valid reports whether every checker passed.
func (r *Result) Valid() bool { return checker.Valid(r.Results) }

// Get returns the named checker's result.
func (r *Result) Get(name string) checker.Result {
	for _, x := range r.Results {
		if x.Name == name {
			return x
		}
	}
	return checker.Result{}
}

// FenceDomain is the lock domain the agents hold.
const FenceDomain = "fence"

// AutoDomain is the aerodb domain in automatic promotion mode: the
// workload's primary client is its holder (stalled, or cut off by the
// faults, its lease expires and the leader's policy promotes a replica);
// the policy's decided attempts are read from its History after the run
// into the history (KindPolicy).
const AutoDomain = "auto"

// QuorumDomain is the replica-quorum aerodb domain (K = QuorumK of its
// two synchronous replicas): the workload simulates its database — a
// primary acknowledging writes once K replicas hold them, replicas fenced
// by the promotions' prepares — and checker NoLostAcknowledgedDBWrites
// requires every acknowledged write on every later holder.
const (
	QuorumDomain = "qdb"
	QuorumK      = 1
)

// The servers' automatic-policy settings of every run (short, so the
// policy promotes several times per run; PolicyAntiFlapping checks them).
const (
	PolicyDwell      = 2 * time.Second
	PolicyBackoffMin = 200 * time.Millisecond
	PolicyBackoffMax = 2 * time.Second
)

// policyEnv sets them (a scenario's ServerEnv comes after and may override).
var policyEnv = []string{"AUTHORITYD_POLICY_DWELL=" + PolicyDwell.String(),
	"AUTHORITYD_POLICY_BACKOFF_MIN=" + PolicyBackoffMin.String(), "AUTHORITYD_POLICY_BACKOFF_MAX=" + PolicyBackoffMax.String()}

// Execute runs the scenario. The report goes to a temp dir, kept (and its
// path logged) when t fails or JEPSEN_KEEP is set.
func Execute(t *testing.T, sc Scenario) *Result {
	t.Helper()
	began := time.Now()
	if sc.Nodes == 0 {
		sc.Nodes = 3
	}
	if sc.Warmup == 0 {
		sc.Warmup = 3 * time.Second
	}
	if sc.Recovery == 0 {
		sc.Recovery = 4 * time.Second
	}
	dir, err := os.MkdirTemp("", "jepsen-"+sc.Name+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("JEPSEN_KEEP") != "" {
			t.Logf("report kept: %s/summary.md (timeline: %s/timeline.html)", dir, dir)
			return
		}
		os.RemoveAll(dir)
	})
	rng := rand.New(rand.NewPCG(sc.Seed, 0x5eed))
	cl, net := nemesis.Proxied(t, sc.Nodes, append(slices.Clone(policyEnv), sc.ServerEnv...))
	bin := testcluster.Binaries(t)

	mainPath := filepath.Join(dir, "history-main.jsonl")
	h, err := history.Create(mainPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	setup(t, ctx, cl)

	start := fenced.Start
	if sc.Fenced != nil {
		start = sc.Fenced
	}
	fs, err := start(h)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()

	env := &nemesis.Env{T: t, Cluster: cl, Net: net, H: h, Rng: rng, Log: t.Logf}
	for i, holder := range agentNames {
		args := append(nemesis.AgentTLSArgs(t, cl, holder), sc.AgentArgs...)
		env.Agents = append(env.Agents, nemesis.StartAgent(t, bin, net.ClientEndpoints(holder), FenceDomain, holder, 901+i, fs.URL(), dir, args...))
	}
	stopLeaders := watchLeaders(cl, h)

	var nodes []workload.Node
	for i, addr := range net.ClientEndpoints("workload") {
		nodes = append(nodes, workload.Node{ID: cl.Servers[i].ID, Addr: addr})
	}
	creds := func(id identity.Identity) credentials.TransportCredentials { return cl.Creds(id) }
	wl, err := workload.Start(workload.Config{Nodes: nodes, History: h, Seed: sc.Seed, Creds: creds, StaleOneIn: sc.StaleOneIn,
		DBMutant: sc.DBMutant, Operator: testcluster.Operator, Reader: testcluster.Reader, Domains: []workload.Domain{
			{Name: "lock-a", Kind: pb.DomainKind_DOMAIN_KIND_LOCK, Clients: 3},
			{Name: "lock-b", Kind: pb.DomainKind_DOMAIN_KIND_LOCK, Clients: 3},
			{Name: "db", Kind: pb.DomainKind_DOMAIN_KIND_AERODB, Members: []string{"n1", "n2", "n3"}, Clients: 3, Primary: true},
			{Name: FenceDomain, Kind: pb.DomainKind_DOMAIN_KIND_LOCK, Clients: 1, ReadOnly: true},
			{Name: AutoDomain, Kind: pb.DomainKind_DOMAIN_KIND_AERODB, Members: []string{"n1", "n2", "n3"}, Primary: true},
			{Name: QuorumDomain, Kind: pb.DomainKind_DOMAIN_KIND_AERODB, Members: []string{"n1", "n2", "n3"}, Quorum: QuorumK,
				Clients: 1, PromoteEvery: 1250 * time.Millisecond},
		}})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(sc.Warmup)
	// The liveness checker wants minOps ok operations before the first
	// fault and after the last heal: on a loaded machine the warm-up alone
	// may not give them, so wait for them (bounded; a cluster that is not
	// live by then fails the checker as before).
	awaitOKs(wl, minOps, liveWait)
	if sc.Faults != nil {
		sc.Faults(env, &Run{Fenced: fs, Workload: wl})
	}
	// Every server runs again, then recovery traffic.
	env.RestartAll()
	healed := wl.OKs.Load()
	time.Sleep(sc.Recovery)
	awaitOKs(wl, healed+minOps, liveWait)
	wl.Stop()
	if st, ok := wl.QuorumStats(QuorumDomain); ok {
		t.Logf("%s: %d acknowledged writes, %d takeovers, %d shipments refused, %d progress reports (%d refused; last: %q), %d renewal errors (last: %q)",
			QuorumDomain, st.Acks, st.Takeovers, st.Refusals, st.Reports, st.ReportsRefused, st.LastReportRefusal, st.RenewErrors, st.LastRenewError)
	}
	for _, a := range env.Agents {
		a.Stop()
	}
	stopLeaders()
	converge(t, cl)
	waitEventLogs(cl)
	recordPolicy(t, cl, h)
	for _, s := range cl.Servers {
		cl.Kill(s)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}

	// Merge the histories, gather node logs and failpoint hits.
	nodeDir := filepath.Join(dir, "nodes")
	os.MkdirAll(nodeDir, 0o755)
	for _, s := range cl.Servers {
		copyFile(t, s.EventLogPath(), filepath.Join(nodeDir, s.ID+".events"))
		copyFile(t, s.LogPath, filepath.Join(nodeDir, s.ID+".log"))
	}
	histPath := filepath.Join(dir, "history.jsonl")
	var merged []byte
	for _, p := range append([]string{mainPath}, agentPaths(env)...) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		merged = append(merged, b...)
	}
	if err := os.WriteFile(histPath, merged, 0o644); err != nil {
		t.Fatal(err)
	}
	in, err := checker.LoadInput(histPath, nodeDir)
	if err != nil {
		t.Fatal(err)
	}
	in.ArmedFailpoints = env.Armed
	in.FailpointHits = map[string]int{}
	armed := slices.Compact(slices.Sorted(slices.Values(env.Armed)))
	for _, s := range cl.Servers {
		if len(armed) == 0 {
			break
		}
		b, _ := os.ReadFile(s.LogPath) // once per server, not per point
		for _, fp := range armed {
			in.FailpointHits[fp] += strings.Count(string(b), "failpoint "+fp+": SIGKILL")
		}
	}
	in.MinOpsAroundFaults = minOps
	in.ExpectStaleRejections = sc.ExpectStaleRejections
	in.RequireHealedOpsPerDomain = true
	in.HandoverBound = sc.HandoverBound
	in.PolicyDwell, in.PolicyClockSlack = PolicyDwell, clockSlack(sc.ServerEnv, time.Since(began))
	in.VizDir = dir
	env.Count("forward_link_accepts", net.ForwardAccepts())
	res := &Result{Dir: dir, Input: in, Scenario: sc, Counters: env.Counters}
	res.Results = checker.CheckAll(in)
	for _, r := range in.History {
		if r.Kind == history.KindLeader {
			res.Leaders = append(res.Leaders, r)
		}
	}
	res.Elapsed = time.Since(began)
	repro := sc.Repro
	if repro == "" {
		repro = fmt.Sprintf("JEPSEN_KEEP=1 go test -tags failpoints -count=1 -run 'TestJepsen/%s$' ./jepsen-like/", sc.Name)
	}
	if err := report.Write(dir, report.Meta{Scenario: sc.Name, Seed: sc.Seed, Repro: repro, Elapsed: res.Elapsed}, in, res.Results); err != nil {
		t.Errorf("report: %v", err)
	}
	for _, r := range res.Results {
		t.Logf("%-28s valid=%-5t %s", r.Name, r.Valid, r.Details)
	}
	return res
}

func agentPaths(e *nemesis.Env) []string {
	var out []string
	for _, a := range e.Agents {
		out = append(out, a.HistoryPath)
	}
	return out
}

func copyFile(t *testing.T, from, to string) {
	b, err := os.ReadFile(from)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// setup creates the run's domains (as the operator) and advances the
// aerodb domain's watermark once (as its holder, node:n1).
func setup(t *testing.T, ctx context.Context, cl *testcluster.Cluster) {
	c, err := client.DialConfig(ctx, cl.ClientConfig(testcluster.Operator))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n1, err := client.DialConfig(ctx, cl.ClientConfig(testcluster.Node("n1")))
	if err != nil {
		t.Fatal(err)
	}
	defer n1.Close()
	for _, d := range []string{"lock-a", "lock-b"} {
		if _, err := c.CreateDomain(ctx, d, pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: 400}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.CreateDomain(ctx, FenceDomain, pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: 1000}); err != nil {
		t.Fatal(err)
	}
	// The replica-quorum domain; its first watermark is the genesis record
	// every simulated WAL starts with (its primary then advances it lazily).
	if _, err := c.CreateDomain(ctx, QuorumDomain, pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: 500,
		Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL, Durability: pb.Durability_DURABILITY_REPLICA_QUORUM, MinSyncReplicas: QuorumK,
		WatermarkIntervalMs: uint64(workload.DBAdvanceInterval.Milliseconds())}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"n1", "n2", "n3"} {
		if _, err := c.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: QuorumDomain, MemberId: m}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.AssignInitial(ctx, QuorumDomain, "n1"); err != nil {
		t.Fatal(err)
	}
	g := workload.DBGenesis
	errs, err := n1.AdvanceWatermark(ctx, []*pb.WatermarkAdvance{{Domain: QuorumDomain, Epoch: 1, Holder: "n1", Lsn: g.Lsn, Hash: g.Hash, VisibleCommitId: g.Lsn}})
	if err := errors.Join(append(errs, err)...); err != nil {
		t.Fatal(err)
	}
	// The authority-gated domains, named: replica-quorum is the default of
	// a new aerodb domain, and the runs keep both modes (qdb above).
	for _, db := range []struct {
		name string
		mode pb.PromotionMode
	}{{"db", pb.PromotionMode_PROMOTION_MODE_MANUAL}, {AutoDomain, pb.PromotionMode_PROMOTION_MODE_AUTOMATIC}} {
		if _, err := c.CreateDomain(ctx, db.name, pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: 500, Mode: db.mode,
			Durability: pb.Durability_DURABILITY_AUTHORITY_GATED}); err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{"n1", "n2", "n3"} {
			if _, err := c.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: db.name, MemberId: m}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.AssignInitial(ctx, db.name, "n1"); err != nil {
			t.Fatal(err)
		}
		// The watermark the workload's replica reports contain (promotions
		// are allowed once the holder's lease expired on the leader).
		errs, err := n1.AdvanceWatermark(ctx, []*pb.WatermarkAdvance{{Domain: db.name, Epoch: 1, Holder: "n1",
			Lsn: workload.WatermarkLsn, Hash: workload.WatermarkHash, VisibleCommitId: workload.VisibleCommitID}})
		if err := errors.Join(append(errs, err)...); err != nil {
			t.Fatal(err)
		}
	}
	// Both durability modes are in every run, as stored.
	for name, want := range map[string]pb.Durability{"db": pb.Durability_DURABILITY_AUTHORITY_GATED,
		AutoDomain: pb.Durability_DURABILITY_AUTHORITY_GATED, QuorumDomain: pb.Durability_DURABILITY_REPLICA_QUORUM} {
		d, err := c.GetDomain(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if got := d.GetPolicy().GetDurability(); got != want {
			t.Fatalf("domain %s is %v, want %v", name, got, want)
		}
	}
}

// recordPolicy reads the automatic domain's decided attempts (its History,
// denials included) and adds each as a KindPolicy record, stamped on the
// monotonic clock at the leader's wall-clock stamp.
func recordPolicy(t *testing.T, cl *testcluster.Cluster, h *history.Writer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.DialConfig(ctx, cl.ClientConfig(testcluster.Reader))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	recs, err := c.History(ctx, AutoDomain, true)
	if err != nil {
		t.Fatalf("history of %s: %v", AutoDomain, err)
	}
	offset := time.Now().UnixNano() - history.Now() // wall - monotonic
	for _, r := range recs {
		var checks []string
		for _, ch := range r.GetDecision().GetChecks() {
			if ch.GetSatisfied() && ch.GetWaivedBy() == "" {
				checks = append(checks, ch.GetName())
			}
		}
		outcome := history.OutcomeDenied
		if r.GetDecision().GetAllowed() {
			outcome = history.OutcomeAllowed
		}
		h.Add(history.Record{Kind: history.KindPolicy, Time: r.GetStampedUnixMs()*int64(time.Millisecond) - offset, Domain: AutoDomain,
			RequestID: r.GetRequest().GetRequestId(), Info: r.GetRequest().GetInitiatedBy().String(), Stamped: r.GetStampedUnixMs(), Checks: checks,
			Value: history.Value{ExpectedEpoch: r.GetEpochBefore(), Epoch: r.GetEpochAfter(), Holder: r.GetRequest().GetCandidate(),
				Outcome: outcome, Term: r.GetTerm()}})
	}
}

// clockSlack bounds how far two servers' clocks can differ after a run of
// length d with AUTHORITYD_TEST_CLOCK_RATE=r in env: each runs ahead of
// real time by at most (r−1)·d (plus 10 ms of stamp rounding).
func clockSlack(env []string, d time.Duration) time.Duration {
	slack := 10 * time.Millisecond
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "AUTHORITYD_TEST_CLOCK_RATE="); ok {
			if r, err := strconv.ParseFloat(v, 64); err == nil && r != 1 {
				slack += time.Duration(math.Abs(r-1) * float64(d))
			}
		}
	}
	return slack
}

// PolicyPromotions counts the run's allowed policy promotions.
func (r *Result) PolicyPromotions() int {
	return r.Get(checker.NamePolicyAntiFlapping).Counts["policy_promotions"]
}

// watchLeaders records a KindLeader record whenever the ready leader (or
// its term) changes.
func watchLeaders(cl *testcluster.Cluster, h *history.Writer) func() {
	done := make(chan struct{})
	stopped := make(chan struct{})
	reader := cl.DialOption(testcluster.Reader)
	go func() {
		defer close(stopped)
		var last string
		var lastTerm uint64
		conns := map[string]*grpc.ClientConn{}
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
			// (Server.Running is not safe against a concurrent Restart:
			// ask every server, dead ones just fail.)
			for _, s := range cl.Servers {
				if conns[s.ID] == nil {
					c, err := grpc.NewClient(s.GRPCAddr, reader)
					if err != nil {
						continue
					}
					conns[s.ID] = c
				}
				ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
				st, err := pbgrpc.NewClusterClient(conns[s.ID]).Status(ctx, &pb.StatusRequest{})
				cancel()
				if err != nil || st.GetRaftState() != "Leader" || !st.GetReady() {
					continue
				}
				term := st.GetHeader().GetTerm()
				if s.ID != last || term != lastTerm {
					last, lastTerm = s.ID, term
					h.Add(history.Record{Kind: history.KindLeader, Node: s.ID, Value: history.Value{Term: term}})
				}
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// converge waits (up to 20 s) until every server reports the same last
// index and state hash.
func converge(t *testing.T, cl *testcluster.Cluster) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	reader := cl.DialOption(testcluster.Reader)
	for time.Now().Before(deadline) {
		var hashes []string
		ok := true
		for _, s := range cl.Servers {
			conn, err := grpc.NewClient(s.GRPCAddr, reader)
			if err != nil {
				ok = false
				break
			}
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			st, err := pbgrpc.NewClusterClient(conn).Status(ctx, &pb.StatusRequest{})
			cancel()
			conn.Close()
			if err != nil {
				ok = false
				break
			}
			hashes = append(hashes, fmt.Sprintf("%d/%d/%s", st.GetCommitIndex(), st.GetLastIndex(), st.GetStateHash()))
		}
		if ok && len(hashes) == len(cl.Servers) {
			same := true
			for _, x := range hashes[1:] {
				same = same && x == hashes[0]
			}
			if same {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("servers did not converge within 20 s (the checkers will tell)")
}

// LeaderChanged reports whether the leader records show more than one
// (leader, term).
func (r *Result) LeaderChanged() bool {
	seen := map[string]bool{}
	for _, l := range r.Leaders {
		seen[fmt.Sprintf("%s/%d", l.Node, l.Value.Term)] = true
	}
	return len(seen) > 1
}

// waitEventLogs waits (up to 5 s) until no server's event log grew for
// 300 ms: the event sink runs behind apply.
func waitEventLogs(cl *testcluster.Cluster) {
	sizes := func() string {
		var out []string
		for _, s := range cl.Servers {
			fi, err := os.Stat(s.EventLogPath())
			if err == nil {
				out = append(out, fmt.Sprint(fi.Size()))
			}
		}
		return strings.Join(out, ",")
	}
	last, stable := sizes(), time.Now()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		if cur := sizes(); cur != last {
			last, stable = cur, time.Now()
		} else if time.Since(stable) > 300*time.Millisecond {
			return
		}
	}
}
