package hostiletest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aerodb/authority/internal/testcluster"
	"github.com/aerodb/authority/tlsfiles"
)

// Attackers run as child processes (./attacker, built without the race
// detector, under nice 19), so that on a small machine the attack's own
// CPU does not starve the servers: they stand for clients on other
// machines; the servers still get every byte of the attack. A child
// prints one line when its attack is in place, holds it until its stdin
// closes, then prints one line of counts and exits.

// childSpec is what an attacker process does (attacker.Spec, as JSON).
type childSpec struct {
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

var (
	attackerOnce sync.Once
	attackerBin  string
	attackerErr  error
)

// attackerBinary builds ./internal/hostiletest/attacker once per test
// process, without the race detector.
func attackerBinary(t *testing.T) string {
	t.Helper()
	attackerOnce.Do(func() {
		dir := filepath.Join(testcluster.Binaries(t), "hostile")
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			attackerErr = err
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "attacker"), "./internal/hostiletest/attacker")
		cmd.Dir = filepath.Dir(strings.TrimSpace(string(out)))
		if b, err := cmd.CombinedOutput(); err != nil {
			attackerErr = fmt.Errorf("go build attacker: %v\n%s", err, b)
			return
		}
		attackerBin = filepath.Join(dir, "attacker")
	})
	if attackerErr != nil {
		t.Fatal(attackerErr)
	}
	return attackerBin
}

// child is one running attacker process.
type child struct {
	cmd   *exec.Cmd
	stdin interface{ Close() error }
	out   *bufio.Reader
}

// startChildren starts one child per spec and waits until each has its
// attack in place; it returns their first lines' two numbers, summed.
func startChildren(t *testing.T, specs []childSpec) (cs []*child, a, b int) {
	t.Helper()
	for _, spec := range specs {
		raw, _ := json.Marshal(spec)
		cmd := exec.Command("nice", "-n", "19", attackerBinary(t), string(raw))
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c := &child{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
		cs = append(cs, c)
		t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	}
	for _, c := range cs {
		x, y, err := c.line()
		if err != nil {
			t.Fatalf("attacker child: %v", err)
		}
		a, b = a+x, b+y
	}
	return cs, a, b
}

func (c *child) line() (int, int, error) {
	s, err := c.out.ReadString('\n')
	if err != nil {
		return 0, 0, fmt.Errorf("reading a child's line: %w", err)
	}
	var x, y int
	_, err = fmt.Sscanf(strings.TrimSpace(s), "%d %d", &x, &y)
	return x, y, err
}

// stopChildren ends every child's attack and sums their last lines.
func stopChildren(t *testing.T, cs []*child) (a, b int) {
	t.Helper()
	for _, c := range cs {
		c.stdin.Close()
	}
	for _, c := range cs {
		x, y, err := c.line()
		if err != nil {
			t.Errorf("attacker child: %v", err)
		}
		a, b = a+x, b+y
		c.cmd.Wait()
	}
	return a, b
}

const (
	idleConns   = 20_000
	dialTimeout = 2 * time.Second
	// fdReserve: descriptors a child keeps for everything but its
	// connections.
	fdReserve = 512
)

// rowIdleHTTP: 20,000 TCP connections to the leader's HTTP (TLS)
// listener that never send a byte, held for longer than the server's
// handshake timeout: the server accepts at most its connection cap (256)
// and closes each after the timeout; the rest wait in the kernel's accept
// queue or time out connecting. The leader's descriptors stay bounded by
// the cap. The connections are spread over as many children as the hard
// RLIMIT_NOFILE needs (each raises its soft limit to the hard one).
func rowIdleHTTP(t *testing.T, e *env) string {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	limit := lim.Max // each child raises its soft limit to this
	per := int(limit) - fdReserve
	if per < 256 {
		t.Fatalf("RLIMIT_NOFILE hard limit %d leaves no room for connections", limit)
	}
	procs := (idleConns + per - 1) / per
	var specs []childSpec
	for i := range procs {
		n := idleConns / procs
		if i < idleConns%procs {
			n++
		}
		specs = append(specs, childSpec{Kind: "idle-http", Addr: e.leader.HTTPAddr, N: n, DialTimeout: dialTimeout})
	}
	fdsBefore := countFDs(e.leader.Pid())
	var peakFDs atomic.Int64
	stopFDs := make(chan struct{})
	fdsDone := make(chan struct{})
	go func() {
		defer close(fdsDone)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			peakFDs.Store(max(peakFDs.Load(), int64(countFDs(e.leader.Pid()))))
			select {
			case <-stopFDs:
				return
			case <-tick.C:
			}
		}
	}()
	start := time.Now()
	cs, opened, failed := startChildren(t, specs)
	dialed := time.Since(start)
	// Hold them longer than the handshake timeout (5 s), so the server has
	// closed its first 256 and taken more from the queue.
	hold := time.NewTimer(6 * time.Second)
	<-hold.C
	stopChildren(t, cs)
	close(stopFDs)
	<-fdsDone
	// The HTTP cap is 256 connections; everything else the server holds
	// (raft, gRPC, data files) stays under 64 more.
	if p := peakFDs.Load(); p > int64(fdsBefore)+256+64 {
		t.Errorf("leader descriptors peaked at %d (before the attack %d): the HTTP connection cap did not hold", p, fdsBefore)
	}
	return fmt.Sprintf("%d connections from %d child process(es) (hard RLIMIT_NOFILE %d): %d connected (cap 256 plus the accept queue), %d timed out connecting (%v); all dialled in %v, held 6 s; leader descriptors %d → peak %d",
		idleConns, procs, limit, opened, failed, dialTimeout, dialed.Round(time.Millisecond), fdsBefore, peakFDs.Load())
}
