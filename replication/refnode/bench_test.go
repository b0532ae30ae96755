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

// The ack path's cost, 8 concurrent writers (b.N is not used: one
// measurement is one run; use -benchtime 1x):
//
//	fsync-only    WAL append + group fsync, acknowledged at local durability
//	fsync+gate    the same, then the ack gate: a watermark committed by 3
//	              authorityd processes (group-committed advances)
//	              (each a fixed 2 s measurement)
//	refnode/...   the whole write path: gRPC Put to a refnode primary
//	              process, fsync, ship to 2 replica processes (fsync), then
//	              (one authority cluster, one domain and three refnodes per
//	              mode, measured in 4 interleaved rounds of 1 s each)
//	  no-authority      acknowledged once K=1 replica flushed, no
//	                    watermark at all (REFNODE_BENCH_NO_AUTHORITY_WAIT,
//	                    a failpoints-only hook: the baseline, not safe)
//	  authority-gated   acknowledged once a committed watermark covers it
//	  replica-quorum    acknowledged once K=1 synchronous replica of the
//	                    epoch flushed it; the watermark advanced lazily,
//	                    at most once per benchWatermarkInterval
//
// Metrics: acked-writes/s, p50-ms, p99-ms; for refnode/*, the watermark
// entries the authority recorded for the domain during the measurement
// (authority.watermark.advanced events), per benchWatermarkInterval, and
// the smallest gap between two of them (leader stamps).
const (
	benchWriters           = 8
	benchDuration          = 2 * time.Second
	benchRounds            = 4
	benchRoundDuration     = time.Second
	benchWatermarkInterval = 200 * time.Millisecond
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
		if _, err := ac.CreateDomain(ctx, "bench", pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: 5000,
			Durability: pb.Durability_DURABILITY_AUTHORITY_GATED}); err != nil {
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
	b.Run("refnode", benchRefnodeModes)
}

// benchMode is one refnode write path of the comparison.
type benchMode struct {
	name  string
	setup Setup
	env   []string // every node's extra environment
	rc    *refCluster
	lat   []time.Duration
	spent time.Duration
	wins  [][2]int64 // measurement windows (unix ms)
}

// benchRefnodeModes compares the three refnode write paths on one
// authority cluster, each with its own domain and three refnode
// processes: benchRounds rounds, each measuring every mode for
// benchRoundDuration in turn (the order rotates), so that a machine whose
// load changes over the run (other tests) weighs on all modes alike. Then
// one sub-benchmark per mode reports its pooled numbers.
func benchRefnodeModes(b *testing.B) {
	auth, ac := startAuthority(b)
	// A stall of the shared machine must not cost the lease. The baseline
	// is the gated path with its watermark wait replaced by a no-op.
	base := Setup{LeaseTTL: 5 * time.Second, InitialPrimary: "n1", Durability: pb.Durability_DURABILITY_AUTHORITY_GATED}
	rq := base
	rq.Durability, rq.MinSyncReplicas, rq.WatermarkInterval = pb.Durability_DURABILITY_REPLICA_QUORUM, 1, benchWatermarkInterval
	modes := []*benchMode{
		{name: "no-authority", setup: base, env: []string{"REFNODE_BENCH_NO_AUTHORITY_WAIT=1"}},
		{name: "authority-gated", setup: base},
		{name: "replica-quorum", setup: rq},
	}
	byDomain := map[string]*benchMode{}
	for _, m := range modes {
		m.setup.Domain = "bench-" + m.name
		byDomain[m.setup.Domain] = m
		env := map[string][]string{"n1": m.env, "n2": m.env, "n3": m.env}
		m.rc = newRefClusterWith(b, auth, ac, m.setup, 3, env)
		m.rc.startAll()
	}
	for _, m := range modes {
		m.rc.waitRole(m.rc.node("n1"), RolePrimary, 1)
		m.rc.waitRole(m.rc.node("n2"), RoleReplica, 1)
		m.rc.waitRole(m.rc.node("n3"), RoleReplica, 1)
	}
	// The authority's watermark entries, per domain (leader stamps).
	wctx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	w, err := ac.Watch(wctx, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	var mu sync.Mutex
	stamps := map[string][]int64{}
	var sentinel atomic.Int64
	sentinel.Store(1<<63 - 1)
	seenSentinel := make(chan struct{})
	go func() {
		defer close(seenSentinel)
		for ev := range w.Events() {
			if ev.GetType() != "authority.watermark.advanced" {
				continue
			}
			if ev.GetStampedUnixMs() > sentinel.Load() {
				return
			}
			mu.Lock()
			stamps[ev.GetDomain()] = append(stamps[ev.GetDomain()], ev.GetStampedUnixMs())
			mu.Unlock()
		}
	}()
	b.ResetTimer()
	for r := range benchRounds {
		for i := range modes {
			m := modes[(r+i)%len(modes)]
			n1 := m.rc.node("n1")
			lat, start, end := collect(b, benchRoundDuration, func(ctx context.Context, key []byte) error {
				_, err := n1.rpc().Put(ctx, &rpb.PutRequest{Key: key, Value: []byte("value")})
				return err
			})
			m.lat, m.spent = append(m.lat, lat...), m.spent+end.Sub(start)
			m.wins = append(m.wins, [2]int64{start.UnixMilli(), end.UnixMilli()})
		}
	}
	b.StopTimer()
	// Every entry stamped before now has been delivered once one stamped
	// after it arrives (events come in log order): one gated write makes
	// one.
	sentinel.Store(time.Now().UnixMilli())
	gated := byDomain["bench-authority-gated"].rc.node("n1")
	for {
		pctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := gated.rpc().Put(pctx, &rpb.PutRequest{Key: []byte("sentinel"), Value: []byte("v")})
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		select {
		case <-seenSentinel:
		case <-time.After(10 * time.Millisecond):
			continue // stamped in the same millisecond as the sentinel: write again
		}
		break
	}
	mu.Lock()
	defer mu.Unlock()
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			reportLatencies(b, m.lat, m.spent)
			all := stamps[m.setup.Domain]
			inWindows := 0
			for _, ms := range all {
				for _, win := range m.wins {
					if ms >= win[0] && ms <= win[1] {
						inWindows++
						break
					}
				}
			}
			b.ReportMetric(float64(inWindows), "wm-entries")
			b.ReportMetric(float64(inWindows)*float64(benchWatermarkInterval)/float64(m.spent), "wm-entries/200ms")
			if len(all) >= 2 {
				gap := all[1] - all[0]
				for i := 2; i < len(all); i++ {
					gap = min(gap, all[i]-all[i-1])
				}
				b.ReportMetric(float64(gap), "wm-min-gap-ms")
			}
			b.Logf("%s: %d acknowledged writes and %d watermark entries in %v (%d rounds); %d entries over the domain's life",
				m.name, len(m.lat), inWindows, m.spent.Round(time.Millisecond), benchRounds, len(all))
		})
	}
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
	b.ResetTimer()
	lat, start, end := collect(b, benchDuration, write)
	b.StopTimer()
	reportLatencies(b, lat, end.Sub(start))
}

// collect runs benchWriters writers for d and returns every
// acknowledgement's latency, and when it started and ended.
func collect(b *testing.B, d time.Duration, write func(ctx context.Context, key []byte) error) ([]time.Duration, time.Time, time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var mu sync.Mutex
	var lat []time.Duration
	var seq atomic.Int64
	var wg sync.WaitGroup
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
	return lat, start, time.Now()
}

// reportLatencies reports throughput and latency percentiles of lat
// measured over elapsed.
func reportLatencies(b *testing.B, lat []time.Duration, elapsed time.Duration) {
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
