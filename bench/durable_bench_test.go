package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/internal/testcluster"
)

// Durable small writes, the way issue 19 compares them with etcd's Put:
// 64 writers, each writing its own domain's watermark (a few dozen bytes)
// and waiting until it is committed (fsync on, quorum of 3).
//
//   - unbatched: each write is one Advance call carrying one advance (one
//     call, one wait), like one etcd Put per call;
//   - batched: each write is one AckGate.WaitDurable, the client library's
//     group commit (one client, one Advance call in flight carrying every
//     gate's highest pending position).
//
// A/B: AUTHORITY_BENCH_B="--flag=value ..." starts a second cluster with
// those extra authorityd flags; rounds alternate between the two clusters
// (same machine load) and both are reported, with the ratio B/A. Without
// it only the default cluster runs. A word client:ackgate-inflight=N sets
// B's client's Config.AckGateInflight instead of a server flag.
const (
	durableWriters = 64
	durableRounds  = 4
	// writes per writer per round
	durableUnbatchedPerWriter = 60
	durableBatchedPerWriter   = 150
)

// durableTarget is one cluster set up for the durable-write workloads.
type durableTarget struct {
	name  string
	k     *cluster
	cl    *client.Client
	gates []*client.AckGate
	lsn   []uint64 // next lsn per writer (each writer owns its domain)
}

func durableDomain(i int) string { return fmt.Sprintf("dw-%02d", i) }

func newDurableTarget(b *testing.B, name string, extra []string) *durableTarget {
	b.Helper()
	ctx := context.Background()
	var server []string
	cfg := func(*client.Config) {}
	for _, a := range extra {
		if v, ok := strings.CutPrefix(a, "client:ackgate-inflight="); ok {
			n, err := strconv.Atoi(v)
			must(b, err)
			cfg = func(c *client.Config) { c.AckGateInflight = n }
			continue
		}
		server = append(server, a)
	}
	c := testcluster.Start(b, 3, server...)
	k := &cluster{mode: name, c: c, op: c.Dial(testcluster.Operator)}
	for i := range durableWriters {
		d := durableDomain(i)
		_, err := k.op.CreateDomain(ctx, d, pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: 600_000, Durability: pb.Durability_DURABILITY_AUTHORITY_GATED})
		must(b, err)
		_, err = k.op.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: d, MemberId: "p"})
		must(b, err)
		_, err = k.op.AssignInitial(ctx, d, "p")
		must(b, err)
	}
	cc := c.ClientConfig(testcluster.Node("p"))
	cfg(&cc)
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cl, err := client.DialConfig(dctx, cc)
	must(b, err)
	b.Cleanup(func() { cl.Close() })
	t := &durableTarget{name: name, k: k, cl: cl, lsn: make([]uint64, durableWriters)}
	for i := range durableWriters {
		t.gates = append(t.gates, client.NewAckGate(t.cl, durableDomain(i), "p", 1))
		t.lsn[i] = 1
	}
	// Warm up: connections, leader discovery, the domains' first watermark.
	t.unbatched(b, 2)
	t.batched(b, 2)
	return t
}

func lsnHash(lsn uint64) []byte { return []byte{byte(lsn), byte(lsn >> 8), byte(lsn >> 16), 7} }

// unbatched runs per writers each making n one-advance calls; it returns
// writes per second.
func (t *durableTarget) unbatched(b *testing.B, n int) float64 {
	ctx := context.Background()
	var wg sync.WaitGroup
	start := time.Now()
	for w := range durableWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				lsn := t.lsn[w]
				t.lsn[w]++
				errs, err := t.cl.AdvanceWatermark(ctx, []*pb.WatermarkAdvance{{Domain: durableDomain(w), Epoch: 1, Holder: "p",
					Lsn: lsn, Hash: lsnHash(lsn), VisibleCommitId: lsn}})
				if err == nil {
					err = errs[0]
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return float64(durableWriters*n) / time.Since(start).Seconds()
}

// batched runs writers each waiting n times on its gate for its next lsn.
func (t *durableTarget) batched(b *testing.B, n int) float64 {
	ctx := context.Background()
	var wg sync.WaitGroup
	start := time.Now()
	for w := range durableWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				lsn := t.lsn[w]
				t.lsn[w]++
				if err := t.gates[w].WaitDurable(ctx, lsn, lsnHash(lsn), lsn); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return float64(durableWriters*n) / time.Since(start).Seconds()
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// BenchmarkClusterDurableWrites: durable small writes per second, 64
// writers, unbatched and batched (see above); A/B with AUTHORITY_BENCH_B.
func BenchmarkClusterDurableWrites(b *testing.B) {
	targets := []*durableTarget{newDurableTarget(b, "A", nil)}
	if extra := strings.Fields(os.Getenv("AUTHORITY_BENCH_B")); len(extra) > 0 {
		targets = append(targets, newDurableTarget(b, "B", extra))
		b.Logf("A: default flags; B: %s", strings.Join(extra, " "))
	}
	if extra := strings.Fields(os.Getenv("AUTHORITY_BENCH_A")); len(extra) > 0 {
		b.Fatalf("AUTHORITY_BENCH_A is not supported: A is always the default build and flags")
	}
	unb := make([][]float64, len(targets))
	bat := make([][]float64, len(targets))
	b.ResetTimer()
	for r := range durableRounds {
		// alternate the order each round so neither side always goes first
		order := slices.Clone(targets)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, t := range order {
			i := slices.Index(targets, t)
			unb[i] = append(unb[i], t.unbatched(b, durableUnbatchedPerWriter))
			bat[i] = append(bat[i], t.batched(b, durableBatchedPerWriter))
		}
	}
	b.StopTimer()
	for i, t := range targets {
		b.ReportMetric(mean(unb[i]), t.name+"-unbatched-writes/s")
		b.ReportMetric(mean(bat[i]), t.name+"-batched-writes/s")
		b.Logf("%s: unbatched %.0f/s %v; batched %.0f/s %v", t.name, mean(unb[i]), rounded(unb[i]), mean(bat[i]), rounded(bat[i]))
	}
	if len(targets) == 2 {
		b.ReportMetric(mean(unb[1])/mean(unb[0]), "B/A-unbatched")
		b.ReportMetric(mean(bat[1])/mean(bat[0]), "B/A-batched")
		b.Logf("B/A: unbatched ×%.2f, batched ×%.2f", mean(unb[1])/mean(unb[0]), mean(bat[1])/mean(bat[0]))
	}
}

func rounded(v []float64) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x + 0.5)
	}
	return out
}
