package compare

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/internal/testcluster"
	"github.com/aerodb/authority/tlsfiles"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// EtcdVersion is the etcd server module version go.mod pins.
const EtcdVersion = "3.7.3"

// Etcd is three etcd server processes built from go.etcd.io/etcd/server/v3
// (./etcdserver), on loopback, plaintext, with etcd's default settings.
type Etcd struct {
	tb      testing.TB
	bin     string
	tls     *tls.Config     // client TLS (nil: plaintext)
	files   *tlsfiles.Files // the client certificate (TLS)
	srv     tlsfiles.Files  // the members' certificate (TLS)
	Members []*EtcdMember
	// Client reaches all three members (the balancer picks).
	Client *clientv3.Client
}

// EtcdMember is one etcd process.
type EtcdMember struct {
	Name, PeerURL, ClientURL, DataDir, LogPath string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

var (
	etcdBuildOnce sync.Once
	etcdBin       string
	etcdBuildErr  error
)

// etcdBinary builds ./etcdserver of this module once per process (Run
// starts it in the background while authorityd builds).
func etcdBinary() (string, error) {
	etcdBuildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "compare-etcd-")
		if err != nil {
			etcdBuildErr = err
			return
		}
		etcdBin = filepath.Join(dir, "etcd")
		out, err := exec.Command("go", "build", "-o", etcdBin, "./etcdserver").CombinedOutput()
		if err != nil {
			etcdBuildErr = fmt.Errorf("go build ./etcdserver: %v\n%s", err, out)
		}
	})
	return etcdBin, etcdBuildErr
}

func (e *Etcd) Name() string { return "etcd" }

func (e *Etcd) Settings() []string {
	transport := "plaintext (http://)"
	if e.tls != nil {
		transport = "mutual TLS on client and peer URLs (https://, --client-cert-auth, --peer-client-cert-auth, the test CA)"
	}
	return []string{"etcd " + EtcdVersion + " (go.etcd.io/etcd/server/v3, built by go build)",
		"3 members, loopback, " + transport + ", otherwise default flags: heartbeat 100 ms, election 1000 ms, snapshot-count 10000, fsync on",
		"client go.etcd.io/etcd/client/v3 " + EtcdVersion}
}

func (e *Etcd) Run(tb testing.TB, f Family, cfg Config) Values { return f.Etcd(tb, e, cfg) }

// Setup starts three members and waits for a leader.
func (e *Etcd) Setup(tb testing.TB, cfg Config) {
	e.tb = tb
	var err error
	if e.bin, err = etcdBinary(); err != nil {
		tb.Fatal(err)
	}
	scheme := "http://"
	if cfg.TLS {
		scheme = "https://"
		e.srv = testcluster.Files(tb, identity.Identity{Role: identity.Server, Name: "etcd"})
		f := testcluster.Files(tb, testcluster.Node("etcd-client"))
		e.files = &f
		var err error
		if e.tls, err = clientTLS(f); err != nil {
			tb.Fatal(err)
		}
	}
	root := tb.TempDir()
	var initial []string
	for i := range 3 {
		m := &EtcdMember{Name: fmt.Sprintf("e%d", i+1), PeerURL: scheme + testcluster.FreeAddr(tb),
			ClientURL: scheme + testcluster.FreeAddr(tb)}
		m.DataDir, m.LogPath = filepath.Join(root, m.Name), filepath.Join(root, m.Name+".log")
		e.Members = append(e.Members, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	for _, m := range e.Members {
		e.start(m, strings.Join(initial, ","))
	}
	tb.Cleanup(e.stopAll)
	e.Client = e.NewClient(e.Endpoints()...)
	e.WaitLeader()
}

// Endpoints are the members' client URLs.
func (e *Etcd) Endpoints() []string {
	var out []string
	for _, m := range e.Members {
		out = append(out, m.ClientURL)
	}
	return out
}

// NewClient dials endpoints (closed when the test ends).
func (e *Etcd) NewClient(endpoints ...string) *clientv3.Client {
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop(), TLS: e.tls})
	if err != nil {
		e.tb.Fatal(err)
	}
	e.tb.Cleanup(func() { c.Close() })
	return c
}

