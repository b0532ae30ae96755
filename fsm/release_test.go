package fsm

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"encoding/json"
	"strings"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/validator"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// Release domains (docs/RELEASES.md): every decision is one entry, allowed
// or denied, with the checks that decided it; the evidence is verified by
// the pure validator; promote, abort and rollback move the epoch.

const (
	digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	digestC = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
	t0      = int64(1_800_000_000_000) // a Friday, 2027-01-15 08:00 UTC
)

// testKey is a fixed Ed25519 key (seeded: the test prints nothing random).
type testKey struct {
	id   string
	priv ed25519.PrivateKey
}

func newTestKey(id string, seed byte) testKey {
	s := make([]byte, ed25519.SeedSize)
	for i := range s {
		s[i] = seed
	}
	return testKey{id: id, priv: ed25519.NewKeyFromSeed(s)}
}

func (k testKey) Sign(_ context.Context, data []byte) ([]byte, error) {
	return ed25519.Sign(k.priv, data), nil
}
func (k testKey) KeyID() (string, error)   { return k.id, nil }
func (k testKey) Public() crypto.PublicKey { return k.priv.Public() }

func (k testKey) trusted(typ string) *pb.TrustedKey {
	return &pb.TrustedKey{KeyId: k.id, EvidenceType: typ, Ed25519PublicKey: k.priv.Public().(ed25519.PublicKey)}
}

// evidence signs an in-toto statement about digest with k.
func evidence(t *testing.T, k testKey, typ, predicateType, digest string, predicate any) *pb.Evidence {
	t.Helper()
	pred, _ := json.Marshal(predicate)
	st := validator.Statement{Type: validator.StatementType, PredicateType: predicateType, Predicate: pred,
		Subject: []validator.Subject{{Name: "app", Digest: map[string]string{"sha256": strings.TrimPrefix(digest, "sha256:")}}}}
	body, _ := json.Marshal(st)
	signer, err := dsse.NewEnvelopeSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	env, err := signer.SignPayload(context.Background(), validator.PayloadTypeInToto, body)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(env)
	return &pb.Evidence{Type: typ, Envelope: b}
}

type releaseRig struct {
	t     *testing.T
	f     *FSM
	index uint64
	now   int64
	epoch uint64
}

func (r *releaseRig) apply(cmd *pb.Command) *Result {
	r.index++
	cmd.StampedUnixMs = r.now
	return r.f.ApplyCommand(r.index, 1, cmd)
}

func (r *releaseRig) step(action pb.ReleaseAction, canary string, step, weight uint32, ev ...*pb.Evidence) *Result {
	res := r.apply(&pb.Command{Body: &pb.Command_ReleaseTransition{ReleaseTransition: &pb.ReleaseTransition{
		Domain: "rel", Holder: "ctl", Epoch: r.epoch, Action: action, Canary: canary, Step: step, Weight: weight, Evidence: ev}}})
	if res.Err == nil {
		r.epoch = res.Epoch
	}
	return res
}

// expect asserts the decision: allowed, or denied by check with reason.
func (r *releaseRig) expect(res *Result, check, reason string) {
	r.t.Helper()
	if res.Err != nil {
		r.t.Fatalf("entry %d failed: %v", res.Index, res.Err)
	}
	d := res.Release.GetDecision()
	if reason == "" {
		if !d.GetAllowed() {
			r.t.Fatalf("entry %d denied: %s", res.Index, validator.Describe(d))
		}
		return
	}
	if d.GetAllowed() || d.GetDenialReason() != reason {
		r.t.Fatalf("entry %d: want denied %s, got allowed=%t %s\n%s", res.Index, reason, d.GetAllowed(), d.GetDenialReason(), validator.Describe(d))
	}
	for _, c := range d.GetChecks() {
		if c.GetName() == check && !c.GetSatisfied() {
			return
		}
	}
	r.t.Fatalf("entry %d: no failed %s check in %s", res.Index, check, validator.Describe(d))
}

