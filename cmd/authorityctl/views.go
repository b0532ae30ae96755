package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/spf13/cobra"
)

// ---- refreshing views (-w) ----

// watchFlags: -w/--watch and --interval of the list and status views.
type watchFlags struct {
	on       bool
	interval time.Duration
}

const defaultWatchInterval = 2 * time.Second

func (f *watchFlags) add(cmd *cobra.Command) {
	cmd.Flags().BoolVarP(&f.on, "watch", "w", false, "redraw the view every --interval until interrupted (Ctrl-C)")
	cmd.Flags().DurationVar(&f.interval, "interval", defaultWatchInterval, "with --watch: time between redraws (at least 500ms)")
}

// run renders once, or with --watch redraws every interval until ctx
// ends (exit 0). A redraw clears the screen when stdout is a terminal;
// otherwise frames follow each other, each text frame after a "# <time>"
// line (JSON and YAML frames are one document each). A failed render is
// shown in its frame (on stderr for JSON and YAML) and the view goes on.
func (f *watchFlags) run(ctx context.Context, o *options, render func(ctx context.Context, w io.Writer) error) error {
	if !f.on {
		return render(ctx, o.stdout)
	}
	if f.interval < o.watchMinInterval {
		return usagef("--interval %v: at least %v (redraws are bounded in rate)", f.interval, o.watchMinInterval)
	}
	tty := false
	if fd, ok := o.stdout.(interface{ Fd() uintptr }); ok {
		tty = o.isTerminal(fd.Fd())
	}
	tick := time.NewTicker(f.interval)
	defer tick.Stop()
	for {
		var frame bytes.Buffer
		if tty {
			frame.WriteString("\x1b[H\x1b[2J")
		}
		if o.output.value == outputText { // JSON and YAML frames stay documents
			fmt.Fprintf(&frame, "# %s (every %v; Ctrl-C to stop)\n", o.now().UTC().Format(time.RFC3339), f.interval)
		}
		err := render(ctx, &frame)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && o.output.value == outputText {
			fmt.Fprintf(&frame, "error: %s\n", humanize(describeError(err)))
		} else if err != nil {
			fmt.Fprintf(o.stderr, "error: %s\n", humanize(describeError(err)))
		}
		if _, err := o.stdout.Write(frame.Bytes()); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil // interrupted: a clean end
		case <-tick.C:
		}
	}
}

// withPrinter is o with output to w (a refreshing view's frame).
func (o *options) withPrinter(w io.Writer) printer { return o.printerTo(w) }

// ---- confirmations ----

