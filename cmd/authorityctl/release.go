package main

import (
	"fmt"
	"strings"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/validator"
	"github.com/spf13/cobra"
)

// newReleaseCmd: a release domain's transitions, as its controller
// (docs/RELEASES.md).
func newReleaseCmd(o *options) *cobra.Command {
	cmd := newGroupCmd("release", "Drive a release domain: canary transitions decided on signed evidence")
	for _, a := range []struct {
		use, short string
		action     pb.ReleaseAction
	}{
		{"start-canary", "Start a canary of --canary DIGEST (needs --evidence manifest=FILE)", pb.ReleaseAction_RELEASE_ACTION_START_CANARY},
		{"advance", "Advance the canary to --step N at --weight W", pb.ReleaseAction_RELEASE_ACTION_ADVANCE_STEP},
		{"pause", "Pause the canary", pb.ReleaseAction_RELEASE_ACTION_PAUSE},
		{"resume", "Resume a paused canary", pb.ReleaseAction_RELEASE_ACTION_RESUME},
		{"promote", "Promote the canary to stable (analysis and budget evidence as the policy requires)", pb.ReleaseAction_RELEASE_ACTION_PROMOTE},
		{"abort", "Abort the canary: traffic back to stable", pb.ReleaseAction_RELEASE_ACTION_ABORT},
		{"rollback", "Roll stable back to the last known-good release (never blocked by a window or a freeze)", pb.ReleaseAction_RELEASE_ACTION_ROLLBACK},
	} {
		cmd.AddCommand(newReleaseTransitionCmd(o, a.use, a.short, a.action))
	}
	cmd.AddCommand(newReleaseGetCmd(o), newReleaseLabelAbortCmd(o), newReleaseExportCmd(o), newReleaseVerifyExportCmd(o))
	return cmd
}

func newReleaseTransitionCmd(o *options, use, short string, action pb.ReleaseAction) *cobra.Command {
	var (
		holder, canary, reason string
		epoch                  uint64
		step, weight           uint32
		evidence               []string
	)
	cmd := &cobra.Command{
		Use:   use + " DOMAIN",
		Short: short,
		Long: short + `.

The authority verifies the evidence (DSSE envelopes over in-toto statements,
Ed25519 keys pinned in the domain's release policy) with its pure release
validator and records the decision, allowed or denied, with every check:
this prints it. Exit 3 when denied. --epoch defaults to the domain's current
epoch when --holder (default: this certificate's name) holds it.`,
		Args: exactArgs("DOMAIN"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			domain := args[0]
			if holder == "" {
				self, err := o.selfIdentity()
				if err != nil {
					return err
				}
				holder = self.Name
			}
			if err := checkNames("domain", domain, "holder", holder); err != nil {
				return err
			}
			var evs []*pb.Evidence
			for _, e := range evidence {
				typ, file, ok := strings.Cut(e, "=")
				if !ok || typ == "" || file == "" {
					return usagef("--evidence %q: want TYPE=FILE (manifest, analysis, budget)", bounded(e, 64))
				}
				b, err := readBounded(file, validator.MaxEvidenceBytes)
				if err != nil {
					return usageError{err}
				}
				evs = append(evs, &pb.Evidence{Type: typ, Envelope: b})
			}
			ctx, cancel := o.withTimeout(cmd.Context())
			defer cancel()
			c, err := o.connect(ctx)
			if err != nil {
				return err
			}
			defer closeQuietly(c)
			if epoch == 0 {
				d, err := c.GetDomain(ctx, domain)
				if err != nil {
					return err
				}
				if d.GetHolder() != holder || d.GetReleased() {
					return fmt.Errorf("%s does not hold %q (holder %s, epoch %d): acquire it first ('node lease --acquire') or pass --epoch",
						holder, domain, orDash(d.GetHolder()), d.GetEpoch())
				}
				epoch = d.GetEpoch()
			}
			resp, err := c.ReleaseTransition(ctx, &pb.ReleaseTransition{Domain: domain, Holder: holder, Epoch: epoch, Action: action,
				Canary: canary, Step: step, Weight: weight, Reason: reason, Evidence: evs})
			if err != nil {
				return err
			}
			if err := o.printer().ReleaseDecision(resp.GetDecision()); err != nil {
				return err
			}
			if !resp.GetDecision().GetDecision().GetAllowed() {
				return releaseDenied{reason: resp.GetDecision().GetDecision().GetDenialReason()}
			}
			return nil
		}),
	}
	fs := cmd.Flags()
	fs.StringVar(&holder, "holder", "", "the controller holding the domain (default: this certificate's name)")
	fs.Uint64Var(&epoch, "epoch", 0, "the controller's epoch (default: the domain's, when --holder holds it)")
	fs.StringVar(&reason, "reason", "", "why (recorded)")
	fs.StringArrayVar(&evidence, "evidence", nil, "TYPE=FILE: a DSSE envelope (manifest, analysis, budget); repeatable")
	if action == pb.ReleaseAction_RELEASE_ACTION_START_CANARY {
		fs.StringVar(&canary, "canary", "", "the canary's digest, sha256:<hex>")
		markRequired(cmd, "canary")
	}
	if action == pb.ReleaseAction_RELEASE_ACTION_START_CANARY || action == pb.ReleaseAction_RELEASE_ACTION_ADVANCE_STEP {
		fs.Uint32Var(&step, "step", 1, "the step")
		fs.Uint32Var(&weight, "weight", 0, "percent of traffic on the canary")
	}
	return cmd
}

