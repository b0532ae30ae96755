package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/evidence"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/internal/testcluster"
	"github.com/aerodb/authority/validator"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

const (
	exDigestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	exDigestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func seededKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

// signEvidence returns a DSSE envelope of type typ about digest.
func signEvidence(t *testing.T, priv ed25519.PrivateKey, keyID, typ, digest string, predicate any) []byte {
	t.Helper()
	pred, _ := json.Marshal(predicate)
	body, _ := json.Marshal(validator.Statement{Type: validator.StatementType, PredicateType: predicateTypes[typ], Predicate: pred,
		Subject: []validator.Subject{{Name: typ, Digest: map[string]string{"sha256": strings.TrimPrefix(digest, "sha256:")}}}})
	s, err := dsse.NewEnvelopeSigner(pemSigner{id: keyID, priv: priv})
	if err != nil {
		t.Fatal(err)
	}
	env, err := s.SignPayload(context.Background(), validator.PayloadTypeInToto, body)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(env)
	return b
}

// exportFixture is a release domain's committed state with a start, a
// promotion (analysis evidence), a denied promotion and a rollback, and an
// evidence store holding the envelopes.
type exportFixture struct {
	domain     *pb.Domain
	dir        string
	signer     ed25519.PrivateKey
	signerPub  ed25519.PublicKey
	manifestEv []byte
	analysisEv []byte
	events     []*pb.Event
}

func newExportFixture(t *testing.T) *exportFixture {
	t.Helper()
	manKey, anaKey := seededKey(1), seededKey(2)
	f := &exportFixture{dir: t.TempDir(), signer: seededKey(9)}
	f.signerPub = f.signer.Public().(ed25519.PublicKey)
	f.manifestEv = signEvidence(t, manKey, "rel-signer", "manifest", exDigestB, map[string]string{"image": "app"})
	f.analysisEv = signEvidence(t, anaKey, "analysis", "analysis", exDigestB, validator.AnalysisPredicate{Verdict: "pass", Metrics: []string{"error_rate"}, WindowEndUnixMs: 1000})
	st, err := evidence.Open(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	manD, err := st.Put(f.manifestEv)
	if err != nil {
		t.Fatal(err)
	}
	anaD, err := st.Put(f.analysisEv)
	if err != nil {
		t.Fatal(err)
	}
	// Two older decisions, only in the event log.
	oldMan := signEvidence(t, manKey, "rel-signer", "manifest", exDigestA, map[string]string{"image": "a"})
	oldAna := signEvidence(t, anaKey, "analysis", "analysis", exDigestA, validator.AnalysisPredicate{Verdict: "pass", Metrics: []string{"error_rate"}, WindowEndUnixMs: 100})
	oldManD, err := st.Put(oldMan)
	if err != nil {
		t.Fatal(err)
	}
	oldAnaD, err := st.Put(oldAna)
	if err != nil {
		t.Fatal(err)
	}
	ev := func(index uint64, action, evidence string) *pb.Event {
		return &pb.Event{Index: index, Type: "release.decided", Domain: "rel.app", Epoch: 1, Holder: "app", StampedUnixMs: int64(index) * 100,
			Fields: []*pb.Observed{{Key: "action", Value: action}, {Key: "allowed", Value: "true"}, {Key: "evidence", Value: evidence}}}
	}
	f.events = []*pb.Event{ev(3, "start_canary", "manifest="+oldManD), ev(5, "promote", "analysis="+oldAnaD),
		{Index: 6, Type: "authority.lease.acquired", Domain: "rel.app"}}
	allowed := &pb.Decision{Allowed: true}
	f.domain = &pb.Domain{Name: "rel.app", Kind: pb.DomainKind_DOMAIN_KIND_RELEASE, UpdatedIndex: 40,
		Policy: &pb.Policy{Release: &pb.ReleasePolicy{Environment: "prod", Keys: []*pb.TrustedKey{
			{KeyId: "rel-signer", EvidenceType: "manifest", Ed25519PublicKey: manKey.Public().(ed25519.PublicKey)},
			{KeyId: "analysis", EvidenceType: "analysis", Ed25519PublicKey: anaKey.Public().(ed25519.PublicKey)}}}},
		Release: &pb.ReleaseState{Stable: exDigestA, Phase: pb.ReleasePhase_RELEASE_PHASE_ROLLED_BACK, Decisions: []*pb.ReleaseDecision{
			{Index: 10, StampedUnixMs: 1000, Action: pb.ReleaseAction_RELEASE_ACTION_START_CANARY, Decision: allowed, Canary: exDigestB,
				Evidence: []*pb.EvidenceRef{{Type: "manifest", Digest: manD, KeyId: "rel-signer"}}},
			{Index: 20, StampedUnixMs: 2000, Action: pb.ReleaseAction_RELEASE_ACTION_PROMOTE, Decision: &pb.Decision{Allowed: false, DenialReason: "ChangeFrozen"},
				Reason: "frozen <friday> & co"},
			{Index: 30, StampedUnixMs: 3000, Action: pb.ReleaseAction_RELEASE_ACTION_PROMOTE, Decision: allowed, Stable: exDigestB,
				Evidence: []*pb.EvidenceRef{{Type: "analysis", Digest: anaD, KeyId: "analysis"}}},
			{Index: 40, StampedUnixMs: 4000, Action: pb.ReleaseAction_RELEASE_ACTION_ROLLBACK, Decision: allowed, Stable: exDigestA, Reason: "bake window burn"},
		}}}
	return f
}

func (f *exportFixture) bundle(t *testing.T, opts exportOptions, mutate func(*validator.Statement, *exportPredicate)) []byte {
	t.Helper()
	if opts.actions == nil {
		opts.actions = []string{"start_canary", "promote", "abort", "rollback"}
	}
	opts.events = f.events
	st, pred, err := buildExport(f.domain, 40, opts, evidenceDirLookup([]string{f.dir}))
	if err != nil {
		t.Fatal(err)
	}
	if mutate != nil {
		mutate(st, pred)
	}
	body, err := marshalExport(st, pred)
	if err != nil {
		t.Fatal(err)
	}
	b, err := signExport(context.Background(), body, "export-1", f.signer)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExportVerifies(t *testing.T) {
	f := newExportFixture(t)
	b := f.bundle(t, exportOptions{}, nil)
	s, err := verifyExport(b, f.signerPub, "export-1")
	if err != nil {
		t.Fatal(err)
	}
	if s.Records != 6 || s.Evidence != 4 || s.Domain != "rel.app" || s.KeyID != "export-1" {
		t.Fatalf("summary %+v", s)
	}
	if _, err := verifyExport(b, f.signerPub, ""); err != nil {
		t.Fatalf("any key id: %v", err)
	}
	// The default selection (promote, abort, rollback) and --since.
	b = f.bundle(t, exportOptions{actions: []string{"promote", "abort", "rollback"}, since: 2500}, nil)
	if s, err := verifyExport(b, f.signerPub, "export-1"); err != nil || s.Records != 2 || s.Evidence != 1 {
		t.Fatalf("promote/abort/rollback since 2500: %+v %v", s, err)
	}
	t.Logf("bundle: %d bytes", len(b))
}

// Every tampering is refused: each case fails when its check is removed.
func TestExportTamperedFails(t *testing.T) {
	f := newExportFixture(t)
	good := f.bundle(t, exportOptions{}, nil)
	other := seededKey(10)

	payload := func(b []byte, edit func(st map[string]any)) []byte {
		var env dsse.Envelope
		if err := json.Unmarshal(b, &env); err != nil {
			t.Fatal(err)
		}
		raw, _ := base64.StdEncoding.DecodeString(env.Payload)
		var st map[string]any
		if err := json.Unmarshal(raw, &st); err != nil {
			t.Fatal(err)
		}
		edit(st)
		raw, _ = json.Marshal(st)
		env.Payload = base64.StdEncoding.EncodeToString(raw)
		out, _ := json.Marshal(env)
		return out
	}
	records := func(st map[string]any) []any { return st["predicate"].(map[string]any)["records"].([]any) }
	cases := map[string]struct {
		bundle []byte
		pub    ed25519.PublicKey
		want   string
	}{
		"payload edited, signature kept": {payload(good, func(st map[string]any) {
			records(st)[0].(map[string]any)["name"] = "rel.app/decision/11"
		}), f.signerPub, "signature does not verify"},
		"wrong public key": {good, other.Public().(ed25519.PublicKey), "signature does not verify"},
		"record edited and re-signed": {f.bundle(t, exportOptions{}, func(_ *validator.Statement, p *exportPredicate) {
			p.Records[3].Record = mustReplace(t, p.Records[3].Record, `ChangeFrozen`, `ChangeFrozeX`)
		}), f.signerPub, "does not hash to its subject digest"},
		"subject dropped and re-signed": {f.bundle(t, exportOptions{}, func(st *validator.Statement, _ *exportPredicate) {
			st.Subject = st.Subject[1:]
		}), f.signerPub, "subjects for"},
		"evidence envelope swapped and re-signed": {f.bundle(t, exportOptions{}, func(_ *validator.Statement, p *exportPredicate) {
			p.Evidence[0].Envelope = f.analysisEv
		}), f.signerPub, "does not hash to its digest"},
		"evidence dropped and re-signed": {f.bundle(t, exportOptions{}, func(_ *validator.Statement, p *exportPredicate) {
			p.Evidence = p.Evidence[1:]
		}), f.signerPub, "is not in the bundle"},
		"policy key replaced and re-signed": {f.bundle(t, exportOptions{}, func(_ *validator.Statement, p *exportPredicate) {
			p.PolicyKeys[0].Ed25519 = other.Public().(ed25519.PublicKey)
		}), f.signerPub, "does not verify"},
		"event of another domain, re-hashed and re-signed": {f.bundle(t, exportOptions{}, func(st *validator.Statement, p *exportPredicate) {
			p.Records[0].Record = mustReplace(t, p.Records[0].Record, `"domain":"rel.app","epoch"`, `"domain":"rel.ap2","epoch"`)
			sum := sha256.Sum256(p.Records[0].Record)
			p.Records[0].Digest = "sha256:" + hex.EncodeToString(sum[:])
			st.Subject[0].Digest["sha256"] = hex.EncodeToString(sum[:])
		}), f.signerPub, "not a release decision of the bundle's domain"},
		"not a bundle": {[]byte(`{"payloadType":"text/plain","payload":"","signatures":[]}`), f.signerPub, "payload type"},
	}
	for name, c := range cases {
		_, err := verifyExport(c.bundle, c.pub, "")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, c.want)
		} else {
			t.Logf("%s: refused: %v", name, err)
		}
	}
	// A signature under another key id is refused when --key-id is given.
	if _, err := verifyExport(good, f.signerPub, "someone-else"); err == nil {
		t.Error("a bundle signed as export-1 verified as someone-else")
	}
}

// The export refuses evidence that is missing, damaged or does not verify.
func TestExportRefusesBadEvidence(t *testing.T) {
	f := newExportFixture(t)
	opts := exportOptions{actions: []string{"start_canary", "promote"}}
	if _, _, err := buildExport(f.domain, 40, opts, evidenceDirLookup([]string{t.TempDir()})); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("missing evidence: %v", err)
	}
	// Damaged on disk: the bytes do not hash to their name.
	ref := f.domain.Release.Decisions[0].Evidence[0]
	p := filepath.Join(f.dir, "sha256", strings.TrimPrefix(ref.Digest, "sha256:"))
	if err := os.WriteFile(p, append(bytes.Clone(f.manifestEv), ' '), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := buildExport(f.domain, 40, opts, evidenceDirLookup([]string{f.dir})); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("damaged evidence: %v", err)
	}
	// Stored intact but no longer trusted by the policy.
	if err := os.WriteFile(p, f.manifestEv, 0o600); err != nil {
		t.Fatal(err)
	}
	f.domain.Policy.Release.Keys = f.domain.Policy.Release.Keys[1:]
	if _, _, err := buildExport(f.domain, 40, opts, evidenceDirLookup([]string{f.dir})); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("untrusted evidence: %v", err)
	}
}

