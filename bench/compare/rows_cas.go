package compare

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/validator"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Authority change by compare-and-set: etcd moves a key's value with a Txn
// conditioned on its ModRevision; ours is an allowed Promote with the
// expected epoch, set up as bench/ does (the holder releases, the candidate
// reports its progress; only the Promote is timed, as only the Txn is).
var casFamily = Family{
	Name: "cas",
	Rows: []Row{
		{ID: "cas-p50", Label: "Authority change by compare-and-set, p50", Unit: "ms", Better: Lower, Win: "faster", Lose: "slower"},
		{ID: "cas-p99", Label: "Authority change by compare-and-set, p99", Unit: "ms", Better: Lower, Win: "faster", Lose: "slower"},
	},
	Etcd: etcdCAS,
	Ours: oursCAS,
}

func etcdCAS(tb testing.TB, e *Etcd, cfg Config) Values {
	ctx := context.Background()
	c := e.LeaderClient()
	const key = "/authority/bench"
	put, err := c.Put(ctx, key, "a")
	must(tb, err)
	rev := put.Header.Revision
	holder := "a"
	var lat []time.Duration
	for range cfg.Rounds {
		cand := map[string]string{"a": "b", "b": "a"}[holder]
		start := time.Now()
		r, err := c.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(clientv3.OpPut(key, cand)).Commit()
		lat = append(lat, time.Since(start))
		must(tb, err)
		if !r.Succeeded {
			tb.Fatal("etcd: CAS on ModRevision failed")
		}
		rev, holder = r.Header.Revision, cand
	}
	return Values{V: map[string]float64{"cas-p50": percentile(lat, 0.5), "cas-p99": percentile(lat, 0.99)},
		Notes: []string{fmt.Sprintf("etcd CAS: Txn(ModRevision = r) Then Put, %d rounds, one client", len(lat))}}
}

func oursCAS(tb testing.TB, o *Ours, cfg Config) Values {
	p := newPromoter(tb, o, "bench")
	var lat []time.Duration
	for range cfg.Rounds {
		lat = append(lat, p.round(tb))
	}
	return Values{V: map[string]float64{"cas-p50": percentile(lat, 0.5), "cas-p99": percentile(lat, 0.99)},
		Notes: []string{fmt.Sprintf("ours CAS: Promote with expected epoch (allowed), %d rounds, one operator client", len(lat))}}
}

// promoter moves one domain's authority back and forth between members a
// and b (bench/cluster_bench_test.go's workload).
type promoter struct {
	o      *Ours
	domain string
	nodes  map[string]*client.Client
	holder string
	epoch  uint64
	n      int
}

var promoHash = []byte{1, 2, 3, 4}

func newPromoter(tb testing.TB, o *Ours, domain string) *promoter {
	ctx := context.Background()
	_, err := o.Op.CreateDomain(ctx, domain, pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: 10_000, Durability: pb.Durability_DURABILITY_AUTHORITY_GATED})
	must(tb, err)
	p := &promoter{o: o, domain: domain, nodes: map[string]*client.Client{}, holder: "a", epoch: 1}
	for _, m := range []string{"a", "b"} {
		_, err := o.Op.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: domain, MemberId: m})
		must(tb, err)
		p.nodes[m] = o.Node(m)
	}
	_, err = o.Op.AssignInitial(ctx, domain, "a")
	must(tb, err)
	errs, err := p.nodes["a"].AdvanceWatermark(ctx, []*pb.WatermarkAdvance{{Domain: domain, Epoch: 1, Holder: "a", Lsn: 10, Hash: promoHash, VisibleCommitId: 5}})
	must(tb, err)
	must(tb, errs[0])
	return p
}

// round: the holder releases, the candidate reports, and the operator's
// timed Promote moves authority to the candidate.
func (p *promoter) round(tb testing.TB) time.Duration {
	ctx := context.Background()
	cand := map[string]string{"a": "b", "b": "a"}[p.holder]
	_, err := pbgrpc.NewLeasesClient(p.nodes[p.holder].Conn()).Release(ctx, &pb.ReleaseRequest{Domain: p.domain, Holder: p.holder, Epoch: p.epoch})
	must(tb, err)
	for try := 0; ; try++ {
		_, err = p.nodes[cand].ReportProgress(ctx, p.domain, &pb.ProgressReport{MemberId: cand, Epoch: p.epoch, FlushedLsn: 10, FlushedHash: promoHash,
			WatermarkLsn: 10, HashAtWatermark: promoHash, AppliedCommitId: 5, ReadSafe: true, State: pb.ReplicaState_REPLICA_STATE_STREAMING})
		must(tb, err)
		exp := p.epoch
		start := time.Now()
		resp, err := p.o.Op.Promote(ctx, &pb.PromotionRequest{RequestId: fmt.Sprintf("p%d-%d", p.n, try), Domain: p.domain, Candidate: cand, ExpectedEpoch: &exp, Reason: "bench"})
		lat := time.Since(start)
		var denied *client.DeniedError
		if errors.As(err, &denied) && denied.Reason() == validator.ReasonMetadataMissing && try < 3 {
			continue // a leader change lost the progress report (leader memory): report again
		}
		must(tb, err)
		p.holder, p.epoch, p.n = cand, resp.Record.EpochAfter, p.n+1
		return lat
	}
}
