package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/validator"
	"github.com/spf13/cobra"
)

// promoteFlags are shared by promote and switchover.
type promoteFlags struct {
	candidate  string
	requestID  string
	reason     string
	reasonFile string
}

func (f *promoteFlags) add(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&f.candidate, "to", "", "the candidate member to promote")
	fs.StringVar(&f.requestID, "request-id", "", "idempotency key of the attempt (default: a random one, printed on stderr)")
	fs.StringVar(&f.reason, "reason", "", "why (recorded with the attempt; required with --waive)")
	fs.StringVar(&f.reasonFile, "reason-file", "", "read the reason from this file")
	markRequired(cmd, "to")
	cmd.MarkFlagsMutuallyExclusive("reason", "reason-file")
}

// request checks the flags and builds the request; local problems are
// usage errors. generated reports that the request id was drawn here.
func (f *promoteFlags) request(o *options, domain string, waivers []string) (req *pb.PromotionRequest, generated bool, err error) {
	if err := checkNames("domain", domain, "candidate", f.candidate); err != nil {
		return nil, false, err
	}
	id := f.requestID
	if id == "" {
		if id, err = o.newRequestID(); err != nil {
			return nil, false, err
		}
		generated = true
	} else if err := checkNames("request id", id); err != nil {
		return nil, false, err
	}
	reason := f.reason
	if f.reasonFile != "" {
		b, err := os.ReadFile(f.reasonFile)
		if err != nil {
			return nil, false, usagef("--reason-file: %v", err)
		}
		reason = string(b)
	}
	known := validator.KnownWaivers()
	for i, w := range waivers {
		if !slices.Contains(known, w) {
			return nil, false, usagef("--waive %q: not a known waiver (known: %s)", w, strings.Join(known, ", "))
		}
		if slices.Contains(waivers[:i], w) {
			return nil, false, usagef("--waive %q is repeated", w)
		}
	}
	if len(waivers) > 0 && strings.TrimSpace(reason) == "" {
		return nil, false, usagef("--waive needs a --reason (a waiver is recorded with its justification)")
	}
	return &pb.PromotionRequest{RequestId: id, Domain: domain, Candidate: f.candidate, Reason: reason,
		Waivers: waivers, InitiatedBy: pb.Initiator_INITIATOR_OPERATOR}, generated, nil
}

func newPromoteCmd(o *options) *cobra.Command {
	var (
		pf            promoteFlags
		expectedEpoch nonZeroUint64
		waivers       []string
		dryRun        bool
	)
	cmd := &cobra.Command{
		Use:   "promote DOMAIN --to CANDIDATE [--request-id ID]",
		Short: "Propose a promotion (or evaluate one with --dry-run); exit 3 when denied",
		Long: `Proposes promoting CANDIDATE to holder of DOMAIN. The decision and every check
are printed; a denial exits 3 (a dry run that would be denied too). A denial
is permanent for its request id.

The request id makes the call idempotent: when the outcome is unknown (exit 1,
OUTCOME_UNKNOWN) run the same command with the same --request-id, or
'explain DOMAIN ID' (NOT_FOUND: it did not commit). Without --request-id a
random id is drawn and printed on stderr first.

Known waivers: ` + strings.Join(validator.KnownWaivers(), ", ") + ` (each needs --reason).`,
		Args: exactArgs("DOMAIN"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			req, generated, err := pf.request(o, args[0], waivers)
			if err != nil {
				return err
			}
			req.DryRun = dryRun
			if cmd.Flags().Changed("expected-epoch") {
				e := uint64(expectedEpoch)
				req.ExpectedEpoch = &e
			}
			ctx, cancel := o.withTimeout(cmd.Context())
			defer cancel()
			c, err := o.connect(ctx)
			if err != nil {
				return err // nothing sent: no request id to retry with
			}
			defer closeQuietly(c)
			if generated && !dryRun {
				o.progressf("request id %s (generated): retry with --request-id %s, or run: authorityctl explain %s %s",
					req.RequestId, req.RequestId, req.Domain, req.RequestId)
			}
			resp, err := c.Promote(ctx, req)
			return printPromotion(o, resp, err)
		}),
	}
	pf.add(cmd)
	fs := cmd.Flags()
	fs.Var(&expectedEpoch, "expected-epoch", "compare-and-set: only promote at this epoch")
	fs.StringArrayVar(&waivers, "waive", nil, "a named waiver (repeatable): "+strings.Join(validator.KnownWaivers(), ", "))
	fs.BoolVar(&dryRun, "dry-run", false, "evaluate without committing anything")
	return cmd
}

