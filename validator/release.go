package validator

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// Release checks (docs/RELEASES.md), in the order they run.
const (
	CheckTransitionLegal = "transition_legal"
	CheckSignedManifest  = "signed_manifest"
	CheckDigestAllowed   = "digest_allowed"
	CheckChangeWindow    = "change_window"
	CheckAnalysisVerdict = "analysis_verdict"
	CheckErrorBudget     = "error_budget"
	CheckKnownGood       = "known_good"
)

// Release denial reasons.
const (
	ReasonIllegalTransition    = "IllegalTransition"
	ReasonManifestUnsigned     = "ManifestUnsigned"
	ReasonManifestInvalid      = "ManifestSignatureInvalid"
	ReasonManifestMismatch     = "ManifestDigestMismatch"
	ReasonDigestNotAllowed     = "DigestNotAllowed"
	ReasonChangeFrozen         = "ChangeFrozen"
	ReasonOutsideChangeWindow  = "OutsideChangeWindow"
	ReasonAnalysisMissing      = "AnalysisMissing"
	ReasonAnalysisInvalid      = "AnalysisSignatureInvalid"
	ReasonAnalysisNotPassing   = "AnalysisNotPassing"
	ReasonAnalysisStale        = "AnalysisStale"
	ReasonAnalysisIncomplete   = "AnalysisIncomplete"
	ReasonBudgetMissing        = "BudgetEvidenceMissing"
	ReasonBudgetInvalid        = "BudgetSignatureInvalid"
	ReasonBudgetStale          = "BudgetEvidenceStale"
	ReasonErrorBudgetExhausted = "ErrorBudgetExhausted"
	ReasonNoKnownGood          = "NoKnownGood"
)

// Evidence types and the in-toto predicate types they carry.
const (
	EvidenceManifest = "manifest"
	EvidenceAnalysis = "analysis"
	EvidenceBudget   = "budget"

	StatementType          = "https://in-toto.io/Statement/v1"
	PredicateManifest      = "https://aerodb.dev/release/manifest/v1"
	PredicateAnalysis      = "https://aerodb.dev/release/analysis/v1"
	PredicateBudget        = "https://aerodb.dev/release/error-budget/v1"
	PayloadTypeInToto      = "application/vnd.in-toto+json"
	MaxEvidenceBytes       = 64 << 10
	MaxEvidenceSignatures  = 8
	MaxEvidencePerDecision = 8
)

// Statement is an in-toto Statement v1 as the release checks read it.
type Statement struct {
	Type          string          `json:"_type"`
	Subject       []Subject       `json:"subject"`
	PredicateType string          `json:"predicateType"`
	Predicate     json.RawMessage `json:"predicate"`
}

// Subject names an artefact by digest.
type Subject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

// AnalysisPredicate is a canary analysis verdict.
type AnalysisPredicate struct {
	Verdict         string   `json:"verdict"` // pass, fail, inconclusive
	Metrics         []string `json:"metrics"`
	WindowEndUnixMs int64    `json:"window_end_unix_ms"`
}

// BudgetPredicate is error-budget evidence for the environment.
type BudgetPredicate struct {
	Objective        float64 `json:"objective"`
	Remaining        float64 `json:"remaining"` // fraction of the budget left; <= 0 exhausted
	MeasuredAtUnixMs int64   `json:"measured_at_unix_ms"`
}

// ReleaseInput is everything a release decision reads: the state before,
// the domain's policy, the requested transition with its evidence, and the
// leader's stamp. Nothing else: the decision is a pure function of it.
type ReleaseInput struct {
	State         *pb.ReleaseState
	Policy        *pb.ReleasePolicy
	Action        pb.ReleaseAction
	Canary        string // START_CANARY: the requested canary
	Step, Weight  uint32
	Evidence      []*pb.Evidence
	StampedUnixMs int64
}

// EvaluateRelease decides a release transition. Every check that applies to
// the action runs (in a fixed order) and is shown; the first failed one
// names the denial.
func EvaluateRelease(in ReleaseInput) (*pb.Decision, []*pb.EvidenceRef) {
	r := &releaseEval{in: in, st: in.State}
	if r.st == nil {
		r.st = &pb.ReleaseState{}
	}
	r.legal()
	switch in.Action {
	case pb.ReleaseAction_RELEASE_ACTION_START_CANARY:
		r.manifest()
		r.allowed(in.Canary)
		r.window()
	case pb.ReleaseAction_RELEASE_ACTION_ADVANCE_STEP, pb.ReleaseAction_RELEASE_ACTION_RESUME:
		r.window()
	case pb.ReleaseAction_RELEASE_ACTION_PROMOTE:
		r.allowed(r.st.GetCanary())
		r.window()
		r.analysis()
		r.budget()
	case pb.ReleaseAction_RELEASE_ACTION_ROLLBACK:
		r.knownGood()
	}
	d := &pb.Decision{Allowed: true, Checks: r.checks}
	for _, c := range r.checks {
		if !c.Satisfied {
			d.Allowed, d.DenialReason, d.FailedInvariant = false, c.Reason, c.Invariant
			break
		}
	}
	return d, r.refs
}

