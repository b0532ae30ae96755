// Command jepsen-agent is a lease-holder process of the fault-injection
// runs (jepsen-like/agent): it holds a lock domain and writes to the fenced
// resource while its lease is held, recording its history to a file. It
// dials the servers with mutual TLS as the identity of --cert (a
// node:<holder> certificate), or in plaintext with --insecure. It stops on
// SIGTERM/SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/aerodb/authority/jepsen-like/agent"
	"github.com/aerodb/authority/jepsen-like/history"
	"github.com/aerodb/authority/tlsfiles"
	"google.golang.org/grpc/credentials"
)

func main() {
	endpoints := flag.String("endpoints", "", "comma-separated gRPC endpoints")
	domain := flag.String("domain", "", "lock domain to hold")
	holder := flag.String("holder", "", "holder name")
	process := flag.Int("process", 0, "process id in the history")
	fencedURL := flag.String("fenced", "", "fenced resource write URL")
	hist := flag.String("history", "", "history file (JSON lines, appended)")
	interval := flag.Duration("interval", 50*time.Millisecond, "between writes")
	workDelay := flag.Duration("work-delay", 40*time.Millisecond, "between the lease check and the write")
	margin := flag.Duration("margin", 0, "client lease margin (0: the library's default)")
	cacert := flag.String("cacert", "", "CA bundle the servers' certificates are checked against")
	cert := flag.String("cert", "", "this agent's certificate (node/<holder>)")
	key := flag.String("key", "", "this agent's private key")
	insecure := flag.Bool("insecure", false, "plaintext, for servers running --insecure")
	flag.Parse()
	var creds credentials.TransportCredentials
	if !*insecure {
		src, err := tlsfiles.Load(tlsfiles.Files{CA: *cacert, Cert: *cert, Key: *key}, tlsfiles.Options{})
		if err != nil {
			fmt.Fprintln(os.Stderr, "jepsen-agent: --cacert, --cert and --key (or --insecure):", err)
			os.Exit(2)
		}
		creds = src.Credentials(true)
	}
	h, err := history.Create(*hist)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	err = agent.Run(ctx, agent.Config{Endpoints: strings.Split(*endpoints, ","), Domain: *domain, Holder: *holder, Process: *process,
		FencedURL: *fencedURL, History: h, Interval: *interval, WorkDelay: *workDelay, Margin: *margin, Credentials: creds})
	if cerr := h.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
