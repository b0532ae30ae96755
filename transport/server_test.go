package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/cluster"
	"github.com/aerodb/authority/promotion"
	"github.com/hashicorp/raft"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

type wall struct{}

func (wall) Now() time.Time { return time.Now() }

// apiNode is one in-process server: raft (in-memory transport, bbolt on
// disk), the service, and a real gRPC server on a loopback port.
type apiNode struct {
	node *cluster.Node
	svc  *promotion.Service
	addr string
	conn *grpc.ClientConn
	api  *Server
}

// startAPI starts n servers forming one cluster and returns them once a
// leader serves.
func startAPI(t testing.TB, n int) []*apiNode { return startAPIWith(t, n, promotion.Config{}) }

// startAPIWith is startAPI with service settings (Log, FSM and Clock are
// filled in).
func startAPIWith(t testing.TB, n int, svcCfg promotion.Config) []*apiNode {
	t.Helper()
	dir := t.TempDir()
	trans := make([]*raft.InmemTransport, n)
	lis := make([]net.Listener, n)
	peers := map[string]string{}
	for i := range n {
		_, trans[i] = raft.NewInmemTransport(raft.ServerAddress(fmt.Sprintf("s%d", i+1)))
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lis[i] = l
		peers[fmt.Sprintf("s%d", i+1)] = l.Addr().String()
	}
	for i := range trans {
		for j := range trans {
			if i != j {
				trans[i].Connect(trans[j].LocalAddr(), trans[j])
			}
		}
	}
	var nodes []*apiNode
	var boot []cluster.Peer
	for i := range n {
		id := fmt.Sprintf("s%d", i+1)
		node, err := cluster.Open(cluster.Config{NodeID: id, DataDir: filepath.Join(dir, id), Transport: trans[i],
			// Timeouts long enough that a leader starved of CPU by a
			// loaded test machine (-race, packages in parallel) keeps its
			// term: these tests are about the API, not about elections.
			HeartbeatTimeout: time.Second, ElectionTimeout: time.Second,
			LeaderLeaseTimeout: 500 * time.Millisecond, CommitTimeout: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		sc := svcCfg
		sc.Log, sc.FSM, sc.Clock = node, node.FSM(), wall{}
		svc := promotion.NewService(sc)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); cluster.RunLeadership(ctx, node, svc, nil) }()
		api := New(Config{Node: node, Service: svc, Peers: peers})
		g := grpc.NewServer(grpc.MaxRecvMsgSize(8 << 20))
		api.Register(g)
		go g.Serve(lis[i])
		conn, err := grpc.NewClient(lis[i].Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(8<<20)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			conn.Close()
			g.Stop()
			api.Close()
			cancel()
			<-done
			node.Shutdown()
		})
		nodes = append(nodes, &apiNode{node: node, svc: svc, addr: lis[i].Addr().String(), conn: conn, api: api})
		boot = append(boot, cluster.Peer{ID: id, Address: id})
	}
	if err := nodes[0].node.Bootstrap(boot); err != nil {
		t.Fatal(err)
	}
	leaderOf(t, nodes)
	return nodes
}

func leaderOf(t testing.TB, nodes []*apiNode) *apiNode {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			if n.svc.Ready() {
				return n
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatal("no ready leader")
	return nil
}

func follower(t *testing.T, nodes []*apiNode) *apiNode {
	l := leaderOf(t, nodes)
	for _, n := range nodes {
		if n != l {
			return n
		}
	}
	t.Fatal("no follower")
	return nil
}

func reasonOfStatus(err error) (codes.Code, string) {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return st.Code(), info.Reason
		}
	}
	return st.Code(), ""
}

var h100 = []byte{0xab, 0xcd}

