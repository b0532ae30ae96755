package refnode

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	rpb "github.com/aerodb/authority/api/refnode/v1"
	"github.com/aerodb/authority/client"
)

const switchoverRuns = 20

// switchoverSeed is fixed (printed); REFNODE_TEST_SEED overrides it.
func switchoverSeed(t *testing.T) uint64 { return seedOr(t, 13) }

// followingWriters are k writers that follow the primary: a write refused
// with NOT_PRIMARY naming a holder goes there next.
type followingWriters struct {
	rc     *refCluster
	target atomic.Pointer[proc]
	log    ackLog
	wg     sync.WaitGroup
}

func startFollowingWriters(ctx context.Context, rc *refCluster, first *proc, k int) *followingWriters {
	fw := &followingWriters{rc: rc}
	fw.target.Store(first)
	for w := range k {
		fw.wg.Add(1)
		go func() {
			defer fw.wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				p := fw.target.Load()
				key, val := fmt.Sprintf("%s-w%d-%06d", rc.domain, w, i), fmt.Sprintf("val-%d-%d", w, i)
				sent := time.Now()
				pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				r, err := p.rpc().Put(pctx, &rpb.PutRequest{Key: []byte(key), Value: []byte(val)})
				cancel()
				if err == nil {
					fw.log.add(ack{key: key, value: val, epoch: r.Epoch, commitID: r.CommitId, sent: sent, at: time.Now(), node: p.id})
					continue
				}
				fw.log.mu.Lock()
				fw.log.fails++
				fw.log.mu.Unlock()
				if info := InfoOf(err); info != nil && info.GetReason() == ReasonNotPrimary {
					for _, q := range rc.nodes {
						if q.id == info.GetMetadata()["holder"] && q != p && q.conn != nil {
							fw.target.CompareAndSwap(p, q)
						}
					}
				}
				select { // pacing of retries, not synchronisation
				case <-ctx.Done():
				case <-time.After(2 * time.Millisecond):
				}
			}
		}()
	}
	return fw
}