// clientTLS is a client configuration with f's certificate that trusts f's
// CA (etcd's clients and the holder process).
func clientTLS(f tlsfiles.Files) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("no certificate in %s", f.CA)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

func (e *Etcd) start(m *EtcdMember, initial string) {
	logf, err := os.OpenFile(m.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		e.tb.Fatal(err)
	}
	if initial == "" {
		var parts []string
		for _, o := range e.Members {
			parts = append(parts, o.Name+"="+o.PeerURL)
		}
		initial = strings.Join(parts, ",")
	}
	args := []string{"--name", m.Name, "--data-dir", m.DataDir,
		"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
		"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
		"--initial-cluster", initial, "--initial-cluster-state", "new", "--initial-cluster-token", "bench-compare"}
	if e.tls != nil {
		args = append(args, "--cert-file", e.srv.Cert, "--key-file", e.srv.Key, "--trusted-ca-file", e.srv.CA, "--client-cert-auth",
			"--peer-cert-file", e.srv.Cert, "--peer-key-file", e.srv.Key, "--peer-trusted-ca-file", e.srv.CA, "--peer-client-cert-auth")
	}
	cmd := exec.Command(e.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Pdeathsig: a member dies with the test process even when it panics
	// before its cleanup runs.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		e.tb.Fatal(err)
	}
	done := make(chan struct{})
	m.mu.Lock()
	m.cmd, m.done = cmd, done
	m.mu.Unlock()
	go func() {
		cmd.Wait()
		logf.Close()
		close(done)
	}()
}

// Restart starts a stopped member from its data dir.
func (e *Etcd) Restart(m *EtcdMember) { e.start(m, "") }

// Pid of a running member.
func (m *EtcdMember) Pid() int { m.mu.Lock(); defer m.mu.Unlock(); return m.cmd.Process.Pid }

// Kill sends SIGKILL and waits for the exit.
func (e *Etcd) Kill(m *EtcdMember) {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.mu.Unlock()
	select {
	case <-done:
		return
	default:
	}
	cmd.Process.Signal(syscall.SIGCONT)
	cmd.Process.Kill()
	<-done
}

// Stop sends SIGTERM and waits (SIGKILL after 10 s).
func (e *Etcd) Stop(m *EtcdMember) {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.mu.Unlock()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		e.Kill(m)
	}
}

func (e *Etcd) stopAll() {
	for _, m := range e.Members {
		if m.cmd != nil {
			e.Kill(m)
		}
	}
	if e.tb.Failed() {
		for _, m := range e.Members {
			if b, err := os.ReadFile(m.LogPath); err == nil {
				e.tb.Logf("---- etcd %s log (last 2 KiB) ----\n%s", m.Name, b[max(0, len(b)-2048):])
			}
		}
	}
}

// Leader is the member every running member names as leader, or nil.
func (e *Etcd) leader(skip *EtcdMember) *EtcdMember {
	var lead uint64
	ids := map[uint64]*EtcdMember{}
	for _, m := range e.Members {
		if m == skip {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := e.Client.Status(ctx, m.ClientURL)
		cancel()
		if err != nil || st.Leader == 0 || (lead != 0 && st.Leader != lead) {
			return nil
		}
		lead = st.Leader
		ids[st.Header.MemberId] = m
	}
	return ids[lead]
}

// WaitLeader waits (up to 30 s) until the running members agree on a
// leader, skipping skip (a stopped member), and returns it.
func (e *Etcd) WaitLeaderSkip(skip *EtcdMember) *EtcdMember {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m := e.leader(skip); m != nil {
			return m
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.tb.Fatal("etcd: no agreed leader within 30 s")
	return nil
}

// WaitLeader waits for a leader all three members agree on.
func (e *Etcd) WaitLeader() *EtcdMember { return e.WaitLeaderSkip(nil) }

// LeaderClient is a client of the leader's endpoint only.
func (e *Etcd) LeaderClient() *clientv3.Client { return e.NewClient(e.WaitLeader().ClientURL) }
