package compare

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/internal/testcluster"
)

// Durable small writes: cfg.Writers concurrent writers for cfg.WriteFor,
// each waiting for its write to commit before the next. etcd: Put of 64 B
// to the writer's own key. Ours, unbatched: one watermark advance per
// Advance call on the writer's own domain; batched: each writer waits on its
// domain's AckGate of one shared client, which commits the pending positions
// of all domains in one Advance (group commit, as the client library does).
// etcd's client has no such batching: its batched row is the same Put
// workload measured again.
var writesFamily = Family{
	Name: "writes",
	Rows: []Row{
		{ID: "writes", Label: "Durable small writes/s, 64 writers, unbatched", Unit: "/s", Better: Higher, Win: "faster", Lose: "slower"},
		{ID: "writes-batched", Label: "Durable small writes/s, 64 writers, batched as the client library does (AckGate)", Unit: "/s", Better: Higher, Win: "faster", Lose: "slower"},
	},
	Etcd: etcdWrites,
	Ours: oursWrites,
}

// writeLoop runs w writers for d, each calling write(writer, i) until the
// time is up, and returns completed writes per second.
func writeLoop(tb testing.TB, writers int, d time.Duration, write func(w, i int) error) float64 {
	var done atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	start := time.Now()
	deadline := start.Add(d)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				if err := write(w, i); err != nil {
					failed.Store(err)
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		tb.Fatal(err)
	}
	return float64(done.Load()) / time.Since(start).Seconds()
}

func etcdWrites(tb testing.TB, e *Etcd, cfg Config) Values {
	c := e.LeaderClient()
	val := strings.Repeat("v", 64)
	put := func(w, _ int) error {
		_, err := c.Put(context.Background(), fmt.Sprintf("/w/%03d", w), val)
		return err
	}
	v := map[string]float64{"writes": writeLoop(tb, cfg.Writers, cfg.WriteFor, put)}
	v["writes-batched"] = writeLoop(tb, cfg.Writers, cfg.WriteFor, put)
	return Values{V: v, Notes: []string{fmt.Sprintf("etcd writes: Put 64 B, %d writers, %v per row (batched row: the same workload again)", cfg.Writers, cfg.WriteFor)}}
}

func writeDomain(w int) string { return fmt.Sprintf("db-%03d", w) }

func oursWrites(tb testing.TB, o *Ours, cfg Config) Values {
	ctx := context.Background()
	for w := range cfg.Writers {
		_, err := o.Op.CreateDomain(ctx, writeDomain(w), pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: 600_000, Durability: pb.Durability_DURABILITY_AUTHORITY_GATED})
		must(tb, err)
		_, err = o.Op.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: writeDomain(w), MemberId: "p"})
		must(tb, err)
		_, err = o.Op.AssignInitial(ctx, writeDomain(w), "p")
		must(tb, err)
	}
	lsn := make([]uint64, cfg.Writers) // per writer (domain), strictly increasing
	next := func(w int) (uint64, []byte) {
		lsn[w]++
		n := lsn[w]
		return n, []byte{byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24)}
	}
	wm := pbgrpc.NewWatermarksClient(o.LeaderConn(testcluster.Node("p")))
	unbatched := writeLoop(tb, cfg.Writers, cfg.WriteFor, func(w, _ int) error {
		n, h := next(w)
		r, err := wm.Advance(ctx, &pb.AdvanceRequest{Advances: []*pb.WatermarkAdvance{{Domain: writeDomain(w), Epoch: 1, Holder: "p", Lsn: n, Hash: h, VisibleCommitId: n}}})
		if err == nil && !r.Results[0].Ok {
			err = fmt.Errorf("advance %s: %s", writeDomain(w), r.Results[0].ErrorReason)
		}
		return err
	})
	c := o.Node("p")
	gates := make([]*client.AckGate, cfg.Writers)
	for w := range gates {
		gates[w] = client.NewAckGate(c, writeDomain(w), "p", 1)
		defer gates[w].Close()
	}
	batched := writeLoop(tb, cfg.Writers, cfg.WriteFor, func(w, _ int) error {
		n, h := next(w)
		return gates[w].WaitDurable(ctx, n, h, n)
	})
	return Values{V: map[string]float64{"writes": unbatched, "writes-batched": batched},
		Notes: []string{fmt.Sprintf("ours writes: one watermark advance per Advance call / per AckGate.WaitDurable, %d writers on %d domains, %v per row", cfg.Writers, cfg.Writers, cfg.WriteFor)}}
}
