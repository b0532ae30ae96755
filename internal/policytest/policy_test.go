package policytest

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/internal/testcluster"
)

const ttl = 2 * time.Second

var h10 = []byte("h10")

func mustOK(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// waitFor polls cond (every 20 ms) until it holds or within passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// policyCount sums authority_policy_attempts_total{result,reason} over
// every running server (whichever leads counts).
func policyCount(t *testing.T, c *testcluster.Cluster, result, reason string) int {
	t.Helper()
	re := regexp.MustCompile(`(?m)^authority_policy_attempts_total\{reason="` + regexp.QuoteMeta(reason) + `",result="` + result + `"\} (\d+)$`)
	hc := c.HTTPClient(testcluster.Reader)
	n := 0
	for _, s := range c.Servers {
		if !s.Running() {
			continue
		}
		resp, err := hc.Get(c.URL(s, "/metrics"))
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("/metrics: %d %v", resp.StatusCode, err)
		}
		if m := re.FindSubmatch(body); m != nil {
			v, _ := strconv.Atoi(string(m[1]))
			n += v
		}
	}
	return n
}

// domain sets up the automatic aerodb domain "db" (TTL 2 s) with members
// n1 (the holder, keeping its lease through its own client, which it
// returns, and having advanced the watermark to lsn 10), n2 and n3
// (priority 5), both reporting every 100 ms that they hold the watermark,
// at the epoch in the returned variable; it returns once both reports
// reached the leader.
func domain(ctx context.Context, t *testing.T, c *testcluster.Cluster) (op, n1 *client.Client, lease *client.Lease, epoch *atomic.Uint64) {
	t.Helper()
	op = c.Dial(testcluster.Operator)
	_, err := op.CreateDomain(ctx, "db", pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_AUTOMATIC,
		LeaseTtlMs: uint64(ttl.Milliseconds()), ReportMaxAgeMs: 30000, MinSyncReplicas: 1, Durability: pb.Durability_DURABILITY_AUTHORITY_GATED})
	mustOK(t, "create", err)
	for _, m := range []struct {
		id   string
		prio uint32
	}{{"n1", 0}, {"n2", 0}, {"n3", 5}} {
		_, err := op.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: "db", MemberId: m.id, Priority: m.prio, State: pb.MemberState_MEMBER_STATE_ACTIVE})
		mustOK(t, "register "+m.id, err)
	}
	_, err = op.AssignInitial(ctx, "db", "n1")
	mustOK(t, "assign", err)

	// The holder n1 keeps its lease and advances the watermark.
	n1 = c.Dial(testcluster.Node("n1"))
	lease, err = n1.KeepLease(ctx, "db", "n1", 1, ttl)
	mustOK(t, "n1 keeps its lease", err)
	errs, err := n1.AdvanceWatermark(ctx, []*pb.WatermarkAdvance{{Domain: "db", Epoch: 1, Holder: "n1", Lsn: 10, Hash: h10, VisibleCommitId: 5}})
	mustOK(t, "advance", err)
	mustOK(t, "advance result", errs[0])

	// The replicas report that they hold the watermark, at the epoch they
	// follow.
	epoch = new(atomic.Uint64)
	epoch.Store(1)
	var reporters []*client.ProgressReporter
	for _, id := range []string{"n2", "n3"} {
		rc := c.Dial(testcluster.Node(id))
		rep := client.NewProgressReporter(rc, "db", 100*time.Millisecond, func() *pb.ProgressReport {
			return &pb.ProgressReport{MemberId: id, Epoch: epoch.Load(), FlushedLsn: 10, FlushedHash: h10, WatermarkLsn: 10,
				HashAtWatermark: h10, AppliedCommitId: 5, ReadSafe: true, State: pb.ReplicaState_REPLICA_STATE_STREAMING}
		})
		rep.Start(ctx)
		t.Cleanup(rep.Close)
		reporters = append(reporters, rep)
	}
	// The leader answers a report with the watermark: both reached it.
	waitFor(t, 10*time.Second, "replicas' reports reach the leader", func() bool {
		for _, r := range reporters {
			if r.Watermark().GetLsn() != 10 {
				return false
			}
		}
		return true
	})
	return op, n1, lease, epoch
}

