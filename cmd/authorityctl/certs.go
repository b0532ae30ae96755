package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/pki"
	"github.com/spf13/cobra"
)

// newCertsCmd: init.
func newCertsCmd(o *options) *cobra.Command {
	return newGroupCmd("certs", "Issue certificates for local use and tests", newCertsInitCmd(o))
}

func newCertsInitCmd(o *options) *cobra.Command {
	var opts pki.InitOptions
	var hosts string
	cmd := &cobra.Command{
		Use:   "init DIR",
		Short: "Write a CA and server, operator, reader and node certificates into DIR",
		Long: `Writes a CA (ca.crt, ca.key; an existing one in DIR is reused) and one
certificate and key per identity, named ROLE-NAME.crt / ROLE-NAME.key, with
crypto/x509 only. Each certificate carries its identity as one URI SAN,
spiffe://TRUST-DOMAIN/ROLE/NAME:

  server/ID      an authorityd (--node-id ID); valid for --hosts
  operator/NAME  promotions, policy, domains, members, membership, snapshots
  node/ID        acquire, renew, release, watermarks, progress: only as ID
  deployer/GROUP, releaser/NAME   lock and release domains, only as themselves
  reader/NAME    reads, watch, explain, history

For production, issue the same URI SANs from your own CA.`,
		Args: exactArgs("DIR"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			opts.TrustDomain = o.trustDomain
			opts.Hosts = splitNonEmpty(hosts)
			ids, err := pki.Init(args[0], opts)
			if err != nil {
				return err
			}
			for _, id := range ids {
				fmt.Fprintf(o.stdout, "%-24s %s\n", id, filepath.Join(args[0], pki.CertFile(id)))
			}
			op := identity.Identity{Role: identity.Operator, Name: "admin"}
			if len(opts.Operators) > 0 {
				op.Name = opts.Operators[0]
			}
			fmt.Fprintf(o.stdout, "\nexport %s=%s %s=%s %s=%s\n", envCACert, filepath.Join(args[0], pki.CACertFile),
				envCert, filepath.Join(args[0], pki.CertFile(op)), envKey, filepath.Join(args[0], pki.KeyFile(op)))
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringSliceVar(&opts.Servers, "servers", nil, "server ids (default s1,s2,s3)")
	f.StringSliceVar(&opts.Nodes, "nodes", nil, "database node ids (default n1,n2,n3)")
	f.StringSliceVar(&opts.Operators, "operators", nil, "operator names (default admin)")
	f.StringSliceVar(&opts.Readers, "readers", nil, "reader names (default viewer)")
	f.StringSliceVar(&opts.Deployers, "deployers", nil, "deploy runner groups")
	f.StringSliceVar(&opts.Releasers, "releasers", nil, "release controllers")
	f.StringVar(&hosts, "hosts", "", "comma-separated DNS names and IPs of the servers (default 127.0.0.1,::1,localhost)")
	return cmd
}

func splitNonEmpty(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
