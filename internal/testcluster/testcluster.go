// Package testcluster runs real authorityd processes for process tests: it
// builds the binaries once per test binary, starts N servers on free
// loopback ports with their own data dirs and log files, and can kill -9,
// restart from the same data dir, pause and resume them.
package testcluster

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aerodb/authority/tlsfiles"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// Binaries builds ./cmd/... of this module once per test process and
// returns the directory holding authorityd and authorityctl.
func Binaries(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		removeStaleBuilds(time.Hour)
		dir, err := os.MkdirTemp("", "authority-bin-")
		if err != nil {
			buildErr = err
			return
		}
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		// The failpoints tag compiles in the named crash points (armed per
		// server through Cluster.Env or the admin endpoint).
		cmd := exec.Command("go", "build", "-tags", "failpoints"+mutantTags, "-o", dir+string(os.PathSeparator), "./cmd/...")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		binDir = dir
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

// Server is one authorityd process.
type Server struct {
	ID       string
	RaftAddr string
	GRPCAddr string
	HTTPAddr string
	DataDir  string
	LogPath  string

	// Args are added to this server's command line at its next (re)start
	// (e.g. --force-new-cluster). With NoBootstrap, it starts without
	// --bootstrap/--peer (a recovered server).
	Args        []string
	NoBootstrap bool
	// TLS overrides the server's certificate files (rotation tests).
	TLS *tlsfiles.Files

	mu   sync.Mutex // guards cmd and done, which Restart replaces
	cmd  *exec.Cmd
	done chan struct{}
	join []string // gRPC endpoints it joined through (nil: a bootstrap peer)
}

// proc returns the current process and its exit channel.
func (s *Server) proc() (*exec.Cmd, chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd, s.done
}

// Cluster is a set of authorityd processes forming one raft cluster.
type Cluster struct {
	t        testing.TB
	httpOnce sync.Once
	http     *http.Client
	bin      string
	Servers  []*Server
	// ExtraArgs are appended to every server's command line.
	ExtraArgs []string
	// Env, per server id, is added to that server's environment at its
	// next (re)start, e.g. {"s1": {"AUTHORITY_FAILPOINTS=promote/received=kill"}}.
	Env map[string][]string
}

// Start launches n servers that bootstrap one cluster, and waits until one
// of them leads. Every server's ports lie below the kernel's ephemeral port
// range (stableAddr), so a killed server's port cannot be taken by some
// process's outgoing connection before the server restarts on it.
func Start(t testing.TB, n int, extraArgs ...string) *Cluster {
	t.Helper()
	return StartWith(t, Options{Servers: n, ExtraArgs: extraArgs})
}

// Options of StartWith.
type Options struct {
	Servers   int
	ExtraArgs []string
	// TLS, when set, gives a server's certificate files (by server id);
	// ReadyTLS then gives the (reader) certificate the harness checks
	// readiness with (both re-read when they change).
	TLS      func(id string) tlsfiles.Files
	ReadyTLS tlsfiles.Files
}

// StartWith is Start with options.
func StartWith(t testing.TB, o Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t, bin: Binaries(t), ExtraArgs: o.ExtraArgs}
	if o.TLS != nil {
		src, err := tlsfiles.Load(o.ReadyTLS, tlsfiles.Options{})
		if err != nil {
			t.Fatal(err)
		}
		c.httpOnce.Do(func() {
			c.http = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: src.ClientConfig("127.0.0.1")}}
		})
	}
	root := t.TempDir()
	for i := range o.Servers {
		id := fmt.Sprintf("s%d", i+1)
		s := &Server{ID: id, RaftAddr: stableAddr(t), GRPCAddr: stableAddr(t), HTTPAddr: stableAddr(t),
			DataDir: filepath.Join(root, id), LogPath: filepath.Join(root, id+".log")}
		if o.TLS != nil {
			f := o.TLS(id)
			s.TLS = &f
		}
		c.Servers = append(c.Servers, s)
	}
	for _, s := range c.Servers {
		c.Restart(s)
	}
	t.Cleanup(c.StopAll)
	c.WaitLeader()
	return c
}

// FreeAddr is a free loopback address below the ephemeral port range, for
// processes a test starts itself.
func FreeAddr(t testing.TB) string { return stableAddr(t) }

