package compare

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/internal/testcluster"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
)

// Lease renewals: 1,000 leases, renewed on 8 keep-alive streams to the
// leader, sends pipelined (a sender and a receiver per stream), the same
// number of renewals on each system.
const (
	renewLeases  = 1000
	renewStreams = 8
	renewPer     = renewLeases / renewStreams
)

var renewFamily = Family{
	Name: "renew",
	Rows: []Row{
		{ID: "renew", Label: "Lease renewals/s, 1,000 leases, 8 streams to the leader", Unit: "/s", Better: Higher, Win: "faster", Lose: "slower"},
		{ID: "renew1", Label: "… ours one lease per message (etcd as above)", Unit: "/s", Better: Higher, Win: "faster", Lose: "slower"},
	},
	Etcd: etcdRenew,
	Ours: oursRenew,
}

func etcdRenew(tb testing.TB, e *Etcd, cfg Config) Values {
	ctx := context.Background()
	leader := e.LeaderClient()
	ids := make([]int64, renewLeases)
	for i := range ids {
		g, err := leader.Grant(ctx, 600)
		must(tb, err)
		ids[i] = int64(g.ID)
	}
	conn := leader.ActiveConnection()
	n, d, err := pipelined(cfg.Renewals, func(s int) renewStream {
		st, err := etcdserverpb.NewLeaseClient(conn).LeaseKeepAlive(ctx)
		must(tb, err)
		return renewStream{
			perMessage: 1,
			send:       func(i int) error { return st.Send(&etcdserverpb.LeaseKeepAliveRequest{ID: ids[s*renewPer+i%renewPer]}) },
			recv: func() (int, error) {
				r, err := st.Recv()
				if err == nil && r.TTL <= 0 {
					err = fmt.Errorf("lease %x not renewed (TTL %d)", r.ID, r.TTL)
				}
				if err != nil {
					return 0, err
				}
				return 1, nil
			},
			close: func() { st.CloseSend() },
		}
	})
	if err != nil {
		return Values{V: map[string]float64{}, Notes: []string{fmt.Sprintf("etcd renewals: not measured: %v", err)}}
	}
	rate := float64(n) / d.Seconds()
	return Values{V: map[string]float64{"renew": rate, "renew1": rate},
		Notes: []string{fmt.Sprintf("etcd renewals: LeaseKeepAlive, one lease per request (etcd's protocol has no other form), %d renewals", n)}}
}

func renewDomain(i int) string { return fmt.Sprintf("lock-%04d", i) }
func renewHolder(s int) string { return fmt.Sprintf("h%d", s) }

func oursRenew(tb testing.TB, o *Ours, cfg Config) Values {
	ctx := context.Background()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	conns := make([]*grpc.ClientConn, renewStreams)
	for s := range conns {
		conns[s] = o.LeaderConn(testcluster.Node(renewHolder(s)))
	}
	var failed atomic.Int64
	for i := range renewLeases {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			_, err := o.Op.CreateDomain(ctx, renewDomain(i), pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: 600_000})
			if err == nil {
				_, err = pbgrpc.NewLeasesClient(conns[i/renewPer]).Acquire(ctx, &pb.AcquireRequest{Domain: renewDomain(i), Holder: renewHolder(i / renewPer)})
			}
			if err != nil {
				failed.Add(1)
				tb.Log(err)
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		tb.Fatalf("ours: %d lease setups failed", failed.Load())
	}
	v := Values{V: map[string]float64{}}
	// The batched form (the client library's: a holder's leases share one
	// stream, renewals coalesced into messages) renews more per second, so
	// it runs batchedFactor times as many renewals for a comparable time.
	const batchedFactor = 5
	for _, m := range []struct {
		row        string
		perMessage int
		total      int
		what       string
	}{
		{"renew", renewPer, cfg.Renewals * batchedFactor, fmt.Sprintf("KeepAlive, %d leases per message (one holder's leases, as the client library batches them)", renewPer)},
		{"renew1", 1, cfg.Renewals, "KeepAlive, one lease per message"},
	} {
		n, d, err := oursRenewRun(tb, o, conns, m.total, m.perMessage)
		if err != nil {
			v.Notes = append(v.Notes, fmt.Sprintf("ours renewals (%s): not measured, three tries failed; the last: %v", m.what, err))
			continue
		}
		v.V[m.row] = float64(n) / d.Seconds()
		v.Notes = append(v.Notes, fmt.Sprintf("ours renewals: %s, %d renewals", m.what, n))
	}
	return v
}

