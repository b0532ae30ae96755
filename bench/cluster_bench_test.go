// Package bench measures a real 3-process cluster (authorityd on loopback):
// promotion commit latency, lease renewal throughput and batched watermark
// throughput. `make bench` runs it with -benchtime=1x: each benchmark sets
// up its own cluster once and runs a fixed workload, reporting custom
// metrics (ns/op is not meaningful here).
package bench

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/internal/testcluster"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func dial(b *testing.B, c *testcluster.Cluster) *client.Client {
	b.Helper()
	cl, err := client.Dial(context.Background(), c.Endpoints()...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cl.Close() })
	return cl
}

// leaderConn opens a raw connection to the current leader.
func leaderConn(b *testing.B, c *testcluster.Cluster, cl *client.Client) *grpc.ClientConn {
	b.Helper()
	m, err := cl.Members(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	for _, s := range m.Servers {
		if s.Leader {
			conn, err := grpc.NewClient(s.GrpcAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { conn.Close() })
			return conn
		}
	}
	b.Fatal("no leader")
	return nil
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

func must(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkClusterPromotion: commit latency of a promotion (one log entry,
// validated on the leader and again at apply on every node). Each round the
// holder releases, the candidate reports, and the timed Promote moves
// authority to it.
func BenchmarkClusterPromotion(b *testing.B) {
	c := testcluster.Start(b, 3)
	cl := dial(b, c)
	ctx := context.Background()
	_, err := cl.CreateDomain(ctx, "bench", pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: 10_000})
	must(b, err)
	for _, m := range []string{"a", "b"} {
		_, err := cl.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: "bench", MemberId: m})
		must(b, err)
	}
	_, err = cl.AssignInitial(ctx, "bench", "a")
	must(b, err)
	hash := []byte{1, 2, 3, 4}
	errs, err := cl.AdvanceWatermark(ctx, []*pb.WatermarkAdvance{{Domain: "bench", Epoch: 1, Holder: "a", Lsn: 10, Hash: hash, VisibleCommitId: 5}})
	must(b, err)
	must(b, errs[0])
	const rounds = 200
	lat := make([]time.Duration, 0, rounds)
	holder, epoch := "a", uint64(1)
	b.ResetTimer()
	for i := range rounds {
		cand := map[string]string{"a": "b", "b": "a"}[holder]
		raw := pb.NewLeasesClient(cl.Conn())
		_, err := raw.Release(ctx, &pb.ReleaseRequest{Domain: "bench", Holder: holder, Epoch: epoch})
		must(b, err)
		_, err = cl.ReportProgress(ctx, "bench", &pb.ProgressReport{MemberId: cand, Epoch: epoch, FlushedLsn: 10, FlushedHash: hash,
			WatermarkLsn: 10, HashAtWatermark: hash, AppliedCommitId: 5, ReadSafe: true, State: pb.ReplicaState_REPLICA_STATE_STREAMING})
		must(b, err)
		exp := epoch
		start := time.Now()
		resp, err := cl.Promote(ctx, &pb.PromotionRequest{RequestId: fmt.Sprintf("p%d", i), Domain: "bench", Candidate: cand, ExpectedEpoch: &exp, Reason: "bench"})
		lat = append(lat, time.Since(start))
		must(b, err)
		holder, epoch = cand, resp.Record.EpochAfter
	}
	b.StopTimer()
	b.ReportMetric(float64(percentile(lat, 0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(rounds, "promotions")
}

// BenchmarkClusterLeaseRenewals: renewals per second for 1,000 leases held
// on the leader. Renewals never touch the log; they are pipelined on a few
// KeepAlive streams, as a client library multiplexing many leases would.
func BenchmarkClusterLeaseRenewals(b *testing.B) {
	c := testcluster.Start(b, 3)
	cl := dial(b, c)
	ctx := context.Background()
	const leases, streams, total = 1000, 8, 400_000
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range leases {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			name := fmt.Sprintf("lock-%04d", i)
			_, err := cl.CreateDomain(ctx, name, pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: 60_000})
			if err == nil {
				_, err = pb.NewLeasesClient(cl.Conn()).Acquire(ctx, &pb.AcquireRequest{Domain: name, Holder: "h"})
			}
			if err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	if b.Failed() {
		return
	}
	conn := leaderConn(b, c, cl)
	var ok, failed atomic.Int64
	b.ResetTimer()
	start := time.Now()
	for s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream, err := pb.NewLeasesClient(conn).KeepAlive(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			n := total / streams
			go func() {
				for i := range n {
					lease := (s*leases/streams + i%(leases/streams))
					if err := stream.Send(&pb.KeepAliveRequest{Domain: fmt.Sprintf("lock-%04d", lease), Holder: "h", Epoch: 1, Seq: uint64(i)}); err != nil {
						return
					}
				}
				stream.CloseSend()
			}()
			for range n {
				r, err := stream.Recv()
				if err != nil {
					b.Error(err)
					return
				}
				if r.ErrorReason != "" {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if failed.Load() > 0 {
		b.Fatalf("%d renewals failed", failed.Load())
	}
	b.ReportMetric(float64(ok.Load())/elapsed.Seconds(), "renewals/s")
}

// BenchmarkClusterWatermarks: batched watermark advances per second over
// 100 domains (one Advance call = one log entry carrying 100 advances), with
// several batches in flight, and the p99 latency of one batch.
func BenchmarkClusterWatermarks(b *testing.B) {
	c := testcluster.Start(b, 3)
	cl := dial(b, c)
	ctx := context.Background()
	const domains, writers, batchesPerWriter = 100, 8, 150
	for i := range domains {
		name := fmt.Sprintf("db-%03d", i)
		_, err := cl.CreateDomain(ctx, name, pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: 600_000})
		must(b, err)
		_, err = cl.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: name, MemberId: "p"})
		must(b, err)
		_, err = cl.AssignInitial(ctx, name, "p")
		must(b, err)
	}
	conn := leaderConn(b, c, cl)
	var lsn atomic.Uint64
	lat := make([][]time.Duration, writers)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wm := pb.NewWatermarksClient(conn)
			for range batchesPerWriter {
				req := &pb.AdvanceRequest{Advances: make([]*pb.WatermarkAdvance, domains)}
				base := lsn.Add(1)
				for d := range domains {
					req.Advances[d] = &pb.WatermarkAdvance{Domain: fmt.Sprintf("db-%03d", d), Epoch: 1, Holder: "p",
						Lsn: base, Hash: []byte{byte(base), byte(base >> 8), byte(base >> 16), 1}, VisibleCommitId: base}
				}
				t0 := time.Now()
				resp, err := wm.Advance(ctx, req)
				lat[w] = append(lat[w], time.Since(t0))
				if err != nil {
					b.Error(err)
					return
				}
				_ = resp // concurrent writers race on lsn order: a lower lsn may lose (CONFLICT), which is the point of the floor
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	b.ReportMetric(float64(len(all)*domains)/elapsed.Seconds(), "advances/s")
	b.ReportMetric(float64(percentile(all, 0.99).Microseconds())/1000, "batch-p99-ms")
	b.ReportMetric(float64(percentile(all, 0.50).Microseconds())/1000, "batch-p50-ms")
}
