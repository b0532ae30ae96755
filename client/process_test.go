package client_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/internal/testcluster"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// chainHash is a stand-in for a WAL chain hash: deterministic per position,
// so concurrent callers agree on the hash at each lsn.
func chainHash(domain string, lsn uint64) []byte {
	h := sha256.Sum256(fmt.Appendf(nil, "%s/%d", domain, lsn))
	return h[:]
}

// rpcCounter counts unary RPCs by full method name.
type rpcCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *rpcCounter) interceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
	invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	r.mu.Lock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.n[method]++
	r.mu.Unlock()
	return invoker(ctx, method, req, reply, cc, opts...)
}

func (r *rpcCounter) get(method string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[method]
}

func dial(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.DialConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func timeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// as is the client configuration of identity id on cluster cl (mutual TLS
// with a certificate of the test CA), with extra dial options.
func as(cl *testcluster.Cluster, id identity.Identity, opts ...grpc.DialOption) client.Config {
	cfg := cl.ClientConfig(id)
	cfg.DialOptions = opts
	return cfg
}

// setupDomain creates an aerodb domain with members m1..m3 and m1 as holder
// (c is an operator's client: every call is an administrative one).
func setupDomain(t *testing.T, ctx context.Context, c *client.Client, name string, ttlMs uint64) {
	t.Helper()
	if _, err := c.CreateDomain(ctx, name, pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: ttlMs, Durability: pb.Durability_DURABILITY_AUTHORITY_GATED}); err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("m%d", i)
		if _, err := c.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: name, MemberId: id, Address: id + ":5432",
			Priority: uint32(i), State: pb.MemberState_MEMBER_STATE_ACTIVE}); err != nil {
			t.Fatalf("register %s/%s: %v", name, id, err)
		}
	}
	res, err := c.AssignInitial(ctx, name, "m1")
	if err != nil || res.GetEpoch() != 1 || res.GetHolder() != "m1" {
		t.Fatalf("assign %s: %v %v", name, res, err)
	}
}