// End to end on a real server: decisions committed by the controller, the
// export read from the cluster and the server's evidence store, verified;
// the same file with one byte of a record changed fails.
func TestProcessReleaseExport(t *testing.T) {
	c := testcluster.Start(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	manKey, anaKey := seededKey(1), seededKey(2)
	rp := &pb.ReleasePolicy{Environment: "prod", RequiredMetrics: []string{"error_rate"}, AnalysisMaxAgeMs: 3_600_000,
		Keys: []*pb.TrustedKey{{KeyId: "rel-signer", EvidenceType: "manifest", Ed25519PublicKey: manKey.Public().(ed25519.PublicKey)},
			{KeyId: "analysis", EvidenceType: "analysis", Ed25519PublicKey: anaKey.Public().(ed25519.PublicKey)}}}
	if _, err := c.Dial(testcluster.Operator).CreateDomain(ctx, "rel.app", pb.DomainKind_DOMAIN_KIND_RELEASE, &pb.Policy{LeaseTtlMs: 120_000, Release: rp}); err != nil {
		t.Fatal(err)
	}
	ctlID := identity.Identity{Role: identity.Releaser, Name: "app"}
	ctl := c.Dial(ctlID)
	lease, err := ctl.Acquire(ctx, "rel.app", "app")
	if err != nil {
		t.Fatal(err)
	}
	epoch := lease.Epoch()
	step := func(action pb.ReleaseAction, canary string, evs ...*pb.Evidence) {
		t.Helper()
		resp, err := ctl.ReleaseTransition(ctx, &pb.ReleaseTransition{Domain: "rel.app", Holder: "app", Epoch: epoch, Action: action,
			Canary: canary, Step: 1, Weight: 10, Reason: "drill", Evidence: evs})
		if err != nil {
			t.Fatal(err)
		}
		epoch = resp.GetDecision().GetEpochAfter()
	}
	now := time.Now().UnixMilli()
	step(pb.ReleaseAction_RELEASE_ACTION_START_CANARY, exDigestA, &pb.Evidence{Type: "manifest", Envelope: signEvidence(t, manKey, "rel-signer", "manifest", exDigestA, map[string]string{"image": "a"})})
	step(pb.ReleaseAction_RELEASE_ACTION_PROMOTE, "", &pb.Evidence{Type: "analysis", Envelope: signEvidence(t, anaKey, "analysis", "analysis", exDigestA,
		validator.AnalysisPredicate{Verdict: "pass", Metrics: []string{"error_rate"}, WindowEndUnixMs: now})})
	step(pb.ReleaseAction_RELEASE_ACTION_START_CANARY, exDigestB, &pb.Evidence{Type: "manifest", Envelope: signEvidence(t, manKey, "rel-signer", "manifest", exDigestB, map[string]string{"image": "b"})})
	// 30 more decisions: the state keeps the last 32, so the first
	// promotion is only in the event log and comes from there.
	for range 15 {
		step(pb.ReleaseAction_RELEASE_ACTION_PAUSE, "")
		step(pb.ReleaseAction_RELEASE_ACTION_RESUME, "")
	}
	step(pb.ReleaseAction_RELEASE_ACTION_PROMOTE, "", &pb.Evidence{Type: "analysis", Envelope: signEvidence(t, anaKey, "analysis", "analysis", exDigestB,
		validator.AnalysisPredicate{Verdict: "pass", Metrics: []string{"error_rate"}, WindowEndUnixMs: now})})
	step(pb.ReleaseAction_RELEASE_ACTION_ROLLBACK, "")

	dir := t.TempDir()
	keyFile := filepath.Join(dir, "export.pem")
	der, _ := x509.MarshalPKCS8PrivateKey(seededKey(9))
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, kv := range c.CtlEnv(testcluster.Reader) {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	ctlRun := func(args ...string) (exitCode, string) {
		var out, errb bytes.Buffer
		code := run(ctx, newOptions(func(k string) string { return env[k] }, &out, &errb), args)
		return code, out.String() + errb.String()
	}
	out := filepath.Join(dir, "bundle.dsse")
	code, msg := ctlRun("release", "export", "--domain", "rel.app", "--signing-key", keyFile, "--key-id", "compliance",
		"--out", out, "--evidence-dir", filepath.Join(c.Servers[0].DataDir, "evidence"))
	if code != exitOK {
		t.Fatalf("export: exit %d\n%s", code, msg)
	}
	t.Log(strings.TrimSpace(msg))
	pub := base64.StdEncoding.EncodeToString(seededKey(9).Public().(ed25519.PublicKey))
	code, msg = ctlRun("release", "verify-export", out, "--pubkey", pub, "--key-id", "compliance")
	if code != exitOK || !strings.Contains(msg, "verified: rel.app, 3 records, 2 evidence envelopes, signed by compliance") {
		t.Fatalf("verify-export: exit %d\n%s", code, msg)
	}
	t.Log(strings.TrimSpace(msg))
	b0, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var e0 dsse.Envelope
	if err := json.Unmarshal(b0, &e0); err != nil {
		t.Fatal(err)
	}
	raw0, _ := base64.StdEncoding.DecodeString(e0.Payload)
	if !bytes.Contains(raw0, []byte(`"name":"rel.app/event/`)) || !bytes.Contains(raw0, []byte(`"name":"rel.app/decision/`)) {
		t.Fatalf("want the first promotion from the event log and the later ones from the state:\n%.2000s", raw0)
	}
	// Every action: 35 decisions (the 3 oldest from the event log).
	all := filepath.Join(dir, "all.dsse")
	if code, msg = ctlRun("release", "export", "--domain", "rel.app", "--signing-key", keyFile, "--key-id", "compliance",
		"--out", all, "--evidence-dir", filepath.Join(c.Servers[0].DataDir, "evidence"), "--actions", "start_canary,promote,pause,resume,abort,rollback,advance_step"); code != exitOK {
		t.Fatalf("export --actions all: exit %d\n%s", code, msg)
	}
	code, msg = ctlRun("release", "verify-export", all, "--pubkey", pub)
	if code != exitOK || !strings.Contains(msg, "verified: rel.app, 35 records, 4 evidence envelopes") {
		t.Fatalf("verify-export: exit %d\n%s", code, msg)
	}
	t.Log(strings.TrimSpace(msg))
	// The public key from the private key's PEM file works too.
	if code, msg = ctlRun("release", "verify-export", out, "--pubkey", keyFile); code != exitOK {
		t.Fatalf("verify-export --pubkey FILE: exit %d\n%s", code, msg)
	}
	// One payload byte changed: refused, exit 1.
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var e dsse.Envelope
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(e.Payload)
	raw = bytes.Replace(raw, []byte(`"rollback`), []byte(`"rollbacK`), 1)
	e.Payload = base64.StdEncoding.EncodeToString(raw)
	b, _ = json.Marshal(e)
	tampered := filepath.Join(dir, "tampered.dsse")
	if err := os.WriteFile(tampered, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if code, msg = ctlRun("release", "verify-export", tampered, "--pubkey", pub); code != exitError || !strings.Contains(msg, "signature does not verify") {
		t.Fatalf("tampered bundle: exit %d\n%s", code, msg)
	}
}

func mustReplace(t *testing.T, b []byte, old, new string) []byte {
	t.Helper()
	out := bytes.Replace(b, []byte(old), []byte(new), 1)
	if bytes.Equal(out, b) {
		t.Fatalf("mutation %q did not apply to %s", old, b)
	}
	return out
}
