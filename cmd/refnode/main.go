// Command refnode runs and operates the AeroDB reference node
// (replication/refnode): a key-value node with a real WAL whose primary
// holds its authority through AeroDB Authority and acknowledges a write
// only once the authority committed a watermark covering it.
//
//	refnode serve --id n1 --domain refdemo --data-dir d/n1 --listen 127.0.0.1:6001 \
//	    --authority 127.0.0.1:8001 --peers 127.0.0.1:6002,127.0.0.1:6003
//	refnode put k1 v1 | refnode get k1 | refnode status
//	refnode promote [--dry-run]          # promote the most advanced replica
//	refnode rebuild --from 127.0.0.1:6002 --data-dir d/n1
//	refnode writer --acked acked.log     # prints acknowledged writes
//	refnode verify --acked acked.log     # every acknowledged write is on the primary
//	refnode demo                         # `make demo`
//
// Global flags have environment variables: --authority
// AUTHORITY_ENDPOINTS, --domain REFNODE_DOMAIN. Exit codes: 0 ok, 1 error,
// 2 usage, 3 a promotion was denied, 4 the node diverged (rebuild it).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	rpb "github.com/aerodb/authority/api/refnode/v1"
	"github.com/aerodb/authority/client"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Exit codes.
const (
	exitOK       = 0
	exitError    = 1
	exitUsage    = 2
	exitDenied   = 3
	exitDiverged = 4
)

// codedError carries an exit code.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

// options are the global flags.
type options struct {
	authority string
	domain    string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	root := newRoot()
	root.SetArgs(os.Args[1:])
	err := root.ExecuteContext(ctx)
	stop()
	if err == nil {
		os.Exit(exitOK)
	}
	var ce *codedError
	if errors.As(err, &ce) {
		fmt.Fprintln(os.Stderr, "refnode:", ce.err)
		os.Exit(ce.code)
	}
	fmt.Fprintln(os.Stderr, "refnode:", err)
	os.Exit(exitError)
}

func newRoot() *cobra.Command {
	o := &options{}
	root := &cobra.Command{Use: "refnode", Short: "AeroDB reference node (WAL shipping, gated on AeroDB Authority)",
		SilenceUsage: true, SilenceErrors: true}
	root.PersistentFlags().StringVar(&o.authority, "authority", envOr("AUTHORITY_ENDPOINTS", "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003"),
		"authority gRPC endpoints, comma-separated (env AUTHORITY_ENDPOINTS)")
	root.PersistentFlags().StringVar(&o.domain, "domain", envOr("REFNODE_DOMAIN", "refdemo"), "authority domain (env REFNODE_DOMAIN)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &codedError{exitUsage, err} })
	root.AddCommand(newServeCmd(o), newRebuildCmd(o), newPutCmd(o), newGetCmd(o), newStatusCmd(o), newPromoteCmd(o),
		newWriterCmd(o), newVerifyCmd(o), newDemoCmd(o))
	return root
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (o *options) dial(ctx context.Context) (*client.Client, error) {
	eps := splitList(o.authority)
	if len(eps) == 0 {
		return nil, &codedError{exitUsage, errors.New("--authority is empty")}
	}
	return client.DialConfig(ctx, client.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
}

// nodeConn dials a refnode.
func nodeConn(addr string) (rpb.RefNodeClient, func(), error) {
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, err
	}
	return rpb.NewRefNodeClient(c), func() { c.Close() }, nil
}

// primaryAddr finds the holder's registered address.
func primaryAddr(ctx context.Context, ac *client.Client, domain string) (string, *pb.Domain, error) {
	d, err := ac.GetDomain(ctx, domain)
	if err != nil {
		return "", nil, err
	}
	for _, m := range d.GetMembers() {
		if m.GetId() == d.GetHolder() {
			return m.GetAddress(), d, nil
		}
	}
	return "", d, fmt.Errorf("domain %q has no holder with an address (holder %q)", domain, d.GetHolder())
}

// resolveNode is --node, else the primary's address.
func (o *options) resolveNode(ctx context.Context, node string) (string, error) {
	if node != "" {
		return node, nil
	}
	ac, err := o.dial(ctx)
	if err != nil {
		return "", err
	}
	defer ac.Close()
	addr, _, err := primaryAddr(ctx, ac, o.domain)
	return addr, err
}
