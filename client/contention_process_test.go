package client_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/internal/testcluster"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	eventAcquired = "authority.lease.acquired"
	eventReleased = "authority.lease.released"
	contentionTTL = 2000 // ms
)

// contentionDuration is 10 s, or AUTHORITY_CONTENTION_DURATION (e.g. 30s,
// the acceptance run).
func contentionDuration(t *testing.T) time.Duration {
	d := 10 * time.Second
	if v := os.Getenv("AUTHORITY_CONTENTION_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatalf("AUTHORITY_CONTENTION_DURATION: %v", err)
		}
	}
	return d
}

// lastIndex is the leader's raft last index, once it has applied it.
func lastIndex(t *testing.T, ctx context.Context, op *client.Client, cl *testcluster.Cluster) (uint64, string) {
	t.Helper()
	for {
		leader := cl.WaitLeader()
		st, err := op.Status(ctx, leader.GRPCAddr)
		if err == nil && st.GetRaftState() == "Leader" && st.GetAppliedIndex() >= st.GetLastIndex() {
			return st.GetLastIndex(), leader.ID
		}
		if ctx.Err() != nil {
			t.Fatalf("leader status: %v %v", st, err)
		}
	}
}

// Acceptance 3 (issue 12): eight clients, each its own node identity,
// contend for one lock with WithWait, holding it for a short random time
// and releasing it. The log grows by at most one entry per grant and one
// per release: waiting and refusals happen on the leader and write nothing.
// The entries are counted from the leader's last index and the event log
// (a rejected entry emits no event).
func TestProcessLockContention(t *testing.T) {
	const clients, domain = 8, "contended"
	const seed = uint64(20261204)
	run := contentionDuration(t)
	t.Logf("seed %d, %d clients for %v", seed, clients, run)
	cl := testcluster.Start(t, 3)
	op := cl.Dial(testcluster.Operator)
	ctx := timeout(t, run+90*time.Second)
	if _, err := op.CreateDomain(ctx, domain, pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: contentionTTL}); err != nil {
		t.Fatal(err)
	}
	cs := make([]*client.Client, clients)
	var resends resendCounter
	for i := range cs {
		cfg := cl.ClientConfig(testcluster.Node(fmt.Sprintf("c%d", i)))
		cfg.DialOptions = []grpc.DialOption{grpc.WithChainUnaryInterceptor(resends.intercept)}
		c, err := client.DialConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		cs[i] = c
	}
	before, leaderBefore := lastIndex(t, ctx, op, cl)
	w, err := op.Watch(ctx, before+1)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	type tally struct {
		grants, releases, refusals int
		// unknown: an Acquire that ended with the run's deadline without
		// an answer (its grant may have committed: the events tell).
		unknown int
		waited  time.Duration
	}
	tallies := make([]tally, clients)
	end := time.Now().Add(run)
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(seed, uint64(i)))
			holder := fmt.Sprintf("c%d", i)
			tl := &tallies[i]
			for time.Now().Before(end) {
				actx, cancel := context.WithDeadline(ctx, end)
				start := time.Now()
				l, err := cs[i].Acquire(actx, domain, holder, client.WithWait())
				tl.waited += time.Since(start)
				expired := actx.Err() != nil
				cancel()
				if errors.Is(err, client.ErrFailedPrecondition) {
					tl.refusals++
					if time.Until(end) > time.Second {
						continue // refused early (only without a working wait): try again
					}
					break // the run ended while waiting: nothing proposed
				}
				if err != nil && expired {
					tl.unknown++ // the run's deadline passed first
					t.Logf("%s: acquire at the end of the run: %v", holder, err)
					break
				}
				if err != nil {
					errs <- fmt.Errorf("%s acquire: %w", holder, err)
					return
				}
				tl.grants++
				hold := time.NewTimer(5*time.Millisecond + time.Duration(rnd.Int64N(int64(45*time.Millisecond))))
				select {
				case <-hold.C:
				case <-l.Lost():
					errs <- fmt.Errorf("%s lost its lease at epoch %d while holding: %w", holder, l.Epoch(), l.Err())
					return
				}
				if err := l.Release(ctx); err != nil {
					errs <- fmt.Errorf("%s release: %w", holder, err)
					return
				}
				tl.releases++
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	after, leaderAfter := lastIndex(t, ctx, op, cl)
	// A marker entry after the run ends the event stream we read.
	if _, err := op.CreateDomain(ctx, "marker", pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: contentionTTL}); err != nil {
		t.Fatal(err)
	}
	eventful := map[uint64]bool{}
	var grantEvents, releaseEvents, otherEntries int
	var epoch uint64
	held := false
	for {
		ev, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		if ev.GetIndex() > after {
			break
		}
		first := !eventful[ev.GetIndex()]
		eventful[ev.GetIndex()] = true
		switch {
		case ev.GetType() == eventAcquired && ev.GetDomain() == domain:
			grantEvents++
			if held || ev.GetEpoch() != epoch+1 {
				t.Fatalf("grant at index %d: epoch %d after epoch %d (held %t)", ev.GetIndex(), ev.GetEpoch(), epoch, held)
			}
			epoch, held = ev.GetEpoch(), true
		case ev.GetType() == eventReleased && ev.GetDomain() == domain:
			releaseEvents++
			if !held || ev.GetEpoch() != epoch {
				t.Fatalf("release at index %d: epoch %d, lock at epoch %d (held %t)", ev.GetIndex(), ev.GetEpoch(), epoch, held)
			}
			held = false
		case first:
			otherEntries++ // a leader's note (leader change, lease expiry)
			t.Logf("other entry %d: %s %s %v", ev.GetIndex(), ev.GetType(), ev.GetDomain(), ev.GetFields())
		}
	}
	var grants, releases, unknown int
	for i, tl := range tallies {
		t.Logf("c%d: %d grants, %d releases, %d refused (a wait ended by its deadline: nothing proposed), %d unanswered at the end, %v in Acquire",
			i, tl.grants, tl.releases, tl.refusals, tl.unknown, tl.waited.Round(time.Millisecond))
		grants, releases, unknown = grants+tl.grants, releases+tl.releases, unknown+tl.unknown
		if tl.grants == 0 {
			t.Errorf("c%d was never granted the lock in %v", i, run)
		}
	}
	entries := int(after - before)
	rejected := entries - len(eventful)
	t.Logf("log %d → %d (leader %s → %s): %d entries for %d grants and %d releases (%.2f per grant); %d other entries, %d without events (rejected or raft's own)",
		before, after, leaderBefore, leaderAfter, entries, grantEvents, releaseEvents, float64(entries)/float64(max(grantEvents, 1)), otherEntries, rejected)
	if grantEvents < grants || grantEvents > grants+unknown || releaseEvents != releases {
		t.Errorf("events: %d grants, %d releases; clients saw %d (and %d unanswered) and %d", grantEvents, releaseEvents, grants, unknown, releases)
	}
	if grants < clients {
		t.Errorf("only %d grants in %v", grants, run)
	}
	// A leader change adds raft's own no-op and barrier entries (and a
	// leader_changed note, counted in otherEntries). An Acquire or Release
	// attempt that failed in transit may have committed: the client
	// library re-sends it, and the FSM rejects the copy (one entry, no
	// event). Those are the client's retries, not refusals written by the
	// leader.
	allowance := resends.count(t)
	if leaderAfter != leaderBefore {
		allowance += 2
	}
	if entries-otherEntries-allowance > grantEvents+releaseEvents {
		t.Errorf("the log grew by %d entries (%d of them notes) for %d grants and %d releases: more than one per grant and per release",
			entries, otherEntries, grantEvents, releaseEvents)
	}
}

