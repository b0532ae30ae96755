package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	rpb "github.com/aerodb/authority/api/refnode/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/pki"
	"github.com/aerodb/authority/replication/refnode"
	"github.com/aerodb/authority/tlsfiles"
	"github.com/spf13/cobra"
)

// demoProc is one child process of the demo.
type demoProc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func newDemoCmd(o *options) *cobra.Command {
	var bin, data string
	var offset int
	var ttl time.Duration
	var auto bool
	var dur durabilityFlags
	var wmInterval time.Duration
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "`make demo`: 3 authority servers (mutual TLS), 3 refnodes and a writer printing acknowledged writes (see docs/DEMO.md)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d, err := dur.resolve()
			if err != nil {
				return &codedError{exitUsage, err}
			}
			return runDemo(cmd, o, bin, data, offset, ttl, demoMode{auto: auto, durability: d, wmInterval: wmInterval})
		},
	}
	f := cmd.Flags()
	f.StringVar(&bin, "bin", "bin", "directory holding authorityd")
	f.StringVar(&data, "data", ".demo", "demo directory (wiped at start): data, logs, pid files, acked.log, certificates (pki/)")
	f.IntVar(&offset, "port-offset", 0, "add this to every port (authority 7001-7003/8001-8003/9001-9003, refnodes 6001-6003)")
	f.DurationVar(&ttl, "lease-ttl", 10*time.Second, "lease TTL of the demo domain")
	f.BoolVar(&auto, "auto", false, "create the demo domain in automatic mode: the authority promotes the best replica when the primary's lease expires")
	dur.add(f, "the demo domain's")
	f.DurationVar(&wmInterval, "watermark-interval", 0, "replica-quorum: the primary advances the watermark at most once per interval (0: 1s)")
	return cmd
}

// demoMode is how the demo domain is created.
type demoMode struct {
	auto       bool
	durability pb.Durability // named explicitly (durabilityFlags.resolve)
	wmInterval time.Duration
}

func (m demoMode) describeDurability() string {
	if m.durability == pb.Durability_DURABILITY_REPLICA_QUORUM {
		return "replica-quorum (acknowledged once 1 replica flushed; --durability authority-gated for the other mode)"
	}
	return "authority-gated (acknowledged once the authority committed the watermark)"
}

func addr(port, offset int) string { return "127.0.0.1:" + strconv.Itoa(port+offset) }

