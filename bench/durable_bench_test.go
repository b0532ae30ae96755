package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	durableRounds  = 6
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
	// Production logging: info level and no event log file (testcluster
	// starts servers with --log-level debug and --event-log for tests).
	// No per-identity write rate limit: its default (1,000 calls/s, burst
	// 2,000) would cap the unbatched workload, whose 64 writers share one
	// holder identity here (in production they are 64 holders).
	c := testcluster.Start(b, 3, append([]string{"--log-level=info", "--event-log=", "--write-rate-per-identity=0"}, server...)...)
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
	return t.write(b, n, func(w int, lsn uint64) error {
		errs, err := t.cl.AdvanceWatermark(ctx, []*pb.WatermarkAdvance{{Domain: durableDomain(w), Epoch: 1, Holder: "p",
			Lsn: lsn, Hash: lsnHash(lsn), VisibleCommitId: lsn}})
		if err == nil {
			err = errs[0]
		}
		return err
	})
}

// batched runs writers each waiting n times on its gate for its next lsn.
func (t *durableTarget) batched(b *testing.B, n int) float64 {
	ctx := context.Background()
	return t.write(b, n, func(w int, lsn uint64) error {
		return t.gates[w].WaitDurable(ctx, lsn, lsnHash(lsn), lsn)
	})
}

// write runs durableWriters writers, each writing its next n lsns with
// one, and returns writes per second.
func (t *durableTarget) write(b *testing.B, n int, one func(w int, lsn uint64) error) float64 {
	var wg sync.WaitGroup
	start := time.Now()
	for w := range durableWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				lsn := t.lsn[w]
				t.lsn[w]++
				if err := one(w, lsn); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return float64(durableWriters*n) / time.Since(start).Seconds()
}

// serverCPU is the CPU time (user + system) the cluster's servers used so
// far: on a shared machine, CPU per write is a steadier A/B signal than
// writes per second.
func (t *durableTarget) serverCPU(b *testing.B) time.Duration {
	var total time.Duration
	for _, s := range t.k.c.Servers {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.Pid()))
		must(b, err)
		f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
		utime, err1 := strconv.ParseUint(f[11], 10, 64)
		stime, err2 := strconv.ParseUint(f[12], 10, 64)
		must(b, errors.Join(err1, err2))
		total += time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ 100
	}
	return total
}

// appliedEntries is the number of log entries the servers applied so far
// (their apply histograms' counts), divided by the number of servers.
func (t *durableTarget) appliedEntries(b *testing.B) float64 {
	hc := t.k.c.HTTPClient(testcluster.Operator)
	total := 0.0
	for _, s := range t.k.c.Servers {
		resp, err := hc.Get(t.k.c.URL(s, "/metrics"))
		must(b, err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		must(b, err)
		for _, line := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, "authority_apply_duration_seconds_count "); ok {
				x, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				must(b, err)
				total += x
			}
		}
	}
	return total / float64(len(t.k.c.Servers))
}

// measure runs f (n writes per writer) and returns writes/s, server CPU
// µs per write and log entries per write.
func (t *durableTarget) measure(b *testing.B, f func(*testing.B, int) float64, n int) (float64, float64, float64) {
	e0, c0 := t.appliedEntries(b), t.serverCPU(b)
	rate := f(b, n)
	writes := float64(durableWriters * n)
	return rate, float64((t.serverCPU(b) - c0).Microseconds()) / writes, (t.appliedEntries(b) - e0) / writes
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
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
	type series struct{ unb, bat, unbCPU, batCPU, unbEnt, batEnt []float64 }
	res := make([]series, len(targets))
	b.ResetTimer()
	for r := range durableRounds {
		// alternate the order each round so neither side always goes first
		order := slices.Clone(targets)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, t := range order {
			s := &res[slices.Index(targets, t)]
			rate, cpu, ent := t.measure(b, t.unbatched, durableUnbatchedPerWriter)
			s.unb, s.unbCPU, s.unbEnt = append(s.unb, rate), append(s.unbCPU, cpu), append(s.unbEnt, ent)
			rate, cpu, ent = t.measure(b, t.batched, durableBatchedPerWriter)
			s.bat, s.batCPU, s.batEnt = append(s.bat, rate), append(s.batCPU, cpu), append(s.batEnt, ent)
		}
	}
	b.StopTimer()
	for i, t := range targets {
		s := res[i]
		b.ReportMetric(median(s.unb), t.name+"-unbatched-writes/s")
		b.ReportMetric(median(s.bat), t.name+"-batched-writes/s")
		b.ReportMetric(median(s.unbCPU), t.name+"-unbatched-server-cpu-µs/write")
		b.ReportMetric(median(s.batCPU), t.name+"-batched-server-cpu-µs/write")
		b.Logf("%s: unbatched median %.0f/s %v, server CPU %.0f µs/write %v, %.3f entries/write; batched median %.0f/s %v, server CPU %.0f µs/write %v, %.3f entries/write",
			t.name, median(s.unb), rounded(s.unb), median(s.unbCPU), rounded(s.unbCPU), median(s.unbEnt),
			median(s.bat), rounded(s.bat), median(s.batCPU), rounded(s.batCPU), median(s.batEnt))
	}
	if len(targets) == 2 {
		a, c := res[0], res[1]
		b.ReportMetric(median(c.unb)/median(a.unb), "B/A-unbatched")
		b.ReportMetric(median(c.bat)/median(a.bat), "B/A-batched")
		b.Logf("B/A medians: unbatched writes/s ×%.2f, CPU/write ×%.2f; batched writes/s ×%.2f, CPU/write ×%.2f",
			median(c.unb)/median(a.unb), median(c.unbCPU)/median(a.unbCPU), median(c.bat)/median(a.bat), median(c.batCPU)/median(a.batCPU))
	}
}

func rounded(v []float64) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x + 0.5)
	}
	return out
}
