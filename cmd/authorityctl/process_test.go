package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/internal/testcluster"
)

// Process tests run the built authorityctl against real authorityd
// processes. Each is bounded by processTestBudget; waits poll an observable
// condition with a deadline, never a fixed sleep.

const processTestBudget = 30 * time.Second

// ctl runs the authorityctl binary against one cluster as one identity
// (its certificate files in AUTHORITY_CACERT, AUTHORITY_CERT, AUTHORITY_KEY).
type ctl struct {
	t         *testing.T
	bin       string
	c         *testcluster.Cluster
	id        identity.Identity // zero: no certificate variables at all
	endpoints []string
	ctx       context.Context // the test's budget
}

// newCtl runs as the operator.
func newCtl(t *testing.T, c *testcluster.Cluster) *ctl {
	t.Helper()
	if testing.Short() {
		t.Skip("process test")
	}
	ctx, cancel := context.WithTimeout(context.Background(), processTestBudget)
	t.Cleanup(cancel)
	return &ctl{t: t, bin: ctlBinary(t), c: c, id: testcluster.Operator,
		endpoints: c.Endpoints(), ctx: ctx}
}

// as is the same runner with another identity (the same test budget).
func (r *ctl) as(id identity.Identity) *ctl {
	cp := *r
	cp.id = id
	return &cp
}

// env is the process environment: no inherited AUTHORITY_* variables, the
// identity's certificate files (testcluster.CtlEnv), endpoints in
// AUTHORITY_ENDPOINTS.
func (r *ctl) env(endpoints []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AUTHORITY_") {
			env = append(env, kv)
		}
	}
	if !r.id.IsZero() {
		for _, kv := range r.c.CtlEnv(r.id) {
			if !strings.HasPrefix(kv, envEndpoints+"=") {
				env = append(env, kv)
			}
		}
	}
	return append(env, envEndpoints+"="+strings.Join(endpoints, ","))
}

func (r *ctl) command(endpoints []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(r.ctx, r.bin, args...)
	cmd.Env = r.env(endpoints)
	return cmd
}

// result of one run.
type result struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r *ctl) runOn(endpoints []string, args ...string) result {
	r.t.Helper()
	cmd := r.command(endpoints, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		r.t.Fatalf("authorityctl %v: %v", args, err)
	}
	if r.ctx.Err() != nil {
		r.t.Fatalf("authorityctl %v: test budget of %v exhausted", args, processTestBudget)
	}
	return result{args: args, stdout: stdout.String(), stderr: stderr.String(), code: code}
}

func (r *ctl) run(args ...string) result {
	r.t.Helper()
	return r.runOn(r.endpoints, args...)
}

// want runs and requires the exit code.
func (r *ctl) want(code int, args ...string) result {
	r.t.Helper()
	res := r.run(args...)
	if res.code != code {
		r.t.Fatalf("authorityctl %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), res.code, code, res.stdout, res.stderr)
	}
	return res
}

// poll runs args until it exits with code, bounded by within.
func (r *ctl) poll(within time.Duration, code int, args ...string) result {
	r.t.Helper()
	return r.pollOn(r.endpoints, within, code, args...)
}

func (r *ctl) pollOn(endpoints []string, within time.Duration, code int, args ...string) result {
	r.t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		res := r.runOn(endpoints, args...)
		if res.code == code {
			return res
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("authorityctl %s: still exit %d after %v, want %d\nstdout:\n%s\nstderr:\n%s",
				strings.Join(args, " "), res.code, within, code, res.stdout, res.stderr)
		}
		<-tick.C
	}
}

// background is a long-running authorityctl (watch, node lease) whose
// stdout lines are read as they come.
type background struct {
	t      *testing.T
	args   []string
	cmd    *exec.Cmd
	lines  chan string
	stderr bytes.Buffer
	done   chan struct{}
	err    error
}

func (r *ctl) start(args ...string) *background {
	r.t.Helper()
	b := &background{t: r.t, args: args, cmd: r.command(r.endpoints, args...), lines: make(chan string, 1024), done: make(chan struct{})}
	b.cmd.Stderr = &b.stderr
	out, err := b.cmd.StdoutPipe()
	if err != nil {
		r.t.Fatal(err)
	}
	if err := b.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			b.lines <- sc.Text()
		}
		close(b.lines)
		b.err = b.cmd.Wait()
		close(b.done)
	}()
	r.t.Cleanup(func() {
		select {
		case <-b.done:
		default:
			_ = b.cmd.Process.Kill()
			<-b.done
		}
	})
	return b
}

