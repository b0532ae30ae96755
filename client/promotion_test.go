package client

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// promoteFake answers Promote from a script of errors, then with an
// allowed record, counting the sends.
type promoteFake struct {
	pbgrpc.UnimplementedPromotionServer
	pbgrpc.UnimplementedClusterServer
	mu    sync.Mutex
	errs  []error
	sends int
}

func (f *promoteFake) Promote(_ context.Context, req *pb.PromoteRequest) (*pb.PromoteResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sends++
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		return nil, err
	}
	return &pb.PromoteResponse{Committed: !req.GetRequest().GetDryRun(), Record: &pb.AttemptRecord{Request: req.GetRequest(), Decision: &pb.Decision{Allowed: true}}}, nil
}

func (f *promoteFake) count() int { f.mu.Lock(); defer f.mu.Unlock(); return f.sends }

func startPromoteFake(t *testing.T, errs ...error) (*promoteFake, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &promoteFake{errs: errs}
	g := grpc.NewServer()
	pbgrpc.RegisterPromotionServer(g, f)
	pbgrpc.RegisterClusterServer(g, f)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return f, lis.Addr().String()
}

// P6-F3 (issue 17): once a Promote may have reached a leader, the client
// never re-sends it: the caller hears ErrOutcomeUnknown after one send
// (a re-send of an attempt aborted on crash would be decided afresh, a
// promotion nobody asked for again). NOT_LEADER, which proposes nothing,
// is still followed; a dry run is still retried.
func TestPromoteIsNeverRetriedAfterAPossibleSend(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := &pb.PromotionRequest{RequestId: "r1", Domain: "d", Candidate: "n2", Reason: "test"}
	for name, first := range map[string]error{
		"server says OUTCOME_UNKNOWN": statusWith(codes.Unavailable, pb.ReasonOutcomeUnknown, "leader lost after proposing", nil),
		"transport failure":           status.Error(codes.Unavailable, "connection reset"),
	} {
		f, addr := startPromoteFake(t, first)
		c := fakeClient(t, addr)
		_, err := c.Promote(ctx, req)
		if !errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("%s: %v, want ErrOutcomeUnknown", name, err)
		}
		if n := f.count(); n != 1 {
			t.Fatalf("%s: %d sends, want exactly 1 (no automatic retry)", name, n)
		}
		// A dry run commits nothing: retried.
		f.mu.Lock()
		f.errs, f.sends = []error{first}, 0
		f.mu.Unlock()
		dry := &pb.PromotionRequest{RequestId: "r2", Domain: "d", Candidate: "n2", DryRun: true}
		if _, err := c.Promote(ctx, dry); err != nil || f.count() != 2 {
			t.Fatalf("%s: dry run: %v after %d sends, want success after 2", name, err, f.count())
		}
	}
	// NOT_LEADER proposed nothing: the client follows the hint.
	leader, leaderAddr := startPromoteFake(t)
	follower, followerAddr := startPromoteFake(t, statusWith(codes.Unavailable, pb.ReasonNotLeader, "not the leader",
		map[string]string{pb.MetaLeaderID: "s2", pb.MetaLeaderAddr: leaderAddr}))
	c := fakeClient(t, followerAddr)
	if resp, err := c.Promote(ctx, req); err != nil || !resp.GetCommitted() || follower.count() != 1 || leader.count() != 1 {
		t.Fatalf("NOT_LEADER: %v %v, sends %d/%d", resp, err, follower.count(), leader.count())
	}
}

// A Promote that never reached a server (the connection was refused: a
// server that is down) sent nothing, so the client takes it to another
// server. Without the distinction a refused dial ends a Promote as
// ErrOutcomeUnknown although nothing was proposed.
func TestPromoteNotSentGoesElsewhere(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	lis.Close() // connections to it are refused from now on
	req := &pb.PromotionRequest{RequestId: "r1", Domain: "d", Candidate: "n2", Reason: "test"}

	for _, order := range [][2]bool{{true, false}, {false, true}} {
		live, addr := startPromoteFake(t)
		eps := []string{addr, dead}
		if order[0] {
			eps = []string{dead, addr}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := fakeClient(t, eps...).Promote(ctx, req)
		cancel()
		if err != nil || !resp.GetCommitted() || live.count() != 1 {
			t.Fatalf("endpoints %v: %v %v after %d sends, want committed after exactly 1", eps, resp, err, live.count())
		}
	}
}
