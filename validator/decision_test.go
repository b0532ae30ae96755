package validator

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/protobuf/proto"
)

var fixedOrder = []string{
	CheckRequestWellformed, CheckPromotionEnabled, CheckCandidateEligible, CheckExpectedEpoch,
	CheckOldHolderInactive, CheckCandidateReport, CheckWatermarkKnown, CheckCandidateContainsWatermark,
	CheckHistoryPrefix, CheckMvccVisibility,
}

// observedKeys is each check's fixed key order.
var observedKeys = map[string][]string{
	CheckRequestWellformed:          {"request_id", "domain", "candidate", "kind", "waivers", "waiver_mode", "deviation"},
	CheckPromotionEnabled:           {"promotion_disabled"},
	CheckCandidateEligible:          {"candidate", "registered", "holder", "member_state", "report_state"},
	CheckExpectedEpoch:              {"expected_epoch", "current_epoch"},
	CheckOldHolderInactive:          {"holder", "epoch", "released", "lease_state", "lease_holder", "lease_epoch", "remaining_ms", "leader_term"},
	CheckCandidateReport:            {"report", "report_epoch", "current_epoch", "report_age_ms", "max_age_ms"},
	CheckWatermarkKnown:             {"watermark_epoch", "watermark_lsn", "watermark_hash", "visible_commit_id"},
	CheckCandidateContainsWatermark: {"flushed_lsn", "watermark_lsn"},
	CheckHistoryPrefix:              {"watermark_lsn", "watermark_hash", "report_watermark_lsn", "candidate_hash_at_watermark"},
	CheckMvccVisibility:             {"applied_commit_id", "visible_commit_id", "read_safe"},
}

// allInputs is every input the tests use, plus degenerate ones.
func allInputs() map[string]Input {
	out := map[string]Input{
		"empty-domain-and-attempt": {Domain: &pb.Domain{}, Attempt: &pb.PromotionAttempt{}},
		"nil-domain-and-attempt":   {},
	}
	for _, tc := range ruleCases {
		in := allowedInput()
		tc.mutate(&in)
		out[tc.name] = in
	}
	return out
}

// TestAllChecksAlwaysPresent: every decision lists all checks in the fixed
// order with their fixed observed keys, however early a check fails, and a
// check carries a Reason exactly when it failed.
// Readiness: P6-O2 (every check named with its invariant); docs/READINESS.md.
func TestAllChecksAlwaysPresent(t *testing.T) {
	for name, in := range allInputs() {
		d := Evaluate(in)
		if len(d.GetChecks()) != len(fixedOrder) {
			t.Errorf("%s: %d checks, want %d", name, len(d.GetChecks()), len(fixedOrder))
			continue
		}
		for i, c := range d.GetChecks() {
			if c.GetName() != fixedOrder[i] || c.GetInvariant() != invariantOf[fixedOrder[i]] {
				t.Errorf("%s: check %d = %s %q, want %s %q", name, i, c.GetName(), c.GetInvariant(), fixedOrder[i], invariantOf[fixedOrder[i]])
			}
			if c.GetSatisfied() == (c.GetReason() != "") || c.GetDetail() == "" {
				t.Errorf("%s/%s: satisfied=%v reason=%q detail=%q", name, c.GetName(), c.GetSatisfied(), c.GetReason(), c.GetDetail())
			}
			var keys []string
			for _, o := range c.GetObserved() {
				keys = append(keys, o.GetKey())
				if o.GetValue() == "" {
					t.Errorf("%s/%s: observed %s is empty, want a value or none/unknown", name, c.GetName(), o.GetKey())
				}
			}
			if strings.Join(keys, ",") != strings.Join(observedKeys[c.GetName()], ",") {
				t.Errorf("%s/%s: observed keys %v, want %v", name, c.GetName(), keys, observedKeys[c.GetName()])
			}
		}
	}
}

// TestEarlyFailureStillEvaluatesLaterChecks: a malformed request does not
// hide that the rest of the evidence is fine or not.
func TestEarlyFailureStillEvaluatesLaterChecks(t *testing.T) {
	in := allowedInput()
	in.Domain.Policy.PromotionDisabled = true
	behindReplica(&in)
	d := Evaluate(in)
	assertDecision(t, d, ReasonPromotionDisabled, "", CheckPromotionEnabled)
	if c := findCheck(d, CheckCandidateContainsWatermark); c.GetReason() != ReasonReplicaBehindWal {
		t.Errorf("later check not evaluated: %s reason=%q", c.GetName(), c.GetReason())
	}
	if c := findCheck(d, CheckMvccVisibility); !c.GetSatisfied() {
		t.Errorf("later check %s should be satisfied", c.GetName())
	}
}