// TestAutomaticPolicyPromotesWithoutAnOperator: the holder stops renewing;
// the leader's policy promotes the best replica (n3: as advanced as n2,
// higher priority) on its own, initiated by POLICY; the new holder's lease
// then expires within the dwell time and nothing is promoted again.
func TestAutomaticPolicyPromotesWithoutAnOperator(t *testing.T) {
	c := testcluster.Start(t, 3, "--policy-dwell=1h")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	op, n1, lease, epoch := domain(ctx, t, c)
	// The holder still holds: nothing happens while it renews.
	if d, err := op.GetDomain(ctx, "db"); err != nil || d.Epoch != 1 || d.Holder != "n1" {
		t.Fatalf("before: %v %v", d, err)
	}

	// n1 stops: no renewal from now on.
	stopped := time.Now()
	if err := lease.Check(); err != nil {
		t.Fatalf("lease lost before the stop: %v", err)
	}
	n1.Close()
	var promotedAt time.Time
	waitFor(t, 4*ttl, "a replica promoted by the policy", func() bool {
		d, err := op.GetDomain(ctx, "db")
		if err == nil && d.Epoch == 2 {
			promotedAt = time.Now()
			return true
		}
		return false
	})
	d, err := op.GetDomain(ctx, "db")
	mustOK(t, "get", err)
	if d.Holder != "n3" {
		t.Fatalf("holder %q, want n3 (as advanced as n2, higher priority)", d.Holder)
	}
	hist, err := op.History(ctx, "db", true)
	mustOK(t, "history", err)
	if len(hist) != 1 {
		t.Fatalf("%d attempts, want exactly the policy's one: %v", len(hist), hist)
	}
	rec := hist[0]
	if rec.Request.GetInitiatedBy() != pb.Initiator_INITIATOR_POLICY || !strings.HasPrefix(rec.Request.GetRequestId(), "policy-1-") ||
		!rec.Decision.GetAllowed() || rec.Lease.GetState() != pb.LeaseState_LEASE_STATE_EXPIRED || rec.Request.GetExpectedEpoch() != 1 {
		t.Fatalf("record = %v", rec)
	}
	stamped := time.UnixMilli(rec.StampedUnixMs)
	t.Logf("holder stop → promotion committed (leader's stamp): %v; → observed by the test: %v (TTL %v)",
		stamped.Sub(stopped).Round(time.Millisecond), promotedAt.Sub(stopped).Round(time.Millisecond), ttl)
	if n := policyCount(t, c, "allowed", ""); n != 1 {
		t.Fatalf("authority_policy_attempts_total{result=allowed} = %d, want 1", n)
	}

	// n3 never renews; n2 now follows epoch 2. n3's lease expires within the
	// dwell time: the policy skips, nothing is promoted.
	epoch.Store(2)
	waitFor(t, 4*ttl, "the policy's dwell skip after n3's lease expired", func() bool {
		if d, err := op.GetDomain(ctx, "db"); err == nil && d.Epoch != 2 {
			t.Fatalf("promoted again within the dwell: %s@%d", d.Holder, d.Epoch)
		}
		return policyCount(t, c, "skipped", "dwell") > 0
	})
	d, err = op.GetDomain(ctx, "db")
	mustOK(t, "get", err)
	hist, err = op.History(ctx, "db", true)
	mustOK(t, "history", err)
	if d.Epoch != 2 || d.Holder != "n3" || len(hist) != 1 {
		t.Fatalf("within the dwell: %s@%d, %d attempts", d.Holder, d.Epoch, len(hist))
	}
}

// TestAutomaticPolicyAcrossALeaderKill: the holder stops and the raft
// leader is killed (kill -9) before the lease could expire. The old
// leader's policy is gone with it; the new leader resets the lease to a
// full TTL, the replicas' reports reach it again, and its own policy
// promotes exactly once, with its own lease observation.
func TestAutomaticPolicyAcrossALeaderKill(t *testing.T) {
	c := testcluster.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	op, n1, _, _ := domain(ctx, t, c)
	old := c.WaitLeader()
	n1.Close()
	c.Kill(old)
	killed := time.Now()
	waitFor(t, 30*time.Second, "a replica promoted by the new leader's policy", func() bool {
		d, err := op.GetDomain(ctx, "db")
		return err == nil && d.Epoch == 2
	})
	t.Logf("holder stop + leader kill → promotion observed: %v (TTL %v)", time.Since(killed).Round(time.Millisecond), ttl)
	hist, err := op.History(ctx, "db", true)
	mustOK(t, "history", err)
	if len(hist) != 1 {
		t.Fatalf("%d attempts, want 1: %v", len(hist), hist)
	}
	rec := hist[0]
	if rec.Request.GetInitiatedBy() != pb.Initiator_INITIATOR_POLICY || !rec.Decision.GetAllowed() || rec.HolderAfter != "n3" ||
		rec.Lease.GetLeaderId() == old.ID || rec.Lease.GetLeaderId() == "" {
		t.Fatalf("record = %v (killed leader %s)", rec, old.ID)
	}
}
