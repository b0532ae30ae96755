package main

import (
	"context"
	"fmt"
	"io"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/spf13/cobra"
)

// newMemberCmd: register (domain members); list, add, remove (servers).
func newMemberCmd(o *options) *cobra.Command {
	return newGroupCmd("member", "Register domain members; list, add and remove servers",
		newMemberRegisterCmd(o), newMemberListCmd(o), newMemberAddCmd(o), newMemberRemoveCmd(o))
}

// newMemberListCmd: a domain's members, or (without DOMAIN) the servers.
func newMemberListCmd(o *options) *cobra.Command {
	var (
		stale bool
		wf    watchFlags
	)
	cmd := &cobra.Command{
		Use:   "list [DOMAIN]",
		Short: "List a domain's members (id, address, priority, state, holder); without DOMAIN the servers",
		Long: `With DOMAIN: the domain's members, their address, priority and state, and
which one holds the domain. Without: the raft configuration, as
'cluster members'.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef("%s takes at most one argument (DOMAIN), got %d", cmd.CommandPath(), len(args))
			}
			return nil
		},
		ValidArgsFunction: completeDomains(o),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return wf.run(cmd.Context(), o, func(ctx context.Context, w io.Writer) error { return printServers(ctx, o, w) })
			}
			if err := checkNames("domain", args[0]); err != nil {
				return err
			}
			return wf.run(cmd.Context(), o, func(ctx context.Context, w io.Writer) error {
				d, err := fetchDomain(ctx, o, args[0], readOpts(stale)...)
				if err != nil {
					return err
				}
				return o.withPrinter(w).DomainMembers(d)
			})
		}),
	}
	addStaleFlag(cmd, &stale)
	wf.add(cmd)
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
	var yes bool
	cmd := &cobra.Command{
		Use:   "remove ID [--yes]",
		Short: "Remove a server from the raft configuration",
		Long: `Removes server ID. Refused (nothing changes) when it is the last voter, or
when the voters left would not reach a quorum among those answering now.
Needs the operator role. On OUTCOME_UNKNOWN, check with 'member list'.
Asks for confirmation on a terminal (--yes skips it; without a terminal
the command refuses unless --yes is given).`,
		Args: exactArgs("ID"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if err := checkNames("server", args[0]); err != nil {
				return err
			}
			if err := confirm(o, yes, fmt.Sprintf("remove server %s from the raft configuration?", args[0])); err != nil {
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
	addYesFlag(cmd, &yes)
	return cmd
}

func newMemberRegisterCmd(o *options) *cobra.Command {
	var (
		address      string
		priority     uint32
		decommission bool
		yes          bool
	)
	cmd := &cobra.Command{
		Use:   "register DOMAIN MEMBER [--address A] [--priority P] [--decommission [--yes]]",
		Short: "Add or update a member of a domain (--decommission is final)",
		Long: `Registers MEMBER in DOMAIN, or updates it. Updating changes only the fields
given: the command reads the member's record and keeps its address,
priority and state unless --address, --priority or --decommission is given.
Registration is idempotent: on an unknown outcome (exit 1, OUTCOME_UNKNOWN)
run the same command again.

A decommissioned member can never be promoted, and decommission is final:
--decommission asks for confirmation on a terminal (--yes skips it; without
a terminal the command refuses unless --yes is given), with a warning when
the member holds the domain now.`,
		Args:              exactArgs("DOMAIN", "MEMBER"),
		ValidArgsFunction: completeDomains(o),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if err := checkNames("domain", args[0], "member", args[1]); err != nil {
				return err
			}
			ctx, cancel := o.withTimeout(cmd.Context())
			defer cancel()
			c, err := o.connect(ctx)
			if err != nil {
				return err
			}
			defer closeQuietly(c)
			d, err := c.GetDomain(ctx, args[0])
			if err != nil {
				return err
			}
			req := &pb.RegisterMemberRequest{Domain: args[0], MemberId: args[1], Address: address, Priority: priority,
				State: pb.MemberState_MEMBER_STATE_ACTIVE}
			var existing *pb.Member
			for _, m := range d.GetMembers() {
				if m.GetId() == args[1] {
					existing = m
				}
			}
			if existing != nil { // an update: keep what was not given
				if !cmd.Flags().Changed("address") {
					req.Address = existing.GetAddress()
				}
				if !cmd.Flags().Changed("priority") {
					req.Priority = existing.GetPriority()
				}
				req.State = existing.GetState()
			}
			if decommission {
				if existing.GetState() != pb.MemberState_MEMBER_STATE_DECOMMISSIONED {
					q := fmt.Sprintf("decommission member %s of domain %s? It can never be promoted again (final)", args[1], args[0])
					if d.GetHolder() == args[1] && !d.GetReleased() {
						q = fmt.Sprintf("member %s HOLDS domain %s now (epoch %d); decommissioning it is final and it can never be promoted again. Decommission it?",
							args[1], args[0], d.GetEpoch())
					}
					if err := confirm(o, yes, q); err != nil {
						return err
					}
				}
				req.State = pb.MemberState_MEMBER_STATE_DECOMMISSIONED
			}
			if req.State == pb.MemberState_MEMBER_STATE_UNSPECIFIED {
				req.State = pb.MemberState_MEMBER_STATE_ACTIVE
			}
			d, err = c.RegisterMember(ctx, req)
			if err != nil {
				return err
			}
			return o.printer().Domain(d)
		}),
	}
	cmd.Flags().StringVar(&address, "address", "", "the member's address (informational; kept when not given)")
	cmd.Flags().Uint32Var(&priority, "priority", 0, "the member's priority (kept when not given; 0 for a new member)")
	cmd.Flags().BoolVar(&decommission, "decommission", false, "mark the member decommissioned (final: never promotable again)")
	addYesFlag(cmd, &yes)
	return cmd
}
