// Command authority-local is `make run`: it starts a local 3-node AeroDB
// Authority cluster (three authorityd processes on 127.0.0.1, data under
// ./.data), seeds a demo domain through the Go client library, shows a
// promotion being denied with its explanation, prints the endpoints and
// example authorityctl commands, and stops the cluster cleanly on Ctrl-C.
// Run it again and the servers restart from their data directories.
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
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *bin, *data, *demo); err != nil {
		fmt.Fprintln(os.Stderr, "authority-local:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, bin, data string, demo bool) error {
	servers := []*server{
		{id: "s1", raft: "127.0.0.1:7001", grpc: "127.0.0.1:8001", http: "127.0.0.1:9001"},
		{id: "s2", raft: "127.0.0.1:7002", grpc: "127.0.0.1:8002", http: "127.0.0.1:9002"},
		{id: "s3", raft: "127.0.0.1:7003", grpc: "127.0.0.1:8003", http: "127.0.0.1:9003"},
	}
	if err := portsFree(servers); err != nil {
		return err
	}
	peers := make([]string, len(servers))
	for i, s := range servers {
		peers[i] = s.id + "," + s.raft + "," + s.grpc
	}
	for _, s := range servers {
		if err := start(s, bin, data, strings.Join(peers, ";")); err != nil {
			stopAll(servers)
			return err
		}
	}
	defer stopAll(servers)
	endpoints := []string{servers[0].grpc, servers[1].grpc, servers[2].grpc}
	c, err := client.Dial(ctx, endpoints...)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := waitReady(ctx, c); err != nil {
		return err
	}
	fmt.Printf("AeroDB Authority: 3 servers on loopback, data under %s/\n", data)
	for _, s := range servers {
		fmt.Printf("  %s  grpc %s  raft %s  http http://%s/metrics  (log %s)\n", s.id, s.grpc, s.raft, s.http, logPath(data, s))
	}
	if demo {
		if err := seedDemo(ctx, c); err != nil {
			return err
		}
	}
	printExamples(bin, endpoints)
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

func start(s *server, bin, data, peers string) error {
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(logPath(data, s), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	s.cmd = exec.Command(filepath.Join(bin, "authorityd"), "--node-id", s.id, "--data-dir", filepath.Join(data, s.id),
		"--raft-addr", s.raft, "--grpc-addr", s.grpc, "--http-addr", s.http, "--bootstrap", "--peer", peers)
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

func printExamples(bin string, _ []string) {
	ctl := filepath.Join(bin, "authorityctl")
	fmt.Printf(`
Try, in another terminal (endpoints default to these three servers):
  %[1]s cluster status
  %[1]s domain get orders
  %[1]s explain orders demo-early
  %[1]s promote orders --to n2 --request-id try-1 --dry-run
  %[1]s watch --from 1 orders
  %[1]s -o json history orders --denied
`, ctl)
}
