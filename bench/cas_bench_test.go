package bench

import (
	"context"
	"fmt"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/internal/testcluster"
)

// BenchmarkClusterCAS: the three compare-and-set measures of issue 19 on
// one mutual-TLS cluster, rounds interleaved so machine load falls on all
// three alike: an allowed Promote with expected epoch (the authority
// change), an Acquire of a free lock (one CAS entry) and a lock handover
// (the holder's Release, then another holder's Acquire). Each call goes
// to the leader over a connection as the identity it needs.
func BenchmarkClusterCAS(b *testing.B) {
	const rounds = 200
	ctx := context.Background()
	k := start(b, false)
	p := newDomainPromoter(b, k, "cas")
	const lock = "cas-lock"
	_, err := k.op.CreateDomain(ctx, lock, pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: 60_000})
	must(b, err)
	holders := []string{"x", "y"}
	leases := map[string]pbgrpc.LeasesClient{}
	for _, h := range holders {
		leases[h] = pbgrpc.NewLeasesClient(k.leaderConn(b, testcluster.Node(h)))
	}
	acquire := func(h string) uint64 {
		resp, err := leases[h].Acquire(ctx, &pb.AcquireRequest{Domain: lock, Holder: h})
		must(b, err)
		return resp.GetEpoch()
	}
	release := func(h string, epoch uint64) {
		_, err := leases[h].Release(ctx, &pb.ReleaseRequest{Domain: lock, Holder: h, Epoch: epoch})
		must(b, err)
	}
	var promo, acq, hand []time.Duration
	b.ResetTimer()
	for i := range rounds {
		steps := []func(){
			func() { promo = append(promo, p.round(b)) },
			func() { // a free lock: acquire (timed), release
				start := time.Now()
				e := acquire("x")
				acq = append(acq, time.Since(start))
				release("x", e)
			},
			func() { // x holds; timed: x releases, y acquires; y releases
				e := acquire("x")
				start := time.Now()
				release("x", e)
				e = acquire("y")
				hand = append(hand, time.Since(start))
				release("y", e)
			},
		}
		for j := range steps {
			steps[(i+j)%len(steps)]()
		}
	}
	b.StopTimer()
	report := func(name string, d []time.Duration) string {
		p50, p99 := percentile(d, 0.50), percentile(d, 0.99)
		b.ReportMetric(ms(p50), name+"-p50-ms")
		b.ReportMetric(ms(p99), name+"-p99-ms")
		return fmt.Sprintf("%s p50 %.2f ms p99 %.2f ms", name, ms(p50), ms(p99))
	}
	b.Logf("over %d rounds each: %s; %s; %s", rounds, report("promote", promo), report("acquire", acq), report("handover", hand))
}
