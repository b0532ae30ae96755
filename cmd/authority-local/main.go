// Command authority-local is `make run`: it starts a local 3-node AeroDB
// Authority cluster (three authorityd processes on 127.0.0.1, data under
// ./.data) on mutual TLS with certificates it issues into ./.data/certs
// (pki.Init; reused on the next run), seeds a demo domain through the Go
// client library (as the operator, and as nodes n1 and n2 for the
// watermark and the progress report), shows a promotion being denied with
// its explanation, prints the endpoints, the one export line that gives
// authorityctl the operator's certificate, and example commands, and stops
// the cluster cleanly on Ctrl-C. Run it again and the servers restart from
// their data directories. -insecure runs everything in plaintext without
// authorization instead.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/identity"
)

type server struct {
	id, raft, grpc, http string
	cmd                  *exec.Cmd
	done                 chan struct{}
}

func main() {
	bin := flag.String("bin", "bin", "directory holding authorityd and authorityctl")
	data := flag.String("data", ".data", "data directory root (one subdirectory per server)")
	demo := flag.Bool("demo", true, "seed and show the demo domain")
	insecure := flag.Bool("insecure", false, "plaintext, no certificates and no authorization (authorityd --insecure)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *bin, *data, *demo, *insecure); err != nil {
		fmt.Fprintln(os.Stderr, "authority-local:", err)
		os.Exit(1)
	}
}

// clients of the demo: the operator administers, nodes n1 and n2 act as
// themselves (n1 advances the watermark, n2 reports progress).
type clients struct{ operator, n1, n2 *client.Client }

func run(ctx context.Context, bin, data string, demo, insecure bool) error {
	servers := []*server{
		{id: "s1", raft: "127.0.0.1:7001", grpc: "127.0.0.1:8001", http: "127.0.0.1:9001"},
		{id: "s2", raft: "127.0.0.1:7002", grpc: "127.0.0.1:8002", http: "127.0.0.1:9002"},
		{id: "s3", raft: "127.0.0.1:7003", grpc: "127.0.0.1:8003", http: "127.0.0.1:9003"},
	}
	if err := portsFree(servers); err != nil {
		return err
	}
	var cs *certs
	if !insecure {
		abs, err := filepath.Abs(filepath.Join(data, "certs"))
		if err != nil {
			return err
		}
		c, err := ensureCerts(abs)
		if err != nil {
			return err
		}
		cs = &c
	}
	peers := make([]string, len(servers))
	for i, s := range servers {
		peers[i] = s.id + "," + s.raft + "," + s.grpc
	}
	for _, s := range servers {
		if err := start(s, bin, data, strings.Join(peers, ";"), cs); err != nil {
			stopAll(servers)
			return err
		}
	}
	defer stopAll(servers)
	endpoints := []string{servers[0].grpc, servers[1].grpc, servers[2].grpc}
	var cl clients
	for _, d := range []struct {
		c  **client.Client
		id identity.Identity
	}{{&cl.operator, operator}, {&cl.n1, nodeID("n1")}, {&cl.n2, nodeID("n2")}} {
		cfg := client.Config{Endpoints: endpoints}
		if cs != nil {
			creds, err := cs.creds(d.id)
			if err != nil {
				return err
			}
			cfg.Credentials = creds
		}
		c, err := client.DialConfig(ctx, cfg)
		if err != nil {
			return err
		}
		defer c.Close()
		*d.c = c
	}
	if err := waitReady(ctx, cl.operator); err != nil {
		return err
	}
	scheme, tlsNote := "https", "mutual TLS"
	if cs == nil {
		scheme, tlsNote = "http", "INSECURE: plaintext, no authorization"
	}
	fmt.Printf("AeroDB Authority: 3 servers on loopback (%s), data under %s/\n", tlsNote, data)
	for _, s := range servers {
		fmt.Printf("  %s  grpc %s  raft %s  status %s://%s/  (log %s)\n", s.id, s.grpc, s.raft, scheme, s.http, logPath(data, s))
	}
	if demo {
		if err := seedDemo(ctx, cl); err != nil {
			return err
		}
	}
	printExamples(bin, cs, servers[0])
	fmt.Println("\nPress Ctrl-C to stop the cluster.")
	<-ctx.Done()
	fmt.Println("\nstopping…")
	return nil
}

func portsFree(servers []*server) error {
	for _, s := range servers {
		for _, addr := range []string{s.raft, s.grpc, s.http} {
			l, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("port %s is in use (is another `make run` still running?): %w", addr, err)
			}
			l.Close()
		}
	}
	return nil
}

func logPath(data string, s *server) string { return filepath.Join(data, s.id+".log") }

func start(s *server, bin, data, peers string, cs *certs) error {
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(logPath(data, s), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	args := []string{"--node-id", s.id, "--data-dir", filepath.Join(data, s.id),
		"--raft-addr", s.raft, "--grpc-addr", s.grpc, "--http-addr", s.http, "--bootstrap", "--peer", peers}
	if cs != nil {
		f := cs.files(serverID(s.id))
		args = append(args, "--cacert", f.CA, "--cert", f.Cert, "--key", f.Key)
	} else {
		args = append(args, "--insecure")
	}
	s.cmd = exec.Command(filepath.Join(bin, "authorityd"), args...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Ctrl-C reaches us; we stop them in order
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w (did `make build` run?)", s.id, err)
	}
	s.done = make(chan struct{})
	go func() { s.cmd.Wait(); logf.Close(); close(s.done) }()
	return nil
}

// stopAll sends SIGTERM to every server and waits for a graceful exit.
func stopAll(servers []*server) {
	for _, s := range servers {
		if s.cmd != nil && s.cmd.Process != nil {
			s.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, s := range servers {
		if s.done == nil {
			continue
		}
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
	}
}

func waitReady(ctx context.Context, c *client.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		if _, err := c.ListDomains(ctx); err == nil {
			return nil
		} else if ctx.Err() != nil {
			return fmt.Errorf("cluster not ready within 20 s: %w", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func printExamples(bin string, cs *certs, s1 *server) {
	ctl := filepath.Join(bin, "authorityctl")
	fmt.Println("\nTry, in another terminal (endpoints default to these three servers):")
	if cs != nil {
		op := cs.files(operator)
		fmt.Printf("  export AUTHORITY_CACERT=%s AUTHORITY_CERT=%s AUTHORITY_KEY=%s\n", op.CA, op.Cert, op.Key)
	} else {
		fmt.Println("  export AUTHORITY_INSECURE=true")
	}
	fmt.Printf(`  %[1]s cluster status
  %[1]s domain get orders
  %[1]s explain orders demo-early
  %[1]s lease orders
  %[1]s promote orders --to n2 --dry-run
  %[1]s watch --from 1 orders
  %[1]s -o json history orders --denied
`, ctl)
	if cs != nil {
		rd := cs.files(reader)
		fmt.Printf(`
The HTTP ports are HTTPS with client certificates: every identity in
%[1]s/ may read the status page and /metrics, e.g.
  curl --cacert %[2]s --cert %[3]s --key %[4]s https://%[5]s/metrics
Node commands need the node's own certificate (AUTHORITY_CERT and
AUTHORITY_KEY of node-n1.crt / node-n1.key to act as n1): the operator
may not act as a lease holder.
`, cs.dir, rd.CA, rd.Cert, rd.Key, s1.http)
	}
}