// A waiting Acquire sent to a follower is forwarded with the caller's
// deadline: it blocks on the leader, ends with a definite FAILED_PRECONDITION
// (not OUTCOME_UNKNOWN) shortly before the deadline, and is granted when the
// holder releases.
func TestProcessAcquireWaitForwarded(t *testing.T) {
	cl := testcluster.Start(t, 3)
	op := cl.Dial(testcluster.Operator)
	ctx := timeout(t, 60*time.Second)
	if _, err := op.CreateDomain(ctx, "fw", pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: contentionTTL}); err != nil {
		t.Fatal(err)
	}
	l, err := cl.Dial(testcluster.Node("c0")).Acquire(ctx, "fw", "c0")
	if err != nil {
		t.Fatal(err)
	}
	leader := cl.WaitLeader()
	var follower *testcluster.Server
	for _, s := range cl.Servers {
		if s != leader {
			follower = s
			break
		}
	}
	conn, err := grpc.NewClient(follower.GRPCAddr, cl.DialOption(testcluster.Node("c1")))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	leases := pbgrpc.NewLeasesClient(conn)
	before, _ := lastIndex(t, ctx, op, cl)

	wctx, cancel := context.WithTimeout(ctx, time.Second)
	start := time.Now()
	_, err = leases.Acquire(wctx, &pb.AcquireRequest{Domain: "fw", Holder: "c1", Wait: true})
	cancel()
	waited := time.Since(start)
	if reason := reasonOf(err); reason != pb.ReasonFailedPrecondition || waited < 500*time.Millisecond {
		t.Fatalf("wait through a follower until the deadline: %v (reason %q) after %v", err, reason, waited)
	}
	t.Logf("refused after %v: %v", waited.Round(time.Millisecond), err)

	// Through the client library: the caller's deadline bounds the wait,
	// not the (shorter) per-attempt RequestTimeout.
	cfg := cl.ClientConfig(testcluster.Node("c2"))
	cfg.RequestTimeout = 300 * time.Millisecond
	c2 := dial(t, cfg)
	wctx, cancel = context.WithTimeout(ctx, 1500*time.Millisecond)
	start = time.Now()
	_, err = c2.Acquire(wctx, "fw", "c2", client.WithWait())
	cancel()
	if waited := time.Since(start); !errors.Is(err, client.ErrFailedPrecondition) || waited < time.Second {
		t.Fatalf("client wait until the deadline: %v after %v", err, waited)
	}

	type result struct {
		resp *pb.LeaseResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		resp, err := leases.Acquire(wctx, &pb.AcquireRequest{Domain: "fw", Holder: "c1", Wait: true})
		done <- result{resp, err}
	}()
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	got := <-done
	if got.err != nil || got.resp.GetHolder() != "c1" || got.resp.GetEpoch() != 2 {
		t.Fatalf("granted after the release: %v %v", got.resp, got.err)
	}
	if after, _ := lastIndex(t, ctx, op, cl); after-before != 2 {
		t.Fatalf("the log grew by %d entries for one release and one grant", after-before)
	}
}

func reasonOf(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// resendCounter counts Acquire and Release attempts that ended without a
// server's answer (the call failed in transit or by the attempt's
// deadline): each may have committed, and its re-send may then write one
// rejected entry.
type resendCounter struct {
	mu     sync.Mutex
	failed []string
}

func (r *resendCounter) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	if err == nil || (method != pbgrpc.Leases_Acquire_FullMethodName && method != pbgrpc.Leases_Release_FullMethodName) {
		return err
	}
	if inTransit(err) {
		r.mu.Lock()
		r.failed = append(r.failed, fmt.Sprintf("%s: %.300v", method, err))
		r.mu.Unlock()
	}
	return err
}

// inTransit: an OUTCOME_UNKNOWN answer, or a transport failure without any
// answer (the classes the client library re-sends an idempotent call for).
func inTransit(err error) bool {
	st := status.Convert(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason() == pb.ReasonOutcomeUnknown
		}
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Unknown:
		return true
	}
	return false
}

// count logs and returns the attempts that failed in transit.
func (r *resendCounter) count(t *testing.T) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.failed {
		t.Logf("attempt without an answer: %s", f)
	}
	return len(r.failed)
}