// next returns the next JSON line matching match, failing after within.
func (b *background) next(within time.Duration, match func(map[string]any) bool) map[string]any {
	b.t.Helper()
	timeout := time.After(within)
	for {
		select {
		case line, ok := <-b.lines:
			if !ok {
				<-b.done
				b.t.Fatalf("authorityctl %v ended (%v) before the line wanted\nstderr:\n%s", b.args, b.err, b.stderr.String())
			}
			var v map[string]any
			if err := json.Unmarshal([]byte(line), &v); err != nil {
				b.t.Fatalf("authorityctl %v: line %q is not JSON: %v", b.args, line, err)
			}
			if match(v) {
				return v
			}
		case <-timeout:
			b.t.Fatalf("authorityctl %v: no matching line within %v", b.args, within)
		}
	}
}

// acquiredOrExit waits for a `node lease` to print acquired (true) or to
// exit (false, e.g. the lock is still held by someone else).
func (b *background) acquiredOrExit(within time.Duration) bool {
	b.t.Helper()
	timeout := time.After(within)
	for {
		select {
		case line, ok := <-b.lines:
			if !ok {
				<-b.done
				return false
			}
			if strings.Contains(line, `"event":"acquired"`) {
				return true
			}
		case <-timeout:
			b.t.Fatalf("authorityctl %v: neither acquired nor exited within %v", b.args, within)
		}
	}
}

// stop sends sig and returns the exit code (bounded).
func (b *background) stop(sig syscall.Signal, within time.Duration) int {
	b.t.Helper()
	_ = b.cmd.Process.Signal(sig)
	// Drain lines so the process never blocks on a full pipe.
	timeout := time.After(within)
	for {
		select {
		case <-b.done:
			var exit *exec.ExitError
			if errors.As(b.err, &exit) {
				return exit.ExitCode()
			}
			if b.err != nil {
				b.t.Fatalf("authorityctl %v: %v", b.args, b.err)
			}
			return 0
		case <-timeout:
			b.t.Fatalf("authorityctl %v did not exit within %v of %v", b.args, within, sig)
		}
	}
}

// rest returns the lines printed after the ones already read (after exit).
func (b *background) rest() []map[string]any {
	b.t.Helper()
	<-b.done
	var out []map[string]any
	for line := range b.lines {
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			b.t.Fatalf("line %q: %v", line, err)
		}
		out = append(out, v)
	}
	return out
}

func decodeJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, s)
	}
	return v
}

