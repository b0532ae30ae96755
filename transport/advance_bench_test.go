package transport

import (
	"context"
	"fmt"
	"sync"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
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
	d := pbgrpc.NewDomainsClient(l.conn)
	const writers = 64
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
