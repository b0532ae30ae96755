package transport

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/promotion"
)

// BenchmarkAdvanceUnbatched: 64 writers, each advancing its own domain's
// watermark one advance per Advance call, against an in-process 3-server
// cluster (bbolt with fsync, raft over the in-memory transport, gRPC on
// loopback without TLS). For profiles of the server-side path:
//
//	go test -run '^$' -bench AdvanceUnbatched -benchtime=20000x -cpuprofile cpu.out ./transport
func BenchmarkAdvanceUnbatched(b *testing.B) {
	b.Run("merged", func(b *testing.B) { benchAdvanceUnbatched(b, false) })
	b.Run("entry-per-call", func(b *testing.B) { benchAdvanceUnbatched(b, true) })
}

func benchAdvanceUnbatched(b *testing.B, perCall bool) {
	nodes := startAPIWith(b, 3, promotion.Config{WatermarkEntryPerCall: perCall})
	l := leaderOf(b, nodes)
	ctx := context.Background()
	const writers = 64
	seedWriters(b, l, writers)
	wm := pbgrpc.NewWatermarksClient(l.conn)
	per := max(b.N/writers, 1)
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("w%02d", w)
			for i := range per {
				lsn := uint64(i + 1)
				resp, err := wm.Advance(ctx, &pb.AdvanceRequest{Advances: []*pb.WatermarkAdvance{
					{Domain: name, Epoch: 1, Holder: "p", Lsn: lsn, Hash: []byte{byte(lsn), byte(lsn >> 8), 1}, VisibleCommitId: lsn}}})
				if err == nil && !resp.Results[0].Ok {
					err = fmt.Errorf("%s", resp.Results[0].ErrorMessage)
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(per*writers)/b.Elapsed().Seconds(), "writes/s")
}

// BenchmarkAdvanceAckGate: 64 writers, each waiting on its own domain's
// AckGate of one client (the client library's group commit), against the
// in-process cluster; one or two Advance calls in flight.
func BenchmarkAdvanceAckGate(b *testing.B) {
	for _, n := range []int{1, 2} {
		b.Run(fmt.Sprintf("inflight-%d", n), func(b *testing.B) { benchAdvanceAckGate(b, n) })
	}
}

func benchAdvanceAckGate(b *testing.B, inflight int) {
	nodes := startAPI(b, 3)
	l := leaderOf(b, nodes)
	ctx := context.Background()
	const writers = 64
	seedWriters(b, l, writers)
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := client.DialConfig(dctx, client.Config{Endpoints: []string{l.addr}, AckGateInflight: inflight})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	per := max(b.N/writers, 1)
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := client.NewAckGate(c, fmt.Sprintf("w%02d", w), "p", 1)
			defer g.Close()
			for i := range per {
				lsn := uint64(i + 1)
				if err := g.WaitDurable(ctx, lsn, []byte{byte(lsn), byte(lsn >> 8), 1}, lsn); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(per*writers)/b.Elapsed().Seconds(), "writes/s")
}

// seedWriters creates domains w00.. held by p at epoch 1.
func seedWriters(b *testing.B, l *apiNode, writers int) {
	ctx := context.Background()
	d := pbgrpc.NewDomainsClient(l.conn)
	for i := range writers {
		name := fmt.Sprintf("w%02d", i)
		if _, err := d.CreateDomain(ctx, &pb.CreateDomainRequest{Name: name, Kind: pb.DomainKind_DOMAIN_KIND_AERODB,
			Policy: &pb.Policy{LeaseTtlMs: 600_000, Durability: pb.Durability_DURABILITY_AUTHORITY_GATED}}); err != nil {
			b.Fatal(err)
		}
		if _, err := d.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: name, MemberId: "p"}); err != nil {
			b.Fatal(err)
		}
		if _, err := d.AssignInitial(ctx, &pb.AssignInitialRequest{Domain: name, Holder: "p"}); err != nil {
			b.Fatal(err)
		}
	}
}