func TestProcessEndToEnd(t *testing.T) {
	cl := testcluster.Start(t, 3)
	var counter rpcCounter
	// The operator administers; each member acts as itself with its node
	// certificate (m1 holds, m2 and m3 report); reads work for any role.
	op := cl.Dial(testcluster.Operator)
	c := dial(t, as(cl, testcluster.Node("m1"), grpc.WithChainUnaryInterceptor(counter.interceptor)))
	ctx := timeout(t, 60*time.Second)

	domains := []string{"db-0", "db-1", "db-2"}
	leases := map[string]*client.Lease{}
	for _, d := range domains {
		setupDomain(t, ctx, op, d, 1000)
		l, err := c.KeepLease(ctx, d, "m1", 1, time.Second)
		if err != nil {
			t.Fatalf("keep %s: %v", d, err)
		}
		leases[d] = l
	}

	// Group commit: 20 callers over 3 domains, 10 positions each.
	const callers, rounds = 20, 10
	gates := map[string]*client.AckGate{}
	for _, d := range domains {
		gates[d] = client.NewAckGate(c, d, "m1", 1, client.WithLease(leases[d]))
		defer gates[d].Close()
	}
	maxLSN := map[string]uint64{}
	var wg sync.WaitGroup
	var waits atomic.Int64
	errs := make(chan error, callers*rounds)
	for g := range callers {
		d := domains[g%len(domains)]
		for r := range rounds {
			lsn := uint64(r*callers + g + 1)
			maxLSN[d] = max(maxLSN[d], lsn)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				lsn := uint64(r*callers + g + 1)
				waits.Add(1)
				if err := gates[d].WaitDurable(ctx, lsn, chainHash(d, lsn), lsn); err != nil {
					errs <- fmt.Errorf("%s lsn %d: %w", d, lsn, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, d := range domains {
		dom, err := c.GetDomain(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if wm := dom.GetWatermark(); wm.GetLsn() != maxLSN[d] || !proto.Equal(wm, &pb.Watermark{Epoch: 1, Lsn: maxLSN[d],
			Hash: chainHash(d, maxLSN[d]), VisibleCommitId: maxLSN[d]}) {
			t.Fatalf("%s watermark %v, want lsn %d", d, wm, maxLSN[d])
		}
	}
	advances := counter.get("/authority.v1.Watermarks/Advance")
	t.Logf("AckGate: %d waits committed with %d Advance RPCs (%.1f waits per RPC)", waits.Load(), advances,
		float64(waits.Load())/float64(advances))
	if int64(advances) >= waits.Load() {
		t.Fatalf("%d Advance RPCs for %d waits: no batching", advances, waits.Load())
	}

	// A replica reports; the reply carries the watermark.
	m2 := cl.Dial(testcluster.Node("m2"))
	wm, err := m2.ReportProgress(ctx, "db-0", &pb.ProgressReport{MemberId: "m2", Epoch: 1, FlushedLsn: maxLSN["db-0"],
		FlushedHash: chainHash("db-0", maxLSN["db-0"]), WatermarkLsn: maxLSN["db-0"], HashAtWatermark: chainHash("db-0", maxLSN["db-0"]),
		AppliedCommitId: maxLSN["db-0"], ReadSafe: true, State: pb.ReplicaState_REPLICA_STATE_STREAMING})
	if err != nil || wm.GetLsn() != maxLSN["db-0"] {
		t.Fatalf("ReportProgress: %v %v", wm, err)
	}

	// The holder's lease is held: a promotion is denied, and explained.
	resp, err := op.Promote(ctx, &pb.PromotionRequest{RequestId: "p-1", Domain: "db-0", Candidate: "m2", Reason: "test"})
	var denied *client.DeniedError
	if !errors.As(err, &denied) || resp == nil {
		t.Fatalf("Promote: want *DeniedError with a response, got %v %v", resp, err)
	}
	if denied.Reason() != "PrimaryStillActive" || denied.Invariant() == "" || !resp.GetCommitted() {
		t.Fatalf("denial %q (%q), committed=%v", denied.Reason(), denied.Invariant(), resp.GetCommitted())
	}
	t.Logf("denied as expected: %v", err)
	rec := resp.GetRecord()
	// The same id again returns the recorded outcome (idempotent).
	again, err := op.Promote(ctx, &pb.PromotionRequest{RequestId: "p-1", Domain: "db-0", Candidate: "m2", Reason: "test"})
	if !errors.As(err, &denied) || !again.GetDuplicate() || !proto.Equal(again.GetRecord(), rec) {
		t.Fatalf("repeat: duplicate=%v err=%v", again.GetDuplicate(), err)
	}

	// Every server explains it identically, stale or linearizable.
	for _, s := range cl.Servers {
		one := dial(t, client.Config{Endpoints: []string{s.GRPCAddr}, Credentials: cl.Creds(testcluster.Reader)})
		waitApplied(t, ctx, one, s.GRPCAddr, rec.GetLogIndex())
		for _, opts := range [][]client.ReadOption{nil, {client.Stale()}} {
			got, err := one.Explain(ctx, "db-0", "p-1", opts...)
			if err != nil {
				t.Fatalf("explain on %s (stale=%v): %v", s.ID, len(opts) > 0, err)
			}
			if !proto.Equal(got, rec) {
				t.Fatalf("explain on %s (stale=%v) differs:\n%v\nwant\n%v", s.ID, len(opts) > 0, got, rec)
			}
		}
	}
	hist, err := c.History(ctx, "db-0", true)
	if err != nil || len(hist) != 1 || !proto.Equal(hist[0], rec) {
		t.Fatalf("History(denied): %v %v", hist, err)
	}
	if hist, err := c.History(ctx, "db-0", false, client.Stale()); err != nil || len(hist) != 0 {
		t.Fatalf("History(allowed only): %v %v", hist, err)
	}
	if _, err := c.Explain(ctx, "db-0", "nope"); !errors.Is(err, client.ErrNotFound) {
		t.Fatalf("Explain of an unknown id: %v", err)
	}

	// Listing follows pages; every domain is there.
	sums, err := c.ListDomains(ctx)
	if err != nil || len(sums) != 3 {
		t.Fatalf("ListDomains: %v %v", sums, err)
	}

	// Release: the lease ends first, then authority is released in the log.
	l := leases["db-1"]
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(l.Err(), client.ErrReleased) || l.Context().Err() == nil {
		t.Fatalf("after release: %v", l.Err())
	}
	if d, err := c.GetDomain(ctx, "db-1"); err != nil || !d.GetReleased() {
		t.Fatalf("db-1 after release: %v %v", d, err)
	}
	// The released holder's gate is fenced from now on.
	if err := gates["db-1"].WaitDurable(ctx, 10_000, chainHash("db-1", 10_000), 10_000); !errors.Is(err, client.ErrReleased) {
		t.Fatalf("gate tied to a released lease: %v", err)
	}
	g := client.NewAckGate(c, "db-1", "m1", 1)
	defer g.Close()
	if err := g.WaitDurable(ctx, 10_000, chainHash("db-1", 10_000), 10_000); !errors.Is(err, client.ErrFenced) {
		t.Fatalf("advance after release: want ErrFenced, got %v", err)
	}
	if err := g.WaitDurable(ctx, 10_001, chainHash("db-1", 10_001), 10_001); !errors.Is(err, client.ErrFenced) {
		t.Fatalf("a fenced gate must stay fenced: %v", err)
	}
	// A stale holder's renewal is fenced.
	if _, err := m2.KeepLease(ctx, "db-2", "m2", 1, time.Second); !errors.Is(err, client.ErrFenced) {
		t.Fatalf("KeepLease of a non-holder: want ErrFenced, got %v", err)
	}

	// A long-running reporter learns the watermark from the leader.
	rep := client.NewProgressReporter(cl.Dial(testcluster.Node("m3")), "db-0", 50*time.Millisecond, func() *pb.ProgressReport {
		return &pb.ProgressReport{MemberId: "m3", Epoch: 1, FlushedLsn: maxLSN["db-0"], FlushedHash: chainHash("db-0", maxLSN["db-0"]),
			State: pb.ReplicaState_REPLICA_STATE_STREAMING}
	})
	rep.Start(ctx)
	rep.Report()
	deadline := time.Now().Add(10 * time.Second)
	for rep.Watermark().GetLsn() != maxLSN["db-0"] {
		if time.Now().After(deadline) {
			t.Fatalf("reporter watermark %v, err %v", rep.Watermark(), rep.Err())
		}
		time.Sleep(10 * time.Millisecond)
	}
	rep.Close()

	// A lock: acquire, contend, release, re-acquire at the next epoch.
	if _, err := op.CreateDomain(ctx, "deploy", pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: 1000}); err != nil {
		t.Fatal(err)
	}
	runnerA, runnerB := cl.Dial(testcluster.Node("runner-a")), cl.Dial(testcluster.Node("runner-b"))
	lockA, err := runnerA.Acquire(ctx, "deploy", "runner-a")
	if err != nil || lockA.Epoch() != 1 || lockA.TTL() != time.Second {
		t.Fatalf("Acquire: %v %v", lockA, err)
	}
	if _, err := runnerB.Acquire(ctx, "deploy", "runner-b"); !errors.Is(err, client.ErrFailedPrecondition) {
		t.Fatalf("Acquire of a held lock: want ErrFailedPrecondition, got %v", err)
	}
	if _, err := runnerB.Acquire(ctx, "deploy", "runner-b", client.WithExpectedEpoch(0)); !errors.Is(err, client.ErrEpochStale) {
		t.Fatalf("Acquire with a stale expected epoch: want ErrEpochStale, got %v", err)
	}
	if err := lockA.Release(ctx); err != nil {
		t.Fatal(err)
	}
	lockB, err := runnerB.Acquire(ctx, "deploy", "runner-b", client.WithExpectedEpoch(1))
	if err != nil || lockB.Epoch() != 2 {
		t.Fatalf("Acquire after release: %v %v", lockB, err)
	}
	// The old holder is fenced by epoch.
	if _, err := runnerA.KeepLease(ctx, "deploy", "runner-a", 1, time.Second); !errors.Is(err, client.ErrFenced) {
		t.Fatalf("old lock holder: want ErrFenced, got %v", err)
	}

	reader := cl.Dial(testcluster.Reader)
	t.Run("watch", func(t *testing.T) {
		w, err := reader.Watch(ctx, 1, "db-0")
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		ev, err := w.Next(timeout(t, 5*time.Second))
		if err != nil && strings.Contains(err.Error(), "not yet") {
			t.Skip("server watch pending")
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.GetDomain() != "db-0" {
			t.Fatalf("first event %v", ev)
		}
	})
}

// readThrough reads events until one with index ≥ target and returns
// those with index ≤ target, checking (index, seq) strictly increases.
func readThrough(t *testing.T, ctx context.Context, w *client.Watcher, target uint64) []*pb.Event {
	t.Helper()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var out []*pb.Event
	var last *pb.Event
	for {
		ev, err := w.Next(rctx)
		if err != nil {
			t.Fatalf("watch: %v after %d events (target index %d)", err, len(out), target)
		}
		if last != nil && (ev.GetIndex() < last.GetIndex() || ev.GetIndex() == last.GetIndex() && ev.GetSeq() <= last.GetSeq()) {
			t.Fatalf("watch went back: (%d,%d) after (%d,%d)", ev.GetIndex(), ev.GetSeq(), last.GetIndex(), last.GetSeq())
		}
		last = ev
		if ev.GetIndex() > target {
			return out
		}
		out = append(out, ev)
		if ev.GetIndex() == target {
			return out
		}
	}
}

// waitApplied waits until the server at addr applied index (bounded).
func waitApplied(t *testing.T, ctx context.Context, c *client.Client, addr string, index uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := c.Status(ctx, addr)
		if err == nil && st.GetHeader().GetAppliedIndex() >= index {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not apply index %d: %v %v", addr, index, st, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestProcessLeaderKill(t *testing.T) {
	cl := testcluster.Start(t, 3)
	admin := cl.Dial(testcluster.Operator)
	c := cl.Dial(testcluster.Node("m1"))
	ctx := timeout(t, 60*time.Second)
	const ttl = 5 * time.Second
	setupDomain(t, ctx, admin, "wm", uint64(ttl.Milliseconds()))
	lease, err := c.KeepLease(ctx, "wm", "m1", 1, ttl)
	if err != nil {
		t.Fatal(err)
	}
	leader := cl.WaitLeader()
	// A watcher runs across the kill: it must resume without gaps or
	// duplicates (compared below with a fresh watch after the fact).
	w1, err := c.Watch(ctx, 1, "wm")
	if err != nil {
		t.Fatal(err)
	}
	defer w1.Close()

	type op struct {
		kind string
		name string
		lsn  uint64
		ok   bool
		done time.Time
	}
	var ops []op
	var killAt time.Time
	killed := make(chan struct{})
	for i := range 200 {
		if i == 60 {
			go func() {
				killAt = time.Now()
				cl.Kill(leader)
				close(killed)
			}()
		}
		octx, cancel := context.WithTimeout(ctx, 15*time.Second)
		o := op{}
		var err error
		switch i % 3 {
		case 0:
			o.kind, o.name = "create", fmt.Sprintf("k-%03d", i)
			_, err = admin.CreateDomain(octx, o.name, pb.DomainKind_DOMAIN_KIND_LOCK, nil)
		case 1:
			o.kind, o.name = "register", fmt.Sprintf("r-%03d", i)
			_, err = admin.RegisterMember(octx, &pb.RegisterMemberRequest{Domain: "wm", MemberId: o.name, Address: "x:1",
				State: pb.MemberState_MEMBER_STATE_ACTIVE})
		case 2:
			o.kind, o.lsn = "advance", uint64(i)
			var errs []error
			errs, err = c.AdvanceWatermark(octx, []*pb.WatermarkAdvance{{Domain: "wm", Epoch: 1, Holder: "m1", Lsn: o.lsn,
				Hash: chainHash("wm", o.lsn), VisibleCommitId: o.lsn}})
			if err == nil {
				err = errs[0]
			}
		}
		cancel()
		o.ok, o.done = err == nil, time.Now()
		if err != nil {
			t.Errorf("op %d (%s %s): %v", i, o.kind, o.name, err)
		}
		ops = append(ops, o)
	}
	<-killed

	// Failover: from the kill to the first successful write after it.
	var failover time.Duration
	for _, o := range ops {
		if o.ok && o.done.After(killAt) {
			failover = o.done.Sub(killAt)
			break
		}
	}
	t.Logf("failover: first successful write %v after kill -9 of leader %s", failover, leader.ID)
	if failover <= 0 || failover > 10*time.Second {
		t.Fatalf("failover took %v", failover)
	}

	// Every acknowledged write is in the new leader's state.
	newLeader := cl.WaitLeader()
	// As m1: besides reading, it renews m1's lease below.
	fresh := dial(t, client.Config{Endpoints: []string{newLeader.GRPCAddr}, Credentials: cl.Creds(testcluster.Node("m1"))})
	sums, err := fresh.ListDomains(ctx)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, s := range sums {
		have[s.GetName()] = true
	}
	dom, err := fresh.GetDomain(ctx, "wm")
	if err != nil {
		t.Fatal(err)
	}
	members := map[string]bool{}
	for _, m := range dom.GetMembers() {
		members[m.GetId()] = true
	}
	var maxLSN uint64
	for _, o := range ops {
		if !o.ok {
			continue
		}
		switch o.kind {
		case "create":
			if !have[o.name] {
				t.Errorf("acknowledged domain %s missing", o.name)
			}
		case "register":
			if !members[o.name] {
				t.Errorf("acknowledged member %s missing", o.name)
			}
		case "advance":
			maxLSN = max(maxLSN, o.lsn)
		}
	}
	if dom.GetWatermark().GetLsn() < maxLSN {
		t.Errorf("watermark %d below the acknowledged %d", dom.GetWatermark().GetLsn(), maxLSN)
	}

	// The watcher that lived through the kill saw exactly the events a
	// fresh watcher on the new leader sees.
	target := dom.GetUpdatedIndex()
	w2, err := fresh.Watch(ctx, 1, "wm")
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	seen1, seen2 := readThrough(t, ctx, w1, target), readThrough(t, ctx, w2, target)
	if len(seen1) != len(seen2) {
		t.Fatalf("watch across the kill saw %d events through index %d, a fresh watch %d", len(seen1), target, len(seen2))
	}
	for i := range seen1 {
		if !proto.Equal(seen1[i], seen2[i]) {
			t.Fatalf("event %d differs:\n%v\n%v", i, seen1[i], seen2[i])
		}
	}
	t.Logf("watch: %d events through index %d, identical across the leader kill", len(seen1), target)

	// The lease survived the leader change, renewed on the new leader with
	// a full TTL (a new leader never shortens a lease).
	if err := lease.Err(); err != nil {
		t.Fatalf("lease lost across the failover: %v", err)
	}
	if !lease.Deadline().After(killAt) {
		t.Fatalf("no renewal since the kill: deadline %v", lease.Deadline())
	}
	ka, err := pbgrpc.NewLeasesClient(fresh.Conn()).KeepAlive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ka.Send(&pb.KeepAliveRequest{Domain: "wm", Holder: "m1", Epoch: 1, Seq: 1}); err != nil {
		t.Fatal(err)
	}
	kr, err := ka.Recv()
	if err != nil || kr.GetErrorReason() != "" || kr.GetRemainingMs() != uint64(ttl.Milliseconds()) {
		t.Fatalf("renewal on the new leader: %v %v; want remaining %d", kr, err, ttl.Milliseconds())
	}
	ka.CloseSend()
}

func TestProcessLeaseLossWhenServersDie(t *testing.T) {
	cl := testcluster.Start(t, 3)
	c := cl.Dial(testcluster.Node("m1"))
	ctx := timeout(t, 30*time.Second)
	const ttl, margin = time.Second, 100 * time.Millisecond
	setupDomain(t, ctx, cl.Dial(testcluster.Operator), "db", uint64(ttl.Milliseconds()))
	lease, err := c.KeepLease(ctx, "db", "m1", 1, ttl, client.WithMargin(margin))
	if err != nil {
		t.Fatal(err)
	}
	first := lease.Deadline()
	// Let a few renewals succeed.
	for !lease.Deadline().After(first.Add(500 * time.Millisecond)) {
		select {
		case <-lease.Lost():
			t.Fatalf("lost while servers run: %v", lease.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	killAt := time.Now()
	for _, s := range cl.Servers {
		cl.Kill(s)
	}
	select {
	case <-lease.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("lease not lost within 5 s of losing every server")
	}
	lostAt := time.Now()
	dl := lease.Deadline()
	if !errors.Is(lease.Err(), client.ErrLeaseLost) {
		t.Fatalf("Err = %v, want ErrLeaseLost", lease.Err())
	}
	const slack = 100 * time.Millisecond
	t.Logf("killed all servers; lease lost %v later, %v after its deadline (deadline was %v after the kill)",
		lostAt.Sub(killAt), lostAt.Sub(dl), dl.Sub(killAt))
	if lostAt.After(dl.Add(slack)) {
		t.Fatalf("lost %v after the deadline (send + TTL − margin); slack %v", lostAt.Sub(dl), slack)
	}
	if dl.After(killAt.Add(ttl - margin)) {
		t.Fatalf("deadline %v after the kill: it must come from a renewal sent before the kill", dl.Sub(killAt))
	}
	if lease.Context().Err() == nil {
		t.Fatal("lease context not cancelled")
	}
}