// TestNilEvidenceDeniesWithoutPanic covers the degenerate inputs Evaluate
// promises to survive.
// Readiness: P6-F1, AU-7 (fail closed); docs/READINESS.md.
func TestNilEvidenceDeniesWithoutPanic(t *testing.T) {
	cases := map[string]Input{
		"nil-everything": {},
		"empty-messages": {Domain: &pb.Domain{}, Attempt: &pb.PromotionAttempt{}},
		"nil-policy-members-report-watermark-lease": func() Input {
			in := allowedInput()
			in.Domain.Policy, in.Domain.Members, in.Domain.Watermark = nil, nil, nil
			in.Attempt.CandidateReport, in.Attempt.Lease = nil, nil
			return in
		}(),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			d := Evaluate(in)
			if d.GetAllowed() || d.GetDenialReason() != ReasonInvalidRequest {
				t.Errorf("want denied InvalidRequest:\n%s", Describe(d))
			}
			_ = Describe(d)
		})
	}
	if Describe(nil) != "decision: none\n" {
		t.Errorf("Describe(nil) = %q", Describe(nil))
	}
}

// TestDeterministicAndPure: the same input, cloned, gives equal decisions
// with identical deterministic bytes and text, and Evaluate leaves its input
// untouched (AU-9 [P6-D1]).
func TestDeterministicAndPure(t *testing.T) {
	marshal := proto.MarshalOptions{Deterministic: true}
	for name, in := range allInputs() {
		before := cloneInput(in)
		d1 := Evaluate(cloneInput(in))
		d2 := Evaluate(cloneInput(in))
		d3 := Evaluate(in)
		if !proto.Equal(d1, d2) || !proto.Equal(d1, d3) {
			t.Errorf("%s: decisions differ:\n%s\n%s", name, Describe(d1), Describe(d2))
		}
		b1, err1 := marshal.Marshal(d1)
		b2, err2 := marshal.Marshal(d2)
		if err1 != nil || err2 != nil || !bytes.Equal(b1, b2) {
			t.Errorf("%s: deterministic bytes differ (errs %v, %v)", name, err1, err2)
		}
		// Three independent evaluations render the same text.
		if Describe(d1) != Describe(d2) || Describe(d1) != Describe(d3) {
			t.Errorf("%s: Describe differs between independent evaluations", name)
		}
		if !proto.Equal(before.Domain, in.Domain) || !proto.Equal(before.Attempt, in.Attempt) {
			t.Errorf("%s: Evaluate mutated its input", name)
		}
	}
	// No hidden state carried between calls: every input evaluated in the
	// opposite order renders the same transcript.
	names := slices.Sorted(maps.Keys(allInputs()))
	forward := transcript(names)
	slices.Reverse(names)
	backward := transcript(names)
	slices.Reverse(names)
	for _, n := range names {
		if forward[n] != backward[n] {
			t.Errorf("%s: the decision depends on what was evaluated before it:\n%s\nvs\n%s", n, forward[n], backward[n])
		}
	}
	// And no process state (clock, randomness, map order, addresses): a
	// second, independent process renders the same transcript, byte for
	// byte.
	child := childTranscript(t)
	if want := joinTranscript(names, forward); child != want {
		t.Fatalf("a second process renders a different transcript (%d vs %d bytes); first difference at byte %d",
			len(child), len(want), firstDiff(child, want))
	}
}

// transcriptEnv makes the test binary print the transcript of every input
// and exit (TestMain): the second, independent run.
const transcriptEnv = "VALIDATOR_TRANSCRIPT"

func TestMain(m *testing.M) {
	if os.Getenv(transcriptEnv) != "" {
		names := slices.Sorted(maps.Keys(allInputs()))
		fmt.Print(joinTranscript(names, transcript(names)))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// transcript evaluates every named input in the given order and renders
// each decision (text and deterministic bytes).
func transcript(names []string) map[string]string {
	all := allInputs()
	out := make(map[string]string, len(names))
	for _, n := range names {
		d := Evaluate(cloneInput(all[n]))
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(d)
		if err != nil {
			panic(err)
		}
		out[n] = Describe(d) + hex.EncodeToString(b) + "\n"
	}
	return out
}

func joinTranscript(names []string, tr map[string]string) string {
	var b strings.Builder
	for _, n := range names {
		b.WriteString("== " + n + "\n" + tr[n])
	}
	return b.String()
}

func childTranscript(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), transcriptEnv+"=1", "GOMAXPROCS=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("second process: %v", err)
	}
	return string(out)
}

