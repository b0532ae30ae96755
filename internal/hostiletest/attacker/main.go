// Command attacker is the hostile client of the hostile-load tests
// (internal/hostiletest): the tests build it without the race detector
// and run it as a separate, low-priority process, standing for clients on
// other machines. Its argument is a JSON Spec. It prints one line when
// its attack is in place ("A B", two counts), holds the attack until its
// stdin closes, then prints one more line of counts and exits.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/tlsfiles"
	"google.golang.org/grpc"
)

// Spec is what one attacker process does.
type Spec struct {
	// Kind: "idle-http" (N TCP connections to Addr that never send a
	// byte) or "keepalive" (N KeepAlive streams over Conns connections to
	// Addr, renewing Domain as Holder at Epoch, at most PerStream renewals
	// each, never reading an answer).
	Kind        string
	Addr        string
	N           int
	DialTimeout time.Duration
	Conns       int
	PerStream   int
	Domain      string
	Holder      string
	Epoch       uint64
	TLS         tlsfiles.Files
}

func main() {
	var spec Spec
	if len(os.Args) != 2 || json.Unmarshal([]byte(os.Args[1]), &spec) != nil {
		fmt.Fprintln(os.Stderr, "usage: attacker SPEC-JSON")
		os.Exit(2)
	}
	if err := raiseNoFile(); err != nil {
		fmt.Fprintln(os.Stderr, "rlimit:", err)
		os.Exit(2)
	}
	var err error
	switch spec.Kind {
	case "idle-http":
		idleHTTP(spec)
	case "keepalive":
		err = keepAlive(spec)
	default:
		err = fmt.Errorf("unknown kind %q", spec.Kind)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "attacker:", err)
		os.Exit(2)
	}
}

// raiseNoFile raises RLIMIT_NOFILE's soft limit to the hard limit.
func raiseNoFile() error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	lim.Cur = lim.Max
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}

// idleHTTP dials N connections, at most 2,048 at a time, and holds those
// that connected.
func idleHTTP(spec Spec) {
	var (
		mu     sync.Mutex
		wg     sync.WaitGroup
		conns  []net.Conn
		failed int
	)
	sem := make(chan struct{}, 2048)
	for range spec.N {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := net.DialTimeout("tcp", spec.Addr, spec.DialTimeout)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				return
			}
			conns = append(conns, c)
		}()
	}
	wg.Wait()
	fmt.Printf("%d %d\n", len(conns), failed)
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
	fmt.Printf("0 0\n")
}

// keepAlive opens the streams with fixed 64 KiB flow-control windows (a
// client that never reads grants nothing beyond them) and sends renewals
// on each until PerStream or flow control stops it.
func keepAlive(spec Spec) error {
	src, err := tlsfiles.Load(spec.TLS, tlsfiles.Options{})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var conns []*grpc.ClientConn
	for range spec.Conns {
		c, err := grpc.NewClient(spec.Addr, grpc.WithTransportCredentials(src.Credentials(true)),
			grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		if err != nil {
			return err
		}
		conns = append(conns, c)
	}
	var sent atomic.Int64
	var wg sync.WaitGroup
	for i := range spec.N {
		st, err := pbgrpc.NewLeasesClient(conns[i%len(conns)]).KeepAlive(ctx)
		if err != nil {
			return fmt.Errorf("open stream %d: %w", i, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range uint64(spec.PerStream) {
				if st.Send(&pb.KeepAliveRequest{Domain: spec.Domain, Holder: spec.Holder, Epoch: spec.Epoch, Seq: seq}) != nil {
					return
				}
				sent.Add(1)
			}
		}()
	}
	fmt.Printf("%d %d\n", spec.N, len(conns))
	io.Copy(io.Discard, os.Stdin)
	total := sent.Load()
	cancel()
	wg.Wait()
	for _, c := range conns {
		c.Close()
	}
	fmt.Printf("%d 0\n", total)
	return nil
}
