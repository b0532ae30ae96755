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

	rpb "github.com/aerodb/authority/api/refnode/v1"
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
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "`make demo`: 3 authority servers, 3 refnodes and a writer printing acknowledged writes (see docs/DEMO.md)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd, o, bin, data, offset, ttl)
		},
	}
	f := cmd.Flags()
	f.StringVar(&bin, "bin", "bin", "directory holding authorityd")
	f.StringVar(&data, "data", ".demo", "demo directory (wiped at start): data, logs, pid files, acked.log")
	f.IntVar(&offset, "port-offset", 0, "add this to every port (authority 7001-7003/8001-8003/9001-9003, refnodes 6001-6003)")
	f.DurationVar(&ttl, "lease-ttl", 10*time.Second, "lease TTL of the demo domain")
	return cmd
}

func addr(port, offset int) string { return "127.0.0.1:" + strconv.Itoa(port+offset) }

func runDemo(cmd *cobra.Command, o *options, bin, data string, offset int, ttl time.Duration) error {
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
		c.Env = append(os.Environ(), "AUTHORITY_ENDPOINTS=", "REFNODE_DOMAIN=")
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
	var peers, endpoints []string
	for i := 1; i <= 3; i++ {
		peers = append(peers, fmt.Sprintf("s%d,%s,%s", i, addr(7000+i, offset), addr(8000+i, offset)))
		endpoints = append(endpoints, addr(8000+i, offset))
	}
	for i := 1; i <= 3; i++ {
		args := []string{"--node-id", fmt.Sprintf("s%d", i), "--data-dir", filepath.Join(data, fmt.Sprintf("s%d", i)),
			"--raft-addr", addr(7000+i, offset), "--grpc-addr", addr(8000+i, offset), "--http-addr", addr(9000+i, offset),
			"--bootstrap", "--peer", strings.Join(peers, ";")}
		if err := start(fmt.Sprintf("s%d", i), filepath.Join(bin, "authorityd"), args, false); err != nil {
			return fmt.Errorf("%w (did `make build` run?)", err)
		}
	}
	auth := strings.Join(endpoints, ",")
	nodes := []string{addr(6001, offset), addr(6002, offset), addr(6003, offset)}
	for i := 1; i <= 3; i++ {
		var others []string
		for j, a := range nodes {
			if j != i-1 {
				others = append(others, a)
			}
		}
		args := []string{"serve", "--authority", auth, "--domain", o.domain, "--id", fmt.Sprintf("n%d", i),
			"--data-dir", filepath.Join(data, fmt.Sprintf("n%d", i)), "--listen", nodes[i-1], "--peers", strings.Join(others, ","),
			"--create-domain", "--initial-primary", "n1", "--lease-ttl", ttl.String()}
		if err := start(fmt.Sprintf("n%d", i), self, args, false); err != nil {
			return err
		}
	}
	if err := waitPrimary(ctx, nodes[0]); err != nil {
		return fmt.Errorf("n1 did not become primary: %w (logs in %s)", err, data)
	}
	fmt.Fprintf(cmd.OutOrStdout(), `AeroDB reference nodes on loopback (demo dir %s, logs there):
  authority  %s   (authorityctl talks to them by default)
  refnodes   n1 %s (primary, epoch 1), n2 %s, n3 %s — domain %q, lease TTL %v
The writer below writes one key every 300 ms to whoever is primary and prints
every acknowledged write (recorded in %s). Next steps: docs/DEMO.md.
Press Ctrl-C to stop everything.

`, data, auth, nodes[0], nodes[1], nodes[2], o.domain, ttl, filepath.Join(data, "acked.log"))
	if err := start("writer", self, []string{"writer", "--authority", auth, "--domain", o.domain,
		"--acked", filepath.Join(data, "acked.log"), "--interval", "300ms"}, true); err != nil {
		return err
	}
	<-ctx.Done()
	fmt.Fprintln(cmd.OutOrStdout(), "\nstopping…")
	return nil
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
