package main

import (
	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/spf13/cobra"
)

// newMemberCmd: register.
func newMemberCmd(o *options) *cobra.Command {
	return newGroupCmd("member", "Register domain members", newMemberRegisterCmd(o))
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
