package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aerodb/authority/internal/testcluster"
)

// TestProcessOperatorUX runs the operator-experience cases against one
// shared three-server cluster: the lease view, member list for a domain,
// member register merging and confirming, the reused request id, READY,
// leader-transfer and completion.
func TestProcessOperatorUX(t *testing.T) {
	c := testcluster.Start(t, 3)
	r := newCtl(t, c)
	r.want(0, "domain", "create", "ux", "--kind", "aerodb", "--ttl", "60s")
	r.want(0, "member", "register", "ux", "n1", "--address", "10.0.0.1:5432", "--priority", "5")
	r.want(0, "member", "register", "ux", "n2", "--address", "10.0.0.2:5432")
	r.want(0, "assign", "ux", "n1")

	t.Run("lease view", func(t *testing.T) {
		r := r.on(t)
		res := r.want(0, "lease", "ux")
		if !strings.Contains(res.stdout, "HOLDER") || !strings.Contains(res.stdout, "n1") || !strings.Contains(res.stdout, "held") {
			t.Fatalf("lease ux:\n%s", res.stdout)
		}
		js := decodeJSON(t, r.want(0, "-o", "json", "lease").stdout)
		leases, _ := js["leases"].([]any)
		var found bool
		for _, l := range leases {
			m := l.(map[string]any)
			if m["domain"] == "ux" {
				found = true
				if m["holder"] != "n1" || m["state"] != "held" || m["remaining_ms"].(float64) <= 0 || m["remaining_ms"].(float64) > 60000 {
					t.Fatalf("lease row %v", m)
				}
			}
		}
		if !found {
			t.Fatalf("no lease row for ux: %v", js)
		}
		if y := r.want(0, "-o", "yaml", "lease", "ux").stdout; !strings.Contains(y, "holder: n1") {
			t.Fatalf("-o yaml lease:\n%s", y)
		}
	})

	t.Run("member list DOMAIN", func(t *testing.T) {
		r := r.on(t)
		out := r.want(0, "member", "list", "ux").stdout
		for _, want := range []string{"MEMBER", "n1", "10.0.0.1:5432", "n2", "active", "yes"} {
			if !strings.Contains(out, want) {
				t.Fatalf("member list ux lacks %q:\n%s", want, out)
			}
		}
	})

	// Re-registering with only --priority erased the address before.
	t.Run("register merges", func(t *testing.T) {
		r := r.on(t)
		r.want(0, "member", "register", "ux", "n2", "--priority", "7")
		d := decodeJSON(t, r.want(0, "-o", "json", "domain", "get", "ux").stdout)
		for _, m := range d["members"].([]any) {
			mm := m.(map[string]any)
			if mm["id"] == "n2" && (mm["address"] != "10.0.0.2:5432" || mm["priority"] != float64(7)) {
				t.Fatalf("n2 after --priority 7: %v", mm)
			}
		}
	})

	// --decommission of the current holder was accepted with no prompt.
	t.Run("decommission holder confirms", func(t *testing.T) {
		r := r.on(t)
		before := r.stateHashes()
		res := r.want(2, "member", "register", "ux", "n1", "--decommission")
		if !strings.Contains(res.stderr, "HOLDS domain ux") || !strings.Contains(res.stderr, "--yes") {
			t.Fatalf("stderr %q", res.stderr)
		}
		if after := r.stateHashes(); !equalMaps(before, after) {
			t.Fatalf("state changed without confirmation")
		}
	})

	// The README trap: a request id denied once is the recorded decision
	// of that request; the CLI says so, and how to try again.
	t.Run("reused request id", func(t *testing.T) {
		r := r.on(t)
		args := []string{"promote", "ux", "--to", "n2", "--request-id", "try-1", "--reason", "n1 gone"}
		first := r.want(3, args...)
		if strings.Contains(first.stderr, "recorded decision") {
			t.Fatalf("first attempt called a duplicate: %s", first.stderr)
		}
		again := r.want(3, args...)
		for _, want := range []string{"recorded decision of that earlier request", "new --request-id", "explain ux try-1"} {
			if !strings.Contains(again.stderr, want) {
				t.Fatalf("the same command again: stderr lacks %q:\n%s", want, again.stderr)
			}
		}
		dry := r.want(1, "promote", "ux", "--to", "n2", "--request-id", "try-1", "--expected-epoch", "1", "--dry-run")
		for _, want := range []string{"CONFLICT", "already names an earlier, different request", "new --request-id"} {
			if !strings.Contains(dry.stderr, want) {
				t.Fatalf("dry run with the id: stderr lacks %q:\n%s", want, dry.stderr)
			}
		}
	})

	// READY was false on healthy followers whose /readyz answers 200.
	t.Run("ready as readyz", func(t *testing.T) {
		r := r.on(t)
		js := decodeJSON(t, r.want(0, "-o", "json", "cluster", "status").stdout)
		for _, e := range js["endpoints"].([]any) {
			if m := e.(map[string]any); m["ready"] != true {
				t.Fatalf("endpoint not ready: %v", m)
			}
		}
		for _, line := range strings.Split(strings.TrimSpace(r.want(0, "cluster", "status").stdout), "\n")[1:] {
			if f := strings.Fields(line); len(f) < 9 || f[8] != "true" {
				t.Fatalf("READY column: %q", line)
			}
		}
	})

	t.Run("completion", func(t *testing.T) {
		r := r.on(t)
		if out := r.want(0, "completion", "bash").stdout; !strings.Contains(out, "authorityctl") {
			t.Fatalf("completion bash: %.200s", out)
		}
		if out := r.want(0, "__complete", "domain", "get", "u").stdout; !strings.Contains(out, "ux\n") {
			t.Fatalf("domain name completion: %q", out)
		}
	})

	t.Run("did you mean", func(t *testing.T) {
		r := r.on(t)
		if res := r.want(2, "domian", "list"); !strings.Contains(res.stderr, "did you mean domain") {
			t.Fatalf("stderr %q", res.stderr)
		}
	})

	// The README's promote steps, run in order as a newcomer would
	// against the state `make run` seeds (TTL 2 s instead of 15 s): the
	// dry run until it exits 0, then the real promotion, which must be
	// allowed (its request id was recorded as a denial before).
	t.Run("README steps in order", func(t *testing.T) {
		r := r.on(t)
		n1, n2 := r.as(testcluster.Node("n1")), r.as(testcluster.Node("n2"))
		r.want(0, "domain", "create", "orders", "--kind", "aerodb", "--ttl", "2s", "--durability", "authority-gated")
		for _, m := range []string{"n1", "n2", "n3"} {
			r.want(0, "member", "register", "orders", m)
		}
		r.want(0, "assign", "orders", "n1")
		n2.want(0, "node", "report-progress", "orders", "n2", "--epoch", "1", "--flushed-lsn", "10", "--flushed-hash", "aa10",
			"--wm-lsn", "10", "--wm-hash", "aa10", "--applied", "5", "--read-safe", "--state", "streaming")
		n1.want(0, "node", "advance-watermark", "orders", "n1", "--epoch", "1", "--lsn", "10", "--hash", "aa10", "--visible", "5")
		b, err := os.ReadFile("../../README.md")
		if err != nil {
			t.Fatal(err)
		}
		steps := 0
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(line, "bin/authorityctl ") || !strings.Contains(line, " promote ") && !strings.Contains(line, " lease ") {
				continue
			}
			args := shellWords(t, strings.TrimPrefix(line, "bin/authorityctl "))
			steps++
			if slices.Contains(args, "--dry-run") {
				r.poll(10*time.Second, 0, args...)
				continue
			}
			r.want(0, args...)
		}
		if steps < 3 {
			t.Fatalf("README: %d promote/lease steps found", steps)
		}
		if d := decodeJSON(t, r.want(0, "-o", "json", "domain", "get", "orders").stdout); d["holder"] != "n2" {
			t.Fatalf("after the README steps: holder %v", d["holder"])
		}
	})

	// leader-transfer printed "leader is now -" when raft picked.
	t.Run("leader-transfer names the leader", func(t *testing.T) {
		r := r.on(t)
		out := r.want(0, "cluster", "leader-transfer").stdout
		if !strings.HasPrefix(out, "leader is now ") || strings.Contains(out, "leader is now -") {
			t.Fatalf("leader-transfer: %q", out)
		}
	})
}

