package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/aerodb/authority/client"

	"github.com/spf13/cobra"
)

// newClusterCmd: status, members, leader-transfer, snapshot.
func newClusterCmd(o *options) *cobra.Command {
	return newGroupCmd("cluster", "Inspect and maintain the raft cluster",
		newClusterStatusCmd(o), newClusterMembersCmd(o), newClusterLeaderTransferCmd(o), newClusterSnapshotCmd(o))
}

func newClusterStatusCmd(o *options) *cobra.Command {
	var wf watchFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every endpoint's status: node, raft state, leader, term, indexes, state hash, readiness",
		Long: `Asks each endpoint given by --endpoints for its own status (one attempt each).
Converged replicas show the same state hash. READY is what the server's
/readyz answers: it knows a raft leader (the leader itself: it serves leader
requests). Exits 1 when an endpoint did not answer, after printing the table
(every endpoint has a row, also when none answers).`,
		Args: exactArgs(),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			return wf.run(cmd.Context(), o, func(ctx context.Context, w io.Writer) error { return clusterStatus(ctx, o, w) })
		}),
	}
	wf.add(cmd)
	return cmd
}

// clusterStatus prints one row per endpoint, then fails when any did not
// answer. When no endpoint accepts a connection, each row says why.
func clusterStatus(ctx context.Context, o *options, w io.Writer) error {
	ctx, cancel := o.withTimeout(ctx)
	defer cancel()
	rows := make([]statusRow, 0, len(o.endpoints))
	c, err := o.connect(ctx)
	if err != nil {
		var usage usageError
		if errors.As(err, &usage) {
			return err
		}
		for _, ep := range o.endpoints {
			rows = append(rows, statusRow{Endpoint: ep, Err: endpointError(ctx, ep, err)})
		}
		if perr := o.withPrinter(w).Status(rows); perr != nil {
			return perr
		}
		return fmt.Errorf("none of %d endpoints answered", len(rows))
	}
	defer closeQuietly(c)
	failed := 0
	for _, ep := range o.endpoints {
		st, err := c.Status(ctx, ep)
		rows = append(rows, statusRow{Endpoint: ep, Status: st, Err: err})
		if err != nil {
			failed++
		}
	}
	if err := o.withPrinter(w).Status(rows); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d endpoints did not answer", failed, len(rows))
	}
	return nil
}

// endpointError is why one endpoint cannot be reached: its own TCP dial
// error when it refuses, else the dial error of the whole client.
func endpointError(ctx context.Context, ep string, dialErr error) error {
	if strings.Contains(ep, "://") {
		return dialErr
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", ep)
	if err != nil {
		return errors.New(dialFailure(err))
	}
	_ = conn.Close()
	return dialErr
}

func newClusterMembersCmd(o *options) *cobra.Command {
	var wf watchFlags
	cmd := &cobra.Command{
		Use:   "members",
		Short: "List the raft configuration: ids, addresses, suffrage and the leader",
		Args:  exactArgs(),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			return wf.run(cmd.Context(), o, func(ctx context.Context, w io.Writer) error { return printServers(ctx, o, w) })
		}),
	}
	wf.add(cmd)
	return cmd
}

// printServers prints the raft configuration.
func printServers(ctx context.Context, o *options, w io.Writer) error {
	ctx, cancel := o.withTimeout(ctx)
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
	return o.withPrinter(w).Members(m)
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
			if r.GetNewLeaderId() == "" { // raft picked: ask who leads now
				r.NewLeaderId = newLeader(ctx, o, c, r.GetHeader().GetServedBy())
			}
			return o.printer().LeaderTransfer(r)
		}),
	}
	cmd.Flags().StringVar(&to, "to", "", "server id to hand leadership to (default: raft picks)")
	return cmd
}

// newLeader waits (bounded by ctx) until the configuration names a leader
// other than old, and returns it ("" if none was seen in time).
func newLeader(ctx context.Context, o *options, c *client.Client, old string) string {
	tick := time.NewTicker(o.pollInterval)
	defer tick.Stop()
	for {
		if m, err := c.Members(ctx); err == nil {
			for _, s := range m.GetServers() {
				if s.GetLeader() && s.GetId() != old {
					return s.GetId()
				}
			}
		}
		select {
		case <-ctx.Done():
			return ""
		case <-tick.C:
		}
	}
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