// printPromotion prints a promotion's outcome: the record when there is one
// (allowed or denied), then passes the error on (a denial exits 3).
func printPromotion(o *options, resp *pb.PromoteResponse, err error) error {
	var denied *client.DeniedError
	if err != nil && !errors.As(err, &denied) {
		return err
	}
	if resp.GetRecord() != nil {
		if perr := o.printer().Promotion(resp); perr != nil {
			return perr
		}
	}
	return err
}

func newExplainCmd(o *options) *cobra.Command {
	var stale bool
	cmd := &cobra.Command{
		Use:   "explain DOMAIN REQUEST_ID",
		Short: "Show the recorded decision of a promotion attempt and every check",
		Long: `Prints the attempt record: the request, the decision, every check with the
invariant it enforces and the values it compared, and the evidence. The JSON
form is byte-identical from every server.`,
		Args: exactArgs("DOMAIN", "REQUEST_ID"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if err := checkNames("domain", args[0], "request id", args[1]); err != nil {
				return err
			}
			ctx, cancel := o.withTimeout(cmd.Context())
			defer cancel()
			c, err := o.connect(ctx)
			if err != nil {
				return err
			}
			defer closeQuietly(c)
			r, err := c.Explain(ctx, args[0], args[1], readOpts(stale)...)
			if err != nil {
				return err
			}
			return o.printer().Attempt(r)
		}),
	}
	addStaleFlag(cmd, &stale)
	return cmd
}

func newHistoryCmd(o *options) *cobra.Command {
	var (
		stale, denied bool
		after         uint64
		limit         uint32
	)
	cmd := &cobra.Command{
		Use:   "history DOMAIN",
		Short: "List a domain's promotion attempts in log order",
		Args:  exactArgs("DOMAIN"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if err := checkNames("domain", args[0]); err != nil {
				return err
			}
			ctx, cancel := o.withTimeout(cmd.Context())
			defer cancel()
			c, err := o.connect(ctx)
			if err != nil {
				return err
			}
			defer closeQuietly(c)
			var rs []*pb.AttemptRecord
			if after == 0 && limit == 0 {
				rs, err = c.History(ctx, args[0], denied, readOpts(stale)...)
			} else {
				var page *pb.HistoryResponse
				page, err = c.HistoryPage(ctx, client.HistoryQuery{Domain: args[0], IncludeDenied: denied, After: after, Limit: limit}, readOpts(stale)...)
				rs = page.GetRecords()
				if err == nil && page.GetMore() {
					defer fmt.Fprintf(cmd.ErrOrStderr(), "more: --after %d\n", page.GetNextAfterIndex())
				}
			}
			if err != nil {
				return err
			}
			return o.printer().History(args[0], rs)
		}),
	}
	cmd.Flags().BoolVar(&denied, "denied", false, "include the denied attempts still kept (a bounded ring)")
	cmd.Flags().Uint64Var(&after, "after", 0, "one page: attempts with a log index above this")
	cmd.Flags().Uint32Var(&limit, "limit", 0, "one page of at most this many attempts (server default 100, at most 1000)")
	addStaleFlag(cmd, &stale)
	return cmd
}