type releaseEval struct {
	in     ReleaseInput
	st     *pb.ReleaseState
	checks []*pb.Check
	refs   []*pb.EvidenceRef
}

func (r *releaseEval) add(name, reason, detail string, observed ...string) {
	c := &pb.Check{Name: name, Invariant: "REL", Satisfied: reason == "", Reason: reason, Detail: detail}
	for i := 0; i+1 < len(observed); i += 2 {
		c.Observed = append(c.Observed, &pb.Observed{Key: observed[i], Value: observed[i+1]})
	}
	r.checks = append(r.checks, c)
}

// legal: the action is legal from the current phase.
func (r *releaseEval) legal() {
	ph := r.st.GetPhase()
	active := ph == pb.ReleasePhase_RELEASE_PHASE_PROGRESSING || ph == pb.ReleasePhase_RELEASE_PHASE_PAUSED
	var ok bool
	switch r.in.Action {
	case pb.ReleaseAction_RELEASE_ACTION_START_CANARY:
		ok = !active
	case pb.ReleaseAction_RELEASE_ACTION_ADVANCE_STEP:
		ok = ph == pb.ReleasePhase_RELEASE_PHASE_PROGRESSING && r.in.Step == r.st.GetStep()+1 && r.in.Weight <= 100
	case pb.ReleaseAction_RELEASE_ACTION_PAUSE:
		ok = ph == pb.ReleasePhase_RELEASE_PHASE_PROGRESSING
	case pb.ReleaseAction_RELEASE_ACTION_RESUME:
		ok = ph == pb.ReleasePhase_RELEASE_PHASE_PAUSED
	case pb.ReleaseAction_RELEASE_ACTION_PROMOTE, pb.ReleaseAction_RELEASE_ACTION_ABORT:
		ok = active
	case pb.ReleaseAction_RELEASE_ACTION_ROLLBACK:
		ok = true // from every state
	}
	detail := fmt.Sprintf("%s is legal from %s", ActionName(r.in.Action), PhaseName(ph))
	reason := ""
	if !ok {
		reason = ReasonIllegalTransition
		detail = fmt.Sprintf("%s is not legal from %s (step %d)", ActionName(r.in.Action), PhaseName(ph), r.st.GetStep())
	}
	r.add(CheckTransitionLegal, reason, detail, "phase", PhaseName(ph), "step", fmt.Sprint(r.st.GetStep()),
		"requested_step", fmt.Sprint(r.in.Step), "weight", fmt.Sprint(r.in.Weight))
}

// manifest: a manifest statement over the canary's digest, signed by a key
// trusted for manifests.
func (r *releaseEval) manifest() {
	stmt, ref, reason, why := r.verified(EvidenceManifest, PredicateManifest)
	if reason != "" {
		r.add(CheckSignedManifest, reason, why, "canary", r.in.Canary)
		return
	}
	if !subjectHas(stmt, r.in.Canary) {
		r.add(CheckSignedManifest, ReasonManifestMismatch, "the signed manifest names another digest than the canary", "canary", r.in.Canary,
			"signed", subjectDigests(stmt))
		return
	}
	r.add(CheckSignedManifest, "", "the canary's manifest is signed by a trusted key", "canary", r.in.Canary, "key_id", ref.KeyId)
}

// allowed: the digest is on the environment's allowlist (when it has one).
func (r *releaseEval) allowed(digest string) {
	list := r.in.Policy.GetAllowedDigests()
	if len(list) == 0 {
		r.add(CheckDigestAllowed, "", "the environment has no allowlist: any signed manifest", "digest", digest)
		return
	}
	if !slices.Contains(list, digest) {
		r.add(CheckDigestAllowed, ReasonDigestNotAllowed, "the digest is not on the environment's allowlist", "digest", digest,
			"environment", r.in.Policy.GetEnvironment())
		return
	}
	r.add(CheckDigestAllowed, "", "the digest is on the environment's allowlist", "digest", digest)
}

