package main

import (
	"context"
	"errors"
	"fmt"
	"io"
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
		b, err := readBounded(f.reasonFile, maxReasonFile)
		if err != nil {
			return nil, false, usagef("--reason-file: %v", err)
		}
		reason = string(b)
	}
	known := validator.KnownWaivers()
	for i, w := range waivers {
		if !validator.IsKnownWaiver(w) {
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

// maxReasonFile bounds what --reason-file reads: far above the server's
// reason limit (which refuses, naming it), far below what could exhaust
// the CLI's memory (a device such as /dev/zero never ends).
const maxReasonFile = 1 << 20

// readBounded reads path, refusing one longer than limit bytes without
// reading past limit + 1.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is longer than %d bytes", path, limit)
	}
	return b, nil
}

func newPromoteCmd(o *options) *cobra.Command {
	var (
		pf            promoteFlags
		expectedEpoch nonZeroUint64
		waivers       []string
		dryRun        bool
		yes           bool
	)
	cmd := &cobra.Command{
		Use:               "promote DOMAIN --to CANDIDATE [--request-id ID]",
		ValidArgsFunction: completeDomains(o),
		Short:             "Propose a promotion (or evaluate one with --dry-run); exit 3 when denied",
		Long: `Proposes promoting CANDIDATE to holder of DOMAIN. The decision and every check
are printed; a denial exits 3 (a dry run that would be denied too).

A request id names one request, and its decision is final: the same command
run again (even after the reason for a denial is gone) prints the recorded
decision of that earlier request (duplicate=true, and a note on stderr), and
a different request (another candidate, reason, or a dry run) with that id
is refused with CONFLICT. To try again after a denial use a new request id.
Dry runs need no request id.

The request id makes the call idempotent: when the outcome is unknown (exit 1,
OUTCOME_UNKNOWN) run the same command with the same --request-id, or
'explain DOMAIN ID' (NOT_FOUND: it did not commit). Without --request-id a
random id is drawn and printed on stderr first.

Known waivers: ` + strings.Join(validator.KnownWaivers(), ", ") + ` (each needs --reason). A promotion
with a waiver (not a dry run) asks for confirmation on a terminal; --yes
skips it, and without a terminal it is refused unless --yes is given.`,
		Args: exactArgs("DOMAIN"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			req, generated, err := pf.request(o, args[0], waivers)
			if err != nil {
				return err
			}
			req.DryRun = dryRun
			if len(waivers) > 0 && !dryRun {
				q := fmt.Sprintf("promote %s in domain %s waiving %s (the checks that guard against losing acknowledged data)?",
					req.Candidate, req.Domain, strings.Join(waivers, ", "))
				if err := confirm(o, yes, q); err != nil {
					return err
				}
			}
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
				// P6-F3: an unknown outcome is resolved, not retried: the
				// attempt may have been aborted on crash, and re-sending it
				// would decide afresh (client.Promote).
				o.progressf("request id %s (generated): on an unknown outcome run: authorityctl explain %s %s (NOT_FOUND: not decided, possibly aborted on crash; promote again deliberately)",
					req.RequestId, req.Domain, req.RequestId)
			}
			resp, err := c.Promote(ctx, req)
			return explainReuse(o, req, printPromotion(o, resp, err), resp)
		}),
	}
	pf.add(cmd)
	fs := cmd.Flags()
	fs.Var(&expectedEpoch, "expected-epoch", "compare-and-set: only promote at this epoch")
	fs.StringArrayVar(&waivers, "waive", nil, "a named waiver (repeatable): "+strings.Join(validator.KnownWaivers(), ", "))
	fs.BoolVar(&dryRun, "dry-run", false, "evaluate without committing anything")
	addYesFlag(cmd, &yes)
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