// seed creates db1 with members n1..n3, n1 holding epoch 1 and a watermark,
// all through a follower (forwarded to the leader).
func seed(t *testing.T, conn *grpc.ClientConn) {
	t.Helper()
	ctx := context.Background()
	d := pbgrpc.NewDomainsClient(conn)
	if _, err := d.CreateDomain(ctx, &pb.CreateDomainRequest{Name: "db1", Kind: pb.DomainKind_DOMAIN_KIND_AERODB,
		Policy: &pb.Policy{LeaseTtlMs: 60_000, Durability: pb.Durability_DURABILITY_AUTHORITY_GATED}}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"n1", "n2", "n3"} {
		if _, err := d.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: "db1", MemberId: m}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.AssignInitial(ctx, &pb.AssignInitialRequest{Domain: "db1", Holder: "n1"}); err != nil {
		t.Fatal(err)
	}
	resp, err := pbgrpc.NewWatermarksClient(conn).Advance(ctx, &pb.AdvanceRequest{Advances: []*pb.WatermarkAdvance{
		{Domain: "db1", Epoch: 1, Holder: "n1", Lsn: 100, Hash: h100, VisibleCommitId: 7}}})
	if err != nil || !resp.Results[0].Ok {
		t.Fatal(err, resp)
	}
}

