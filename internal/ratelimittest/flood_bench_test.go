package ratelimittest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/internal/testcluster"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// BenchmarkFloodOneIdentity: one identity writes as fast as 32 concurrent
// callers can (domain creations on the leader) for 10 s, with the default
// write limit and with it off, while an honest identity writes once every
// 20 ms and renews a lease on a KeepAlive stream every 20 ms. Reported: the
// flood's accepted and refused writes per second, the honest write and
// renewal latencies (p50, p99).
func BenchmarkFloodOneIdentity(b *testing.B) {
	for _, mode := range []struct {
		name string
		args []string
	}{{"default-limit", nil}, {"no-limit", []string{"--write-rate-per-identity", "0"}}} {
		b.Run(mode.name, func(b *testing.B) {
			for b.Loop() {
				flood(b, testcluster.Start(b, 3, mode.args...))
			}
		})
	}
}

func flood(b *testing.B, c *testcluster.Cluster) {
	const callers, d = 32, 10 * time.Second
	ctx := context.Background()
	leader := c.WaitLeader()
	op := c.Dial(testcluster.Operator)
	if _, err := op.CreateDomain(ctx, "lock", pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: 60_000}); err != nil {
		b.Fatal(err)
	}
	h := c.Dial(testcluster.Node("h"))
	lease, err := pbgrpc.NewLeasesClient(h.Conn()).Acquire(ctx, &pb.AcquireRequest{Domain: "lock", Holder: "h"})
	if err != nil {
		b.Fatal(err)
	}
	conn, err := grpc.NewClient(leader.GRPCAddr, c.DialOption(flooder))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	hconn, err := grpc.NewClient(leader.GRPCAddr, c.DialOption(testcluster.Node("h")))
	if err != nil {
		b.Fatal(err)
	}
	defer hconn.Close()
	fctx, stop := context.WithTimeout(ctx, d)
	defer stop()
	var ok, refused, failed atomic.Int64
	var wg sync.WaitGroup
	for w := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dc := pbgrpc.NewDomainsClient(conn)
			for i := 0; fctx.Err() == nil; i++ {
				_, err := dc.CreateDomain(fctx, &pb.CreateDomainRequest{Name: fmt.Sprintf("f-%d-%d", w, i), Kind: pb.DomainKind_DOMAIN_KIND_LOCK})
				switch {
				case err == nil:
					ok.Add(1)
				case status.Code(err) == codes.ResourceExhausted:
					refused.Add(1)
				case fctx.Err() == nil:
					if failed.Add(1) <= 3 {
						b.Logf("flood error: %v", err)
					}
				}
			}
		}()
	}
	var writes, renewals []time.Duration
	var honestErrs int
	hc := pbgrpc.NewDomainsClient(c.Dial(honest).Conn())
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; fctx.Err() == nil; i++ {
			t0 := time.Now()
			_, err := hc.CreateDomain(fctx, &pb.CreateDomainRequest{Name: fmt.Sprintf("h-%d", i), Kind: pb.DomainKind_DOMAIN_KIND_LOCK})
			if err != nil && fctx.Err() == nil {
				honestErrs++
			} else if err == nil {
				writes = append(writes, time.Since(t0))
			}
			time.Sleep(20 * time.Millisecond) // the honest client's pace
		}
	}()
	ka, err := pbgrpc.NewLeasesClient(hconn).KeepAlive(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for seq := uint64(0); fctx.Err() == nil; seq++ {
		t0 := time.Now()
		if err := ka.Send(&pb.KeepAliveRequest{Domain: "lock", Holder: "h", Epoch: lease.GetEpoch(), Seq: seq}); err != nil {
			b.Fatal(err)
		}
		resp, err := ka.Recv()
		if err != nil || resp.GetErrorReason() != "" {
			b.Fatalf("renewal under the flood: %v %v", resp, err)
		}
		renewals = append(renewals, time.Since(t0))
		time.Sleep(20 * time.Millisecond) // the honest client's pace
	}
	ka.CloseSend()
	wg.Wait()
	if l := c.WaitLeader(); l.ID != leader.ID {
		b.Errorf("leadership moved from %s to %s under the flood", leader.ID, l.ID)
	}
	pct := func(s []time.Duration, p float64) float64 {
		if len(s) == 0 {
			return 0
		}
		s = slices.Clone(s)
		slices.Sort(s)
		return float64(s[min(len(s)-1, int(float64(len(s))*p))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(ok.Load())/d.Seconds(), "flood-accepted/s")
	b.ReportMetric(float64(refused.Load())/d.Seconds(), "flood-refused/s")
	b.ReportMetric(pct(writes, 0.5), "honest-write-p50-ms")
	b.ReportMetric(pct(writes, 0.99), "honest-write-p99-ms")
	b.ReportMetric(pct(renewals, 0.5), "renewal-p50-ms")
	b.ReportMetric(pct(renewals, 0.99), "renewal-p99-ms")
	b.Logf("flood: %d accepted, %d refused, %d other errors in %v; honest: %d writes (%d errors), %d renewals",
		ok.Load(), refused.Load(), failed.Load(), d, len(writes), honestErrs, len(renewals))
}
