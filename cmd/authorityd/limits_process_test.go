package main

import (
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/internal/testcluster"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// openFDs counts a process's open file descriptors.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// Hostile input and an idle-connection flood against real servers
// (acceptance 2, in part): 10,000 waivers and 1 MiB strings are refused
// quickly with small InvalidArgument errors on the leader and a follower,
// a message over --grpc-max-recv-bytes is refused by gRPC, the state does
// not change; 200 idle connections to the leader's HTTP port with
// --http-max-connections 64 open at most 64 descriptors there, and an
// honest client's new gRPC connection and call still succeed.
func TestHostileInputAndConnectionFlood(t *testing.T) {
	const httpCap, flood = 64, 200
	c := testcluster.Start(t, 3, "--http-max-connections", strconv.Itoa(httpCap), "--grpc-max-recv-bytes", strconv.Itoa(2<<20))
	leader := c.WaitLeader()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	op := c.Dial(testcluster.Operator)
	if _, err := op.CreateDomain(ctx, "db1", pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: 10_000,
		Durability: pb.Durability_DURABILITY_AUTHORITY_GATED}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"n1", "n2"} {
		if _, err := op.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: "db1", MemberId: m}); err != nil {
			t.Fatal(err)
		}
	}
	stateHashes := func() []string {
		var out []string
		for _, s := range c.Servers {
			conn, err := grpc.NewClient(s.GRPCAddr, c.DialOption(testcluster.Reader))
			if err != nil {
				t.Fatal(err)
			}
			st, err := pbgrpc.NewClusterClient(conn).Status(ctx, &pb.StatusRequest{})
			conn.Close()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, st.GetStateHash())
		}
		return out
	}
	converged := func() []string {
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			h := stateHashes()
			if h[0] == h[1] && h[1] == h[2] || time.Now().After(deadline) {
				return h
			}
		}
	}
	before := converged()

	waivers := make([]string, 10_000)
	for i := range waivers {
		waivers[i] = "allow-data-loss"
	}
	mb := strings.Repeat("x", 1<<20)
	huge := strings.Repeat("y", 3<<20) // over --grpc-max-recv-bytes
	cases := []struct {
		name string
		call func(conn *grpc.ClientConn) error
		code codes.Code
		want string
	}{
		{"10,000 waivers", func(conn *grpc.ClientConn) error {
			_, err := pbgrpc.NewPromotionClient(conn).Promote(ctx, &pb.PromoteRequest{Request: &pb.PromotionRequest{
				RequestId: "w1", Domain: "db1", Candidate: "n2", Reason: "flood", Waivers: waivers}})
			return err
		}, codes.InvalidArgument, "waivers has 10000 entries, more than the limit of 8"},
		{"1 MiB reason", func(conn *grpc.ClientConn) error {
			_, err := pbgrpc.NewPromotionClient(conn).Promote(ctx, &pb.PromoteRequest{Request: &pb.PromotionRequest{
				RequestId: "w2", Domain: "db1", Candidate: "n2", Reason: mb}})
			return err
		}, codes.InvalidArgument, "reason is 1048576 bytes, more than 1024"},
		{"1 MiB waiver", func(conn *grpc.ClientConn) error {
			_, err := pbgrpc.NewPromotionClient(conn).Promote(ctx, &pb.PromoteRequest{Request: &pb.PromotionRequest{
				RequestId: "w3", Domain: "db1", Candidate: "n2", Reason: "x", Waivers: []string{mb}}})
			return err
		}, codes.InvalidArgument, "waivers[0] is 1048576 bytes, not a known waiver"},
		{"1 MiB domain name", func(conn *grpc.ClientConn) error {
			_, err := pbgrpc.NewDomainsClient(conn).CreateDomain(ctx, &pb.CreateDomainRequest{Name: mb, Kind: pb.DomainKind_DOMAIN_KIND_LOCK})
			return err
		}, codes.InvalidArgument, "domain is 1048576 bytes, longer than 128"},
		{"1 MiB member address", func(conn *grpc.ClientConn) error {
			_, err := pbgrpc.NewDomainsClient(conn).RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: "db1", MemberId: "n3", Address: mb})
			return err
		}, codes.InvalidArgument, "address is 1048576 bytes, more than 256"},
		{"1 MiB explain request id", func(conn *grpc.ClientConn) error {
			_, err := pbgrpc.NewPromotionClient(conn).Explain(ctx, &pb.ExplainRequest{Domain: "db1", RequestId: mb})
			return err
		}, codes.InvalidArgument, "request_id is 1048576 bytes, longer than 128"},
		{"3 MiB message", func(conn *grpc.ClientConn) error {
			_, err := pbgrpc.NewPromotionClient(conn).Promote(ctx, &pb.PromoteRequest{Request: &pb.PromotionRequest{
				RequestId: "w4", Domain: "db1", Candidate: "n2", Reason: huge}})
			return err
		}, codes.ResourceExhausted, "larger than max"},
	}
	var follower *testcluster.Server
	for _, s := range c.Servers {
		if s != leader {
			follower = s
		}
	}
	for _, s := range []*testcluster.Server{leader, follower} {
		conn, err := grpc.NewClient(s.GRPCAddr, c.DialOption(testcluster.Operator), grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(8<<20)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for _, tc := range cases {
			start := time.Now()
			err := tc.call(conn)
			took := time.Since(start)
			msg := status.Convert(err).Message()
			t.Logf("%s via %s: %v in %v, %d-byte message", tc.name, s.ID, status.Code(err), took.Round(time.Microsecond), len(msg))
			if status.Code(err) != tc.code || !strings.Contains(msg, tc.want) || len(msg) > 512 {
				t.Errorf("%s via %s: %v %.600q; want %v mentioning %q within 512 bytes", tc.name, s.ID, status.Code(err), msg, tc.code, tc.want)
			}
			if took > 2*time.Second {
				t.Errorf("%s via %s took %v", tc.name, s.ID, took)
			}
		}
	}
	if after := converged(); strings.Join(after, ",") != strings.Join(before, ",") {
		t.Fatalf("refused requests changed the state: %v → %v", before, after)
	}

	// The flood: idle TCP connections to the leader's HTTP port (no TLS
	// handshake, no request). The listener accepts at most the cap; the
	// rest wait in the kernel's backlog, costing the server nothing.
	base := openFDs(t, leader.Pid())
	var conns []net.Conn
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	for range flood {
		nc, err := net.DialTimeout("tcp", leader.HTTPAddr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", len(conns), err)
		}
		conns = append(conns, nc)
	}
	// Wait until the listener has accepted up to the cap, then watch for
	// half a second that it accepts no more (without the cap every one of
	// the 200 is accepted within milliseconds).
	peak := 0
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && peak < base+httpCap; time.Sleep(10 * time.Millisecond) {
		peak = max(peak, openFDs(t, leader.Pid()))
	}
	for until := time.Now().Add(500 * time.Millisecond); time.Now().Before(until); time.Sleep(10 * time.Millisecond) {
		peak = max(peak, openFDs(t, leader.Pid()))
	}
	t.Logf("leader descriptors: %d before the flood, peak %d with %d idle HTTP connections (cap %d)", base, peak, flood, httpCap)
	if peak > base+httpCap+16 {
		t.Errorf("leader opened %d descriptors for %d idle HTTP connections; the cap is %d", peak-base, flood, httpCap)
	}
	// An honest client: a new connection and a linearizable read and a
	// write, while the flood holds its connections.
	start := time.Now()
	honest := c.Dial(testcluster.Operator)
	if _, err := honest.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: "db1", MemberId: "n3", Address: "10.0.0.3:5432"}); err != nil {
		t.Fatalf("honest write during the flood: %v", err)
	}
	d, err := honest.GetDomain(ctx, "db1")
	if err != nil || len(d.GetMembers()) != 3 {
		t.Fatalf("honest read during the flood: %v %v", d, err)
	}
	t.Logf("honest client: dial, write and read in %v during the flood", time.Since(start).Round(time.Millisecond))
}