func TestReleaseTransitions(t *testing.T) {
	signer, stranger, analyst, budgeter := newTestKey("release-signer", 1), newTestKey("stranger", 2), newTestKey("analysis", 3), newTestKey("budget", 4)
	policy := &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL, LeaseTtlMs: 10_000, ReportMaxAgeMs: 30_000, MinSyncReplicas: 1,
		Release: &pb.ReleasePolicy{Environment: "prod",
			Keys:            []*pb.TrustedKey{signer.trusted("manifest"), analyst.trusted("analysis"), budgeter.trusted("budget")},
			RequiredMetrics: []string{"error_rate", "latency_p99"}, AnalysisMaxAgeMs: 600_000,
			RequireBudget: true, BudgetMaxAgeMs: 3_600_000,
			// Fridays from 12:00 UTC for 12 h: a freeze.
			Windows: []*pb.ChangeWindow{{Name: "friday-freeze", Kind: pb.WindowKind_WINDOW_KIND_DENY, Weekdays: 1 << 5, StartMinute: 12 * 60, DurationMinutes: 12 * 60}}},
	}
	r := &releaseRig{t: t, f: New(), now: t0}
	if res := r.apply(&pb.Command{Body: &pb.Command_CreateDomain{CreateDomain: &pb.CreateDomain{Name: "rel", Kind: pb.DomainKind_DOMAIN_KIND_RELEASE, Policy: policy}}}); res.Err != nil {
		t.Fatal(res.Err)
	}
	if res := r.apply(&pb.Command{Body: &pb.Command_Acquire{Acquire: &pb.Acquire{Domain: "rel", Holder: "ctl"}}}); res.Err != nil {
		t.Fatal(res.Err)
	}
	r.epoch = 1
	manifest := func(k testKey, d string) *pb.Evidence {
		return evidence(t, k, "manifest", validator.PredicateManifest, d, map[string]string{"image": "app"})
	}
	analysis := func(verdict string, metrics ...string) *pb.Evidence {
		return evidence(t, analyst, "analysis", validator.PredicateAnalysis, digestB,
			validator.AnalysisPredicate{Verdict: verdict, Metrics: metrics, WindowEndUnixMs: r.now - 1000})
	}
	budget := func(remaining float64) *pb.Evidence {
		return evidence(t, budgeter, "budget", validator.PredicateBudget, digestB,
			validator.BudgetPredicate{Objective: 0.999, Remaining: remaining, MeasuredAtUnixMs: r.now})
	}

	// A first release (no stable yet) goes through: start, promote.
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_START_CANARY, digestA, 1, 10, manifest(signer, digestA)), "", "")
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_PROMOTE, "", 0, 0,
		evidence(t, analyst, "analysis", validator.PredicateAnalysis, digestA, validator.AnalysisPredicate{Verdict: "pass",
			Metrics: []string{"error_rate", "latency_p99"}, WindowEndUnixMs: r.now}), budget(0.5)), "", "")
	if r.epoch != 2 {
		t.Fatalf("promote left epoch %d, want 2", r.epoch)
	}

	// Unsigned, wrongly signed, and signed-for-another-digest manifests are
	// denied, each naming signed_manifest; the denial is recorded.
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_START_CANARY, digestB, 1, 10), validator.CheckSignedManifest, validator.ReasonManifestUnsigned)
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_START_CANARY, digestB, 1, 10, manifest(stranger, digestB)), validator.CheckSignedManifest, validator.ReasonManifestInvalid)
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_START_CANARY, digestB, 1, 10, manifest(signer, digestA)), validator.CheckSignedManifest, validator.ReasonManifestMismatch)
	// A stranger's signature claiming the trusted key's id.
	forger := testKey{id: signer.id, priv: stranger.priv}
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_START_CANARY, digestB, 1, 10, manifest(forger, digestB)), validator.CheckSignedManifest, validator.ReasonManifestInvalid)
	tampered := manifest(signer, digestB)
	tampered.Envelope = []byte(strings.Replace(string(tampered.Envelope), `"payload":"ey`, `"payload":"eX`, 1))
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_START_CANARY, digestB, 1, 10, tampered), validator.CheckSignedManifest, validator.ReasonManifestInvalid)

	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_START_CANARY, digestB, 1, 10, manifest(signer, digestB)), "", "")
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_ADVANCE_STEP, "", 3, 50), validator.CheckTransitionLegal, validator.ReasonIllegalTransition)
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_ADVANCE_STEP, "", 2, 50), "", "")

	// Inconclusive, incomplete and stale analysis never promote.
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_PROMOTE, "", 0, 0, budget(0.5)), validator.CheckAnalysisVerdict, validator.ReasonAnalysisMissing)
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_PROMOTE, "", 0, 0, analysis("inconclusive", "error_rate", "latency_p99"), budget(0.5)),
		validator.CheckAnalysisVerdict, validator.ReasonAnalysisNotPassing)
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_PROMOTE, "", 0, 0, analysis("pass", "error_rate"), budget(0.5)),
		validator.CheckAnalysisVerdict, validator.ReasonAnalysisIncomplete)
	stale := analysis("pass", "error_rate", "latency_p99")
	r.now += 700_000
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_PROMOTE, "", 0, 0, stale, budget(0.5)), validator.CheckAnalysisVerdict, validator.ReasonAnalysisStale)

	// An exhausted budget freezes promotion.
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_PROMOTE, "", 0, 0, analysis("pass", "error_rate", "latency_p99"), budget(0)),
		validator.CheckErrorBudget, validator.ReasonErrorBudgetExhausted)
	// Fresh, complete, passing analysis and budget left: B becomes stable,
	// A its last known good.
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_PROMOTE, "", 0, 0, analysis("pass", "error_rate", "latency_p99"), budget(0.5)), "", "")

	// C starts before the Friday freeze; at 12:30 UTC the freeze blocks
	// its promotion but not a rollback (to A, the last known good).
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_START_CANARY, digestC, 1, 10, manifest(signer, digestC)), "", "")
	r.now = t0 + (4*60+30)*60_000
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_PROMOTE, "", 0, 0,
		evidence(t, analyst, "analysis", validator.PredicateAnalysis, digestC, validator.AnalysisPredicate{Verdict: "pass",
			Metrics: []string{"error_rate", "latency_p99"}, WindowEndUnixMs: r.now}), budget(0.5)),
		validator.CheckChangeWindow, validator.ReasonChangeFrozen)
	before := r.epoch
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_ROLLBACK, "", 0, 0), "", "")
	d, _ := r.f.Domain("rel")
	rs := d.GetRelease()
	if r.epoch != before+1 || rs.GetStable() != digestA || rs.GetCanary() != "" || rs.GetPhase() != pb.ReleasePhase_RELEASE_PHASE_ROLLED_BACK {
		t.Fatalf("after rollback: epoch %d (was %d), %v", r.epoch, before, rs)
	}
	// Nothing left to roll back to.
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_ROLLBACK, "", 0, 0), validator.CheckKnownGood, validator.ReasonNoKnownGood)
	// Every decision, allowed or denied, is in the record with its evidence.
	if n := len(rs.GetDecisions()); n != 19 {
		t.Fatalf("%d decisions recorded, want 19", n)
	}
}

