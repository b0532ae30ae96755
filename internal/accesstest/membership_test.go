package accesstest

import (
	"fmt"
	"os"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/internal/testcluster"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func voters(t *testing.T, cl *client.Client) []string {
	t.Helper()
	m, err := cl.Members(ctxT(t))
	mustOK(t, "members", err)
	var out []string
	for _, s := range m.GetServers() {
		if s.GetSuffrage() == "Voter" {
			out = append(out, s.GetId())
		}
	}
	return out
}

// TestRemoveServerKeepsAQuorum: removing a server works, unless the voters
// left could not reach a quorum among those that answer.
func TestRemoveServerKeepsAQuorum(t *testing.T) {
	c := testcluster.Start(t, 3)
	op := c.Dial(testcluster.Operator)
	leader := c.WaitLeader()
	var followers []*testcluster.Server
	for _, s := range c.Servers {
		if s != leader {
			followers = append(followers, s)
		}
	}
	// With one follower down, removing the other would leave {leader, dead}.
	c.Kill(followers[1])
	_, err := op.RemoveServer(ctxT(t), followers[0].ID)
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("removing %s with %s down: %v, want FailedPrecondition", followers[0].ID, followers[1].ID, err)
	}
	if v := voters(t, op); len(v) != 3 {
		t.Fatalf("voters after a refused removal: %v", v)
	}
	c.Restart(followers[1])
	converged(t, c)
	// A healthy removal.
	if _, err := op.RemoveServer(ctxT(t), followers[1].ID); err != nil {
		t.Fatalf("remove %s: %v", followers[1].ID, err)
	}
	if v := voters(t, op); len(v) != 2 {
		t.Fatalf("voters after removal: %v", v)
	}
	c.Stop(followers[1])
	// The two left still commit.
	_, err = op.CreateDomain(ctxT(t), "after-removal", pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: 3000})
	mustOK(t, "write after removal", err)
	if _, err := op.RemoveServer(ctxT(t), "nobody"); status.Code(err) != codes.NotFound {
		t.Errorf("removing an unknown server: %v", err)
	}
}

// TestLostQuorumRecovery: two of three servers destroyed; the third is
// recovered into a one-server cluster with every committed domain intact
// (--force-new-cluster), then two fresh servers join it.
func TestLostQuorumRecovery(t *testing.T) {
	c := testcluster.Start(t, 3)
	ctx := ctxT(t)
	op := c.Dial(testcluster.Operator)
	const domains = 12
	for i := range domains {
		name := fmt.Sprintf("d%02d", i)
		_, err := op.CreateDomain(ctx, name, pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: 60000})
		mustOK(t, "create", err)
		if i%2 == 0 {
			_, err = op.AssignInitial(ctx, name, "h"+name)
			mustOK(t, "assign", err)
		}
	}
	before := map[string]*pb.Domain{}
	for i := range domains {
		d, err := op.GetDomain(ctx, fmt.Sprintf("d%02d", i))
		mustOK(t, "get", err)
		before[d.GetName()] = d
	}
	converged(t, c)
	for _, s := range c.Servers {
		c.Kill(s)
	}
	for _, s := range c.Servers[1:] {
		if err := os.RemoveAll(s.DataDir); err != nil {
			t.Fatal(err)
		}
	}
	survivor := c.Servers[0]
	survivor.NoBootstrap = true
	survivor.Args = []string{"--force-new-cluster"}
	c.Restart(survivor)
	c.WaitLeader()
	// The flag is for one start only; the recovered server restarts with
	// its usual flags (bootstrap is a no-op on existing state).
	c.Stop(survivor)
	survivor.Args, survivor.NoBootstrap = nil, false
	c.Restart(survivor)
	c.WaitLeader()
	op2 := c.Dial(testcluster.Operator)
	if v := voters(t, op2); len(v) != 1 || v[0] != survivor.ID {
		t.Fatalf("voters after recovery: %v", v)
	}
	checkDomains(t, op2, before)
	// Two fresh servers join the recovered cluster.
	added := []*testcluster.Server{c.Join(), c.Join()}
	deadline := time.Now().Add(60 * time.Second)
	for len(voters(t, op2)) != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("voters: %v", voters(t, op2))
		}
		time.Sleep(50 * time.Millisecond)
	}
	converged(t, c)
	// A write commits on the new three-server cluster, and each new server
	// holds every recovered domain.
	_, err := op2.CreateDomain(ctx, "after-recovery", pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: 3000})
	mustOK(t, "write after recovery", err)
	for _, s := range added {
		cl, err := client.DialConfig(ctx, client.Config{Endpoints: []string{s.GRPCAddr}, PinEndpoints: true, Credentials: c.Creds(testcluster.Reader)})
		mustOK(t, "dial "+s.ID, err)
		for name, want := range before {
			got, err := cl.GetDomain(ctx, name, client.Stale())
			mustOK(t, "stale get on "+s.ID, err)
			if !proto.Equal(got, want) {
				t.Errorf("%s on %s: %v, want %v", name, s.ID, got, want)
			}
		}
		cl.Close()
	}
}

func checkDomains(t *testing.T, cl *client.Client, want map[string]*pb.Domain) {
	t.Helper()
	for name, w := range want {
		got, err := cl.GetDomain(ctxT(t), name)
		mustOK(t, "get "+name, err)
		if !proto.Equal(got, w) {
			t.Errorf("%s after recovery: %v, want %v", name, got, w)
		}
	}
}