// newReleaseLabelAbortCmd: an operator's verdict on an abort, one committed
// fact counted as canary_abort_verdict_total{verdict} (docs/RELEASES.md).
func newReleaseLabelAbortCmd(o *options) *cobra.Command {
	var (
		index           uint64
		verdict, reason string
	)
	cmd := &cobra.Command{
		Use:   "label-abort DOMAIN",
		Short: "Record an operator's verdict on an abort (--verdict false: the canary was healthy)",
		Long: `Record an operator's verdict on an allowed abort among the domain's kept
decisions ('release get' shows them with their indexes): --verdict false when
the canary was healthy (noise, a dependency outage), true when the abort was
right. One committed fact on the abort's decision, judged once (a second label
is refused; a later promotion of the same digest judges an unjudged abort
false by itself), counted by every server as canary_abort_verdict_total.
Operator only; it moves no epoch, lease or traffic.`,
		Args: exactArgs("DOMAIN"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			domain := args[0]
			if err := checkNames("domain", domain); err != nil {
				return err
			}
			if verdict != "true" && verdict != "false" {
				return usagef("--verdict %q: want true or false", bounded(verdict, 16))
			}
			if index == 0 {
				return usagef("--decision-index is required (the abort's index in 'release get')")
			}
			ctx, cancel := o.withTimeout(cmd.Context())
			defer cancel()
			c, err := o.connect(ctx)
			if err != nil {
				return err
			}
			defer closeQuietly(c)
			resp, err := c.LabelReleaseAbort(ctx, &pb.LabelReleaseAbort{Domain: domain, DecisionIndex: index, Verdict: verdict, Reason: reason})
			if err != nil {
				return err
			}
			return o.printer().ReleaseDecision(resp.GetDecision())
		}),
	}
	fs := cmd.Flags()
	fs.Uint64Var(&index, "decision-index", 0, "the abort decision's log index")
	fs.StringVar(&verdict, "verdict", "", "false (the canary was healthy: a false abort) or true (the abort was right)")
	fs.StringVar(&reason, "reason", "", "why (recorded)")
	markRequired(cmd, "decision-index")
	markRequired(cmd, "verdict")
	return cmd
}

func newReleaseGetCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "get DOMAIN",
		Short: "Print a release domain's state and its recent decisions",
		Args:  exactArgs("DOMAIN"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			d, err := fetchDomain(cmd.Context(), o, args[0])
			if err != nil {
				return err
			}
			return o.printer().Domain(d)
		}),
	}
}

// releaseDenied: the release transition was decided and denied (exit 3).
type releaseDenied struct{ reason string }

func (e releaseDenied) Error() string { return "DENIED " + e.reason }
