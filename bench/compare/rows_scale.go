package compare

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/internal/testcluster"
)

// Scale: cfg.Keys keys (etcd: Put of 64 B) or lock domains (ours:
// CreateDomain) written by cfg.Writers clients; then the leader's resident
// set size and data dir size (apparent size of its files; etcd preallocates
// 64 MiB WAL segments), the time to stream a snapshot of the whole state to
// a client (etcd: Maintenance.Snapshot; ours: SaveSnapshot), and a
// follower's catch-up: it is stopped (SIGTERM), catchupWrites more writes
// commit, and it is restarted, timed until its applied index reaches the
// leader's.
var scaleFamily = Family{
	Name: "scale",
	Rows: []Row{
		{ID: "rss", Label: "Leader RSS after {N} keys / domains", Unit: "MiB", Better: Lower, Win: "less", Lose: "more"},
		{ID: "snapshot", Label: "Snapshot of the whole state streamed to a client", Unit: "ms", Better: Lower, Win: "faster", Lose: "slower"},
		{ID: "catchup", Label: "Follower restart → caught up", Unit: "s", Better: Lower, Win: "faster", Lose: "slower"},
		{ID: "datadir", Label: "Leader data dir after {N} keys / domains", Unit: "MiB", Better: Lower, Win: "smaller", Lose: "larger"},
	},
	Etcd: etcdScale,
	Ours: oursScale,
}

func catchupWrites(cfg Config) int { return cfg.Keys / 100 }

// load runs write(i) for i in [from, to) on writers goroutines.
func load(tb testing.TB, writers, from, to int, write func(i int) error) {
	var next atomic.Int64
	next.Store(int64(from))
	var wg sync.WaitGroup
	var failed atomic.Value
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < to; i = int(next.Add(1) - 1) {
				if err := write(i); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		tb.Fatal(err)
	}
}

const mib = 1 << 20

func etcdScale(tb testing.TB, e *Etcd, cfg Config) Values {
	ctx := context.Background()
	leader := e.WaitLeader()
	c := e.NewClient(leader.ClientURL)
	val := strings.Repeat("v", 64)
	put := func(i int) error {
		_, err := c.Put(ctx, fmt.Sprintf("/k/%06d", i), val)
		return err
	}
	start := time.Now()
	load(tb, cfg.Writers, 0, cfg.Keys, put)
	loadTime := time.Since(start)
	v := map[string]float64{"rss": rssMiB(leader.Pid()), "datadir": float64(dirSize(leader.DataDir)) / mib}

	start = time.Now()
	rc, err := c.Snapshot(ctx)
	must(tb, err)
	n, err := io.Copy(io.Discard, rc)
	must(tb, err)
	rc.Close()
	v["snapshot"] = ms(time.Since(start))

	var follower *EtcdMember
	for _, m := range e.Members {
		if m != leader {
			follower = m
			break
		}
	}
	e.Stop(follower)
	load(tb, cfg.Writers, cfg.Keys, cfg.Keys+catchupWrites(cfg), put)
	st, err := c.Status(ctx, leader.ClientURL)
	must(tb, err)
	target := st.RaftIndex
	start = time.Now()
	e.Restart(follower)
	for {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		fs, err := e.Client.Status(sctx, follower.ClientURL)
		cancel()
		if err == nil && fs.RaftAppliedIndex >= target {
			break
		}
		if time.Since(start) > 2*time.Minute {
			tb.Fatal("etcd follower did not catch up within 2 min")
		}
		time.Sleep(10 * time.Millisecond)
	}
	v["catchup"] = time.Since(start).Seconds()
	return Values{V: v, Notes: []string{
		fmt.Sprintf("etcd scale: %d keys (Put 64 B, %d writers) loaded in %v; snapshot %.1f MiB; follower behind by %d writes", cfg.Keys, cfg.Writers, loadTime.Round(time.Millisecond), float64(n)/mib, catchupWrites(cfg))}}
}

func oursScale(tb testing.TB, o *Ours, cfg Config) Values {
	ctx := context.Background()
	leader := o.Leader()
	create := func(i int) error {
		_, err := o.Op.CreateDomain(ctx, fmt.Sprintf("k-%06d", i), pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: 60_000})
		return err
	}
	start := time.Now()
	load(tb, cfg.Writers, 0, cfg.Keys, create)
	loadTime := time.Since(start)
	v := map[string]float64{"rss": rssMiB(leader.Pid()), "datadir": float64(dirSize(leader.DataDir)) / mib}

	var cw countWriter
	start = time.Now()
	_, _, err := o.Op.SaveSnapshot(ctx, &cw, 0)
	must(tb, err)
	v["snapshot"] = ms(time.Since(start))
	start = time.Now()
	_, err = o.Op.Snapshot(ctx, leader.GRPCAddr)
	must(tb, err)
	raftSnap := time.Since(start)

	var follower *testcluster.Server
	for _, s := range o.C.Servers {
		if s != leader {
			follower = s
			break
		}
	}
	o.C.Stop(follower)
	load(tb, cfg.Writers, cfg.Keys, cfg.Keys+catchupWrites(cfg), create)
	target, ok := o.appliedIndex(leader)
	if !ok {
		tb.Fatal("leader's /readyz failed")
	}
	start = time.Now()
	o.C.Restart(follower)
	for {
		if idx, ok := o.appliedIndex(follower); ok && idx >= target {
			break
		}
		if time.Since(start) > 2*time.Minute {
			tb.Fatal("our follower did not catch up within 2 min")
		}
		time.Sleep(10 * time.Millisecond)
	}
	v["catchup"] = time.Since(start).Seconds()
	return Values{V: v, Notes: []string{
		fmt.Sprintf("ours scale: %d lock domains (CreateDomain, %d writers) loaded in %v; SaveSnapshot %.1f MiB; raft snapshot on the leader (Snapshot RPC, after the stream) %v; follower behind by %d writes",
			cfg.Keys, cfg.Writers, loadTime.Round(time.Millisecond), float64(cw.n)/mib, raftSnap.Round(time.Millisecond), catchupWrites(cfg))}}
}

// countWriter counts and discards.
type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }
