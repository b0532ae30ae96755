// Command refnode runs and operates the AeroDB reference node
// (replication/refnode): a key-value node with a real WAL whose primary
// holds its authority through AeroDB Authority and acknowledges a write
// only once the authority committed a watermark covering it.
//
//	refnode serve --id n1 --domain refdemo --data-dir d/n1 --listen 127.0.0.1:6001 \
//	    --authority 127.0.0.1:8001 --peers 127.0.0.1:6002,127.0.0.1:6003 \
//	    --authority-cacert pki/ca.crt --authority-cert pki/node-n1.crt --authority-key pki/node-n1.key
//	refnode put k1 v1 | refnode get k1 | refnode status
//	refnode promote [--dry-run]          # promote the most advanced replica
//	refnode rebuild --from 127.0.0.1:6002 --data-dir d/n1
//	refnode writer --acked acked.log     # prints acknowledged writes
//	refnode verify --acked acked.log     # every acknowledged write is on the primary
//	refnode demo                         # `make demo`
//
// The connections to the authority are mutual TLS: --authority-cacert,
// --authority-cert and --authority-key name the CA bundle and this
// command's certificate and key (or --authority-insecure for an authority
// run with --insecure). A certificate's identity decides what the command
// may do: `serve --id n1` acts as node:n1 and needs a node/n1 certificate;
// `promote` needs an operator's; status, put, get, writer and verify only
// read (any identity). The refnodes' own traffic between each other and
// with their clients (put, get, WAL shipping, rebuild) is the database's,
// not the authority's, and is plaintext.
//
// Global flags have environment variables: --authority
// AUTHORITY_ENDPOINTS, --authority-cacert AUTHORITY_CACERT,
// --authority-cert AUTHORITY_CERT, --authority-key AUTHORITY_KEY,
// --authority-insecure AUTHORITY_INSECURE (the same variables as
// authorityctl's), --domain REFNODE_DOMAIN. Exit codes: 0 ok, 1 error,
// 2 usage, 3 a promotion was denied, 4 the node diverged (rebuild it).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	rpb "github.com/aerodb/authority/api/refnode/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/tlsfiles"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
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
	// The authority's TLS settings: CA bundle, certificate and key
	// (mutual TLS), or insecure (plaintext).
	cacert, cert, key string
	insecure          bool
}

// Global flags with their environment variables.
const (
	flagAuthorityCACert   = "authority-cacert"
	flagAuthorityCert     = "authority-cert"
	flagAuthorityKey      = "authority-key"
	flagAuthorityInsecure = "authority-insecure"
	envCACert             = "AUTHORITY_CACERT"
	envCert               = "AUTHORITY_CERT"
	envKey                = "AUTHORITY_KEY"
	envInsecure           = "AUTHORITY_INSECURE"
)

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
	pf := root.PersistentFlags()
	pf.StringVar(&o.cacert, flagAuthorityCACert, os.Getenv(envCACert),
		"CA bundle (PEM) the authority servers' certificates must chain to (env "+envCACert+")")
	pf.StringVar(&o.cert, flagAuthorityCert, os.Getenv(envCert),
		"client certificate (PEM) for the authority; serve --id ID needs node/ID (env "+envCert+")")
	pf.StringVar(&o.key, flagAuthorityKey, os.Getenv(envKey), "client private key (PEM) for the authority (env "+envKey+")")
	pf.BoolVar(&o.insecure, flagAuthorityInsecure, false, "plaintext to an authority run with --insecure (env "+envInsecure+")")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		// A boolean's variable is parsed here, so that a bad value is a
		// usage error; the flag on the command line wins.
		if v := os.Getenv(envInsecure); v != "" && !pf.Changed(flagAuthorityInsecure) {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return &codedError{exitUsage, fmt.Errorf("%s=%q: %v", envInsecure, v, err)}
			}
			o.insecure = b
		}
		return nil
	}
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
	creds, _, err := o.credentials()
	if err != nil {
		return nil, err
	}
	return client.DialConfig(ctx, client.Config{Endpoints: eps, DialTimeout: 5 * time.Second, Credentials: creds})
}

// credentials are the authority connections' credentials and the
// certificate source they come from (both nil with --authority-insecure).
// Neither certificates nor --authority-insecure is a usage error, as is
// both.
func (o *options) credentials() (credentials.TransportCredentials, *tlsfiles.Source, error) {
	given := 0
	for _, f := range []string{o.cacert, o.cert, o.key} {
		if f != "" {
			given++
		}
	}
	switch {
	case o.insecure && given > 0:
		return nil, nil, &codedError{exitUsage, fmt.Errorf("--%s excludes --%s, --%s and --%s", flagAuthorityInsecure,
			flagAuthorityCACert, flagAuthorityCert, flagAuthorityKey)}
	case o.insecure:
		return nil, nil, nil
	case given != 3:
		return nil, nil, &codedError{exitUsage, fmt.Errorf("give --%s, --%s and --%s (or %s, %s, %s) to reach the authority over mutual TLS, or --%s for an authority run with --insecure",
			flagAuthorityCACert, flagAuthorityCert, flagAuthorityKey, envCACert, envCert, envKey, flagAuthorityInsecure)}
	}
	src, err := tlsfiles.Load(tlsfiles.Files{CA: o.cacert, Cert: o.cert, Key: o.key}, tlsfiles.Options{})
	if err != nil {
		return nil, nil, &codedError{exitUsage, err}
	}
	return src.Credentials(true), src, nil
}

// nodeConn dials a refnode. Plaintext: refnode-to-refnode and client
// traffic is the database's own, not an authority listener.
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