// path walks nested JSON objects.
func path(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func eventIs(name string) func(map[string]any) bool {
	return func(v map[string]any) bool { return v["event"] == name }
}

// TestProcessPromotion walks a failover through the CLI: domain, members,
// assignment, a held lease (node lease), progress and watermark, denied
// dry run and promotion (exit 3), expiry, allowed promotion, explain from
// every server, history and watch.
func TestProcessPromotion(t *testing.T) {
	c := testcluster.Start(t, 3)
	r := newCtl(t, c)
	n1, n2, reader := r.as(testcluster.Node("n1")), r.as(testcluster.Node("n2")), r.as(testcluster.Reader)
	const d = "orders"

	// Authority-gated, named: this walk drives the watermark and the
	// reports by hand, with no replicas to fence (replica-quorum, the
	// default, is checked at the end).
	r.want(0, "domain", "create", d, "--kind", "aerodb", "--ttl", "2s", "--durability", "authority-gated")
	for _, m := range []string{"n1", "n2", "n3"} {
		r.want(0, "member", "register", d, m, "--address", m+".db:5432")
	}
	got := decodeJSON(t, r.want(0, "-o", "json", "assign", d, "n1").stdout)
	if got["holder"] != "n1" || got["epoch"] != "1" {
		t.Fatalf("assign: %v", got)
	}
	// The holder keeps its lease alive, so "held" does not depend on timing.
	lease := n1.start("-o", "json", "node", "lease", d, "n1", "--quiet-renewals", "--release-on-exit=false")
	lease.next(10*time.Second, eventIs(leaseAcquired))

	n2.want(0, "node", "report-progress", d, "n2", "--epoch", "1", "--flushed-lsn", "10", "--flushed-hash", "aa10",
		"--wm-lsn", "10", "--wm-hash", "aa10", "--applied", "5", "--read-safe", "--state", "streaming")
	n1.want(0, "node", "advance-watermark", d, "n1", "--epoch", "1", "--lsn", "10", "--hash", "aa10", "--visible", "5")

	dry := decodeJSON(t, r.want(3, "-o", "json", "promote", d, "--to", "n2", "--dry-run").stdout)
	if path(dry, "explanation", "denial_reason") != "PrimaryStillActive" || dry["committed"] == true {
		t.Fatalf("dry run: %v", dry)
	}
	denied := r.want(3, "-o", "json", "promote", d, "--to", "n2", "--request-id", "r1", "--reason", "drill")
	rec := decodeJSON(t, denied.stdout)
	if path(rec, "explanation", "denial_reason") != "PrimaryStillActive" || rec["committed"] != true {
		t.Fatalf("denied promotion: %v", rec)
	}
	if !strings.Contains(denied.stderr, "PrimaryStillActive") {
		t.Fatalf("stderr of a denial: %q", denied.stderr)
	}

	// The holder stops renewing (SIGTERM without release): exit 0, then the
	// lease expires on the leader after its TTL.
	if code := lease.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("node lease exit %d on SIGTERM; stderr:\n%s", code, lease.stderr.String())
	}
	if rest := lease.rest(); len(rest) == 0 || rest[len(rest)-1]["event"] != leaseStopped {
		t.Fatalf("node lease's last lines: %v", rest)
	}
	r.poll(10*time.Second, 0, "promote", d, "--to", "n2", "--dry-run")

	allowed := decodeJSON(t, r.want(0, "-o", "json", "promote", d, "--to", "n2", "--request-id", "r2", "--expected-epoch", "1",
		"--reason", "failover drill").stdout)
	if path(allowed, "explanation", "epoch_after") != 2.0 || path(allowed, "explanation", "holder_after") != "n2" ||
		path(allowed, "explanation", "outcome") != "allowed" {
		t.Fatalf("allowed promotion: %v", allowed)
	}
	// Same request id again: the recorded outcome, not a second attempt.
	again := decodeJSON(t, r.want(0, "-o", "json", "promote", d, "--to", "n2", "--request-id", "r2", "--expected-epoch", "1",
		"--reason", "failover drill").stdout)
	if again["duplicate"] != true || path(again, "explanation", "log_index") != path(allowed, "explanation", "log_index") {
		t.Fatalf("retried promotion: %v", again)
	}

	// explain: byte-identical JSON from every server, linearizable and stale.
	var first string
	for _, ep := range r.endpoints {
		for _, args := range [][]string{
			{"-o", "json", "explain", d, "r2"},
			{"-o", "json", "explain", d, "r2", "--stale"},
		} {
			res := reader.pollOn([]string{ep}, 10*time.Second, 0, args...) // a stale read may lag the commit
			if first == "" {
				first = res.stdout
			} else if res.stdout != first {
				t.Fatalf("explain on %s %v differs:\n%s\nvs\n%s", ep, args, res.stdout, first)
			}
		}
	}
	if !strings.Contains(reader.want(0, "explain", d, "r1").stdout, "DENIED PrimaryStillActive") {
		t.Fatal("text explain of r1 lacks the denial")
	}

	hist := decodeJSON(t, reader.want(0, "-o", "json", "history", d, "--denied").stdout)
	records, _ := hist["records"].([]any)
	if len(records) != 2 || path(records[0], "request", "request_id") != "r1" || path(records[1], "request", "request_id") != "r2" {
		t.Fatalf("history: %v", hist)
	}
	if !strings.Contains(r.want(0, "history", d).stdout, "r2") {
		t.Fatal("text history lacks r2")
	}

	w := reader.start("-o", "json", "watch", "--from", "1")
	ev := w.next(10*time.Second, func(v map[string]any) bool {
		return v["type"] == "replication.promotion.transition_completed"
	})
	if ev["domain"] != d || ev["holder"] != "n2" || ev["epoch"] != 2.0 {
		t.Fatalf("transition event: %v", ev)
	}
	if code := w.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("watch exit %d on SIGTERM; stderr:\n%s", code, w.stderr.String())
	}

	dom := decodeJSON(t, r.want(0, "-o", "json", "domain", "get", d).stdout)
	if dom["holder"] != "n2" || dom["epoch"] != "2" {
		t.Fatalf("domain after promotion: %v", dom)
	}
	// update: the flags given change, the rest of the policy stays.
	upd := decodeJSON(t, r.want(0, "-o", "json", "domain", "update", d, "--automatic", "--report-max-age", "1m").stdout)
	if path(upd, "policy", "mode") != "PROMOTION_MODE_AUTOMATIC" || path(upd, "policy", "report_max_age_ms") != "60000" ||
		path(upd, "policy", "lease_ttl_ms") != "2000" {
		t.Fatalf("updated policy: %v", upd["policy"])
	}
	if !strings.Contains(r.want(0, "domain", "list").stdout, d) {
		t.Fatal("domain list lacks the domain")
	}
	if path(upd, "policy", "durability") != "DURABILITY_AUTHORITY_GATED" {
		t.Fatalf("a gated domain's durability after an update that named none: %v", upd["policy"])
	}

	// Without --durability a new aerodb domain is replica-quorum with
	// K = 1, an update that names none keeps it, and a lock domain has no
	// durability (authority-gated, its only mode).
	rq := decodeJSON(t, r.want(0, "-o", "json", "domain", "create", "rq", "--kind", "aerodb", "--ttl", "2s").stdout)
	if path(rq, "policy", "durability") != "DURABILITY_REPLICA_QUORUM" || path(rq, "policy", "min_sync_replicas") != 1.0 {
		t.Fatalf("default aerodb policy: %v", rq["policy"])
	}
	rq = decodeJSON(t, r.want(0, "-o", "json", "domain", "update", "rq", "--ttl", "3s").stdout)
	if path(rq, "policy", "durability") != "DURABILITY_REPLICA_QUORUM" || path(rq, "policy", "lease_ttl_ms") != "3000" {
		t.Fatalf("replica-quorum policy after an update that named no durability: %v", rq["policy"])
	}
	lk := decodeJSON(t, r.want(0, "-o", "json", "domain", "create", "lk", "--kind", "lock", "--ttl", "2s").stdout)
	if v, ok := path(lk, "policy", "durability").(string); ok && v != "DURABILITY_UNSPECIFIED" {
		t.Fatalf("default lock policy: %v", lk["policy"])
	}
}