// freeAddr reserves a loopback port by listening on :0 and closing. A
// race with another process taking it is possible but rare on loopback.
func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Endpoints lists every server's gRPC address.
func (c *Cluster) Endpoints() []string {
	out := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		out[i] = s.GRPCAddr
	}
	return out
}

// bootstrapPeers is the peer list of the servers that formed the cluster
// (joined servers are not in it).
func (c *Cluster) bootstrapPeers() string {
	var parts []string
	for _, s := range c.Servers {
		if len(s.join) == 0 {
			parts = append(parts, s.ID+","+s.RaftAddr+","+s.GRPCAddr)
		}
	}
	return strings.Join(parts, ";")
}

// Join starts one more server that joins the running cluster through
// --join (it is not in the bootstrap peer list) and returns it.
func (c *Cluster) Join() *Server {
	c.t.Helper()
	id := fmt.Sprintf("s%d", len(c.Servers)+1)
	root := filepath.Dir(c.Servers[0].DataDir)
	s := &Server{ID: id, RaftAddr: stableAddr(c.t), GRPCAddr: stableAddr(c.t), HTTPAddr: stableAddr(c.t),
		DataDir: filepath.Join(root, id), LogPath: filepath.Join(root, id+".log"), join: c.Endpoints()}
	c.Servers = append(c.Servers, s)
	c.Restart(s)
	return s
}