// explainReuse says plainly when a promotion's request id was decided
// before: a duplicate is the recorded decision of the earlier request with
// that id (returned again, nothing evaluated now), and a CONFLICT means the
// id names another request. Either way a new attempt needs a new id.
func explainReuse(o *options, req *pb.PromotionRequest, err error, resp *pb.PromoteResponse) error {
	id, domain := req.GetRequestId(), req.GetDomain()
	retry := fmt.Sprintf("to try again now, run it with a new --request-id (or without one: a random id is drawn); 'authorityctl explain %s %s' shows the earlier decision", domain, id)
	if resp.GetDuplicate() {
		rec := resp.GetRecord()
		outcome := "ALLOWED"
		if !rec.GetDecision().GetAllowed() {
			outcome = "DENIED " + rec.GetDecision().GetDenialReason()
		}
		o.progressf("note: request id %s was already decided at log index %d (%s): this is the recorded decision of that earlier request, returned again; nothing was evaluated now.",
			id, rec.GetLogIndex(), outcome)
		if !rec.GetDecision().GetAllowed() {
			o.progressf("note: %s", retry)
			var denied *client.DeniedError
			if errors.As(err, &denied) {
				return reusedDenial{err: err, msg: fmt.Sprintf("promotion denied earlier under request id %s: %s (%s), the recorded decision of that request; %s",
					id, denied.Reason(), denied.Invariant(), retry)}
			}
		}
		return err
	}
	if errorReason(err) == "CONFLICT" {
		what := "a promotion"
		if req.GetDryRun() {
			what = "a dry run"
		}
		return fmt.Errorf("%w; request id %s already names an earlier, different request in domain %s (%s with this id is refused, not evaluated): %s",
			err, id, domain, what, retry)
	}
	return err
}

// reusedDenial is a denial returned again for a reused request id (exit 3).
type reusedDenial struct {
	err error
	msg string
}

func (e reusedDenial) Error() string { return e.msg }
func (e reusedDenial) Unwrap() error { return e.err }

func newExplainCmd(o *options) *cobra.Command {
	var stale bool
	cmd := &cobra.Command{
		Use:               "explain DOMAIN REQUEST_ID",
		ValidArgsFunction: completeDomains(o),
		Short:             "Show the recorded decision of a promotion attempt and every check",
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
		Use:               "history DOMAIN",
		ValidArgsFunction: completeDomains(o),
		Short:             "List a domain's promotion attempts in log order",
		Args:              exactArgs("DOMAIN"),
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
		pf      promoteFlags
		best    bool
		timeout positiveDuration = positiveDuration(30 * time.Second)
	)
	cmd := &cobra.Command{
		Use:               "switchover DOMAIN --to CANDIDATE | --best [--timeout D]",
		ValidArgsFunction: completeDomains(o),
		Short:             "Planned handover: ask the holder to drain and release, then promote at that epoch",
		Long: `A planned handover. The holder is asked through its lease stream to stop
accepting writes, drain, advance its final watermark and release (refnode
does; a holder that ignores the request may release by itself, e.g.
'node lease' ending with SIGTERM). switchover waits up to --timeout for the
domain to show released, then for the candidate to report the final
watermark, and promotes CANDIDATE with expected epoch = the epoch it saw, so
nothing else can have happened in between. --best picks the candidate: the
first other active member, by priority (highest) then id, whose dry run is
not denied for a lasting reason. Progress goes to stderr, the result to
stdout.

Exit 1 when the holder did not release within --timeout (the request is
withdrawn, nothing was changed, the holder keeps its authority), or the
epoch moved meanwhile; exit 3 when the promotion was denied.`,
		Args: exactArgs("DOMAIN"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if best {
				if err := checkNames("domain", args[0]); err != nil {
					return err
				}
				cand, err := bestCandidate(cmd.Context(), o, args[0])
				if err != nil {
					return err
				}
				pf.candidate = cand
			}
			req, generated, err := pf.request(o, args[0], nil)
			if err != nil {
				return err
			}
			req.InitiatedBy = pb.Initiator_INITIATOR_SWITCHOVER
			if req.Reason == "" {
				req.Reason = "planned switchover"
			}
			return switchover(cmd.Context(), o, req, generated, time.Duration(timeout))
		}),
	}
	pf.add(cmd)
	delete(cmd.Flags().Lookup("to").Annotations, cobra.BashCompOneRequiredFlag)
	cmd.Flags().BoolVar(&best, "best", false, "pick the candidate (see above)")
	cmd.Flags().Var(&timeout, "timeout", "how long the holder has to drain and release, and the candidate to catch up")
	cmd.Flags().Var(&timeout, "wait", "the same as --timeout")
	cmd.MarkFlagsOneRequired("to", "best")
	cmd.MarkFlagsMutuallyExclusive("to", "best")
	cmd.MarkFlagsMutuallyExclusive("timeout", "wait")
	return cmd
}

