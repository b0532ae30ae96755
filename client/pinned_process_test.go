package client_test

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/internal/testcluster"
	"github.com/aerodb/authority/jepsen-like/proxy"
	"google.golang.org/grpc"
)

// dialRecorder dials like grpc does and remembers every address.
type dialRecorder struct {
	mu    sync.Mutex
	addrs []string
}

func (r *dialRecorder) option() grpc.DialOption {
	return grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		r.mu.Lock()
		r.addrs = append(r.addrs, addr)
		r.mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	})
}

// outside returns the dialled addresses not in allowed.
func (r *dialRecorder) outside(allowed []string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, a := range r.addrs {
		if !slices.Contains(allowed, a) {
			out = append(out, a)
		}
	}
	return out
}

// A client pinned to its endpoints (here: one TCP proxy per server, as a
// client behind port forwards would see them) never dials an address the
// servers advertise, and still finds the leader — for unary calls, the
// lease's keep-alive stream, and after the leader is killed.
func TestProcessPinnedEndpoints(t *testing.T) {
	cl := testcluster.Start(t, 3)
	var proxied []string
	for _, s := range cl.Servers {
		p, err := proxy.Listen("client->"+s.ID, s.GRPCAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		proxied = append(proxied, p.Addr())
	}
	// Control: an unpinned client learns and dials the advertised
	// addresses, so the recorder can see such a leak. It is the operator
	// (it creates the domain).
	free := &dialRecorder{}
	c0 := dial(t, client.Config{Endpoints: proxied, Credentials: cl.Creds(testcluster.Operator), DialOptions: []grpc.DialOption{free.option()}})
	ctx := timeout(t, 60*time.Second)
	if _, err := c0.CreateDomain(ctx, "pinned", pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: 1000}); err != nil {
		t.Fatal(err)
	}
	if len(free.outside(proxied)) == 0 {
		t.Fatalf("control: the unpinned client dialled only %v", free.addrs)
	}

	// The pinned client is h1's node, which holds the lock.
	rec := &dialRecorder{}
	c := dial(t, client.Config{Endpoints: proxied, PinEndpoints: true, Credentials: cl.Creds(testcluster.Node("h1")), DialOptions: []grpc.DialOption{rec.option()},
		RequestTimeout: time.Second, MaxRetryDelay: 100 * time.Millisecond})
	lease, err := c.Acquire(ctx, "pinned", "h1")
	if err != nil {
		t.Fatal(err)
	}
	waitRenewed(t, lease)
	leader := cl.WaitLeader()
	cl.Kill(leader)
	// The lease may or may not survive the failover; reads must work
	// again through the pinned endpoints.
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		d, err := c.GetDomain(rctx, "pinned")
		cancel()
		if err == nil && d.GetHolder() == "h1" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no read after the leader's kill: %v", err)
		}
	}
	if out := rec.outside(proxied); len(out) > 0 {
		t.Fatalf("the pinned client dialled %v, outside its endpoints %v", out, proxied)
	}
}

// waitRenewed waits until the lease's deadline moved 500 ms past its first.
func waitRenewed(t *testing.T, l *client.Lease) {
	t.Helper()
	first := l.Deadline()
	for !l.Deadline().After(first.Add(500 * time.Millisecond)) {
		select {
		case <-l.Lost():
			t.Fatalf("lease lost: %v", l.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