// TestProcessSignalNotSwallowed: a command blocked where no context
// reaches (opening a FIFO as --reason-file) ends on the first SIGTERM; it
// was swallowed before.
func TestProcessSignalNotSwallowed(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	bin := ctlBinary(t)
	fifo := filepath.Join(t.TempDir(), "reason")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--insecure", "promote", "d", "--to", "n2", "--reason-file", fifo)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Wait (bounded) until the process is blocked opening the FIFO: its
	// signal handler is installed by then.
	tasks := filepath.Join("/proc", strconv.Itoa(cmd.Process.Pid), "task", "*", "wchan")
	deadline := time.Now().Add(10 * time.Second)
	for {
		var b []byte
		files, _ := filepath.Glob(tasks)
		for _, f := range files {
			w, _ := os.ReadFile(f)
			b = append(append(b, w...), ' ')
		}
		if strings.Contains(string(b), "fifo") || strings.Contains(string(b), "partner") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not blocked on the FIFO within 10 s (wchan %q)", b)
		}
		select {
		case err := <-done:
			t.Fatalf("exited before the signal: %v %s", err, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		if !strings.Contains(stderr.String(), "interrupted") {
			t.Fatalf("stderr %q", stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the first SIGTERM was swallowed: still running 10 s later")
	}
}

// shellWords splits a shell command line (double quotes, a trailing
// comment) into words.
func shellWords(t *testing.T, line string) []string {
	var words []string
	var cur strings.Builder
	in, quoted := false, false
	for _, r := range line {
		switch {
		case r == '"':
			quoted, in = !quoted, true
		case r == '#' && !quoted && !in:
			return words
		case r == ' ' && !quoted:
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if quoted {
		t.Fatalf("unbalanced quote in %q", line)
	}
	if in {
		words = append(words, cur.String())
	}
	return words
}

// on is the same runner reporting to t (a subtest).
func (r *ctl) on(t *testing.T) *ctl {
	cp := *r
	cp.t = t
	return &cp
}

// ctlBinary is the authorityctl under test: AUTHORITYCTL_TEST_BIN when set
// (an older build, to see a test fail before its fix), else the build of
// this tree.
func ctlBinary(t *testing.T) string {
	if b := os.Getenv("AUTHORITYCTL_TEST_BIN"); b != "" {
		return b
	}
	return filepath.Join(testcluster.Binaries(t), "authorityctl")
}
