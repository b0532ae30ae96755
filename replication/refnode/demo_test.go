package refnode

import (
	"bytes"
	"fmt"
	"net"
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

	"github.com/aerodb/authority/internal/testcluster"
)

// syncBuffer collects a child's output safely.
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

// demoOffset finds a port offset for which every demo port is free.
func demoOffset(t *testing.T) int {
	for off := 20000 + os.Getpid()%5000; off < 40000; off += 137 {
		free := true
		for _, base := range []int{6001, 6002, 6003, 7001, 7002, 7003, 8001, 8002, 8003, 9001, 9002, 9003} {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+off))
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		if free {
			return off
		}
	}
	t.Fatal("no free port range for the demo")
	return 0
}

// exportVars parses the demo's `export K=V ...` line (values unquoted as
// a shell would; the demo quotes only with '...').
func exportVars(t *testing.T, out string) []string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "export ")
		if !ok {
			continue
		}
		var vars []string
		for _, kv := range strings.Fields(rest) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				t.Fatalf("export line %q: %q is not K=V", line, kv)
			}
			vars = append(vars, k+"="+strings.Trim(v, "'"))
		}
		return vars
	}
	t.Fatalf("the demo printed no export line:\n%s", out)
	return nil
}

// Acceptance 5: the steps of docs/DEMO.md, as written, on shifted ports
// and a 2 s lease, in the default durability (replica-quorum): the commands run with the variables of the export line
// the demo prints (the authority's endpoints and the operator's
// certificate; the authority runs mutual TLS).
func TestDemoWalkthrough(t *testing.T) {
	bin := testcluster.Binaries(t)
	refnode := filepath.Join(bin, "refnode")
	dir := filepath.Join(t.TempDir(), ".demo")
	off := demoOffset(t)
	endpoints := fmt.Sprintf("127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d", 8001+off, 8002+off, 8003+off)
	// No certificate from the test's own environment reaches the commands:
	// only what the export line sets.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AUTHORITY_") {
			env = append(env, kv)
		}
	}

	// Step 1: make demo.
	var out syncBuffer
	demo := exec.Command(refnode, "demo", "--bin", bin, "--data", dir, "--port-offset", strconv.Itoa(off), "--lease-ttl", "2s")
	demo.Stdout, demo.Stderr, demo.Env = &out, &out, env
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { demo.Wait(); close(done) }()
	t.Cleanup(func() {
		demo.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			demo.Process.Kill()
		}
		if t.Failed() {
			t.Logf("demo output:\n%s", tailBytes([]byte(out.String()), 4096))
		}
	})
	n1 := fmt.Sprintf("127.0.0.1:%d", 6001+off)
	eventually(t, 30*time.Second, "acknowledged writes from n1", func() (bool, string) {
		return strings.Count(out.String(), "from "+n1+" epoch=1") >= 3, ""
	})
	// The demo runs the default durability of a new aerodb domain.
	if !strings.Contains(out.String(), "durability replica-quorum") {
		t.Fatalf("the demo's banner does not say durability replica-quorum:\n%s", out.String())
	}
	// The second terminal runs the export line first.
	exported := exportVars(t, out.String())
	if !slices.Contains(exported, "AUTHORITY_ENDPOINTS="+endpoints) {
		t.Fatalf("export line sets %v, want AUTHORITY_ENDPOINTS=%s", exported, endpoints)
	}
	env = append(env, exported...)
	run := func(args ...string) (string, int) {
		cmd := exec.Command(refnode, args...)
		cmd.Env = env
		b, err := cmd.CombinedOutput()
		code := 0
		if err != nil {
			code = cmd.ProcessState.ExitCode()
		}
		return string(b), code
	}
	// Step 2.
	if s, code := run("status"); code != 0 || !strings.Contains(s, "primary") {
		t.Fatalf("status (%d):\n%s", code, s)
	}
	// Going further, "Identities are enforced": a node certificate cannot
	// promote, not even the candidate's own.
	operatorEnv := env
	env = append(slices.Clone(env), "AUTHORITY_CERT="+filepath.Join(dir, "pki", "node-n2.crt"), "AUTHORITY_KEY="+filepath.Join(dir, "pki", "node-n2.key"))
	if s, code := run("promote", "--dry-run", "--to", "n2"); code != 1 || !strings.Contains(s, "permission denied: node:n2 may not call") {
		t.Fatalf("dry run with n2's node certificate (exit %d), want permission denied:\n%s", code, s)
	}
	env = operatorEnv
	// Step 3: kill -9 $(cat .demo/n1.pid).
	pidText, err := os.ReadFile(filepath.Join(dir, "n1.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(pidText)))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Step 4: the dry run is denied while the lease may be valid.
	if s, code := run("promote", "--dry-run"); code != 3 || !strings.Contains(s, "PrimaryStillActive") {
		t.Fatalf("dry run right after the kill (exit %d), want PrimaryStillActive:\n%s", code, s)
	}
	// Step 5: promote, repeated until the lease expired.
	var promoted string
	eventually(t, 20*time.Second, "the promotion", func() (bool, string) {
		s, code := run("promote")
		promoted = s
		return code == 0 && strings.Contains(s, "PROMOTED"), s
	})
	t.Logf("%s", firstLines(promoted, 2))
	eventually(t, 20*time.Second, "acknowledged writes at epoch 2", func() (bool, string) {
		return strings.Contains(out.String(), "epoch=2"), ""
	})
	// Step 6.
	if s, code := run("verify", "--acked", filepath.Join(dir, "acked.log")); code != 0 || !strings.Contains(s, "acknowledged writes are on") {
		t.Fatalf("verify (exit %d):\n%s", code, s)
	} else {
		t.Logf("%s", strings.TrimSpace(s))
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}