func switchover(ctx context.Context, o *options, req *pb.PromotionRequest, generated bool, timeout time.Duration) error {
	o.cleansUp.Store(true) // an interrupted switchover withdraws its handover request
	dctx, cancel := o.withTimeout(ctx)
	defer cancel()
	c, err := o.connect(dctx)
	if err != nil {
		return err
	}
	defer closeQuietly(c)
	if generated {
		o.progressf("request id %s (generated): after a failure retry the promotion with 'promote %s --to %s --request-id %s --expected-epoch EPOCH'",
			req.RequestId, req.Domain, req.Candidate, req.RequestId)
	}
	resp, err := c.Switchover(ctx, client.Switchover{Request: req, Timeout: timeout, Poll: min(o.pollInterval, 20*time.Millisecond),
		Progress: o.progressf})
	if perr := explainReuse(o, req, printPromotion(o, resp, err), resp); perr != nil {
		return perr
	}
	o.progressf("switchover: %s holds domain %s at epoch %d", resp.GetRecord().GetHolderAfter(), req.Domain,
		resp.GetRecord().GetEpochAfter())
	return nil
}

// bestCandidate picks, among the domain's other active members (priority
// highest first, then id), the first whose dry-run promotion is allowed or
// denied only for a reason the handover clears (the holder still active,
// a report older than the final watermark).
func bestCandidate(ctx context.Context, o *options, domain string) (string, error) {
	dctx, cancel := o.withTimeout(ctx)
	defer cancel()
	c, err := o.connect(dctx)
	if err != nil {
		return "", err
	}
	defer closeQuietly(c)
	d, err := c.GetDomain(dctx, domain)
	if err != nil {
		return "", err
	}
	ms := slices.Clone(d.GetMembers())
	slices.SortFunc(ms, func(a, b *pb.Member) int {
		if a.GetPriority() != b.GetPriority() {
			return int(b.GetPriority()) - int(a.GetPriority())
		}
		return strings.Compare(a.GetId(), b.GetId())
	})
	epoch := d.GetEpoch()
	var why []string
	for _, m := range ms {
		if m.GetId() == d.GetHolder() || m.GetState() != pb.MemberState_MEMBER_STATE_ACTIVE {
			continue
		}
		_, err := c.Promote(dctx, &pb.PromotionRequest{Domain: domain, Candidate: m.GetId(), ExpectedEpoch: &epoch, DryRun: true,
			Reason: "switchover --best", InitiatedBy: pb.Initiator_INITIATOR_SWITCHOVER})
		var denied *client.DeniedError
		switch {
		case err == nil || errors.As(err, &denied) && switchoverTransient[denied.Reason()]:
			o.progressf("switchover --best: %s", m.GetId())
			return m.GetId(), nil
		case denied != nil:
			why = append(why, m.GetId()+": "+denied.Reason())
		default:
			return "", err
		}
	}
	return "", fmt.Errorf("switchover --best: no eligible candidate in domain %q (%s)", domain, strings.Join(why, "; "))
}

// switchoverTransient: denials a completed handover clears.
var switchoverTransient = map[string]bool{"PrimaryStillActive": true, "StaleReport": true, "MetadataMissing": true}
