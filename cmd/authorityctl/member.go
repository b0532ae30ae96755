package main

import (
	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/spf13/cobra"
)

// newMemberCmd: register (domain members); list, add, remove (servers).
func newMemberCmd(o *options) *cobra.Command {
	return newGroupCmd("member", "Register domain members; list, add and remove servers",
		newMemberRegisterCmd(o), newMemberListCmd(o), newMemberAddCmd(o), newMemberRemoveCmd(o))
}

func newMemberListCmd(o *options) *cobra.Command {
	cmd := newClusterMembersCmd(o)
	cmd.Use = "list"
	return cmd
}

func newMemberAddCmd(o *options) *cobra.Command {
	var raftAddr, grpcAddr string
	cmd := &cobra.Command{
		Use:   "add ID --raft-address HOST:PORT --grpc-address HOST:PORT",
		Short: "Add a server: as a non-voter first, a voter once caught up",
		Long: `Adds server ID (already started with --join, or started without --bootstrap)
to the raft configuration. The server must answer at its gRPC address, or
nothing changes. It joins as a non-voter and becomes a voter once it has
caught up and a quorum of the enlarged configuration answers; otherwise it
is removed again and the command fails. Needs the operator role.`,
		Args: exactArgs("ID"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if err := checkNames("server", args[0]); err != nil {
				return err
			}
			ctx, cancel := o.withTimeout(cmd.Context())
			defer cancel()
			c, err := o.connect(ctx)
			if err != nil {
				return err
			}
			defer closeQuietly(c)
			resp, err := c.AddServer(ctx, args[0], raftAddr, grpcAddr)
			if err != nil {
				return err
			}
			return o.printer().Members(&pb.MembersResponse{Header: resp.GetHeader(), Servers: resp.GetServers()})
		}),
	}
	cmd.Flags().StringVar(&raftAddr, "raft-address", "", "the server's raft address")
	cmd.Flags().StringVar(&grpcAddr, "grpc-address", "", "the server's gRPC address")
	markRequired(cmd, "raft-address", "grpc-address")
	return cmd
}

func newMemberRemoveCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a server from the raft configuration",
		Long: `Removes server ID. Refused (nothing changes) when it is the last voter, or
when the voters left would not reach a quorum among those answering now.
Needs the operator role. On OUTCOME_UNKNOWN, check with 'member list'.`,
		Args: exactArgs("ID"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if err := checkNames("server", args[0]); err != nil {
				return err
			}
			ctx, cancel := o.withTimeout(cmd.Context())
			defer cancel()
			c, err := o.connect(ctx)
			if err != nil {
				return err
			}
			defer closeQuietly(c)
			resp, err := c.RemoveServer(ctx, args[0])
			if err != nil {
				return err
			}
			return o.printer().Members(&pb.MembersResponse{Header: resp.GetHeader(), Servers: resp.GetServers()})
		}),
	}
}

func newMemberRegisterCmd(o *options) *cobra.Command {
	var (
		address      string
		priority     uint32
		decommission bool
	)
	cmd := &cobra.Command{
		Use:   "register DOMAIN MEMBER",
		Short: "Add or update a member of a domain (--decommission is final)",
		Long: `Registers MEMBER in DOMAIN, or updates it. Registration is idempotent: on an
unknown outcome (exit 1, OUTCOME_UNKNOWN) run the same command again.
A decommissioned member can never be promoted, and decommission is final.`,
		Args: exactArgs("DOMAIN", "MEMBER"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if err := checkNames("domain", args[0], "member", args[1]); err != nil {
				return err
			}
			state := pb.MemberState_MEMBER_STATE_ACTIVE
			if decommission {
				state = pb.MemberState_MEMBER_STATE_DECOMMISSIONED
			}
			ctx, cancel := o.withTimeout(cmd.Context())
			defer cancel()
			c, err := o.connect(ctx)
			if err != nil {
				return err
			}
			defer closeQuietly(c)
			d, err := c.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: args[0], MemberId: args[1], Address: address,
				Priority: priority, State: state})
			if err != nil {
				return err
			}
			return o.printer().Domain(d)
		}),
	}
	cmd.Flags().StringVar(&address, "address", "", "the member's address (informational)")
	cmd.Flags().Uint32Var(&priority, "priority", 0, "the member's priority")
	cmd.Flags().BoolVar(&decommission, "decommission", false, "mark the member decommissioned (final: never promotable again)")
	return cmd
}
