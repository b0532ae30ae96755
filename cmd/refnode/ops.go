package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"text/tabwriter"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	rpb "github.com/aerodb/authority/api/refnode/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/fsm"
	"github.com/spf13/cobra"
)

// memberStatus is one member's refnode status (nil when unreachable).
type memberStatus struct {
	m   *pb.Member
	st  *rpb.StatusResponse
	err error
}

func statuses(ctx context.Context, d *pb.Domain) []memberStatus {
	out := make([]memberStatus, len(d.GetMembers()))
	for i, m := range d.GetMembers() {
		out[i].m = m
		c, done, err := nodeConn(m.GetAddress())
		if err != nil {
			out[i].err = err
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		out[i].st, out[i].err = c.Status(sctx, &rpb.StatusRequest{})
		cancel()
		done()
	}
	return out
}

func newStatusCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "The domain (epoch, holder, watermark) and every member node's role and WAL position",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			ac, err := o.dial(ctx)
			if err != nil {
				return err
			}
			defer ac.Close()
			d, err := ac.GetDomain(ctx, o.domain)
			if err != nil {
				return err
			}
			wm := d.GetWatermark()
			fmt.Fprintf(cmd.OutOrStdout(), "domain %s: epoch %d, holder %s, watermark lsn %d (visible commit %d)\n", d.GetName(), d.GetEpoch(),
				d.GetHolder(), wm.GetLsn(), wm.GetVisibleCommitId())
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "MEMBER\tADDRESS\tROLE\tEPOCH\tLAST LSN\tAPPLIED\tVISIBLE\tREAD-SAFE\tNOTE")
			for _, s := range statuses(ctx, d) {
				if s.err != nil {
					fmt.Fprintf(tw, "%s\t%s\tunreachable\t\t\t\t\t\t%v\n", s.m.GetId(), s.m.GetAddress(), short(s.err))
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%v\t%s\n", s.m.GetId(), s.m.GetAddress(), s.st.Role, s.st.Epoch,
					s.st.GetLast().GetLsn(), s.st.AppliedCommitId, s.st.VisibleCommitId, s.st.ReadSafe, s.st.Detail)
			}
			return tw.Flush()
		},
	}
}

func short(err error) string {
	s := err.Error()
	if len(s) > 60 {
		s = s[:60] + "…"
	}
	return s
}

// bestReplica picks the most advanced reachable replica (highest flushed
// lsn, then highest applied commit id, then lowest id).
func bestReplica(ctx context.Context, d *pb.Domain) (string, error) {
	var cands []memberStatus
	for _, s := range statuses(ctx, d) {
		if s.err == nil && s.m.GetId() != d.GetHolder() && s.st.Role == "replica" {
			cands = append(cands, s)
		}
	}
	if len(cands) == 0 {
		return "", errors.New("no reachable replica to promote")
	}
	slices.SortFunc(cands, func(a, b memberStatus) int {
		if c := cmp.Compare(b.st.GetLast().GetLsn(), a.st.GetLast().GetLsn()); c != 0 {
			return c
		}
		if c := cmp.Compare(b.st.AppliedCommitId, a.st.AppliedCommitId); c != 0 {
			return c
		}
		return cmp.Compare(a.m.GetId(), b.m.GetId())
	})
	return cands[0].m.GetId(), nil
}

func newPromoteCmd(o *options) *cobra.Command {
	var to, reason, requestID string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "promote",
		Short: "Propose promoting the most advanced replica (or --to ID), compare-and-set on the current epoch",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 20*time.Second)
			defer cancel()
			ac, err := o.dial(ctx)
			if err != nil {
				return err
			}
			defer ac.Close()
			d, err := ac.GetDomain(ctx, o.domain)
			if err != nil {
				return err
			}
			cand := to
			if cand == "" {
				if cand, err = bestReplica(ctx, d); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "most advanced replica: %s\n", cand)
			}
			epoch := d.GetEpoch()
			resp, err := ac.Promote(ctx, &pb.PromotionRequest{RequestId: requestID, Domain: o.domain, Candidate: cand,
				ExpectedEpoch: &epoch, Reason: reason, DryRun: dryRun, InitiatedBy: pb.Initiator_INITIATOR_OPERATOR})
			var denied *client.DeniedError
			if errors.As(err, &denied) {
				fmt.Fprint(cmd.OutOrStdout(), fsm.DescribeAttempt(denied.Record))
				return &codedError{exitDenied, fmt.Errorf("promotion of %s DENIED: %s %s", cand, denied.Reason(), denied.Invariant())}
			}
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), fsm.DescribeAttempt(resp.GetRecord()))
			if dryRun {
				fmt.Fprintf(cmd.OutOrStdout(), "dry run: promoting %s at epoch %d would be ALLOWED\n", cand, epoch)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "PROMOTED %s: epoch %d → %d\n", cand, epoch, resp.GetRecord().GetEpochAfter())
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&to, "to", "", "candidate member id (default: the most advanced reachable replica)")
	f.StringVar(&reason, "reason", "operator promotion of the most advanced replica", "reason recorded with the attempt")
	f.StringVar(&requestID, "request-id", "", "idempotency key (default: random)")
	f.BoolVar(&dryRun, "dry-run", false, "evaluate without committing")
	return cmd
}