// TestStaleControllerIsFenced: after a promotion (epoch + 1) the old
// epoch's transitions are refused and recorded nowhere.
func TestStaleControllerIsFenced(t *testing.T) {
	signer := newTestKey("release-signer", 1)
	r := &releaseRig{t: t, f: New(), now: t0}
	policy := &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL, LeaseTtlMs: 10_000, ReportMaxAgeMs: 30_000, MinSyncReplicas: 1,
		Release: &pb.ReleasePolicy{Keys: []*pb.TrustedKey{signer.trusted("manifest")}}}
	r.apply(&pb.Command{Body: &pb.Command_CreateDomain{CreateDomain: &pb.CreateDomain{Name: "rel", Kind: pb.DomainKind_DOMAIN_KIND_RELEASE, Policy: policy}}})
	r.apply(&pb.Command{Body: &pb.Command_Acquire{Acquire: &pb.Acquire{Domain: "rel", Holder: "ctl"}}})
	r.epoch = 1
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_START_CANARY, digestA, 1, 5,
		evidence(t, signer, "manifest", validator.PredicateManifest, digestA, map[string]string{})), "", "")
	r.expect(r.step(pb.ReleaseAction_RELEASE_ACTION_ABORT, "", 0, 0), "", "")
	r.epoch = 1
	res := r.step(pb.ReleaseAction_RELEASE_ACTION_PAUSE, "", 0, 0)
	if res.Err == nil || !strings.Contains(res.Err.Error(), "fenced") {
		t.Fatalf("a stale controller's pause: %v", res.Err)
	}
	d, _ := r.f.Domain("rel")
	if n := len(d.GetRelease().GetDecisions()); n != 2 {
		t.Fatalf("%d decisions recorded, want 2 (the fenced call records nothing)", n)
	}
}

func TestWindowActive(t *testing.T) {
	fri := &pb.ChangeWindow{Weekdays: 1 << 5, StartMinute: 12 * 60, DurationMinutes: 12 * 60}
	sunWrap := &pb.ChangeWindow{Weekdays: 1 << 6, StartMinute: 22 * 60, DurationMinutes: 4 * 60} // Saturday 22:00 → Sunday 02:00
	oneOff := &pb.ChangeWindow{StartUnixMs: t0, EndUnixMs: t0 + 60_000}
	for _, c := range []struct {
		w    *pb.ChangeWindow
		at   int64
		want bool
	}{
		{fri, t0, false},                         // Friday 08:00
		{fri, t0 + 4*3_600_000, true},            // Friday 12:00
		{fri, t0 + 16*3_600_000 - 1, true},       // Friday 23:59:59.999
		{fri, t0 + 16*3_600_000, false},          // Saturday 00:00
		{sunWrap, t0 + (24+14)*3_600_000, true},  // Saturday 22:00
		{sunWrap, t0 + (24+17)*3_600_000, true},  // Sunday 01:00
		{sunWrap, t0 + (24+18)*3_600_000, false}, // Sunday 02:00
		{oneOff, t0 - 1, false}, {oneOff, t0, true}, {oneOff, t0 + 60_000, false},
	} {
		if got := validator.WindowActive(c.w, c.at); got != c.want {
			t.Errorf("window %v at %d: %t, want %t", c.w, c.at, got, c.want)
		}
	}
}