func runDemo(cmd *cobra.Command, o *options, bin, data string, offset int, ttl time.Duration, mode demoMode) error {
	ctx := cmd.Context()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var all []string
	for i := 1; i <= 3; i++ {
		all = append(all, addr(7000+i, offset), addr(8000+i, offset), addr(9000+i, offset), addr(6000+i, offset))
	}
	for _, a := range all {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("port %s is in use (is `make run` or another demo running?): %w", a, err)
		}
		l.Close()
	}
	if err := os.RemoveAll(data); err != nil {
		return err
	}
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	var procs []*demoProc
	defer func() { stopProcs(procs) }()
	start := func(name, path string, args []string, stdout bool) error {
		logf, err := os.OpenFile(filepath.Join(data, name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		c := exec.Command(path, args...)
		c.Stdout, c.Stderr = logf, logf
		if stdout {
			c.Stdout = cmd.OutOrStdout()
		}
		// Every child gets its settings as flags: none from the caller's
		// environment (an exported operator certificate, say).
		c.Env = append(os.Environ(), "AUTHORITY_ENDPOINTS=", "REFNODE_DOMAIN=", envCACert+"=", envCert+"=", envKey+"=", envInsecure+"=")
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := c.Start(); err != nil {
			logf.Close()
			return fmt.Errorf("start %s: %w", name, err)
		}
		p := &demoProc{name: name, cmd: c, done: make(chan struct{})}
		go func() { c.Wait(); logf.Close(); close(p.done) }()
		procs = append(procs, p)
		return os.WriteFile(filepath.Join(data, name+".pid"), []byte(strconv.Itoa(c.Process.Pid)+"\n"), 0o644)
	}
	// Certificates: a CA, servers s1..s3, nodes n1..n3 (one per refnode,
	// which acts as node:<its id>), the operator admin and the reader
	// viewer; authorityctl certs init writes the same.
	pkiDir := filepath.Join(data, "pki")
	nodeIDs := []string{"n1", "n2", "n3"}
	if _, err := pki.Init(pkiDir, pki.InitOptions{Servers: []string{"s1", "s2", "s3"}, Nodes: nodeIDs}); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	files := func(id identity.Identity) tlsfiles.Files {
		return tlsfiles.Files{CA: filepath.Join(pkiDir, pki.CACertFile), Cert: filepath.Join(pkiDir, pki.CertFile(id)),
			Key: filepath.Join(pkiDir, pki.KeyFile(id))}
	}
	// refnodeTLS are a refnode command's authority flags for id.
	refnodeTLS := func(id identity.Identity) []string {
		f := files(id)
		return []string{"--" + flagAuthorityCACert, f.CA, "--" + flagAuthorityCert, f.Cert, "--" + flagAuthorityKey, f.Key}
	}
	var peers, endpoints []string
	for i := 1; i <= 3; i++ {
		peers = append(peers, fmt.Sprintf("s%d,%s,%s", i, addr(7000+i, offset), addr(8000+i, offset)))
		endpoints = append(endpoints, addr(8000+i, offset))
	}
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("s%d", i)
		f := files(identity.Identity{Role: identity.Server, Name: id})
		args := []string{"--node-id", id, "--data-dir", filepath.Join(data, id),
			"--raft-addr", addr(7000+i, offset), "--grpc-addr", addr(8000+i, offset), "--http-addr", addr(9000+i, offset),
			"--bootstrap", "--peer", strings.Join(peers, ";"), "--cacert", f.CA, "--cert", f.Cert, "--key", f.Key}
		if min := client.MinLeaseTTL(500*time.Millisecond, 500*time.Millisecond); ttl < min {
			// A demo may ask for a lease shorter than survives a leader
			// change; the servers would refuse it unless told otherwise.
			args = append(args, "--min-lease-ttl", ttl.String())
			if i == 1 {
				fmt.Fprintf(cmd.ErrOrStderr(), "note: --lease-ttl %v is below the %v a lease needs to survive a raft leader change\n", ttl, min)
			}
		}
		if err := start(id, filepath.Join(bin, "authorityd"), args, false); err != nil {
			return fmt.Errorf("%w (did `make build` run?)", err)
		}
	}
	auth := strings.Join(endpoints, ",")
	nodes := []string{addr(6001, offset), addr(6002, offset), addr(6003, offset)}
	// The operator prepares the domain: a node's certificate may act only
	// as its own holder, not create domains, register members or assign.
	operator := files(identity.Identity{Role: identity.Operator, Name: "admin"})
	setup := refnode.Setup{Domain: o.domain, LeaseTTL: ttl, InitialPrimary: "n1", Automatic: mode.auto,
		Durability: mode.durability, MinSyncReplicas: 1, WatermarkInterval: mode.wmInterval}
	for i, id := range nodeIDs {
		setup.Members = append(setup.Members, refnode.Member{ID: id, Address: nodes[i]})
	}
	if err := provisionDemo(ctx, endpoints, operator, setup); err != nil {
		return fmt.Errorf("preparing domain %q as the operator: %w (logs in %s)", o.domain, err, data)
	}
	for i := 1; i <= 3; i++ {
		var others []string
		for j, a := range nodes {
			if j != i-1 {
				others = append(others, a)
			}
		}
		id := nodeIDs[i-1]
		args := []string{"serve", "--authority", auth, "--domain", o.domain, "--id", id,
			"--data-dir", filepath.Join(data, id), "--listen", nodes[i-1], "--peers", strings.Join(others, ",")}
		if err := start(id, self, append(args, refnodeTLS(identity.Identity{Role: identity.Node, Name: id})...), false); err != nil {
			return err
		}
	}
	if err := waitPrimary(ctx, nodes[0]); err != nil {
		return fmt.Errorf("n1 did not become primary: %w (logs in %s)", err, data)
	}
	fmt.Fprintf(cmd.OutOrStdout(), `AeroDB reference nodes on loopback (demo dir %s, logs there):
  authority  %s   (mutual TLS; certificates in %s)
  refnodes   n1 %s (primary, epoch 1), n2 %s, n3 %s — domain %q, lease TTL %v
  durability %s
The writer below writes one key every 300 ms to whoever is primary and prints
every acknowledged write (recorded in %s). Next steps: docs/DEMO.md;
in the other terminal, first run this line (bin/refnode and bin/authorityctl
then talk to the demo as its operator):

  export %s

Press Ctrl-C to stop everything.

`, data, auth, pkiDir, nodes[0], nodes[1], nodes[2], o.domain, ttl, mode.describeDurability(), filepath.Join(data, "acked.log"),
		exportLine(auth, operator))
	// The writer only reads the domain (to find the primary): a reader.
	writerArgs := []string{"writer", "--authority", auth, "--domain", o.domain, "--acked", filepath.Join(data, "acked.log"), "--interval", "300ms"}
	if err := start("writer", self, append(writerArgs, refnodeTLS(identity.Identity{Role: identity.Reader, Name: "viewer"})...), true); err != nil {
		return err
	}
	<-ctx.Done()
	fmt.Fprintln(cmd.OutOrStdout(), "\nstopping…")
	return nil
}

// provisionDemo creates the demo domain, registers n1..n3 at their
// addresses and assigns n1, as the operator (bounded: the servers elect a
// leader first).
func provisionDemo(ctx context.Context, endpoints []string, operator tlsfiles.Files, setup refnode.Setup) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	src, err := tlsfiles.Load(operator, tlsfiles.Options{})
	if err != nil {
		return err
	}
	ac, err := client.DialConfig(ctx, client.Config{Endpoints: endpoints, Credentials: src.Credentials(true)})
	if err != nil {
		return err
	}
	defer ac.Close()
	return refnode.Provision(ctx, ac, setup)
}

// exportLine is the shell line that points authorityctl and refnode at the
// demo as its operator.
func exportLine(endpoints string, operator tlsfiles.Files) string {
	return strings.Join([]string{"AUTHORITY_ENDPOINTS=" + shellQuote(endpoints), envCACert + "=" + shellQuote(operator.CA),
		envCert + "=" + shellQuote(operator.Cert), envKey + "=" + shellQuote(operator.Key)}, " ")
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:,@+=", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func waitPrimary(ctx context.Context, node string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, done, err := nodeConn(node)
	if err != nil {
		return err
	}
	defer done()
	for {
		st, err := c.Status(ctx, &rpb.StatusRequest{})
		if err == nil && st.Role == "primary" {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stopProcs stops the writer and refnodes first, then the servers.
func stopProcs(procs []*demoProc) {
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		p.cmd.Process.Signal(syscall.SIGCONT)
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
}
