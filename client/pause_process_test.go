package client_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/internal/testcluster"
	"github.com/aerodb/authority/tlsfiles"
)

// The SIGSTOP race (failover issue, acceptance 1). A holder process takes a
// lock, then writes to a store that does not fence — its own standard
// output — checking lease.Check() immediately before each write. The test
// stops it with SIGSTOP at a random moment while it holds the lock, for
// longer than the TTL, and resumes it: the deadline has passed, but the
// lease's own timer has not yet run. Every write must have been checked
// before the deadline; a write that lands after the deadline must be one
// the pause itself split from its check (the window only fencing closes).
// Without the clock read in Check, the resumed holder's loop writes past
// the deadline (the issue saw it in 4 of 30 runs).
const (
	pauseRuns    = 100 // over pauseHolders holders
	pauseHolders = 4
	pauseTTL     = 300 * time.Millisecond
	pauseFor     = 400 * time.Millisecond // > TTL: the deadline always passes while stopped
	pauseWriteDt = 2 * time.Millisecond
	pauseSeed    = 20261204
)

// TestPauseHolderProcess is the holder's body when run as a child process
// (AUTHORITY_PAUSE_HOLDER names the holder); in the normal test run it does
// nothing.
func TestPauseHolderProcess(t *testing.T) {
	if os.Getenv("AUTHORITY_PAUSE_HOLDER") == "" {
		return
	}
	if err := pauseHolder(os.Stdout); err != nil {
		fmt.Fprintln(os.Stdout, "error", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// pauseHolder acquires the lock, writes while Check passes, and starts
// over when the lease is lost, until its stdin closes.
//
// Output lines: "held EPOCH"; "w EPOCH CHECK_TO_DEADLINE_NS WRITE_AFTER_DEADLINE_NS
// CHECK_TO_WRITE_NS" per write (all on this process's monotonic clock);
// "lost EPOCH WHY".
func pauseHolder(out io.Writer) error {
	env := func(k string) string { return os.Getenv("AUTHORITY_PAUSE_" + k) }
	src, err := tlsfiles.Load(tlsfiles.Files{CA: env("CA"), Cert: env("CERT"), Key: env("KEY")}, tlsfiles.Options{})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { io.Copy(io.Discard, os.Stdin); cancel() }() // the parent closes stdin to end us
	c, err := client.DialConfig(ctx, client.Config{Endpoints: strings.Split(env("ENDPOINTS"), ","), Credentials: src.Credentials(true)})
	if err != nil {
		return err
	}
	defer c.Close()
	w := bufio.NewWriter(out)
	emit := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...); w.Flush() }
	for ctx.Err() == nil {
		actx, acancel := context.WithTimeout(ctx, 10*time.Second)
		lease, err := c.Acquire(actx, env("DOMAIN"), env("HOLDER"), client.WithWait())
		acancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("acquire: %w", err)
		}
		emit("held %d", lease.Epoch())
		for {
			t1 := time.Now()
			if err := lease.Check(); err != nil {
				emit("lost %d %s", lease.Epoch(), strings.ReplaceAll(err.Error(), " ", "_"))
				break
			}
			d1 := lease.Deadline()
			emit("w %d %d %d %d", lease.Epoch(), d1.Sub(t1).Nanoseconds(), time.Since(d1).Nanoseconds(), time.Since(t1).Nanoseconds())
			time.Sleep(pauseWriteDt) // pacing of the write loop, not synchronisation
		}
	}
	return nil
}

