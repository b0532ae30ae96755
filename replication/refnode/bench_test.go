package refnode

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	rpb "github.com/aerodb/authority/api/refnode/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/internal/testcluster"
	"github.com/aerodb/authority/replication"
)

// The ack gate's cost, 8 concurrent writers, each sub-benchmark a fixed
// 2 s measurement (b.N is not used: one measurement is one run):
//
//	fsync-only    WAL append + group fsync, acknowledged at local durability
//	fsync+gate    the same, then the ack gate: a watermark committed by 3
//	              authorityd processes (group-committed advances)
//	refnode       the whole write path: gRPC Put to a refnode primary
//	              process, fsync, ship to 2 replica processes (fsync), gate
//
// Metrics: acked-writes/s, p50-ms, p99-ms.
const (
	benchWriters  = 8
	benchDuration = 2 * time.Second
)

func BenchmarkAckGate(b *testing.B) {
	b.Run("fsync-only", func(b *testing.B) {
		w := benchWAL(b)
		measure(b, func(ctx context.Context, key []byte) error {
			_, err := w.put(key)
			return err
		})
	})
	b.Run("fsync+gate", func(b *testing.B) {
		auth, ac := startAuthority(b) // ac: the operator
		ctx := context.Background()
		if _, err := ac.CreateDomain(ctx, "bench", pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: 5000}); err != nil {
			b.Fatal(err)
		}
		if _, err := ac.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: "bench", MemberId: "p"}); err != nil {
			b.Fatal(err)
		}
		if _, err := ac.AssignInitial(ctx, "bench", "p"); err != nil {
			b.Fatal(err)
		}
		p := auth.Dial(testcluster.Node("p")) // the holder renews and advances as itself
		lease, err := p.KeepLease(ctx, "bench", "p", 1, 0)
		if err != nil {
			b.Fatal(err)
		}
		ag := client.NewAckGate(p, "bench", "p", 1, client.WithLease(lease))
		defer ag.Close()
		gate := replication.NewGate(ag, replication.Zero, 0)
		gctx, stop := context.WithCancel(ctx)
		defer stop()
		go gate.Run(gctx)
		w := benchWAL(b)
		measure(b, func(ctx context.Context, key []byte) error {
			rec, err := w.put(key)
			if err != nil {
				return err
			}
			gate.Offer(w.wal.Flushed(), rec.CommitId) // no replicas here: the gate alone
			return gate.Wait(ctx, rec.Lsn)
		})
	})
	b.Run("refnode", func(b *testing.B) {
		auth, ac := startAuthority(b)
		rc := newRefCluster(b, auth, ac, "bench", 3, nil)
		rc.startAll()
		n1 := rc.node("n1")
		rc.waitRole(n1, RolePrimary, 1)
		rc.waitRole(rc.node("n2"), RoleReplica, 1)
		rc.waitRole(rc.node("n3"), RoleReplica, 1)
		measure(b, func(ctx context.Context, key []byte) error {
			_, err := n1.rpc().Put(ctx, &rpb.PutRequest{Key: key, Value: []byte("value")})
			return err
		})
	})
}

// benchNode is a WAL with the primary's append discipline.
type benchNode struct {
	mu  sync.Mutex
	wal *WAL
}

func benchWAL(b *testing.B) *benchNode {
	w, _, err := OpenWAL(filepath.Join(b.TempDir(), "wal"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { w.Close() })
	return &benchNode{wal: w}
}

func (n *benchNode) put(key []byte) (*rpb.WalRecord, error) {
	n.mu.Lock()
	last := n.wal.Last()
	rec := NewRecord(last, 1, last.LSN+1, key, []byte("value"))
	err := n.wal.Append(rec)
	n.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return rec, n.wal.SyncTo(rec.Lsn)
}

// measure runs benchWriters writers for benchDuration and reports
// throughput and latency percentiles.
func measure(b *testing.B, write func(ctx context.Context, key []byte) error) {
	ctx, cancel := context.WithTimeout(context.Background(), benchDuration)
	defer cancel()
	var mu sync.Mutex
	var lat []time.Duration
	var seq atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range benchWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for ctx.Err() == nil {
				t0 := time.Now()
				if err := write(context.Background(), fmt.Appendf(nil, "key-%d", seq.Add(1))); err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if len(lat) == 0 {
		b.Fatal("no write acknowledged")
	}
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "acked-writes/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
}
