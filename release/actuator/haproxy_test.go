package actuator

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const haproxyBin = "/usr/sbin/haproxy"

// testHAProxy is a real haproxy in front of two httptest servers answering
// "stable" and "canary".
type testHAProxy struct {
	frontend string // http://127.0.0.1:PORT/
	socket   string
	hp       *HAProxy
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func answering(t *testing.T, body string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(s.Close)
	return s
}

func startHAProxy(t *testing.T) *testHAProxy {
	t.Helper()
	if _, err := os.Stat(haproxyBin); err != nil {
		t.Fatalf("%s not found (install the Debian package haproxy): %v", haproxyBin, err)
	}
	stable, canary := answering(t, "stable"), answering(t, "canary")
	dir := t.TempDir()
	sock := filepath.Join(dir, "admin.sock")
	port := freePort(t)
	cfg := fmt.Sprintf(`global
    stats socket %s mode 600 level admin
    nbthread 1
    maxconn 512
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:%d
    default_backend be
backend be
    balance roundrobin
    server stable %s weight 100
    server canary %s weight 0
`, sock, port, strings.TrimPrefix(stable.URL, "http://"), strings.TrimPrefix(canary.URL, "http://"))
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "haproxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(haproxyBin, "-db", "-f", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start haproxy: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("haproxy pid %d did not exit", cmd.Process.Pid)
		}
		logf.Close()
	})
	hp, err := NewHAProxy(HAProxyConfig{Socket: sock, Backend: "be", Stable: "stable", Canary: "canary"})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		out, err := hp.Command(ctx, "show info", maxStateAnswer)
		cancel()
		if err == nil && strings.Contains(string(out), "Name: HAProxy") {
			break
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(filepath.Join(dir, "haproxy.log"))
			t.Fatalf("haproxy exited (%v): %s", err, truncate(b, 2048))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("haproxy's stats socket did not answer within 10s: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // polling an observable condition, bounded above
	}
	return &testHAProxy{frontend: fmt.Sprintf("http://127.0.0.1:%d/", port), socket: sock, hp: hp}
}

// send sends n requests through the frontend (a new connection each) and
// counts the answers.
func (h *testHAProxy) send(t *testing.T, n int) (stable, canary int) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := 0; i < n; i++ {
		resp, err := c.Get(h.frontend)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64))
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d, %v", i, resp.StatusCode, err)
		}
		switch string(b) {
		case "stable":
			stable++
		case "canary":
			canary++
		default:
			t.Fatalf("request %d: unexpected answer %q", i, b)
		}
	}
	return stable, canary
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestHAProxyWeightsMoveTraffic(t *testing.T) {
	h := startHAProxy(t)
	ctx := ctxT(t)
	if err := h.hp.Check(ctx); err != nil {
		t.Fatal(err)
	}
	const n = 200
	for _, tc := range []struct {
		weight         uint32
		minCan, maxCan int
	}{{0, 0, 0}, {10, 5, 45}, {50, 60, 140}, {100, n, n}, {0, 0, 0}} {
		if err := h.hp.SetWeight(ctx, Call{Domain: "rel/web", Epoch: 1, Canary: "v2", Weight: tc.weight}); err != nil {
			t.Fatalf("weight %d: %v", tc.weight, err)
		}
		s, c, err := h.hp.Weights(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if s+c != 100 || c != tc.weight {
			t.Fatalf("weight %d: read back stable=%d canary=%d", tc.weight, s, c)
		}
		rows, err := h.hp.ServersState(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			want := map[string]uint32{"stable": s, "canary": c}[r.Name]
			if r.UserWeight != want {
				t.Fatalf("show servers state: %s weight %d, want %d", r.Name, r.UserWeight, want)
			}
		}
		gotS, gotC := h.send(t, n)
		t.Logf("weight %3d: %d requests: stable %d, canary %d", tc.weight, n, gotS, gotC)
		if gotC < tc.minCan || gotC > tc.maxCan {
			t.Fatalf("weight %d: canary got %d of %d, want %d..%d", tc.weight, gotC, n, tc.minCan, tc.maxCan)
		}
	}
}

func TestHAProxyRefusals(t *testing.T) {
	h := startHAProxy(t)
	ctx := ctxT(t)
	bad, err := NewHAProxy(HAProxyConfig{Socket: h.socket, Backend: "nope", Stable: "stable", Canary: "canary"})
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.SetWeight(ctx, Call{Domain: "d", Epoch: 1, Weight: 10}); err == nil {
		t.Fatal("an unknown backend was accepted")
	} else {
		t.Logf("unknown backend: %v", err)
	}
	if err := bad.Check(ctx); err == nil {
		t.Fatal("Check passed for an unknown backend")
	}
	for _, name := range []string{"a b", "x;shutdown sessions", "a/b", "", "a\nb"} {
		if _, err := NewHAProxy(HAProxyConfig{Socket: h.socket, Backend: name, Stable: "s", Canary: "c"}); err == nil {
			t.Fatalf("backend name %q accepted", name)
		}
	}
	if err := h.hp.SetWeight(ctx, Call{Domain: "d", Epoch: 1, Weight: 101}); err == nil {
		t.Fatal("weight 101 accepted")
	}
	missing, _ := NewHAProxy(HAProxyConfig{Socket: filepath.Join(t.TempDir(), "none.sock"), Backend: "be", Stable: "stable", Canary: "canary", Timeout: time.Second})
	if err := missing.SetWeight(ctx, Call{Domain: "d", Epoch: 1, Weight: 10}); err == nil {
		t.Fatal("a missing socket was accepted")
	}
}

func TestHAProxySplitScaled(t *testing.T) {
	h, err := NewHAProxy(HAProxyConfig{Socket: "x", Backend: "be", Stable: "s", Canary: "c", Total: 256})
	if err != nil {
		t.Fatal(err)
	}
	for w, want := range map[uint32][2]uint32{0: {256, 0}, 10: {230, 26}, 50: {128, 128}, 100: {0, 256}} {
		s, c := h.Split(w)
		if s != want[0] || c != want[1] {
			t.Fatalf("Split(%d) = %d/%d, want %v", w, s, c, want)
		}
	}
}