// window: no deny window is active, and an allow window is when any exists.
func (r *releaseEval) window() {
	at := r.in.StampedUnixMs
	var allows []string
	anyAllow := false
	for _, w := range r.in.Policy.GetWindows() {
		active := WindowActive(w, at)
		switch w.GetKind() {
		case pb.WindowKind_WINDOW_KIND_DENY:
			if active {
				r.add(CheckChangeWindow, ReasonChangeFrozen, "a deny window (freeze) is active", "window", w.GetName(), "at_unix_ms", fmt.Sprint(at))
				return
			}
		case pb.WindowKind_WINDOW_KIND_ALLOW:
			anyAllow = true
			if active {
				allows = append(allows, w.GetName())
			}
		}
	}
	if anyAllow && len(allows) == 0 {
		r.add(CheckChangeWindow, ReasonOutsideChangeWindow, "no allow window is active", "at_unix_ms", fmt.Sprint(at))
		return
	}
	r.add(CheckChangeWindow, "", "no freeze is active and changes are allowed now", "at_unix_ms", fmt.Sprint(at),
		"allow_windows", strings.Join(allows, ","))
}

// analysis: a signed, fresh, passing verdict over the canary covering every
// required metric.
func (r *releaseEval) analysis() {
	stmt, ref, reason, why := r.verified(EvidenceAnalysis, PredicateAnalysis)
	if reason == ReasonManifestUnsigned {
		reason = ReasonAnalysisMissing
	} else if reason != "" {
		reason = ReasonAnalysisInvalid
	}
	if reason != "" {
		r.add(CheckAnalysisVerdict, reason, why, "canary", r.st.GetCanary())
		return
	}
	var p AnalysisPredicate
	if err := json.Unmarshal(stmt.Predicate, &p); err != nil || !subjectHas(stmt, r.st.GetCanary()) {
		r.add(CheckAnalysisVerdict, ReasonAnalysisInvalid, "the analysis statement is malformed or names another digest", "canary", r.st.GetCanary())
		return
	}
	age := r.in.StampedUnixMs - p.WindowEndUnixMs
	maxAge := int64(r.in.Policy.GetAnalysisMaxAgeMs())
	var missing []string
	for _, m := range r.in.Policy.GetRequiredMetrics() {
		if !slices.Contains(p.Metrics, m) {
			missing = append(missing, m)
		}
	}
	obs := []string{"verdict", p.Verdict, "age_ms", fmt.Sprint(age), "max_age_ms", fmt.Sprint(maxAge), "key_id", ref.KeyId}
	switch {
	case p.Verdict != "pass":
		r.add(CheckAnalysisVerdict, ReasonAnalysisNotPassing, "the analysis verdict is not pass (inconclusive and no data never promote)", obs...)
	case maxAge > 0 && (age > maxAge || age < -maxAge):
		r.add(CheckAnalysisVerdict, ReasonAnalysisStale, "the analysis window ended too long before the leader's stamp", obs...)
	case len(missing) > 0:
		r.add(CheckAnalysisVerdict, ReasonAnalysisIncomplete, "the verdict does not cover every required metric",
			append(obs, "missing", strings.Join(missing, ","))...)
	default:
		r.add(CheckAnalysisVerdict, "", "a fresh signed pass covering every required metric", obs...)
	}
}

// budget: when the policy requires it, fresh signed budget evidence with
// budget left (an exhausted budget freezes promotion).
func (r *releaseEval) budget() {
	if !r.in.Policy.GetRequireBudget() {
		r.add(CheckErrorBudget, "", "the policy does not gate promotion on the error budget")
		return
	}
	stmt, ref, reason, why := r.verified(EvidenceBudget, PredicateBudget)
	if reason == ReasonManifestUnsigned {
		reason = ReasonBudgetMissing
	} else if reason != "" {
		reason = ReasonBudgetInvalid
	}
	if reason != "" {
		r.add(CheckErrorBudget, reason, why)
		return
	}
	var p BudgetPredicate
	if err := json.Unmarshal(stmt.Predicate, &p); err != nil {
		r.add(CheckErrorBudget, ReasonBudgetInvalid, "the budget statement is malformed")
		return
	}
	age := r.in.StampedUnixMs - p.MeasuredAtUnixMs
	maxAge := int64(r.in.Policy.GetBudgetMaxAgeMs())
	obs := []string{"remaining", fmt.Sprint(p.Remaining), "objective", fmt.Sprint(p.Objective), "age_ms", fmt.Sprint(age), "key_id", ref.KeyId}
	switch {
	case maxAge > 0 && (age > maxAge || age < -maxAge):
		r.add(CheckErrorBudget, ReasonBudgetStale, "the budget evidence is too old", obs...)
	case p.Remaining <= 0:
		r.add(CheckErrorBudget, ReasonErrorBudgetExhausted, "the error budget is exhausted: promotion is frozen (rollback is not)", obs...)
	default:
		r.add(CheckErrorBudget, "", "error budget left", obs...)
	}
}

