package compare

import (
	"context"
	"fmt"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/internal/testcluster"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Locks: one CAS entry taking a free lock (etcd: Txn on CreateRevision = 0
// putting the key with the holder's lease; ours: Acquire), and a handover:
// the holder releases (etcd: Delete; ours: Release) and another takes it.
// Each call goes to the leader; rounds alternate acquire and handover.
var lockFamily = Family{
	Name: "lock",
	Rows: []Row{
		{ID: "acquire-p50", Label: "One CAS entry taking a free lock, p50", Unit: "ms", Better: Lower, Win: "faster", Lose: "slower"},
		{ID: "handover-p50", Label: "Lock handover (release + acquire), p50", Unit: "ms", Better: Lower, Win: "faster", Lose: "slower"},
	},
	Etcd: etcdLock,
	Ours: oursLock,
}

func etcdLock(tb testing.TB, e *Etcd, cfg Config) Values {
	ctx := context.Background()
	c := e.LeaderClient()
	g, err := c.Grant(ctx, 60)
	must(tb, err)
	acquire := func(key, holder string) {
		r, err := c.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, holder, clientv3.WithLease(g.ID))).Commit()
		must(tb, err)
		if !r.Succeeded {
			tb.Fatalf("etcd: lock %s not free", key)
		}
	}
	release := func(key string) {
		_, err := c.Delete(ctx, key)
		must(tb, err)
	}
	var acq, hand []time.Duration
	for i := range cfg.Rounds {
		start := time.Now()
		acquire("/lock/free", "x")
		acq = append(acq, time.Since(start))
		release("/lock/free")

		if i == 0 {
			acquire("/lock/handover", "x")
		}
		start = time.Now()
		release("/lock/handover")
		acquire("/lock/handover", fmt.Sprint("h", i%2))
		hand = append(hand, time.Since(start))
	}
	return Values{V: map[string]float64{"acquire-p50": percentile(acq, 0.5), "handover-p50": percentile(hand, 0.5)},
		Notes: []string{fmt.Sprintf("etcd locks: Txn(CreateRevision = 0) Then Put with a lease; release = Delete; %d rounds", cfg.Rounds)}}
}

func oursLock(tb testing.TB, o *Ours, cfg Config) Values {
	ctx := context.Background()
	for _, d := range []string{"free", "handover"} {
		_, err := o.Op.CreateDomain(ctx, d, pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: 60_000})
		must(tb, err)
	}
	holders := []string{"x", "y"}
	leases := map[string]pbgrpc.LeasesClient{}
	for _, h := range holders {
		leases[h] = pbgrpc.NewLeasesClient(o.LeaderConn(testcluster.Node(h)))
	}
	acquire := func(domain, holder string) uint64 {
		r, err := leases[holder].Acquire(ctx, &pb.AcquireRequest{Domain: domain, Holder: holder})
		must(tb, err)
		return r.Epoch
	}
	release := func(domain, holder string, epoch uint64) {
		_, err := leases[holder].Release(ctx, &pb.ReleaseRequest{Domain: domain, Holder: holder, Epoch: epoch})
		must(tb, err)
	}
	var acq, hand []time.Duration
	var handEpoch uint64
	for i := range cfg.Rounds {
		start := time.Now()
		ep := acquire("free", "x")
		acq = append(acq, time.Since(start))
		release("free", "x", ep)

		if i == 0 {
			handEpoch = acquire("handover", "x")
		}
		from, to := holders[i%2], holders[(i+1)%2]
		start = time.Now()
		release("handover", from, handEpoch)
		handEpoch = acquire("handover", to)
		hand = append(hand, time.Since(start))
	}
	return Values{V: map[string]float64{"acquire-p50": percentile(acq, 0.5), "handover-p50": percentile(hand, 0.5)},
		Notes: []string{fmt.Sprintf("ours locks: Acquire and Release RPCs to the leader; %d rounds", cfg.Rounds)}}
}
