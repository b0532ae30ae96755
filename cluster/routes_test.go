package cluster

import (
	"context"
	"io"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aerodb/authority/promotion"
)

// forwarder is a minimal loopback TCP proxy that counts connections.
type forwarder struct {
	l     net.Listener
	conns atomic.Int64
}

func newForwarder(t *testing.T, target string) *forwarder {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{l: l}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			f.conns.Add(1)
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			go func() { io.Copy(out, in); out.Close() }()
			go func() { io.Copy(in, out); in.Close() }()
		}
	}()
	return f
}

// With RaftRoutes every raft connection to a peer goes where the route says
// (here: through a proxy per link), not to the peer's configured address.
func TestRaftRoutesDialThroughProxies(t *testing.T) {
	dir := t.TempDir()
	var addrs [3]string
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = l.Addr().String()
		l.Close()
	}
	var proxies []*forwarder
	var nodes []*Node
	var svcs []*promotion.Service
	for i := range addrs {
		routes := map[string]string{}
		for j := range addrs {
			if i != j {
				p := newForwarder(t, addrs[j])
				proxies = append(proxies, p)
				routes[nodeID(j)] = p.l.Addr().String()
			}
		}
		n, err := Open(Config{NodeID: nodeID(i), DataDir: filepath.Join(dir, nodeID(i)), RaftAddr: addrs[i], RaftRoutes: routes,
			HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond, LeaderLeaseTimeout: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		svc := promotion.NewService(promotion.Config{Log: n, FSM: n.FSM(), Clock: &manualClock{now: time.Unix(0, 0)}})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); RunLeadership(ctx, n, svc, nil) }()
		t.Cleanup(func() { cancel(); <-done; n.Shutdown() })
		nodes, svcs = append(nodes, n), append(svcs, svc)
	}
	var peers []Peer
	for i, a := range addrs {
		peers = append(peers, Peer{ID: nodeID(i), Address: a})
	}
	if err := nodes[0].Bootstrap(peers); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a leader elected through the proxies", func() bool {
		for _, s := range svcs {
			if s.Ready() {
				return true
			}
		}
		return false
	})
	used := 0
	for _, p := range proxies {
		if p.conns.Load() > 0 {
			used++
		}
	}
	if used < 2 {
		t.Fatalf("only %d of %d proxies carried raft traffic", used, len(proxies))
	}
}
