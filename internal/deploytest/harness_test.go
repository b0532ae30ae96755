package deploytest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/internal/testcluster"
)

// The process tests of the deploy pipeline (docs/DEPLOY.md): three
// authorityd, two `authorityctl deploy run` runner processes (primary and
// secondary), and a fenced target — an HTTP service in the test that
// records every deploy call with its epoch and refuses epochs lower than
// the highest it has seen. The deploy command is this test binary run
// again (TestMain) as a small client of the target.

const (
	lockTTL   = 4 * time.Second
	killGrace = 500 * time.Millisecond
)

func TestMain(m *testing.M) {
	if os.Getenv("DEPLOYTEST_CMD") == "1" {
		os.Exit(deployCommand())
	}
	os.Exit(m.Run())
}

// deployCommand is the deploy command the runners run: begin, work,
// commit at the target, each stamped with AUTHORITY_EPOCH. Behaviour per
// runner group: DEPLOYTEST_FAIL_GROUPS exit 3 at once, DEPLOYTEST_HANG_GROUPS
// block forever.
func deployCommand() int {
	group := os.Getenv("AUTHORITY_RUNNER_GROUP")
	if slices.Contains(strings.Split(os.Getenv("DEPLOYTEST_FAIL_GROUPS"), ","), group) {
		fmt.Fprintln(os.Stderr, "deploy command: failing on purpose")
		return 3
	}
	if slices.Contains(strings.Split(os.Getenv("DEPLOYTEST_HANG_GROUPS"), ","), group) {
		select {} // hangs until killed
	}
	q := fmt.Sprintf("epoch=%s&group=%s&release=%s&pid=%d", os.Getenv("AUTHORITY_EPOCH"), group,
		os.Getenv("AUTHORITY_RELEASE"), os.Getpid())
	for _, step := range []string{"begin", "work", "commit"} {
		resp, err := http.Post(os.Getenv("DEPLOYTEST_TARGET")+"/"+step+"?"+q, "text/plain", nil)
		if err != nil {
			fmt.Fprintf(os.Stderr, "deploy command: %s: %v\n", step, err)
			return 4
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			fmt.Fprintf(os.Stderr, "deploy command: %s refused: %s\n", step, resp.Status)
			return 5
		}
	}
	return 0
}

// targetOp is one call the target accepted or refused.
type targetOp struct {
	step, group, release string
	epoch                uint64
	pid                  int
	refused              bool
}

// target is the fenced deploy target.
type target struct {
	srv     *httptest.Server
	mu      sync.Mutex
	ops     []targetOp
	max     uint64
	changed chan struct{} // closed and replaced on every call
	holdFor string        // runner group whose "work" call is held
	hold    chan struct{} // closed: held calls go on
}

func newTarget(t *testing.T) *target {
	tg := &target{changed: make(chan struct{}), hold: make(chan struct{})}
	tg.srv = httptest.NewServer(http.HandlerFunc(tg.serve))
	t.Cleanup(func() { tg.unhold(); tg.srv.Close() })
	return tg
}

func (tg *target) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/health" { // the application's health endpoint (a gate)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintln(w, `{"status":"ok"}`)
		return
	}
	q := r.URL.Query()
	epoch, _ := strconv.ParseUint(q.Get("epoch"), 10, 64)
	pid, _ := strconv.Atoi(q.Get("pid"))
	op := targetOp{step: strings.TrimPrefix(r.URL.Path, "/"), group: q.Get("group"), release: q.Get("release"), epoch: epoch, pid: pid}
	tg.mu.Lock()
	op.refused = epoch < tg.max
	if !op.refused {
		tg.max = epoch
	}
	tg.ops = append(tg.ops, op)
	hold := op.step == "work" && op.group == tg.holdFor && !op.refused
	holdCh := tg.hold
	close(tg.changed)
	tg.changed = make(chan struct{})
	tg.mu.Unlock()
	if hold {
		select {
		case <-holdCh:
		case <-r.Context().Done():
			return
		}
		tg.mu.Lock()
		refused := epoch < tg.max // fenced again after the hold: a late write
		if refused {
			late := op
			late.step, late.refused = "work-completed-late", true
			tg.ops = append(tg.ops, late)
			close(tg.changed)
			tg.changed = make(chan struct{})
		}
		tg.mu.Unlock()
		if refused {
			http.Error(w, "epoch superseded", http.StatusConflict)
			return
		}
	}
	if op.refused {
		http.Error(w, fmt.Sprintf("epoch %d is lower than %d", epoch, tg.max), http.StatusConflict)
		return
	}
	fmt.Fprintln(w, "ok")
}

func (tg *target) unhold() {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	select {
	case <-tg.hold:
	default:
		close(tg.hold)
	}
}

// await waits (bounded) until cond holds over the recorded calls.
func (tg *target) await(t *testing.T, what string, within time.Duration, cond func([]targetOp) bool) []targetOp {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		tg.mu.Lock()
		ops := slices.Clone(tg.ops)
		ch := tg.changed
		tg.mu.Unlock()
		if cond(ops) {
			return ops
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("target: %s did not happen within %s; calls: %+v", what, within, ops)
		}
	}
}

func (tg *target) calls() []targetOp {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return slices.Clone(tg.ops)
}