func firstDiff(a, b string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestDescribeGolden pins the rendering: tests, logs and the CLI rely on it
// being stable, so any change must show up as a reviewed diff here.
func TestDescribeGolden(t *testing.T) {
	in := allowedInput()
	compose(behindReplica, withWaivers(WaiverAllowDataLoss))(&in)
	in.Attempt.CandidateReport.AppliedCommitId = 50
	got := Describe(Evaluate(in))
	want := `decision: denied reason=MvccVisibilityViolation invariant="AU-6 [P6-S3]" waivers_applied=allow-data-loss
check request_wellformed: ok invariant="AU-13 [P6-F1]" observed{request_id=req-1 domain=db1 candidate=r2 kind=DOMAIN_KIND_AERODB waivers=allow-data-loss waiver_mode=legacy deviation=none} detail="Request \"req-1\" to promote \"r2\" in domain \"db1\" is well-formed."
check promotion_enabled: ok invariant="AU-14 [P5-I16]" observed{promotion_disabled=false} detail="Promotion is enabled for domain \"db1\"."
check candidate_eligible: ok invariant=[P6-A3] observed{candidate=r2 registered=true holder=p1 member_state=MEMBER_STATE_ACTIVE report_state=REPLICA_STATE_STREAMING} detail="Candidate \"r2\" is an active registered member and not the current holder \"p1\"."
check expected_epoch: ok invariant=AU-1 observed{expected_epoch=none current_epoch=7} detail="No expected epoch was given; the current epoch is 7."
check old_holder_inactive: ok invariant="AU-1 [P6-A1]" observed{holder=p1 epoch=7 released=false lease_state=LEASE_STATE_EXPIRED lease_holder=p1 lease_epoch=7 remaining_ms=0 leader_term=3} detail="Holder \"p1\"'s lease at epoch 7 had expired when observed at leader term 3."
check candidate_report: ok invariant="AU-7 [P6-F1]" observed{report=present report_epoch=7 current_epoch=7 report_age_ms=200 max_age_ms=5000} detail="The candidate's report is for epoch 7 and 200 ms old (limit 5000 ms, 0 = none)."
check watermark_known: ok invariant="AU-4 [P6-F1]" observed{watermark_epoch=7 watermark_lsn=100 watermark_hash=abababababababab visible_commit_id=55} detail="The watermark is known at epoch 7, lsn 100, visible commit id 55."
check candidate_contains_watermark: waived by=allow-data-loss reason=ReplicaBehindWal invariant="AU-4 [P6-S1]" observed{flushed_lsn=90 watermark_lsn=100} detail="The candidate flushed lsn 90, below the watermark lsn 100."
check history_prefix: waived by=allow-data-loss reason=HistoryDivergence invariant="AU-5 [P6-S2]" observed{watermark_lsn=100 watermark_hash=abababababababab report_watermark_lsn=100 candidate_hash_at_watermark=none} detail="The candidate's chain hash at lsn 100 is none, not the watermark's abababababababab."
check mvcc_visibility: failed reason=MvccVisibilityViolation invariant="AU-6 [P6-S3]" observed{applied_commit_id=50 visible_commit_id=55 read_safe=true} detail="The candidate applied commit id 50, below the visible commit id 55."
`
	if got != want {
		t.Errorf("Describe mismatch.\ngot:\n%s\nwant:\n%s", got, want)
	}
}

// TestDescribeQuotesHostileValues: client-chosen strings cannot break the
// one-line-per-check layout or forge a key.
func TestDescribeQuotesHostileValues(t *testing.T) {
	in := allowedInput()
	in.Attempt.Request.RequestId = "r\nx} check forged: ok"
	d := Evaluate(in)
	text := Describe(d)
	if lines := strings.Count(text, "\n"); lines != 1+len(fixedOrder) {
		t.Errorf("Describe produced %d lines, want %d:\n%s", lines, 1+len(fixedOrder), text)
	}
	if !strings.Contains(text, `request_id="r\nx} check forged: ok"`) {
		t.Errorf("hostile request_id not quoted:\n%s", text)
	}
}
