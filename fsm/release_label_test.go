package fsm

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/validator"
)

// Abort verdicts (canary_abort_verdict_total): an operator's label is one
// committed fact on the abort's decision, judged once; a later promotion of
// the same digest judges its unjudged aborts "false" (a successful retry).
func TestReleaseAbortVerdicts(t *testing.T) {
	signer, analyst := newTestKey("release-signer", 1), newTestKey("analysis", 3)
	policy := &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL, LeaseTtlMs: 10_000, ReportMaxAgeMs: 30_000, MinSyncReplicas: 1,
		Release: &pb.ReleasePolicy{Environment: "prod", Keys: []*pb.TrustedKey{signer.trusted("manifest"), analyst.trusted("analysis")},
			RequiredMetrics: []string{"error_rate"}, AnalysisMaxAgeMs: 600_000}}
	r := &releaseRig{t: t, f: New(), now: t0}
	for _, c := range []*pb.Command{
		{Body: &pb.Command_CreateDomain{CreateDomain: &pb.CreateDomain{Name: "rel", Kind: pb.DomainKind_DOMAIN_KIND_RELEASE, Policy: policy}}},
		{Body: &pb.Command_CreateDomain{CreateDomain: &pb.CreateDomain{Name: "lock", Kind: pb.DomainKind_DOMAIN_KIND_LOCK, Policy: policy}}},
		{Body: &pb.Command_Acquire{Acquire: &pb.Acquire{Domain: "rel", Holder: "ctl"}}},
	} {
		if res := r.apply(c); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	r.epoch = 1
	manifest := func(d string) *pb.Evidence {
		return evidence(t, signer, "manifest", validator.PredicateManifest, d, map[string]string{"image": "app"})
	}
	label := func(domain string, index uint64, verdict string) *Result {
		return r.apply(&pb.Command{Body: &pb.Command_LabelReleaseAbort{LabelReleaseAbort: &pb.LabelReleaseAbort{
			Domain: domain, DecisionIndex: index, Verdict: verdict, Reason: "dependency outage", Operator: "operator/alice"}}})
	}
	fails := func(res *Result, want error, text string) {
		t.Helper()
		if !errors.Is(res.Err, want) || !strings.Contains(res.Err.Error(), text) {
			t.Fatalf("entry %d: got %v, want %v containing %q", res.Index, res.Err, want, text)
		}
	}
	start := r.step(pb.ReleaseAction_RELEASE_ACTION_START_CANARY, digestB, 1, 10, manifest(digestB))
	r.expect(start, "", "")
	abort1 := r.step(pb.ReleaseAction_RELEASE_ACTION_ABORT, "", 0, 0)
	r.expect(abort1, "", "")
	if got := abort1.Release.GetAbortedCanary(); got != digestB {
		t.Fatalf("abort decision names aborted canary %q, want %q", got, digestB)
	}

	fails(label("rel", 9999, "false"), ErrNotFound, "no decision at index 9999")
	fails(label("rel", start.Index, "false"), ErrPrecondition, "not an allowed abort")
	fails(label("lock", abort1.Index, "false"), ErrPrecondition, "aborts are labelled on release domains")
	fails(label("rel", abort1.Index, "maybe"), ErrInvalid, "verdict must be true or false")
	fails(label("rel", 0, "true"), ErrInvalid, "decision index")
	epoch := r.epoch
	ok := label("rel", abort1.Index, "true")
	if ok.Err != nil || ok.Release.GetAbortVerdict() != "true" || ok.Release.GetAbortVerdictIndex() != ok.Index || ok.Release.GetAbortVerdictReason() != "dependency outage" {
		t.Fatalf("label: %v %v", ok.Err, ok.Release)
	}
	if d, _ := r.f.Domain("rel"); d.GetEpoch() != epoch || d.GetRelease().GetPhase() != pb.ReleasePhase_RELEASE_PHASE_ABORTED {
		t.Fatalf("a label moved the domain: epoch %d (want %d), phase %v", d.GetEpoch(), epoch, d.GetRelease().GetPhase())
	}
	fails(label("rel", abort1.Index, "false"), ErrPrecondition, `already judged "true"`)

	// The same digest aborted again, then retried and promoted: the unjudged
	// abort is judged false by the promotion, the labelled one keeps its label.
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_START_CANARY, digestB, 1, 10, manifest(digestB)), "", "")
	abort2 := r.step(pb.ReleaseAction_RELEASE_ACTION_ABORT, "", 0, 0)
	r.expect(abort2, "", "")
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_START_CANARY, digestC, 1, 10, manifest(digestC)), "", "")
	abortC := r.step(pb.ReleaseAction_RELEASE_ACTION_ABORT, "", 0, 0)
	r.expect(abortC, "", "")
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_START_CANARY, digestB, 1, 10, manifest(digestB)), "", "")
	promote := r.step(pb.ReleaseAction_RELEASE_ACTION_PROMOTE, "", 0, 0, evidence(t, analyst, "analysis", validator.PredicateAnalysis, digestB,
		validator.AnalysisPredicate{Verdict: "pass", Metrics: []string{"error_rate"}, WindowEndUnixMs: r.now - 1000}))
	r.expect(promote, "", "")
	d, _ := r.f.Domain("rel")
	verdicts := map[uint64]string{}
	for _, rec := range d.GetRelease().GetDecisions() {
		if rec.GetAbortVerdict() != "" {
			verdicts[rec.GetIndex()] = fmt.Sprintf("%s@%d", rec.GetAbortVerdict(), rec.GetAbortVerdictIndex())
		}
	}
	want := map[uint64]string{abort1.Index: fmt.Sprintf("true@%d", ok.Index), abort2.Index: fmt.Sprintf("false@%d", promote.Index)}
	if fmt.Sprint(verdicts) != fmt.Sprint(want) {
		t.Fatalf("verdicts %v, want %v (the abort of another digest stays unjudged)", verdicts, want)
	}
	fails(label("rel", abort2.Index, "true"), ErrPrecondition, `already judged "false"`)
	if res := label("rel", abortC.Index, "false"); res.Err != nil {
		t.Fatal(res.Err)
	}

	// One event per verdict, in log order.
	evs, _, err := r.f.EventsAfter(1, -1, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range evs {
		if ev.Type != EventReleaseAbortLabelled {
			continue
		}
		f := map[string]string{}
		for _, o := range ev.GetFields() {
			f[o.GetKey()] = o.GetValue()
		}
		got = append(got, fmt.Sprintf("%s %s %s %s", f["decision_index"], f["verdict"], f["source"], f["canary"][:8]))
	}
	wantEv := []string{
		fmt.Sprintf("%d true operator sha256:b", abort1.Index),
		fmt.Sprintf("%d false retry sha256:b", abort2.Index),
		fmt.Sprintf("%d false operator sha256:c", abortC.Index),
	}
	if strings.Join(got, "\n") != strings.Join(wantEv, "\n") {
		t.Fatalf("abort_labelled events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantEv, "\n"))
	}
}