// TestProcessLeaseAndSwitchover: `node lease --acquire` on a lock domain
// prints acquired, and released after SIGTERM (exit 0); a switchover waits
// for the holder's release, then promotes at that epoch.
func TestProcessLeaseAndSwitchover(t *testing.T) {
	c := testcluster.Start(t, 3)
	r := newCtl(t, c)
	// CI runners hold lock domains as deploy-runner identities; database
	// nodes act only as themselves.
	ci1 := r.as(identity.Identity{Role: identity.Deployer, Name: "ci-1"})
	ci2 := r.as(identity.Identity{Role: identity.Deployer, Name: "ci-2"})
	n1, n2 := r.as(testcluster.Node("n1")), r.as(testcluster.Node("n2"))

	r.want(0, "domain", "create", "deploy", "--kind", "lock", "--ttl", "2s")
	l := ci1.start("-o", "json", "node", "lease", "deploy", "ci-1", "--acquire")
	got := l.next(10*time.Second, eventIs(leaseAcquired))
	if got["domain"] != "deploy" || got["node"] != "ci-1" || got["epoch"] != float64(1) {
		t.Fatalf("acquired line: %v", got)
	}
	if ms, ok := got["deadline_ms_from_now"].(float64); !ok || ms <= 0 || ms > 2000 {
		t.Fatalf("acquired line's deadline: %v", got)
	}
	l.next(10*time.Second, eventIs(leaseRenewed))
	if code := l.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("node lease exit %d on SIGTERM; stderr:\n%s", code, l.stderr.String())
	}
	if rest := l.rest(); len(rest) == 0 || rest[len(rest)-1]["event"] != leaseReleased || rest[len(rest)-1]["error"] != nil {
		t.Fatalf("node lease's last lines: %v", rest)
	}
	if dom := decodeJSON(t, r.want(0, "-o", "json", "domain", "get", "deploy").stdout); dom["released"] != true {
		t.Fatalf("lock after release: %v", dom)
	}

	// A holder that stops renewing (paused past its TTL) loses the lease:
	// once another holder could take the lock, the paused one, resumed,
	// reports lost and exits 1.
	r.want(0, "domain", "create", "deploy2", "--kind", "lock", "--ttl", "1s")
	paused := ci1.start("-o", "json", "node", "lease", "deploy2", "ci-1", "--acquire", "--quiet-renewals")
	paused.next(10*time.Second, eventIs(leaseAcquired))
	if err := paused.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	var taker *background
	pace := time.NewTicker(100 * time.Millisecond)
	defer pace.Stop()
	for deadline := time.Now().Add(10 * time.Second); taker == nil; <-pace.C {
		b := ci2.start("-o", "json", "node", "lease", "deploy2", "ci-2", "--acquire", "--quiet-renewals")
		if b.acquiredOrExit(10 * time.Second) {
			taker = b
		} else if time.Now().After(deadline) {
			t.Fatalf("ci-2 never acquired the expired lock; last stderr:\n%s", b.stderr.String())
		}
	}
	_ = paused.cmd.Process.Signal(syscall.SIGCONT)
	lost := paused.next(10*time.Second, eventIs(leaseLost))
	if lost["error"] == nil || lost["reason"] == nil {
		t.Fatalf("lost line: %v", lost)
	}
	if code := paused.stop(syscall.SIGCONT, 10*time.Second); code != 1 {
		t.Fatalf("a lost lease exited %d, want 1; stderr:\n%s", code, paused.stderr.String())
	}
	if code := taker.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("ci-2 exit %d; stderr:\n%s", code, taker.stderr.String())
	}

	// Switchover: n1 holds (kept alive), n2 is ready; n1's drain releases.
	const d = "billing"
	// Gated, named: the switchover's promotion reads n2's report and the
	// watermark given by hand (no replica here answers a fence).
	r.want(0, "domain", "create", d, "--kind", "aerodb", "--ttl", "2s", "--durability", "authority-gated")
	r.want(0, "member", "register", d, "n1")
	r.want(0, "member", "register", d, "n2")
	r.want(0, "assign", d, "n1")
	holder := n1.start("-o", "json", "node", "lease", d, "n1", "--quiet-renewals")
	holder.next(10*time.Second, eventIs(leaseAcquired))
	n2.want(0, "node", "report-progress", d, "n2", "--epoch", "1", "--flushed-lsn", "3", "--flushed-hash", "bb03",
		"--wm-lsn", "3", "--wm-hash", "bb03", "--applied", "1", "--read-safe")
	n1.want(0, "node", "advance-watermark", d, "n1", "--epoch", "1", "--lsn", "3", "--hash", "bb03", "--visible", "1")

	// Without a release the wait ends with exit 1 and nothing changed.
	timedOut := r.want(1, "switchover", d, "--to", "n2", "--wait", "300ms")
	if !strings.Contains(timedOut.stderr, "did not release") {
		t.Fatalf("switchover timeout stderr: %q", timedOut.stderr)
	}

	sw := r.command(r.endpoints, "-o", "json", "switchover", d, "--to", "n2", "--request-id", "sw1", "--wait", "15s")
	var swOut bytes.Buffer
	sw.Stdout = &swOut
	swErr, err := sw.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.Start(); err != nil {
		t.Fatal(err)
	}
	progress := bufio.NewScanner(swErr)
	if !progress.Scan() || !strings.Contains(progress.Text(), "waiting") {
		t.Fatalf("switchover's first progress line: %q", progress.Text())
	}
	if code := holder.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
		t.Fatalf("holder exit %d; stderr:\n%s", code, holder.stderr.String())
	}
	var rest strings.Builder
	for progress.Scan() {
		rest.WriteString(progress.Text() + "\n")
	}
	if err := sw.Wait(); err != nil {
		t.Fatalf("switchover: %v\nstderr:\n%s", err, rest.String())
	}
	res := decodeJSON(t, swOut.String())
	if path(res, "explanation", "epoch_after") != 2.0 || path(res, "explanation", "holder_after") != "n2" ||
		path(res, "explanation", "request", "initiated_by") != "switchover" ||
		path(res, "explanation", "request", "expected_epoch") != 1.0 {
		t.Fatalf("switchover result: %v", res)
	}

	// Leadership moves on request; every server then names the new leader.
	old := c.WaitLeader().ID
	moved := decodeJSON(t, r.want(0, "-o", "json", "cluster", "leader-transfer").stdout)
	next, _ := moved["new_leader_id"].(string)
	if next == old {
		t.Fatalf("leader-transfer: leader still %s: %v", old, moved)
	}
	if now := c.WaitLeader().ID; now == old {
		t.Fatalf("leader is still %s after leader-transfer", old)
	}
}