func TestLeaseCheckSurvivesSIGSTOP(t *testing.T) {
	cl := testcluster.Start(t, 3)
	op := cl.Dial(testcluster.Operator)
	ctx := timeout(t, 4*time.Minute)
	t.Logf("seed %d", pauseSeed)
	var wg sync.WaitGroup
	results := make([]pauseResult, pauseHolders)
	for i := range results {
		domain, holder := fmt.Sprintf("pause-%d", i), fmt.Sprintf("pauser-%d", i)
		if _, err := op.CreateDomain(ctx, domain, pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: uint64(pauseTTL / time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = runPauser(t, cl, domain, holder, pauseRuns/pauseHolders, rand.New(rand.NewPCG(pauseSeed, uint64(i))))
		}()
	}
	wg.Wait()
	var total pauseResult
	for _, r := range results {
		total.add(r)
	}
	t.Logf("%d pauses of %v at random moments (TTL %v): %d writes, %d losses; every write checked before its deadline "+
		"(closest %v before it); %d writes landed after the deadline, each split from its check by the pause itself",
		total.pauses, pauseFor, pauseTTL, total.writes, total.losses, time.Duration(total.closest), total.late)
	if total.pauses != pauseRuns || total.losses < pauseRuns {
		t.Fatalf("%d pauses, %d losses: every pause longer than the TTL must end a lease", total.pauses, total.losses)
	}
}

type pauseResult struct {
	pauses, writes, losses, late int
	closest                      int64 // smallest check-to-deadline margin seen, ns
}

func (r *pauseResult) add(o pauseResult) {
	r.pauses += o.pauses
	r.writes += o.writes
	r.losses += o.losses
	r.late += o.late
	if r.closest == 0 || o.closest != 0 && o.closest < r.closest {
		r.closest = o.closest
	}
}

// runPauser starts one holder process and pauses it runs times, each time
// once it holds the lock, after a random part of the TTL.
func runPauser(t *testing.T, cl *testcluster.Cluster, domain, holder string, runs int, rng *rand.Rand) pauseResult {
	files := testcluster.Files(t, testcluster.Node(holder))
	cmd := exec.Command(os.Args[0], "-test.run=^TestPauseHolderProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "AUTHORITY_PAUSE_HOLDER="+holder,
		"AUTHORITY_PAUSE_CA="+files.CA, "AUTHORITY_PAUSE_CERT="+files.Cert, "AUTHORITY_PAUSE_KEY="+files.Key,
		"AUTHORITY_PAUSE_ENDPOINTS="+strings.Join(cl.Endpoints(), ","), "AUTHORITY_PAUSE_DOMAIN="+domain)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Error(err)
		return pauseResult{}
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Error(err)
		return pauseResult{}
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Error(err)
		return pauseResult{}
	}
	events := make(chan string, 1024)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			events <- sc.Text()
		}
	}()
	defer func() {
		// The holder may be blocked writing to a full pipe: kill it, and
		// drain what it wrote until the pipe closes.
		stdin.Close()
		cmd.Process.Kill()
		for range events {
		}
		cmd.Wait()
	}()
	var res pauseResult
	held := false
	next := func() (string, bool) {
		select {
		case line, ok := <-events:
			return line, ok
		case <-time.After(30 * time.Second):
			return "", false
		}
	}
	for res.pauses < runs {
		line, ok := next()
		if !ok {
			t.Errorf("%s: the holder stopped answering after %d pauses", holder, res.pauses)
			return res
		}
		f := strings.Fields(line)
		switch f[0] {
		case "held":
			held = true
			// Pause at a random moment of the hold (the holder writes every
			// 2 ms, so the stop lands anywhere in its loop).
			time.Sleep(time.Duration(rng.Int64N(int64(pauseTTL))))
			cmd.Process.Signal(syscall.SIGSTOP)
			time.Sleep(pauseFor)
			cmd.Process.Signal(syscall.SIGCONT)
			res.pauses++
		case "w":
			res.check(t, holder, f)
		case "lost":
			held = false
			res.losses++
		default:
			t.Errorf("%s: %s", holder, line)
			return res
		}
	}
	// Drain what the last pause produced, up to its loss.
	for held {
		line, ok := next()
		if !ok {
			break
		}
		f := strings.Fields(line)
		switch f[0] {
		case "w":
			res.check(t, holder, f)
		case "lost":
			held = false
			res.losses++
		}
	}
	return res
}

// check verifies one write: checked before its deadline, and if it landed
// after the deadline, the pause fell between its check and its write.
func (r *pauseResult) check(t *testing.T, holder string, f []string) {
	num := func(s string) int64 {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("%s: bad number %q", holder, s)
		}
		return n
	}
	checkToDeadline, afterDeadline, checkToWrite := num(f[2]), num(f[3]), num(f[4])
	r.writes++
	if checkToDeadline <= 0 {
		t.Errorf("%s: a write at epoch %s was checked %v after its deadline (Check said held)", holder, f[1], time.Duration(-checkToDeadline))
	}
	if r.closest == 0 || checkToDeadline < r.closest {
		r.closest = checkToDeadline
	}
	if afterDeadline >= 0 {
		r.late++
		if checkToWrite < int64(pauseFor/2) {
			t.Errorf("%s: a write at epoch %s landed %v after its deadline, %v after its check, with no pause between them",
				holder, f[1], time.Duration(afterDeadline), time.Duration(checkToWrite))
		}
	}
}
