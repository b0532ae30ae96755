package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/replication/refnode"
	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"
)

func newServeCmd(o *options) *cobra.Command {
	var cfg refnode.Config
	var peers, level string
	var dur durabilityFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a node: primary when it is the domain's holder, replica of the holder otherwise",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Domain, cfg.Authority, cfg.Peers = o.domain, splitList(o.authority), splitList(peers)
			cfg.Logger = hclog.New(&hclog.LoggerOptions{Name: "refnode/" + cfg.ID, Level: hclog.LevelFromString(level), Output: os.Stderr})
			d, err := dur.resolve()
			if err != nil {
				return &codedError{exitUsage, err}
			}
			cfg.Durability = d
			if err := cfg.Validate(); err != nil {
				return &codedError{exitUsage, err}
			}
			creds, src, err := o.credentials()
			if err != nil {
				return err
			}
			// The node acts at the authority as node:<its id> (renewing its
			// lease, advancing watermarks, reporting progress): a certificate
			// of another identity would be refused on every such call.
			if want := (identity.Identity{Role: identity.Node, Name: cfg.ID}); src != nil && src.Self() != want {
				return &codedError{exitUsage, fmt.Errorf("--%s %s is the certificate of %s; node --id %s needs one of %s",
					flagAuthorityCert, o.cert, src.Self(), cfg.ID, want)}
			}
			cfg.Credentials = creds
			n, err := refnode.Open(cfg)
			if err == nil {
				err = n.Run(cmd.Context())
			}
			if errors.Is(err, refnode.ErrDiverged) {
				return &codedError{exitDiverged, err}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ID, "id", "", "member id of this node (e.g. n1)")
	f.StringVar(&cfg.DataDir, "data-dir", "", "data directory (WAL, fence epoch)")
	f.StringVar(&cfg.Listen, "listen", "", "gRPC listen address")
	f.StringVar(&cfg.Advertise, "advertise", "", "address registered for this member (default --listen)")
	f.StringVar(&peers, "peers", "", "other refnodes' addresses, comma-separated (the primary ships to them)")
	f.StringVar(&cfg.InitialPrimary, "initial-primary", "", "member to assign as the first holder when the domain has none (an operator's act: over mutual TLS an operator assigns it beforehand)")
	f.BoolVar(&cfg.CreateDomain, "create-domain", false, "create the domain if it does not exist (an operator's act: over mutual TLS an operator creates it beforehand)")
	f.DurationVar(&cfg.LeaseTTL, "lease-ttl", 10*time.Second, "lease TTL of a created domain")
	f.DurationVar(&cfg.ReportMaxAge, "report-max-age", 30*time.Second, "report max age of a created domain")
	dur.add(f, "with --create-domain: the created domain's (K = 1; the mode a node runs is always the domain's policy)")
	f.DurationVar(&cfg.WatermarkInterval, "watermark-interval", 0, "with --create-domain, replica-quorum: the primary advances the watermark at most once per interval (0: 1s)")
	f.DurationVar(&cfg.PollInterval, "poll-interval", 100*time.Millisecond, "how often to read the domain")
	f.StringVar(&level, "log-level", "info", "log level")
	return cmd
}

func newRebuildCmd(*options) *cobra.Command {
	var from, dir string
	cmd := &cobra.Command{
		Use:   "rebuild --from ADDR --data-dir DIR",
		Short: "Replace a (diverged) node's data with a verified copy of the primary's WAL; the node must be stopped",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || dir == "" {
				return &codedError{exitUsage, errors.New("rebuild needs --from and --data-dir")}
			}
			rep, err := refnode.Rebuild(cmd.Context(), from, dir)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rebuilt %s from %s: %d records, last %s, fence epoch %d\n", dir, from, rep.Records, rep.Last, rep.Epoch)
			if rep.MovedAside != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "the old data is kept in %s\n", rep.MovedAside)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "address of the node to copy (the current primary)")
	cmd.Flags().StringVar(&dir, "data-dir", "", "data directory to rebuild")
	return cmd
}
