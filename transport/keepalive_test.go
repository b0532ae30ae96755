package transport

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"google.golang.org/grpc"
)

// lockDomains creates n lock domains k-000… on the leader, each acquired
// by holder h (epoch 1).
func lockDomains(t *testing.T, conn *grpc.ClientConn, n int, h string) []string {
	t.Helper()
	ctx := context.Background()
	var names []string
	for i := range n {
		name := fmt.Sprintf("k-%03d", i)
		err := retryNotLeader(func() error {
			_, err := pbgrpc.NewDomainsClient(conn).CreateDomain(ctx, &pb.CreateDomainRequest{Name: name, Kind: pb.DomainKind_DOMAIN_KIND_LOCK,
				Policy: &pb.Policy{LeaseTtlMs: 60_000}})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pbgrpc.NewLeasesClient(conn).Acquire(ctx, &pb.AcquireRequest{Domain: name, Holder: h}); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
	}
	return names
}

// keepAlive sends one message on a new stream and returns the response.
func keepAlive(t *testing.T, conn *grpc.ClientConn, req *pb.KeepAliveRequest) *pb.KeepAliveResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := pbgrpc.NewLeasesClient(conn).KeepAlive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(req); err != nil {
		t.Fatal(err)
	}
	resp, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	_ = s.CloseSend()
	return resp
}

// A batch renews each lease on its own: one stale epoch, one lease moved to
// another holder and one unknown domain fail their entries (listed by
// index, reason and a bounded message), every other lease is renewed, and
// the single-lease form still works on the same stream.
func TestKeepAliveBatch(t *testing.T) {
	nodes := startAPI(t, 3)
	l := leaderOf(t, nodes)
	names := lockDomains(t, l.conn, 5, "h")
	ctx := context.Background()
	if _, err := pbgrpc.NewLeasesClient(l.conn).Release(ctx, &pb.ReleaseRequest{Domain: names[3], Holder: "h", Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := pbgrpc.NewLeasesClient(l.conn).Acquire(ctx, &pb.AcquireRequest{Domain: names[3], Holder: "x"}); err != nil {
		t.Fatal(err)
	}
	resp := keepAlive(t, l.conn, &pb.KeepAliveRequest{Holder: "h", Seq: 9,
		Domains: []string{names[0], names[1], names[2], names[3], "nope", names[4]},
		Epochs:  []uint64{1, 2, 1, 1, 1, 1}})
	if resp.GetErrorReason() != "" || resp.GetSeq() != 9 || resp.GetDomain() != "" || len(resp.GetBatchRemainingMs()) != 6 {
		t.Fatalf("batch response: %v", resp)
	}
	failed := map[uint32]string{}
	for _, f := range resp.GetFailures() {
		failed[f.GetIndex()] = f.GetErrorReason()
		if len(f.GetErrorMessage()) > 512 {
			t.Errorf("failure %d: %d-byte message", f.GetIndex(), len(f.GetErrorMessage()))
		}
	}
	want := map[uint32]string{1: pb.ReasonFenced, 3: pb.ReasonFenced, 4: pb.ReasonNotFound}
	if fmt.Sprint(failed) != fmt.Sprint(want) {
		t.Fatalf("failures %v, want %v", failed, want)
	}
	for i, ms := range resp.GetBatchRemainingMs() {
		if _, bad := want[uint32(i)]; bad != (ms == 0) || !bad && ms != 60_000 {
			t.Errorf("entry %d: remaining %d ms", i, ms)
		}
	}
	one := keepAlive(t, l.conn, &pb.KeepAliveRequest{Domain: names[0], Holder: "h", Epoch: 1, Seq: 3})
	if one.GetErrorReason() != "" || one.GetDomain() != names[0] || one.GetRemainingMs() != 60_000 || one.GetSeq() != 3 {
		t.Fatalf("single-lease renewal: %v", one)
	}
}

// A malformed batch is refused whole with one INVALID_ARGUMENT of a few
// hundred bytes at most, whatever its size; nothing is renewed and the
// stream stays usable.
func TestKeepAliveHostileBatches(t *testing.T) {
	nodes := startAPI(t, 3)
	l := leaderOf(t, nodes)
	names := lockDomains(t, l.conn, 1, "h")
	many := func(n int, name string) ([]string, []uint64) {
		d, e := make([]string, n), make([]uint64, n)
		for i := range n {
			d[i], e[i] = name, 1
		}
		return d, e
	}
	big, bigE := many(MaxRenewalsPerMessage+1, names[0])
	bad, badE := many(MaxRenewalsPerMessage, strings.Repeat("é", 300))
	zero, zeroE := many(3, names[0])
	zeroE[1] = 0
	for _, c := range []struct {
		name string
		req  *pb.KeepAliveRequest
	}{
		{"too many", &pb.KeepAliveRequest{Holder: "h", Domains: big, Epochs: bigE}},
		{"lengths differ", &pb.KeepAliveRequest{Holder: "h", Domains: names, Epochs: []uint64{1, 1}}},
		{"epochs only", &pb.KeepAliveRequest{Holder: "h", Epochs: []uint64{1}}},
		{"single and batch", &pb.KeepAliveRequest{Holder: "h", Domain: names[0], Epoch: 1, Domains: names, Epochs: []uint64{1}}},
		{"bad names", &pb.KeepAliveRequest{Holder: "h", Domains: bad, Epochs: badE}},
		{"zero epoch", &pb.KeepAliveRequest{Holder: "h", Domains: zero, Epochs: zeroE}},
		{"no holder", &pb.KeepAliveRequest{Domains: names, Epochs: []uint64{1}}},
	} {
		resp := keepAlive(t, l.conn, c.req)
		if resp.GetErrorReason() != pb.ReasonInvalidArgument || len(resp.GetErrorMessage()) > 512 ||
			len(resp.GetBatchRemainingMs()) != 0 || len(resp.GetFailures()) != 0 {
			t.Errorf("%s: %s %d-byte message %.300q, %d results", c.name, resp.GetErrorReason(), len(resp.GetErrorMessage()),
				resp.GetErrorMessage(), len(resp.GetBatchRemainingMs()))
		}
	}
}
