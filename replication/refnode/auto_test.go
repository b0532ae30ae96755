package refnode

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	rpb "github.com/aerodb/authority/api/refnode/v1"
)

const (
	autoRuns = 20
	autoTTL  = 2 * time.Second
)

// The failover issue's acceptance 3: a domain under the automatic policy,
// three refnodes, eight writers on the primary; the primary is killed with
// kill -9 at a random moment, and no person acts. A replica must be
// promoted (by the policy: its record says INITIATOR_POLICY), every
// acknowledged write must be on it, and the write gap — the last write
// acknowledged by the old primary to the first acknowledged by the new one
// — is reported (median and max; the goal is ≤ TTL + 1 s).
func TestAutomaticFailoverNoAcknowledgedWriteLost(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 3))
	auth, ac := startAuthority(t)
	var gaps []time.Duration
	for run := 1; run <= autoRuns; run++ {
		killAfter := time.Duration(150+rng.IntN(1200)) * time.Millisecond
		t.Run(fmt.Sprintf("run%d", run), func(t *testing.T) {
			setup := Setup{Domain: fmt.Sprintf("auto-%d", run), LeaseTTL: autoTTL, InitialPrimary: "n1", Automatic: true,
				Durability: pb.Durability_DURABILITY_AUTHORITY_GATED}
			rc := newRefClusterWith(t, auth.WithT(t), ac, setup, 3, nil)
			gaps = append(gaps, autoFailover(t, rc, killAfter))
		})
	}
	slices.Sort(gaps)
	if len(gaps) > 0 {
		t.Logf("%d automatic failovers at TTL %v: write gap median %v, max %v", len(gaps), autoTTL,
			gaps[len(gaps)/2].Round(time.Millisecond), gaps[len(gaps)-1].Round(time.Millisecond))
	}
}

// autoFailover runs one kill and returns the write gap.
func autoFailover(t *testing.T, rc *refCluster, killAfter time.Duration) time.Duration {
	rc.startAll()
	n1 := rc.node("n1")
	rc.waitRole(n1, RolePrimary, 1)
	for _, p := range rc.nodes[1:] {
		rc.waitRole(p, RoleReplica, 1)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var log ackLog
	wg := runWriters(ctx, n1, 8, rc.domain, &log)
	for deadline := time.Now().Add(15 * time.Second); len(log.all()) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("no write acknowledged within 15 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(killAfter) // the random moment; not a synchronisation
	rc.kill(n1)
	stop()
	wg.Wait()
	acks := log.all()
	if len(acks) == 0 {
		t.Fatal("no write was acknowledged")
	}
	lastOld := acks[0].at
	for _, a := range acks {
		if a.at.After(lastOld) {
			lastOld = a.at
		}
	}
	// Keep writing to the survivors until one acknowledges as the new
	// primary: nobody promotes, the policy must.
	newPrimary, firstNew := firstAckOnSurvivors(t, rc, n1, 30*time.Second)
	gap := firstNew.Sub(lastOld)
	d, err := rc.ac.GetDomain(context.Background(), rc.domain)
	if err != nil {
		t.Fatal(err)
	}
	hist, err := rc.ac.History(context.Background(), rc.domain, false)
	if err != nil || len(hist) != 1 {
		t.Fatalf("history: %d records, %v", len(hist), err)
	}
	if rec := hist[0]; rec.GetRequest().GetInitiatedBy() != pb.Initiator_INITIATOR_POLICY || rec.GetHolderAfter() != newPrimary.id ||
		d.GetEpoch() != 2 || d.GetHolder() != newPrimary.id {
		t.Fatalf("the promotion was not the policy's: %v (domain at epoch %d held by %s)", rec.GetRequest(), d.GetEpoch(), d.GetHolder())
	}
	checkAcked(t, newPrimary, acks)
	t.Logf("%d writes acknowledged before kill -9 at %v; %s promoted by the policy; write gap %v",
		len(acks), killAfter, newPrimary.id, gap.Round(time.Millisecond))
	return gap
}

// firstAckOnSurvivors writes to every node but dead until one acknowledges
// at epoch 2, and returns it and when.
func firstAckOnSurvivors(t *testing.T, rc *refCluster, dead *proc, within time.Duration) (*proc, time.Time) {
	t.Helper()
	deadline := time.Now().Add(within)
	for i := 0; time.Now().Before(deadline); i++ {
		for _, p := range rc.nodes {
			if p == dead {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			r, err := p.rpc().Put(ctx, &rpb.PutRequest{Key: []byte(fmt.Sprintf("probe-%d", i)), Value: []byte("after")})
			cancel()
			if err == nil && r.Epoch == 2 {
				return p, time.Now()
			}
		}
		time.Sleep(10 * time.Millisecond) // pacing of the probe writes
	}
	t.Fatalf("no survivor acknowledged a write at epoch 2 within %v of the kill", within)
	return nil, time.Time{}
}
