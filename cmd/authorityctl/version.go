package main

import (
	"encoding/json"
	"fmt"

	"github.com/aerodb/authority/internal/version"
	"github.com/spf13/cobra"
)

func newVersionCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print authorityctl's version, commit and Go version",
		Args:  exactArgs(),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			in := version.Get()
			if o.output.value == outputJSON {
				b, err := json.Marshal(in)
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(o.stdout, "%s\n", b)
				return err
			}
			_, err := fmt.Fprintln(o.stdout, in.String("authorityctl"))
			return err
		}),
	}
}