func newSwitchoverCmd(o *options) *cobra.Command {
	var (
		pf   promoteFlags
		wait positiveDuration = positiveDuration(30 * time.Second)
	)
	cmd := &cobra.Command{
		Use:   "switchover DOMAIN --to CANDIDATE",
		Short: "Planned handover: wait for the holder to release, then promote at that epoch",
		Long: `A planned handover. The current holder must release its authority as part of
its drain (e.g. 'node lease' ending with SIGTERM releases). switchover waits
up to --wait for the domain to show released, then promotes CANDIDATE with
expected epoch = the epoch it saw, so nothing else can have happened in
between. Progress goes to stderr, the result to stdout.

Exit 1 when the holder did not release within --wait (nothing was changed),
or the epoch moved meanwhile; exit 3 when the promotion was denied.`,
		Args: exactArgs("DOMAIN"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			req, generated, err := pf.request(o, args[0], nil)
			if err != nil {
				return err
			}
			req.InitiatedBy = pb.Initiator_INITIATOR_SWITCHOVER
			if req.Reason == "" {
				req.Reason = "planned switchover"
			}
			return switchover(cmd.Context(), o, req, generated, time.Duration(wait))
		}),
	}
	pf.add(cmd)
	cmd.Flags().Var(&wait, "wait", "how long to wait for the holder to release")
	return cmd
}

func switchover(ctx context.Context, o *options, req *pb.PromotionRequest, generated bool, wait time.Duration) error {
	dctx, cancel := o.withTimeout(ctx)
	defer cancel()
	c, err := o.connect(dctx)
	if err != nil {
		return err
	}
	defer closeQuietly(c)
	d, err := c.GetDomain(dctx, req.Domain)
	if err != nil {
		return err
	}
	epoch, holder := d.GetEpoch(), d.GetHolder()
	switch {
	case holder == "":
		return fmt.Errorf("domain %q has no holder: use 'assign' for its first holder", req.Domain)
	case holder == req.Candidate && !d.GetReleased():
		return fmt.Errorf("%q already holds domain %q at epoch %d", holder, req.Domain, epoch)
	}
	if !d.GetReleased() {
		o.progressf("switchover: domain %s epoch %d holder %s: waiting up to %v for %s to release",
			req.Domain, epoch, holder, wait, holder)
		d, err = awaitRelease(ctx, o, c, req.Domain, epoch, wait)
		if err != nil {
			return err
		}
	}
	if d.GetEpoch() != epoch {
		return fmt.Errorf("switchover: domain %q moved from epoch %d to %d (holder %s) while waiting; nothing was promoted",
			req.Domain, epoch, d.GetEpoch(), d.GetHolder())
	}
	req.ExpectedEpoch = &epoch
	o.progressf("switchover: %s released domain %s at epoch %d; promoting %s (request id %s, expected epoch %d)",
		holder, req.Domain, epoch, req.Candidate, req.RequestId, epoch)
	if generated {
		o.progressf("request id %s (generated): retry with 'promote %s --to %s --request-id %s --expected-epoch %d'",
			req.RequestId, req.Domain, req.Candidate, req.RequestId, epoch)
	}
	pctx, pcancel := o.withTimeout(ctx)
	defer pcancel()
	resp, err := c.Promote(pctx, req)
	if perr := printPromotion(o, resp, err); perr != nil {
		return perr
	}
	o.progressf("switchover: %s holds domain %s at epoch %d", resp.GetRecord().GetHolderAfter(), req.Domain,
		resp.GetRecord().GetEpochAfter())
	return nil
}

// awaitRelease polls the domain until it shows released or its epoch moves,
// bounded by wait.
func awaitRelease(ctx context.Context, o *options, c *client.Client, domain string, epoch uint64, wait time.Duration) (*pb.Domain, error) {
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tick := time.NewTicker(o.pollInterval)
	defer tick.Stop()
	var last *pb.Domain
	for {
		d, err := c.GetDomain(wctx, domain)
		if err == nil {
			last = d
			if d.GetReleased() || d.GetEpoch() != epoch {
				return d, nil
			}
		}
		select {
		case <-tick.C:
		case <-wctx.Done():
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if last == nil {
				return nil, fmt.Errorf("switchover: reading domain %q: %w", domain, err)
			}
			return nil, fmt.Errorf("switchover: holder %s did not release domain %q within %v (epoch %d); "+
				"the holder must release (drain) first; nothing was changed. If the holder is gone, "+
				"wait for its lease to expire and use 'promote'", last.GetHolder(), domain, wait, epoch)
		}
	}
}