// checkOneDeploy asserts the target's safety: accepted calls never go back
// in epoch (no overlapping deploys: once a higher epoch began, nothing of a
// lower one was accepted), and exactly one commit of the release.
func checkOneDeploy(t *testing.T, ops []targetOp, release string) (commit targetOp) {
	t.Helper()
	var last uint64
	commits := 0
	for _, op := range ops {
		if op.refused {
			continue
		}
		if op.epoch < last {
			t.Fatalf("the target accepted %s at epoch %d after epoch %d: overlapping deploys; calls %+v", op.step, op.epoch, last, ops)
		}
		last = op.epoch
		if op.step == "commit" && op.release == release {
			commits++
			commit = op
		}
	}
	if commits != 1 {
		t.Fatalf("%d commits of %s at the target, want exactly 1; calls %+v", commits, release, ops)
	}
	return commit
}

// rig is one cluster shared by the cases.
type rig struct {
	c   *testcluster.Cluster
	bin string
	op  *client.Client
}

func newRig(t *testing.T) *rig {
	t.Helper()
	c := testcluster.Start(t, 3)
	return &rig{c: c, bin: filepath.Join(testcluster.Binaries(t), "authorityctl"), op: c.Dial(testcluster.Operator)}
}

// lock creates a deploy lock domain with the test's TTL.
func (r *rig) lock(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := r.op.CreateDomain(ctx, name, pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: uint64(lockTTL.Milliseconds())}); err != nil {
		t.Fatal(err)
	}
}

// runner is one `authorityctl deploy run` process.
type runner struct {
	name   string
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{}
	code   int
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type runOpts struct {
	domain, release, role, group, holder string
	target                               *target
	env                                  []string // extra environment (DEPLOYTEST_*)
	args                                 []string // extra flags
}

func (r *rig) start(t *testing.T, o runOpts) *runner {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"deploy", "run", "--domain", o.domain, "--env", "prod", "--release", o.release,
		"--role", o.role, "--runner-group", o.group, "--primary-grace", "3s",
		"--kill-grace", killGrace.String(), "--outcome-wait", "60s", "--lock-wait", "60s", "--timeout", "10s"}, o.args...)
	args = append(args, "--", self)
	cmd := exec.Command(r.bin, args...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AUTHORITY_") && !strings.HasPrefix(kv, "DEPLOYTEST_") {
			env = append(env, kv)
		}
	}
	env = append(env, r.c.CtlEnv(identity.Identity{Role: identity.Deployer, Name: o.holder})...)
	env = append(env, "DEPLOYTEST_CMD=1", "DEPLOYTEST_TARGET="+o.target.srv.URL)
	cmd.Env = append(env, o.env...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	// A deploy command that outlives its runner (it must not) keeps the
	// output pipe open: Wait must not wait for it.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	rn := &runner{name: o.role, cmd: cmd, out: out, exited: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		rn.code = cmd.ProcessState.ExitCode()
		if err != nil && rn.code == 0 {
			rn.code = -1
		}
		close(rn.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-rn.exited
		if t.Failed() {
			t.Logf("---- %s runner output ----\n%s", rn.name, out.String())
		}
	})
	return rn
}

// wait returns the runner's exit code (bounded).
func (rn *runner) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-rn.exited:
		return rn.code
	case <-time.After(within):
		t.Fatalf("%s runner still running after %s; output:\n%s", rn.name, within, rn.out.String())
	}
	return -1
}

// deployment reads the recorded deployment.
func (r *rig) deployment(t *testing.T, domain string) *pb.Deployment {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d, err := r.op.GetDomain(ctx, domain)
	if err != nil {
		t.Fatal(err)
	}
	return d.GetDeployment()
}

// acquiredAt is the leader-stamped time the lock was granted at epoch.
func (r *rig) acquiredAt(t *testing.T, domain string, epoch uint64) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := r.op.Watch(ctx, 1, domain)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for {
		ev, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("no lease.acquired at epoch %d of %s: %v", epoch, domain, err)
		}
		if ev.GetType() == "authority.lease.acquired" && ev.GetEpoch() == epoch {
			return time.UnixMilli(ev.GetStampedUnixMs())
		}
	}
}

func killGroup(pid int, sig syscall.Signal) { _ = syscall.Kill(-pid, sig) }

// awaitEvent waits (bounded) for an event of type typ on domain.
func (r *rig) awaitEvent(t *testing.T, domain, typ string) *pb.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w, err := r.op.Watch(ctx, 1, domain)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for {
		ev, err := w.Next(ctx)
		if err != nil {
			t.Fatalf("no %s event on %s: %v", typ, domain, err)
		}
		if ev.GetType() == typ {
			return ev
		}
	}
}

// awaitGone waits (bounded) until process pid has exited (a zombie counts
// as exited: a killed runner's orphans are reaped by whoever adopts them).
func awaitGone(t *testing.T, pid int, within time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		// state is the field after the parenthesised command name
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X') {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (pid %d) still runs %s later", what, pid, within)
		}
		time.Sleep(20 * time.Millisecond) // polling an observable condition, bounded
	}
}

// ctl runs one authorityctl command as the operator and returns its exit
// code.
func (r *rig) ctl(t *testing.T, args ...string) int {
	t.Helper()
	cmd := exec.Command(r.bin, args...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AUTHORITY_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, r.c.CtlEnv(testcluster.Operator)...)
	out, err := cmd.CombinedOutput()
	code := cmd.ProcessState.ExitCode()
	if err != nil && code <= 0 {
		t.Fatalf("authorityctl %v: %v\n%s", args, err, out)
	}
	t.Logf("authorityctl %v: exit %d: %s", args, code, bytes.TrimSpace(out))
	return code
}