// Restart starts (or restarts) a server from its data dir.
func (c *Cluster) Restart(s *Server) {
	c.t.Helper()
	if s.Running() {
		c.t.Fatalf("%s is already running", s.ID)
	}
	logf, err := os.OpenFile(s.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	args := []string{"--node-id", s.ID, "--data-dir", s.DataDir, "--raft-addr", s.RaftAddr, "--grpc-addr", s.GRPCAddr,
		"--http-addr", s.HTTPAddr, "--log-level", "debug", "--event-log", s.EventLogPath(),
		// Tests use leases shorter than survive a leader change on purpose
		// (a test of that passes --min-lease-ttl 0 to get the derived one).
		"--min-lease-ttl", "100ms"}
	args = append(args, c.serverTLSArgs(s)...)
	switch {
	case len(s.join) > 0:
		args = append(args, "--join", strings.Join(s.join, ","))
	case !s.NoBootstrap:
		args = append(args, "--bootstrap", "--peer", c.bootstrapPeers())
	}
	args = append(args, s.Args...)
	cmd := exec.Command(filepath.Join(c.bin, "authorityd"), append(args, c.ExtraArgs...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), c.Env[s.ID]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.t.Fatal(err)
	}
	done := make(chan struct{})
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	go func() {
		cmd.Wait()
		logf.Close()
		close(done)
	}()
}

// EventLogPath is the file the server appends its applied events to.
func (s *Server) EventLogPath() string { return strings.TrimSuffix(s.LogPath, ".log") + ".events" }

// Running reports whether the process is alive (not yet reaped).
func (s *Server) Running() bool {
	_, done := s.proc()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// ExitCode of the last run once it has exited (-1 when killed by a signal).
func (s *Server) ExitCode() int {
	cmd, done := s.proc()
	<-done
	return cmd.ProcessState.ExitCode()
}

// Pid of the running process.
func (s *Server) Pid() int { cmd, _ := s.proc(); return cmd.Process.Pid }

// Kill sends SIGKILL (no deferred code runs) and waits for the exit.
func (c *Cluster) Kill(s *Server) {
	if !s.Running() {
		return
	}
	cmd, done := s.proc()
	cmd.Process.Signal(syscall.SIGCONT) // a paused process must die too
	cmd.Process.Kill()
	<-done
}

// Stop sends SIGTERM and waits for a graceful exit (SIGKILL after 10 s).
func (c *Cluster) Stop(s *Server) {
	if !s.Running() {
		return
	}
	cmd, done := s.proc()
	cmd.Process.Signal(syscall.SIGCONT)
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.t.Errorf("%s did not stop on SIGTERM within 10 s; killing", s.ID)
		c.Kill(s)
	}
}

// Pause and Resume send SIGSTOP / SIGCONT.
func (c *Cluster) Pause(s *Server)  { cmd, _ := s.proc(); cmd.Process.Signal(syscall.SIGSTOP) }
func (c *Cluster) Resume(s *Server) { cmd, _ := s.proc(); cmd.Process.Signal(syscall.SIGCONT) }

// StopAll kills every running server (test cleanup).
func (c *Cluster) StopAll() {
	for _, s := range c.Servers {
		c.Kill(s)
	}
	if c.t.Failed() {
		for _, s := range c.Servers {
			if b, err := os.ReadFile(s.LogPath); err == nil {
				c.t.Logf("---- %s log (last 4 KiB) ----\n%s", s.ID, tail(b, 4096))
			}
		}
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Readyz fetches a server's /readyz; ok when it answers 200.
func (c *Cluster) Readyz(ctx context.Context, s *Server) (string, bool) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.URL(s, "/readyz"), nil)
	resp, err := c.readyClient().Do(req)
	if err != nil {
		return err.Error(), false
	}
	defer resp.Body.Close()
	buf := make([]byte, 256)
	n, _ := resp.Body.Read(buf)
	return string(buf[:n]), resp.StatusCode == http.StatusOK
}

// WaitLeader waits (up to 15 s) until every running server's /readyz
// names the same leader, and returns that leader's Server.
func (c *Cluster) WaitLeader() *Server {
	c.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if s := c.agreedLeader(); s != nil {
			return s
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatal("no agreed leader within 15 s")
	return nil
}

func (c *Cluster) agreedLeader() *Server {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	leader := ""
	for _, s := range c.Servers {
		if !s.Running() {
			continue
		}
		body, ok := c.Readyz(ctx, s)
		if !ok {
			return nil
		}
		id := strings.TrimPrefix(strings.Fields(body)[1], "leader=")
		if leader != "" && id != leader {
			return nil
		}
		leader = id
	}
	for _, s := range c.Servers {
		if s.ID == leader && s.Running() {
			return s
		}
	}
	return nil
}

// WithT returns a view of the cluster (the same servers, arguments and
// environment) that reports failures to t instead of the test that started
// it, so a subtest may restart or wait on a cluster its parent owns (FailNow
// must be called from the test's own goroutine).
func (c *Cluster) WithT(t testing.TB) *Cluster {
	c.readyClient()
	cc := &Cluster{t: t, http: c.http, bin: c.bin, Servers: c.Servers, ExtraArgs: c.ExtraArgs, Env: c.Env}
	cc.httpOnce.Do(func() {})
	return cc
}

// readyClient is the HTTP client WaitLeader uses (a reader).
func (c *Cluster) readyClient() *http.Client {
	c.httpOnce.Do(func() { c.http = c.HTTPClient(Reader) })
	return c.http
}

// StartStablePorts is Start (the crash tests named the behaviour first;
// every cluster now uses stable ports).
func StartStablePorts(t testing.TB, n int, extraArgs ...string) *Cluster {
	t.Helper()
	return Start(t, n, extraArgs...)
}

var (
	stableMu   sync.Mutex
	stableUsed = map[int]bool{}
	stableNext int
)

// stableAddr returns a free loopback address whose port lies below the
// ephemeral range (falling back to freeAddr when the range is unknown).
// Ports are handed out once per test process and checked free by a listen.
func stableAddr(t testing.TB) string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	var low int
	if err == nil {
		fmt.Sscan(string(b), &low)
	}
	if low <= 12000 {
		return freeAddr(t)
	}
	stableMu.Lock()
	defer stableMu.Unlock()
	if stableNext == 0 {
		// Spread test processes over the range by pid.
		stableNext = 10000 + (os.Getpid()*97)%(low-10000)
	}
	for range low - 10000 {
		p := stableNext
		stableNext++
		if stableNext >= low {
			stableNext = 10000
		}
		if stableUsed[p] {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", p)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		stableUsed[p] = true
		return addr
	}
	return freeAddr(t)
}

// removeStaleBuilds deletes binary directories earlier test processes left
// behind (each test binary builds its own; none can know when the last
// test using it ends), once they are older than age.
func removeStaleBuilds(age time.Duration) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "authority-bin-*"))
	for _, d := range dirs {
		if fi, err := os.Stat(d); err == nil && time.Since(fi.ModTime()) > age {
			os.RemoveAll(d)
		}
	}
}