// oursRenewRun runs total renewals over the streams. Renewals are served by
// the leader alone (a follower ends the stream with NOT_LEADER): after a
// leader change on a busy machine, it reconnects to the new leader and
// runs again (twice at most); the row then stays unmeasured (TestCompare
// fails it after writing the report) and the other rows still run.
func oursRenewRun(tb testing.TB, o *Ours, conns []*grpc.ClientConn, total, perMessage int) (int64, time.Duration, error) {
	for try := 0; ; try++ {
		n, d, err := pipelined(total, func(s int) renewStream { return oursRenewStream(tb, conns[s], s, perMessage) })
		if err == nil || try == 2 {
			return n, d, err
		}
		tb.Logf("ours renewals, try %d: %v; again on the current leader", try+1, err)
		for s := range conns {
			conns[s] = o.LeaderConn(testcluster.Node(renewHolder(s)))
		}
	}
}

// oursRenewStream renews stream s's leases (renewPer of them, domains
// renewDomain(s*renewPer...), holder renewHolder(s), epoch 1): perMessage 1
// sends one lease per KeepAliveRequest (the single form); renewPer sends all
// of them in each message (the batched form: domains and epochs), answered
// per lease in one KeepAliveResponse.
func oursRenewStream(tb testing.TB, conn *grpc.ClientConn, s, perMessage int) renewStream {
	st, err := pbgrpc.NewLeasesClient(conn).KeepAlive(context.Background())
	must(tb, err)
	if perMessage == 1 {
		return renewStream{
			perMessage: 1,
			send: func(i int) error {
				return st.Send(&pb.KeepAliveRequest{Domain: renewDomain(s*renewPer + i%renewPer), Holder: renewHolder(s), Epoch: 1, Seq: uint64(i)})
			},
			recv: func() (int, error) {
				r, err := st.Recv()
				if err == nil && r.ErrorReason != "" {
					err = fmt.Errorf("renewal of %s: %s", r.Domain, r.ErrorReason)
				}
				if err != nil {
					return 0, err
				}
				return 1, nil
			},
			close: func() { st.CloseSend() },
		}
	}
	domains := make([]string, perMessage)
	epochs := make([]uint64, perMessage)
	for i := range domains {
		domains[i], epochs[i] = renewDomain(s*renewPer+i), 1
	}
	return renewStream{
		perMessage: perMessage,
		send: func(i int) error {
			return st.Send(&pb.KeepAliveRequest{Holder: renewHolder(s), Domains: domains, Epochs: epochs, Seq: uint64(i)})
		},
		recv: func() (int, error) {
			r, err := st.Recv()
			if err != nil {
				return 0, err
			}
			if r.ErrorReason != "" {
				return 0, fmt.Errorf("batched renewal: %s", r.ErrorReason)
			}
			if f := r.GetFailures(); len(f) > 0 {
				return perMessage - len(f), fmt.Errorf("batched renewal: %d of %d leases refused, the first: %s", len(f), perMessage, f[0].GetErrorReason())
			}
			return len(r.GetBatchRemainingMs()), nil
		},
		close: func() { st.CloseSend() },
	}
}

// renewStream is one keep-alive stream: send its i-th message (renewing
// perMessage leases), receive one answer (how many leases it renewed; an
// error for a refused one or a broken stream).
type renewStream struct {
	perMessage int
	send       func(i int) error
	recv       func() (renewed int, err error)
	close      func()
}

// pipelined opens renewStreams streams and sends total renewals over them,
// each stream's sends and receives running concurrently. It returns the
// renewals that succeeded and the elapsed time, or the first failure.
func pipelined(total int, open func(s int) renewStream) (int64, time.Duration, error) {
	streams := make([]renewStream, renewStreams)
	for s := range streams {
		streams[s] = open(s)
	}
	var ok, failed atomic.Int64
	var firstOnce sync.Once
	var first error
	note := func(err error) { firstOnce.Do(func() { first = err }) }
	var wg sync.WaitGroup
	start := time.Now()
	for _, st := range streams {
		msgs := total / renewStreams / st.perMessage
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := range msgs {
				if st.send(i) != nil {
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for range msgs {
				n, err := st.recv()
				ok.Add(int64(n))
				if err != nil {
					failed.Add(int64(st.perMessage - n))
					note(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	for _, st := range streams {
		st.close()
	}
	if failed.Load() > 0 {
		return 0, 0, fmt.Errorf("%d renewals failed, the first: %v", failed.Load(), first)
	}
	return ok.Load(), d, nil
}
