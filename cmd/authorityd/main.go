// Command authorityd is one AeroDB Authority server: a raft voter
// (hashicorp/raft, raft-boltdb/v2) serving the authority.v1 gRPC API, with
// /healthz, /readyz and /metrics on its HTTP port.
//
//	authorityd --node-id s1 --data-dir .data/s1 --raft-addr 127.0.0.1:7001 \
//	  --grpc-addr 127.0.0.1:8001 --http-addr 127.0.0.1:9001 --bootstrap \
//	  --peer 's1,127.0.0.1:7001,127.0.0.1:8001;s2,…;s3,…'
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/aerodb/authority/internal/version"
)

func main() {
	cfg, err := loadConfig(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if errors.Is(err, errShowVersion) {
		fmt.Println(version.Get().String("authorityd"))
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "authorityd: configuration:", err)
		os.Exit(2)
	}
	applyMemoryLimit(os.Getenv, os.ReadFile) // memlimit.go
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "authorityd:", err)
		os.Exit(1)
	}
}
