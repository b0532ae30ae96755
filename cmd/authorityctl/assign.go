package main

import (
	"github.com/spf13/cobra"
)

// newAssignCmd: the initial assignment of a domain's first holder.
func newAssignCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "assign DOMAIN HOLDER",
		Short: "Name a domain's first holder (epoch 0 -> 1) and start its lease",
		Long: `Names HOLDER the first holder of DOMAIN (epoch 1) and starts its lease on the
leader; the holder keeps it alive with renewals ('node lease DOMAIN HOLDER
--epoch 1' for drills). On an unknown outcome (exit 1, OUTCOME_UNKNOWN) read
the domain: epoch 1 held by HOLDER means it committed.`,
		Args: exactArgs("DOMAIN", "HOLDER"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if err := checkNames("domain", args[0], "holder", args[1]); err != nil {
				return err
			}
			ctx, cancel := o.withTimeout(cmd.Context())
			defer cancel()
			c, err := o.connect(ctx)
			if err != nil {
				return err
			}
			defer closeQuietly(c)
			r, err := c.AssignInitial(ctx, args[0], args[1])
			if err != nil {
				return err
			}
			return o.printer().Authority(r)
		}),
	}
}
