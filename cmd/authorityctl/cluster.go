package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// newClusterCmd: status, members, leader-transfer, snapshot.
func newClusterCmd(o *options) *cobra.Command {
	return newGroupCmd("cluster", "Inspect and maintain the raft cluster",
		newClusterStatusCmd(o), newClusterMembersCmd(o), newClusterLeaderTransferCmd(o), newClusterSnapshotCmd(o))
}

func newClusterStatusCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show every endpoint's status: node, raft state, leader, term, indexes, state hash, readiness",
		Long: `Asks each endpoint given by --endpoints for its own status (one attempt each).
Converged replicas show the same state hash. Exits 1 when an endpoint did not
answer (after printing the others).`,
		Args: exactArgs(),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := o.withTimeout(cmd.Context())
			defer cancel()
			c, err := o.connect(ctx)
			if err != nil {
				return err
			}
			defer closeQuietly(c)
			rows := make([]statusRow, 0, len(o.endpoints))
			failed := 0
			for _, ep := range o.endpoints {
				st, err := c.Status(ctx, ep)
				rows = append(rows, statusRow{Endpoint: ep, Status: st, Err: err})
				if err != nil {
					failed++
				}
			}
			if err := o.printer().Status(rows); err != nil {
				return err
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d endpoints did not answer", failed, len(rows))
			}
			return nil
		}),
	}
}

func newClusterMembersCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "members",
		Short: "List the raft configuration: ids, addresses, suffrage and the leader",
		Args:  exactArgs(),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := o.withTimeout(cmd.Context())
			defer cancel()
			c, err := o.connect(ctx)
			if err != nil {
				return err
			}
			defer closeQuietly(c)
			m, err := c.Members(ctx)
			if err != nil {
				return err
			}
			return o.printer().Members(m)
		}),
	}
}

func newClusterLeaderTransferCmd(o *options) *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "leader-transfer",
		Short: "Hand raft leadership to another server (--to ID, or let raft pick)",
		Long: `Asks the leader to hand leadership over. On a transport failure the outcome
is unknown (exit 1, OUTCOME_UNKNOWN): check with 'cluster members'. Leases
restart on the new leader, so holders keep their authority.`,
		Args: exactArgs(),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := o.withTimeout(cmd.Context())
			defer cancel()
			c, err := o.connect(ctx)
			if err != nil {
				return err
			}
			defer closeQuietly(c)
			r, err := c.TransferLeadership(ctx, to)
			if err != nil {
				return err
			}
			return o.printer().LeaderTransfer(r)
		}),
	}
	cmd.Flags().StringVar(&to, "to", "", "server id to hand leadership to (default: raft picks)")
	return cmd
}

func newClusterSnapshotCmd(o *options) *cobra.Command {
	var endpoint string
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Make a server take a raft snapshot now",
		Args:  exactArgs(),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if endpoint != "" {
				var ep endpointsValue
				if err := ep.Set(endpoint); err != nil || len(ep) != 1 {
					return usagef("--endpoint %q: want one host:port", endpoint)
				}
			}
			ctx, cancel := o.withTimeout(cmd.Context())
			defer cancel()
			c, err := o.connect(ctx)
			if err != nil {
				return err
			}
			defer closeQuietly(c)
			r, err := c.Snapshot(ctx, endpoint)
			if err != nil {
				return err
			}
			return o.printer().Snapshot(r)
		}),
	}
	cmd.Flags().StringVar(&endpoint, "endpoint", "", "server (gRPC address) to snapshot (default: the current best endpoint, usually the leader)")
	return cmd
}