// waitAck waits (bounded) until a write is acknowledged at epoch.
func (fw *followingWriters) waitAck(t *testing.T, epoch uint64, within time.Duration) {
	t.Helper()
	eventually(t, within, fmt.Sprintf("a write acknowledged at epoch %d", epoch), func() (bool, string) {
		for _, a := range fw.log.all() {
			if a.epoch == epoch {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d acks", len(fw.log.all()))
	})
}

// The failover issue's acceptance 4: a planned switchover under load —
// eight writers on the primary, following it — from n1 to n2, 20 times
// (a fresh domain each). Every acknowledged write must be on the new
// primary; the write gap (last ack by the old primary → first ack by the
// new one) is reported as median and max.
func TestSwitchoverUnderLoadNoAcknowledgedWriteLost(t *testing.T) {
	rng := rand.New(rand.NewPCG(switchoverSeed(t), 4))
	auth, ac := startAuthority(t)
	var gaps []time.Duration
	for run := 1; run <= switchoverRuns; run++ {
		after := time.Duration(100+rng.IntN(400)) * time.Millisecond
		t.Run(fmt.Sprintf("run%d", run), func(t *testing.T) {
			rc := newRefCluster(t, auth.WithT(t), ac, fmt.Sprintf("switch-%d", run), 3, nil)
			gaps = append(gaps, oneSwitchover(t, rc, after))
		})
	}
	slices.Sort(gaps)
	if len(gaps) > 0 {
		t.Logf("%d switchovers under load at TTL %v: write gap median %v, max %v (min %v)", len(gaps), testTTL,
			gaps[len(gaps)/2].Round(time.Millisecond), gaps[len(gaps)-1].Round(time.Millisecond), gaps[0].Round(time.Millisecond))
	}
}

func oneSwitchover(t *testing.T, rc *refCluster, after time.Duration) time.Duration {
	rc.startAll()
	n1, n2 := rc.node("n1"), rc.node("n2")
	rc.waitRole(n1, RolePrimary, 1)
	for _, p := range rc.nodes[1:] {
		rc.waitRole(p, RoleReplica, 1)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	fw := startFollowingWriters(ctx, rc, n1, 8)
	fw.waitAck(t, 1, 15*time.Second)
	time.Sleep(after) // writes under way; not a synchronisation

	sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer scancel()
	resp, err := rc.ac.Switchover(sctx, client.Switchover{
		Request: &pb.PromotionRequest{Domain: rc.domain, Candidate: n2.id, Reason: "test: planned switchover"},
		Timeout: 10 * time.Second, Poll: 10 * time.Millisecond,
		Progress: func(f string, a ...any) { t.Logf("%s "+f, append([]any{time.Now().Format("15:04:05.000")}, a...)...) }})
	if err != nil {
		if b, rerr := os.ReadFile(n1.logPath); rerr == nil {
			t.Logf("---- n1 log (first 6 KiB) ----\n%s", b[:min(len(b), 6144)])
		}
		t.Fatalf("switchover: %v (%v)", err, resp.GetRecord().GetDecision())
	}
	t.Logf("%s switchover returned", time.Now().Format("15:04:05.000"))
	if rec := resp.GetRecord(); rec.GetEpochAfter() != 2 || rec.GetHolderAfter() != n2.id ||
		rec.GetRequest().GetInitiatedBy() != pb.Initiator_INITIATOR_SWITCHOVER || rec.GetRequest().GetExpectedEpoch() != 1 {
		t.Fatalf("switchover record: %v", rec)
	}
	fw.waitAck(t, 2, 20*time.Second)
	stop()
	fw.wg.Wait()
	acks := fw.log.all()
	var lastOld, firstNew time.Time
	var old int
	for _, a := range acks {
		switch a.epoch {
		case 1:
			old++
			if a.node != n1.id {
				t.Fatalf("ack at epoch 1 by %s", a.node)
			}
			if a.at.After(lastOld) {
				lastOld = a.at
			}
		case 2:
			if a.node != n2.id {
				t.Fatalf("ack at epoch 2 by %s", a.node)
			}
			if firstNew.IsZero() || a.at.Before(firstNew) {
				firstNew = a.at
			}
		default:
			t.Fatalf("ack at epoch %d", a.epoch)
		}
	}
	if lastOld.After(firstNew) {
		t.Fatalf("old primary acknowledged at %v, after the new one's first ack at %v", lastOld, firstNew)
	}
	rc.waitRole(n1, RoleReplica, 2) // the old holder follows the new one
	checkAcked(t, n2, acks)
	gap := firstNew.Sub(lastOld)
	t.Logf("last old ack %s, first new ack %s", lastOld.Format("15:04:05.000"), firstNew.Format("15:04:05.000"))
	t.Logf("%d writes acknowledged by n1, %d by n2, %d refused/failed; write gap %v", old, len(acks)-old, fw.log.fails, gap.Round(time.Millisecond))
	return gap
}

// A switchover to a candidate that cannot take over (n3, not running:
// it never flushes the holder's last record) times out cleanly: the
// holder stopped writes while draining, gives up before the request
// lapses, resumes writes and keeps its lease; nothing is promoted.
func TestSwitchoverTimeoutLeavesHolderInCharge(t *testing.T) {
	auth, ac := startAuthority(t)
	rc := newRefCluster(t, auth.WithT(t), ac, "switch-timeout", 3, nil)
	n1, n2, n3 := rc.node("n1"), rc.node("n2"), rc.node("n3")
	rc.start(n1)
	rc.start(n2)
	rc.waitRole(n1, RolePrimary, 1)
	rc.waitRole(n2, RoleReplica, 1)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	fw := startFollowingWriters(ctx, rc, n1, 4)
	fw.waitAck(t, 1, 15*time.Second)

	const timeout = 2 * time.Second
	sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer scancel()
	_, err := rc.ac.Switchover(sctx, client.Switchover{
		Request: &pb.PromotionRequest{Domain: rc.domain, Candidate: n3.id, Reason: "test: candidate down"},
		Timeout: timeout, Poll: 10 * time.Millisecond})
	if !errors.Is(err, client.ErrSwitchoverTimeout) {
		t.Fatalf("switchover to a dead candidate: %v, want ErrSwitchoverTimeout", err)
	}
	t.Logf("switchover: %v", err)
	ackedBefore := len(fw.log.all())
	// The old holder is still in charge: same epoch, not released, nothing
	// in the history, and it acknowledges new writes at epoch 1.
	eventually(t, 10*time.Second, "n1 acknowledging writes again after the timeout", func() (bool, string) {
		n := len(fw.log.all())
		return n > ackedBefore+10, fmt.Sprintf("%d acks (had %d)", n, ackedBefore)
	})
	d, err := rc.domainState()
	if err != nil || d.GetEpoch() != 1 || d.GetHolder() != n1.id || d.GetReleased() {
		t.Fatalf("domain after the timeout: %v %v", d, err)
	}
	hist, err := rc.ac.History(context.Background(), rc.domain, true)
	if err != nil || len(hist) != 0 {
		t.Fatalf("history after the timeout: %d records, %v", len(hist), err)
	}
	if st, err := rc.status(n1); err != nil || st.Role != RolePrimary || st.Epoch != 1 {
		t.Fatalf("n1 after the timeout: %v %v", st, err)
	}
	stop()
	fw.wg.Wait()
	for _, a := range fw.log.all() {
		if a.epoch != 1 || a.node != n1.id {
			t.Fatalf("ack %v: want epoch 1 by n1", a)
		}
	}
	checkAcked(t, n1, fw.log.all())
}

// The same planned switchover on replica-quorum domains (3 runs): the
// draining holder asks for its final watermark at once (not at the next
// interval), so the candidate's promotion finds it.
func TestReplicaQuorumSwitchoverUnderLoad(t *testing.T) {
	rng := rand.New(rand.NewPCG(switchoverSeed(t), 20))
	auth, ac := startAuthority(t)
	for run := 1; run <= 3; run++ {
		after := time.Duration(100+rng.IntN(400)) * time.Millisecond
		t.Run(fmt.Sprintf("run%d", run), func(t *testing.T) {
			setup := Setup{Domain: fmt.Sprintf("rq-switch-%d", run), LeaseTTL: testTTL, InitialPrimary: "n1",
				Durability: pb.Durability_DURABILITY_REPLICA_QUORUM, MinSyncReplicas: 1, WatermarkInterval: 5 * time.Second}
			rc := newRefClusterWith(t, auth.WithT(t), ac, setup, 3, nil)
			gap := oneSwitchover(t, rc, after)
			t.Logf("write gap %v", gap.Round(time.Millisecond))
		})
	}
}