// Writes sent to a follower are forwarded to the leader; default reads are
// linearizable from any node; stale reads are served locally.
func TestFollowerForwardsWrites(t *testing.T) {
	nodes := startAPI(t, 3)
	f := follower(t, nodes)
	seed(t, f.conn)
	ctx := context.Background()
	for _, n := range nodes {
		resp, err := pbgrpc.NewDomainsClient(n.conn).GetDomain(ctx, &pb.GetDomainRequest{Name: "db1"})
		if err != nil || resp.Domain.Epoch != 1 || resp.Domain.Watermark.GetLsn() != 100 {
			t.Fatalf("read via %s: %v %v", n.node.ID(), resp, err)
		}
	}
	// Promotion through a follower: denied while n1's lease is valid.
	resp, err := pbgrpc.NewPromotionClient(f.conn).Promote(ctx, &pb.PromoteRequest{Request: &pb.PromotionRequest{
		RequestId: "r1", Domain: "db1", Candidate: "n2"}})
	if err != nil || resp.Record.GetDecision().GetAllowed() || resp.Record.Decision.DenialReason != "PrimaryStillActive" || !resp.Committed {
		t.Fatalf("promote via follower: %v %v", resp, err)
	}
	// Explain gives the byte-identical record from every node.
	for _, n := range nodes {
		ex, err := pbgrpc.NewPromotionClient(n.conn).Explain(ctx, &pb.ExplainRequest{Domain: "db1", RequestId: "r1"})
		if err != nil || ex.Record.LogIndex != resp.Record.LogIndex || ex.Record.Decision.DenialReason != "PrimaryStillActive" {
			t.Fatalf("explain via %s: %v %v", n.node.ID(), ex, err)
		}
	}
	// The old holder is fenced after a move of the epoch: here n1 releases
	// and a later advance at epoch 1 is refused with FENCED.
	if _, err := pbgrpc.NewLeasesClient(f.conn).Release(ctx, &pb.ReleaseRequest{Domain: "db1", Holder: "n1", Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	adv, err := pbgrpc.NewWatermarksClient(f.conn).Advance(ctx, &pb.AdvanceRequest{Advances: []*pb.WatermarkAdvance{
		{Domain: "db1", Epoch: 1, Holder: "n1", Lsn: 101, Hash: h100}}})
	if err != nil || adv.Results[0].Ok || adv.Results[0].ErrorReason != pb.ReasonFenced {
		t.Fatalf("advance after release: %v %v", adv, err)
	}
}

// Acceptance (issue 3, item 4): bad input through gRPC gets InvalidArgument
// or NotFound with a clear message and changes nothing.
func TestBadInputChangesNothing(t *testing.T) {
	nodes := startAPI(t, 3)
	l := leaderOf(t, nodes)
	seed(t, l.conn)
	ctx := context.Background()
	before := stateHash(t, l)
	dom, lease, wm, promo := pbgrpc.NewDomainsClient(l.conn), pbgrpc.NewLeasesClient(l.conn), pbgrpc.NewWatermarksClient(l.conn), pbgrpc.NewPromotionClient(l.conn)
	long := strings.Repeat("x", 129)
	big := strings.Repeat("y", 4<<20)
	one := uint64(1)
	zero := uint64(0)
	cases := []struct {
		name   string
		call   func() error
		code   codes.Code
		reason string
		msg    string
	}{
		{"empty domain name", func() error {
			_, err := dom.CreateDomain(ctx, &pb.CreateDomainRequest{Name: "", Kind: pb.DomainKind_DOMAIN_KIND_AERODB})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument, "domain is empty"},
		{"oversized domain name", func() error {
			_, err := dom.CreateDomain(ctx, &pb.CreateDomainRequest{Name: long, Kind: pb.DomainKind_DOMAIN_KIND_AERODB})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument, "longer than 128"},
		{"bad characters", func() error {
			_, err := dom.CreateDomain(ctx, &pb.CreateDomainRequest{Name: "db 1/..", Kind: pb.DomainKind_DOMAIN_KIND_AERODB})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument, "not allowed"},
		{"unknown kind", func() error {
			_, err := dom.CreateDomain(ctx, &pb.CreateDomainRequest{Name: "db2"})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument, "kind"},
		{"zero TTL", func() error {
			_, err := dom.CreateDomain(ctx, &pb.CreateDomainRequest{Name: "db2", Kind: pb.DomainKind_DOMAIN_KIND_AERODB, Policy: &pb.Policy{}})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument, "lease_ttl_ms is 0"},
		{"TTL too small", func() error {
			_, err := dom.CreateDomain(ctx, &pb.CreateDomainRequest{Name: "db2", Kind: pb.DomainKind_DOMAIN_KIND_AERODB, Policy: &pb.Policy{LeaseTtlMs: 1}})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument, "lease_ttl_ms 1 is outside"},
		{"unknown domain", func() error {
			_, err := dom.GetDomain(ctx, &pb.GetDomainRequest{Name: "nope"})
			return err
		}, codes.NotFound, pb.ReasonNotFound, `domain "nope"`},
		{"register in unknown domain", func() error {
			_, err := dom.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: "nope", MemberId: "n1"})
			return err
		}, codes.NotFound, pb.ReasonNotFound, `domain "nope"`},
		{"malformed hash: missing", func() error {
			_, err := wm.Advance(ctx, &pb.AdvanceRequest{Advances: []*pb.WatermarkAdvance{{Domain: "db1", Epoch: 1, Holder: "n1", Lsn: 200}}})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument, "hash is empty at lsn 200"},
		{"malformed hash: too long", func() error {
			_, err := wm.Advance(ctx, &pb.AdvanceRequest{Advances: []*pb.WatermarkAdvance{{Domain: "db1", Epoch: 1, Holder: "n1", Lsn: 200, Hash: make([]byte, 65)}}})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument, "65 bytes"},
		{"epoch 0 advance", func() error {
			_, err := wm.Advance(ctx, &pb.AdvanceRequest{Advances: []*pb.WatermarkAdvance{{Domain: "db1", Holder: "n1", Lsn: 200, Hash: h100}}})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument, "epoch is 0"},
		{"epoch 0 release", func() error {
			_, err := lease.Release(ctx, &pb.ReleaseRequest{Domain: "db1", Holder: "n1"})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument, "epoch is 0"},
		{"empty batch", func() error {
			_, err := wm.Advance(ctx, &pb.AdvanceRequest{})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument, "0 advances"},
		{"unknown waiver", func() error {
			_, err := promo.Promote(ctx, &pb.PromoteRequest{Request: &pb.PromotionRequest{RequestId: "w1", Domain: "db1", Candidate: "n2",
				Reason: "x", Waivers: []string{"allow-everything"}}})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument, `unknown waiver "allow-everything"`},
		{"expected epoch 0", func() error {
			_, err := promo.Promote(ctx, &pb.PromoteRequest{Request: &pb.PromotionRequest{RequestId: "w2", Domain: "db1", Candidate: "n2", ExpectedEpoch: &zero}})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument, "expected_epoch is 0"},
		{"promote in unknown domain", func() error {
			_, err := promo.Promote(ctx, &pb.PromoteRequest{Request: &pb.PromotionRequest{RequestId: "w3", Domain: "nope", Candidate: "n2", ExpectedEpoch: &one}})
			return err
		}, codes.NotFound, pb.ReasonNotFound, `domain "nope"`},
		{"missing request", func() error {
			_, err := promo.Promote(ctx, &pb.PromoteRequest{})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument, "request is missing"},
		{"4 MiB reason", func() error {
			_, err := promo.Promote(ctx, &pb.PromoteRequest{Request: &pb.PromotionRequest{RequestId: "w4", Domain: "db1", Candidate: "n2", Reason: big}})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument, "reason is 4194304 bytes"},
		{"4 MiB member address", func() error {
			_, err := dom.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: "db1", MemberId: "n9", Address: big})
			return err
		}, codes.InvalidArgument, pb.ReasonInvalidArgument, "address is 4194304 bytes"},
		{"unknown attempt", func() error {
			_, err := promo.Explain(ctx, &pb.ExplainRequest{Domain: "db1", RequestId: "never"})
			return err
		}, codes.NotFound, pb.ReasonNotFound, `no attempt "never"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A leader change under load answers NOT_LEADER for a moment
			// (the election window); a client retries, so does this test.
			err := tc.call()
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); err = tc.call() {
				if _, r := reasonOfStatus(err); r != pb.ReasonNotLeader {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			code, reason := reasonOfStatus(err)
			if code != tc.code || reason != tc.reason || !strings.Contains(status.Convert(err).Message(), tc.msg) {
				t.Fatalf("got %v %s %q; want %v %s containing %q", code, reason, status.Convert(err).Message(), tc.code, tc.reason, tc.msg)
			}
		})
	}
	if after := stateHash(t, l); after != before {
		t.Fatal("bad input changed the state")
	}
}

func stateHash(t *testing.T, n *apiNode) string {
	t.Helper()
	resp, err := pbgrpc.NewClusterClient(n.conn).Status(context.Background(), &pb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.StateHash
}

// Watch streams the promotion events from any node, and resumes from an
// index without gaps or duplicates.
func TestWatchFromAnyNode(t *testing.T) {
	nodes := startAPI(t, 3)
	l := leaderOf(t, nodes)
	seed(t, l.conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := pbgrpc.NewPromotionClient(l.conn).Promote(ctx, &pb.PromoteRequest{Request: &pb.PromotionRequest{RequestId: "r1", Domain: "db1", Candidate: "n2"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"replication.promotion.requested", "replication.promotion.validation_started", "replication.promotion.validation_failed"}
	for _, n := range nodes {
		stream, err := pbgrpc.NewWatchClient(n.conn).Watch(ctx, &pb.WatchRequest{FromIndex: 1, Domains: []string{"db1"}})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for done := false; !done; {
			r, err := stream.Recv()
			if err != nil {
				t.Fatalf("%s: %v", n.node.ID(), err)
			}
			for _, ev := range r.Events {
				if strings.HasPrefix(ev.Type, "replication.promotion.") {
					got = append(got, ev.Type)
				}
				done = done || ev.Index == resp.Record.LogIndex && ev.Type == want[2]
			}
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("%s events %v, want %v", n.node.ID(), got, want)
		}
	}
	// From index 1: every event from the start, in (index, seq) order.
	stream, err := pbgrpc.NewWatchClient(l.conn).Watch(ctx, &pb.WatchRequest{FromIndex: 1})
	if err != nil {
		t.Fatal(err)
	}
	var lastIdx uint64
	lastSeq := -1
	for seen := 0; seen < 9; {
		r, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range r.Events {
			if ev.Index < lastIdx || ev.Index == lastIdx && int(ev.Seq) <= lastSeq {
				t.Fatalf("out of order: %d/%d after %d/%d", ev.Index, ev.Seq, lastIdx, lastSeq)
			}
			lastIdx, lastSeq = ev.Index, int(ev.Seq)
			seen++
		}
	}
	_ = errors.Is
}