// TestProcessBadInput is the CLI half of the bad-input table: each bad
// command line fails clearly (exit 2 locally, or exit 1 with the server's
// reason), and no server's state hash moves.
func TestProcessBadInput(t *testing.T) {
	c := testcluster.Start(t, 3)
	r := newCtl(t, c)
	n1, n2, reader := r.as(testcluster.Node("n1")), r.as(testcluster.Node("n2")), r.as(testcluster.Reader)
	noCerts := r.as(identity.Identity{})
	r.want(0, "domain", "create", "good", "--kind", "aerodb", "--ttl", "2s")
	r.want(0, "member", "register", "good", "n1")
	before := r.stateHashes()

	bigReason := filepath.Join(t.TempDir(), "reason")
	if err := os.WriteFile(bigReason, bytes.Repeat([]byte("r"), 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 129)
	missingFiles := filepath.Join(t.TempDir(), "absent")
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
		as     *ctl // nil: the operator
	}{
		{[]string{"domain", "create", "", "--kind", "lock"}, 2, "empty", nil},
		{[]string{"domain", "create", long, "--kind", "lock"}, 2, "longer than 128", nil},
		{[]string{"member", "register", "good", long}, 2, "longer than 128", nil},
		{[]string{"promote", "good", "--to", ""}, 2, "empty", nil},
		{[]string{"domain", "get", "missing"}, 1, "(NOT_FOUND)", nil},
		{[]string{"history", "missing"}, 1, "(NOT_FOUND)", nil},
		{[]string{"assign", "missing", "n1"}, 1, "(NOT_FOUND)", nil},
		{[]string{"member", "register", "missing", "n1"}, 1, "(NOT_FOUND)", nil},
		{[]string{"promote", "missing", "--to", "n1", "--request-id", "x1"}, 1, "(NOT_FOUND)", nil},
		{[]string{"explain", "good", "never-made"}, 1, "(NOT_FOUND)", nil},
		{[]string{"domain", "create", "good", "--kind", "aerodb"}, 1, "(ALREADY_EXISTS)", nil},
		{[]string{"domain", "create", "z", "--kind", "lock", "--ttl", "0"}, 2, "must be positive", nil},
		{[]string{"domain", "create", "z", "--kind", "lock", "--ttl", "-1s"}, 2, "must be positive", nil},
		{[]string{"domain", "update", "good", "--ttl", "0s"}, 2, "must be positive", nil},
		{[]string{"domain", "create", "z", "--kind", "table"}, 2, "not one of", nil},
		{[]string{"node", "advance-watermark", "good", "n1", "--epoch", "1", "--lsn", "1", "--hash", "zz"}, 2, "not hex", nil},
		{[]string{"node", "report-progress", "good", "n1", "--epoch", "1", "--flushed-lsn", "1", "--flushed-hash", "0x01"}, 2, "not hex", nil},
		{[]string{"node", "advance-watermark", "good", "n1", "--epoch", "0", "--lsn", "1", "--hash", "00"}, 2, "epochs start at 1", nil},
		{[]string{"node", "advance-watermark", "good", "n1", "--epoch", "1", "--lsn", "1", "--hash", "00"}, 1, "(FENCED)", n1},
		// Identities: each may do only what its role allows, and nothing
		// changes when it may not.
		{[]string{"node", "advance-watermark", "good", "n1", "--epoch", "1", "--lsn", "1", "--hash", "00"}, 1, "(PERMISSION_DENIED)", nil},
		{[]string{"node", "advance-watermark", "good", "n1", "--epoch", "1", "--lsn", "1", "--hash", "00"}, 1, "(PERMISSION_DENIED)", n2},
		{[]string{"node", "report-progress", "good", "n1", "--epoch", "1", "--flushed-lsn", "1", "--flushed-hash", "00"}, 1, "(PERMISSION_DENIED)", n2},
		{[]string{"node", "report-progress", "good", "n2", "--epoch", "1", "--flushed-lsn", "1", "--flushed-hash", "00"}, 1, "(PERMISSION_DENIED)", reader},
		{[]string{"assign", "good", "n1"}, 1, "(PERMISSION_DENIED)", n1},
		{[]string{"domain", "create", "z", "--kind", "lock"}, 1, "(PERMISSION_DENIED)", reader},
		{[]string{"member", "register", "good", "n2"}, 1, "(PERMISSION_DENIED)", n2},
		{[]string{"promote", "good", "--to", "n1", "--request-id", "x2"}, 1, "(PERMISSION_DENIED)", reader},
		{[]string{"cluster", "snapshot"}, 1, "(PERMISSION_DENIED)", reader},
		{[]string{"member", "remove", "s3", "--yes"}, 1, "(PERMISSION_DENIED)", reader},
		{[]string{"member", "remove", "s3"}, 2, "give --yes", nil},
		// Certificates: none given is a usage error; so are unreadable
		// files and --insecure with certificate files.
		{[]string{"domain", "get", "good"}, 2, "--cacert", noCerts},
		{[]string{"--cacert", missingFiles, "--cert", missingFiles, "--key", missingFiles, "domain", "get", "good"}, 2, "absent", noCerts},
		{[]string{"--insecure", "domain", "get", "good"}, 2, "--insecure excludes", nil},
		// Plaintext gets nothing from a mutual-TLS server.
		{[]string{"--insecure", "--timeout", "1s", "domain", "get", "good"}, 1, "", noCerts},
		{[]string{"promote", "good", "--to", "n1", "--waive", "allow-everything", "--reason", "r"}, 2, "not a known waiver", nil},
		{[]string{"promote", "good", "--to", "n1", "--request-id", "big", "--reason-file", bigReason}, 1, "(INVALID_ARGUMENT)", nil},
		{[]string{"promote", "good", "--to", "n1", "--request-id", "endless", "--reason-file", "/dev/zero"}, 2, "longer than 1048576 bytes", nil},
		{[]string{"bogus"}, 2, "unknown command", nil},
		{[]string{"domain", "get", "good", "--bogus"}, 2, "unknown flag", nil},
		{[]string{"-o", "xml", "domain", "get", "good"}, 2, "not one of", nil},
	} {
		run := r
		if tc.as != nil {
			run = tc.as
		}
		res := run.run(tc.args...)
		if res.code != tc.code || !strings.Contains(res.stderr, tc.stderr) || !strings.HasPrefix(res.stderr, "error: ") {
			t.Errorf("authorityctl %s (as %s): exit %d, stderr %q; want exit %d and %q",
				strings.Join(tc.args, " "), run.id, res.code, truncate(res.stderr), tc.code, tc.stderr)
		}
		if res.stdout != "" {
			t.Errorf("authorityctl %s: stdout %q, want nothing", strings.Join(tc.args, " "), truncate(res.stdout))
		}
	}

	// Maintenance that changes no replicated state.
	for _, args := range [][]string{{"cluster", "members"}, {"member", "list"}} {
		members := reader.want(0, args...).stdout
		for _, s := range c.Servers {
			if !strings.Contains(members, s.ID) || !strings.Contains(members, s.GRPCAddr) {
				t.Fatalf("%s lacks %s:\n%s", strings.Join(args, " "), s.ID, members)
			}
		}
	}
	snap := decodeJSON(t, r.want(0, "-o", "json", "cluster", "snapshot", "--endpoint", r.endpoints[0]).stdout)
	if path(snap, "header", "served_by") != c.Servers[0].ID || snap["index"] == nil {
		t.Fatalf("snapshot: %v", snap)
	}
	r.want(2, "cluster", "snapshot", "--endpoint", "no-port")

	if after := r.stateHashes(); !equalMaps(before, after) {
		t.Fatalf("state hashes moved: before %v, after %v", before, after)
	}
}

// stateHashes returns every endpoint's state hash once all agree (bounded).
func (r *ctl) stateHashes() map[string]string {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		res := r.want(0, "-o", "json", "cluster", "status")
		hashes := map[string]string{}
		distinct := map[string]bool{}
		list, _ := decodeJSON(r.t, res.stdout)["endpoints"].([]any)
		for _, e := range list {
			h, _ := path(e, "status", "state_hash").(string)
			hashes[path(e, "endpoint").(string)] = h
			distinct[h] = true
		}
		if len(hashes) == len(r.endpoints) && len(distinct) == 1 && !distinct[""] {
			return hashes
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("state hashes never agreed: %v", hashes)
		}
		time.Sleep(50 * time.Millisecond) // pacing between polls of an observable condition
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func truncate(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}