// knownGood: a rollback needs a release to roll back to.
func (r *releaseEval) knownGood() {
	if len(r.st.GetKnownGood()) == 0 {
		r.add(CheckKnownGood, ReasonNoKnownGood, "no earlier known-good release to roll back to", "stable", r.st.GetStable())
		return
	}
	r.add(CheckKnownGood, "", "roll back to the last known-good release", "stable", r.st.GetStable(), "to", r.st.GetKnownGood()[0])
}

// verified finds the evidence of typ, checks its DSSE signatures against
// the keys trusted for typ and decodes its statement. reason is
// ReasonManifestUnsigned when there is no such evidence (callers rename
// it), ReasonManifestInvalid when it does not verify.
func (r *releaseEval) verified(typ, predicate string) (*Statement, *pb.EvidenceRef, string, string) {
	var ev *pb.Evidence
	for _, e := range r.in.Evidence {
		if e.GetType() == typ {
			ev = e
			break
		}
	}
	if ev == nil {
		return nil, nil, ReasonManifestUnsigned, "no " + typ + " evidence was submitted"
	}
	sum := sha256.Sum256(ev.GetEnvelope())
	ref := &pb.EvidenceRef{Type: typ, Digest: "sha256:" + hex.EncodeToString(sum[:])}
	stmt, keyID, err := VerifyEvidence(ev.GetEnvelope(), typ, predicate, r.in.Policy.GetKeys())
	if err != nil {
		return nil, nil, ReasonManifestInvalid, "the " + typ + " evidence does not verify: " + err.Error()
	}
	ref.KeyId = keyID
	r.refs = append(r.refs, ref)
	return stmt, ref, "", ""
}

// VerifyEvidence checks a DSSE envelope against the keys trusted for typ
// and returns its in-toto statement (of predicate type predicate) and the
// key id that verified it. Deterministic: no clock, no I/O.
func VerifyEvidence(envelope []byte, typ, predicate string, keys []*pb.TrustedKey) (*Statement, string, error) {
	if len(envelope) > MaxEvidenceBytes {
		return nil, "", fmt.Errorf("envelope is %d bytes, more than %d", len(envelope), MaxEvidenceBytes)
	}
	var env dsseEnvelope
	if err := json.Unmarshal(envelope, &env); err != nil {
		return nil, "", errors.New("not a DSSE envelope (JSON)")
	}
	if env.PayloadType != PayloadTypeInToto {
		return nil, "", fmt.Errorf("payload type is not %s", PayloadTypeInToto)
	}
	if n := len(env.Signatures); n == 0 || n > MaxEvidenceSignatures {
		return nil, "", fmt.Errorf("%d signatures (want 1..%d)", n, MaxEvidenceSignatures)
	}
	var trusted []*pb.TrustedKey
	for _, k := range keys {
		if k.GetEvidenceType() == typ && len(k.GetEd25519PublicKey()) == ed25519.PublicKeySize {
			trusted = append(trusted, k)
		}
	}
	if len(trusted) == 0 {
		return nil, "", fmt.Errorf("no key is trusted for %s evidence", typ)
	}
	keyID, body, err := dsseVerify(&env, trusted)
	if err != nil {
		return nil, "", err
	}
	var st Statement
	if err := json.Unmarshal(body, &st); err != nil || st.Type != StatementType || st.PredicateType != predicate {
		return nil, "", fmt.Errorf("not an in-toto Statement v1 of predicate type %s", predicate)
	}
	return &st, keyID, nil
}

// dsseEnvelope and dsseSignature are the DSSE envelope's JSON
// (https://github.com/secure-systems-lab/dsse/blob/master/envelope.md).
// The validator verifies envelopes itself rather than with
// go-securesystemslib/dsse, whose package links golang.org/x/crypto/ssh
// and with it net, os and crypto/rand, and prints to stdout: the core
// links none of these (docs/ARCHITECTURE.md, internal/archtest).
type dsseEnvelope struct {
	PayloadType string          `json:"payloadType"`
	Payload     string          `json:"payload"`
	Signatures  []dsseSignature `json:"signatures"`
}

type dsseSignature struct {
	KeyID string `json:"keyid"`
	Sig   string `json:"sig"`
}

