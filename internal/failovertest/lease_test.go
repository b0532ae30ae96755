// Package failovertest holds process tests of leases across raft leader
// changes (failover issue, acceptance 2).
package failovertest

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/internal/testcluster"
)

const (
	// leaseKills is how many times the raft leader is killed while a
	// holder renews.
	leaseKills = 20
	killSeed   = 20261204
)

// TestLeaseSurvivesLeaderKills: a holder keeps a lock lease with the
// documented minimum TTL (client.MinLeaseTTL at authorityd's default raft
// timeouts) while the raft leader is killed with SIGKILL and restarted from
// disk leaseKills times, each kill at a random point of the renewal
// interval; the lease is never lost. It reports the lease's least slack
// (how close its local deadline came) and how long renewals stopped.
// Without the lease's retry cap (back to the client's 1 s backoff) it loses
// the lease within a few kills.
func TestLeaseSurvivesLeaderKills(t *testing.T) {
	ttl := client.MinLeaseTTL(500*time.Millisecond, 500*time.Millisecond)
	margin, interval := ttl/10, ttl/3
	cl := testcluster.Start(t, 3, "--min-lease-ttl", "0") // the minimum derived from the raft timeouts
	op := cl.Dial(testcluster.Operator)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// Below the minimum, the API refuses and says why.
	_, err := op.CreateDomain(ctx, "too-short", pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: uint64((ttl - time.Millisecond) / time.Millisecond)})
	if !errors.Is(err, client.ErrInvalidArgument) || !strings.Contains(err.Error(), "minimum lease TTL of "+ttl.String()) ||
		!strings.Contains(err.Error(), "heartbeat timeout 500ms") {
		t.Fatalf("a TTL below the minimum: %v", err)
	}
	if _, err := op.CreateDomain(ctx, "survivor", pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: uint64(ttl / time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	holder := cl.Dial(testcluster.Node("keeper"))
	if _, err := op.UpdatePolicy(ctx, "survivor", &pb.Policy{LeaseTtlMs: 1000}); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("UpdatePolicy to a TTL below the minimum: %v", err)
	}
	lease, err := holder.Acquire(ctx, "survivor", "keeper")
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(killSeed, 0))
	t.Logf("seed %d, TTL %v", killSeed, ttl)
	var worstSlack, worstGap time.Duration = ttl, 0
	for i := range leaseKills {
		leader := cl.WaitLeader()
		// Kill at a random point of the renewal cycle: the worst case is
		// just before a renewal, with one interval already used up.
		time.Sleep(time.Duration(rng.Int64N(int64(interval))))
		before := time.Until(lease.Deadline())
		cl.Kill(leader)
		killed := time.Now()
		least := before
		// Watch the lease until a renewal sent after the kill succeeded;
		// polling measures, it does not synchronise anything the lease does.
		for !lease.Deadline().After(killed.Add(ttl - margin)) {
			if err := lease.Check(); err != nil {
				t.Fatalf("kill %d: lease lost %v after killing leader %s (TTL %v): %v", i+1, time.Since(killed), leader.ID, ttl, err)
			}
			least = min(least, time.Until(lease.Deadline()))
			time.Sleep(5 * time.Millisecond)
		}
		gap := time.Since(killed)
		cl.Restart(leader)
		worstSlack, worstGap = min(worstSlack, least), max(worstGap, gap)
		t.Logf("kill %d of leader %s: slack %v at the kill, least %v; a renewal sent after the kill succeeded within %v",
			i+1, leader.ID, before.Round(time.Millisecond), least.Round(time.Millisecond), gap.Round(time.Millisecond))
	}
	t.Logf("TTL %v, %d leader kills: lease never lost; least slack %v, longest renewal gap %v (tolerance %v)",
		ttl, leaseKills, worstSlack.Round(time.Millisecond), worstGap.Round(time.Millisecond), ttl-margin-interval)
}
