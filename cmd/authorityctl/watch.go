package main

import (
	"github.com/spf13/cobra"
)

func newWatchCmd(o *options) *cobra.Command {
	var from uint64
	cmd := &cobra.Command{
		Use:               "watch [DOMAIN...]",
		ValidArgsFunction: completeDomains(o),
		Short:             "Stream events (all domains, or the ones named) until interrupted",
		Long: `Streams the event log, one line per event (-o json: one JSON object per line,
deterministic), resuming across servers without gaps or duplicates. Runs until
SIGINT or SIGTERM (exit 0). --from 0 (the default) starts with the next
event; an index the servers no longer keep ends with COMPACTED (exit 1).`,
		RunE: runE(func(cmd *cobra.Command, domains []string) error {
			for _, d := range domains {
				if err := checkNames("domain", d); err != nil {
					return err
				}
			}
			ctx := cmd.Context() // ends on SIGINT/SIGTERM
			o.cleansUp.Store(true)
			dctx, cancel := o.withTimeout(ctx)
			c, err := o.connect(dctx)
			cancel()
			if err != nil {
				return err
			}
			defer closeQuietly(c)
			w, err := c.Watch(ctx, from, domains...)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			defer w.Close()
			p := o.streamPrinter()
			for {
				ev, err := w.Next(ctx)
				if err != nil {
					if ctx.Err() != nil {
						return nil // interrupted: a clean end
					}
					return err
				}
				if err := p.Event(ev); err != nil {
					return err
				}
			}
		}),
	}
	cmd.Flags().Uint64Var(&from, "from", 0, "first log index to stream (0: from now)")
	return cmd
}