// dsseVerify accepts env when one of its signatures verifies under one of
// the trusted Ed25519 keys, with the semantics of go-securesystemslib's
// EnvelopeVerifier at threshold 1 (which this replaces): the payload and
// every signature must be base64 (standard or URL alphabet); a signature
// naming a key id is tried only with the key of that id; the accepted key
// is that of the first signature, in envelope order, that verifies, under
// the first trusted key, in policy order, that verifies it. It returns
// that key's id (for a key without one, its OpenSSH SHA256 fingerprint,
// as the library did) and the decoded payload.
func dsseVerify(env *dsseEnvelope, trusted []*pb.TrustedKey) (string, []byte, error) {
	body, err := dsseB64(env.Payload)
	if err != nil {
		return "", nil, err
	}
	sigs := make([][]byte, len(env.Signatures))
	for i, s := range env.Signatures {
		if sigs[i], err = dsseB64(s.Sig); err != nil {
			return "", nil, err
		}
	}
	pae := dssePAE(env.PayloadType, body)
	for i, s := range env.Signatures {
		for _, k := range trusted {
			id := k.GetKeyId()
			if id == "" {
				id = sshFingerprint(k.GetEd25519PublicKey())
			}
			if s.KeyID != "" && s.KeyID != id {
				continue
			}
			if ed25519.Verify(ed25519.PublicKey(k.GetEd25519PublicKey()), pae, sigs[i]) {
				return id, body, nil
			}
		}
	}
	return "", nil, errors.New("no signature by a trusted key")
}

// dssePAE is DSSE's pre-authentication encoding, what is signed.
func dssePAE(payloadType string, payload []byte) []byte {
	b := fmt.Appendf(nil, "DSSEv1 %d %s %d ", len(payloadType), payloadType, len(payload))
	return append(b, payload...)
}

func dsseB64(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		if b, err = base64.URLEncoding.DecodeString(s); err != nil {
			return nil, errors.New("unable to base64 decode payload (is payload in the right format?)")
		}
	}
	return b, nil
}

// sshFingerprint is ssh.FingerprintSHA256 of an Ed25519 public key: the
// key id go-securesystemslib gave a verifier without one.
func sshFingerprint(pub []byte) string {
	var w []byte
	for _, f := range [][]byte{[]byte("ssh-ed25519"), pub} {
		w = binary.BigEndian.AppendUint32(w, uint32(len(f)))
		w = append(w, f...)
	}
	sum := sha256.Sum256(w)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

func subjectHas(st *Statement, digest string) bool {
	hexPart, ok := strings.CutPrefix(digest, "sha256:")
	if !ok {
		return false
	}
	for _, s := range st.Subject {
		if s.Digest["sha256"] == hexPart {
			return true
		}
	}
	return false
}

func subjectDigests(st *Statement) string {
	var out []string
	for _, s := range st.Subject {
		out = append(out, "sha256:"+s.Digest["sha256"])
	}
	return strings.Join(out, ",")
}

// WindowActive reports whether change window w covers the instant at (unix
// ms, UTC). Integer arithmetic only: the core reads no clock.
func WindowActive(w *pb.ChangeWindow, at int64) bool {
	if w.GetWeekdays() == 0 {
		return at >= w.GetStartUnixMs() && at < w.GetEndUnixMs()
	}
	const minuteMs, dayMin, weekMin = 60_000, 24 * 60, 7 * 24 * 60
	if at < 0 {
		return false
	}
	minutes := at / minuteMs
	// 1970-01-01 was a Thursday (weekday 4, Sunday = 0).
	weekMinute := (minutes + 4*dayMin) % weekMin
	dur := int64(w.GetDurationMinutes())
	for day := int64(0); day < 7; day++ {
		if w.GetWeekdays()&(1<<day) == 0 {
			continue
		}
		start := day*dayMin + int64(w.GetStartMinute())
		// the window may wrap past the end of the week
		off := (weekMinute - start + weekMin) % weekMin
		if off < dur {
			return true
		}
	}
	return false
}

// ActionName is a release action as operators write it (start_canary, promote, ...).
func ActionName(a pb.ReleaseAction) string {
	return strings.ToLower(strings.TrimPrefix(a.String(), "RELEASE_ACTION_"))
}

// PhaseName is a release phase as operators read it ("stable" when no canary).
func PhaseName(p pb.ReleasePhase) string {
	if p == pb.ReleasePhase_RELEASE_PHASE_UNSPECIFIED {
		return "stable"
	}
	return strings.ToLower(strings.TrimPrefix(p.String(), "RELEASE_PHASE_"))
}