// confirm asks question on a terminal and returns nil on "y" or "yes".
// yes (--yes) skips the question; without a terminal on stdin the command
// refuses (a usage error) unless yes is given.
func confirm(o *options, yes bool, question string) error {
	if yes {
		return nil
	}
	if o.stdin == nil || !o.isTerminal(o.stdinFd) {
		return usagef("%s: stdin is not a terminal to confirm on; give --yes to proceed", question)
	}
	fmt.Fprintf(o.stderr, "%s [y/N] ", question)
	line, err := bufio.NewReader(io.LimitReader(o.stdin, 64)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return errors.New("not confirmed; nothing was changed")
}

func addYesFlag(cmd *cobra.Command, yes *bool) {
	cmd.Flags().BoolVarP(yes, "yes", "y", false, "do not ask for confirmation (needed when stdin is not a terminal)")
}

// ---- lease view ----

// leaseRow is one domain's lease as the leader sees it now.
type leaseRow struct {
	Domain      string `json:"domain"`
	Holder      string `json:"holder"`
	Epoch       uint64 `json:"epoch"`
	State       string `json:"state"` // none, held, expired, released, unknown
	RemainingMs uint64 `json:"remaining_ms"`
	// Error: why the leader's observation could not be read (state
	// unknown).
	Error string `json:"error,omitempty"`
}

func newLeaseCmd(o *options) *cobra.Command {
	var wf watchFlags
	cmd := &cobra.Command{
		Use:   "lease [DOMAIN...]",
		Short: "Show each domain's holder, epoch, lease state and remaining time (all domains, or those named)",
		Long: `Shows, for every domain (or the ones named), the holder, the epoch and the
holder's lease as the raft leader sees it now: held (with the time left),
expired, released or none (never assigned). The leader's observation is read
with a dry-run promotion of the holder, which commits nothing (it needs the
operator role; with another identity the state shows as unknown).`,
		ValidArgsFunction: completeDomains(o),
		RunE: runE(func(cmd *cobra.Command, domains []string) error {
			for _, d := range domains {
				if err := checkNames("domain", d); err != nil {
					return err
				}
			}
			return wf.run(cmd.Context(), o, func(ctx context.Context, w io.Writer) error {
				rows, err := leaseRows(ctx, o, domains)
				if err != nil {
					return err
				}
				return printLeases(o, w, rows)
			})
		}),
	}
	wf.add(cmd)
	return cmd
}

func leaseRows(ctx context.Context, o *options, domains []string) ([]leaseRow, error) {
	ctx, cancel := o.withTimeout(ctx)
	defer cancel()
	c, err := o.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer closeQuietly(c)
	type dom struct {
		name, holder string
		epoch        uint64
		released     bool
	}
	var ds []dom
	if len(domains) == 0 {
		sums, err := c.ListDomains(ctx)
		if err != nil {
			return nil, err
		}
		for _, s := range sums {
			ds = append(ds, dom{s.GetName(), s.GetHolder(), s.GetEpoch(), s.GetReleased()})
		}
	} else {
		for _, n := range domains {
			d, err := c.GetDomain(ctx, n)
			if err != nil {
				return nil, err
			}
			ds = append(ds, dom{d.GetName(), d.GetHolder(), d.GetEpoch(), d.GetReleased()})
		}
	}
	rows := make([]leaseRow, 0, len(ds))
	for _, d := range ds {
		row := leaseRow{Domain: d.name, Holder: d.holder, Epoch: d.epoch, State: "none"}
		switch {
		case d.holder == "":
		case d.released:
			row.State = "released"
		default:
			row.State = "unknown"
			resp, err := c.Promote(ctx, &pb.PromotionRequest{Domain: d.name, Candidate: d.holder, DryRun: true,
				Reason: "authorityctl lease (dry run: commits nothing)", InitiatedBy: pb.Initiator_INITIATOR_OPERATOR})
			var denied *client.DeniedError
			if err != nil && !errors.As(err, &denied) {
				row.Error = humanize(describeError(err))
				break
			}
			if l := resp.GetRecord().GetLease(); l != nil {
				row.State = strings.ToLower(strings.TrimPrefix(l.GetState().String(), "LEASE_STATE_"))
				row.RemainingMs = l.GetRemainingMs()
			}
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func printLeases(o *options, w io.Writer, rows []leaseRow) error {
	if o.output.value != outputText {
		if rows == nil {
			rows = []leaseRow{}
		}
		return o.withPrinter(w).(jsonPrinter).write(map[string]any{"leases": rows}, true)
	}
	var out [][]string
	for _, r := range rows {
		remaining := "-"
		if r.State == "held" {
			remaining = (time.Duration(r.RemainingMs) * time.Millisecond).String()
		}
		state := r.State
		if r.Error != "" {
			state += " (" + r.Error + ")"
		}
		out = append(out, []string{r.Domain, orDash(r.Holder), u64(r.Epoch), state, remaining})
	}
	return textPrinter{w: w}.table("DOMAIN\tHOLDER\tEPOCH\tLEASE\tREMAINING", out)
}

// ---- completion ----

// completeDomains completes domain names from the cluster (a short
// listing; nothing on any error, so completion never hangs a shell for
// long).
func completeDomains(o *options) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 && !strings.Contains(cmd.Use, "DOMAIN...") {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		if err := o.applyEnv(cmd.Flags()); err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), min(o.timeout, 3*time.Second))
		defer cancel()
		c, err := o.connect(ctx)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		defer closeQuietly(c)
		ds, err := c.ListDomains(ctx, client.Stale())
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []string
		for _, d := range ds {
			if strings.HasPrefix(d.GetName(), prefix) {
				names = append(names, d.GetName())
			}
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}
