// Package releasetest runs release domains end to end (docs/RELEASES.md):
// three authorityd, `authorityctl release …` as the controller, signed
// evidence verified by the core, the evidence store on every server.
package releasetest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/evidence"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/internal/testcluster"
	"github.com/aerodb/authority/validator"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

const (
	digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	digestC = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
)

type key struct {
	id   string
	priv ed25519.PrivateKey
}

func newKey(id string, seed byte) key {
	s := bytes.Repeat([]byte{seed}, ed25519.SeedSize)
	return key{id: id, priv: ed25519.NewKeyFromSeed(s)}
}

func (k key) Sign(_ context.Context, data []byte) ([]byte, error) {
	return ed25519.Sign(k.priv, data), nil
}
func (k key) KeyID() (string, error)   { return k.id, nil }
func (k key) Public() crypto.PublicKey { return k.priv.Public() }

// sign writes a DSSE envelope over an in-toto statement about digest.
func sign(t *testing.T, k key, predicateType, digest string, predicate any) string {
	t.Helper()
	pred, _ := json.Marshal(predicate)
	st := validator.Statement{Type: validator.StatementType, PredicateType: predicateType, Predicate: pred,
		Subject: []validator.Subject{{Name: "app", Digest: map[string]string{"sha256": strings.TrimPrefix(digest, "sha256:")}}}}
	body, _ := json.Marshal(st)
	s, err := dsse.NewEnvelopeSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	env, err := s.SignPayload(context.Background(), validator.PayloadTypeInToto, body)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(env)
	p := filepath.Join(t.TempDir(), "evidence.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestReleaseDecisionsEndToEnd: unsigned and wrongly signed manifests are
// denied naming signed_manifest; an exhausted budget freezes promotion; a
// freeze blocks promotion but not a rollback; every decision is one
// committed entry whose explanation is byte-identical on every server; its
// evidence digests resolve in every server's evidence store and verify.
func TestReleaseDecisionsEndToEnd(t *testing.T) {
	c := testcluster.Start(t, 3)
	bin := filepath.Join(testcluster.Binaries(t), "authorityctl")
	op := c.Dial(testcluster.Operator)
	signer, stranger, analyst, budgeter := newKey("release-signer", 1), newKey("stranger", 2), newKey("analysis", 3), newKey("budget", 4)
	trusted := func(k key, typ string) *pb.TrustedKey {
		return &pb.TrustedKey{KeyId: k.id, EvidenceType: typ, Ed25519PublicKey: k.priv.Public().(ed25519.PublicKey)}
	}
	rp := &pb.ReleasePolicy{Environment: "prod", RequiredMetrics: []string{"error_rate"}, AnalysisMaxAgeMs: 3_600_000,
		RequireBudget: true, BudgetMaxAgeMs: 3_600_000,
		Keys: []*pb.TrustedKey{trusted(signer, "manifest"), trusted(analyst, "analysis"), trusted(budgeter, "budget")}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	policy := &pb.Policy{LeaseTtlMs: 120_000, Release: rp}
	if _, err := op.CreateDomain(ctx, "rel", pb.DomainKind_DOMAIN_KIND_RELEASE, policy); err != nil {
		t.Fatal(err)
	}
	ctlID := identity.Identity{Role: identity.Releaser, Name: "ctl"}
	if _, err := c.Dial(ctlID).Acquire(ctx, "rel", "ctl"); err != nil {
		t.Fatal(err)
	}

	run := func(wantCode int, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, bin, args...)
		var env []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "AUTHORITY_") {
				env = append(env, kv)
			}
		}
		cmd.Env = append(env, c.CtlEnv(ctlID)...)
		out, _ := cmd.CombinedOutput()
		if code := cmd.ProcessState.ExitCode(); code != wantCode {
			t.Fatalf("authorityctl %v: exit %d, want %d:\n%s", args, code, wantCode, out)
		}
		return string(out)
	}
	now := func() int64 { return time.Now().UnixMilli() }
	manifest := func(k key, d string) string {
		return "manifest=" + sign(t, k, validator.PredicateManifest, d, map[string]string{"image": "app"})
	}
	analysis := func(d string) string {
		return "analysis=" + sign(t, analyst, validator.PredicateAnalysis, d, validator.AnalysisPredicate{Verdict: "pass",
			Metrics: []string{"error_rate"}, WindowEndUnixMs: now()})
	}
	budget := func(remaining float64) string {
		return "budget=" + sign(t, budgeter, validator.PredicateBudget, digestA, validator.BudgetPredicate{Objective: 0.999,
			Remaining: remaining, MeasuredAtUnixMs: now()})
	}
	promote := func(code int, d string, remaining float64) string {
		return run(code, "release", "promote", "rel", "--evidence", analysis(d), "--evidence", budget(remaining))
	}

	run(0, "release", "start-canary", "rel", "--canary", digestA, "--evidence", manifest(signer, digestA))
	promote(0, digestA, 0.5)
	if out := run(3, "release", "start-canary", "rel", "--canary", digestB); !strings.Contains(out, validator.ReasonManifestUnsigned) || !strings.Contains(out, validator.CheckSignedManifest) {
		t.Fatalf("unsigned manifest: the explanation does not name signed_manifest:\n%s", out)
	}
	if out := run(3, "release", "start-canary", "rel", "--canary", digestB, "--evidence", manifest(stranger, digestB)); !strings.Contains(out, validator.ReasonManifestInvalid) {
		t.Fatalf("wrongly signed manifest:\n%s", out)
	}
	run(0, "release", "start-canary", "rel", "--canary", digestB, "--evidence", manifest(signer, digestB))
	if out := promote(3, digestB, 0); !strings.Contains(out, validator.ReasonErrorBudgetExhausted) {
		t.Fatalf("exhausted budget:\n%s", out)
	}
	promote(0, digestB, 0.5)
	run(0, "release", "start-canary", "rel", "--canary", digestC, "--evidence", manifest(signer, digestC))

	// A freeze from now on: promotion is blocked, a rollback is not.
	frozen := proto.Clone(policy).(*pb.Policy)
	frozen.Release.Windows = []*pb.ChangeWindow{{Name: "incident-freeze", Kind: pb.WindowKind_WINDOW_KIND_DENY,
		StartUnixMs: now() - 1000, EndUnixMs: now() + 3_600_000}}
	if _, err := op.UpdatePolicy(ctx, "rel", frozen); err != nil {
		t.Fatal(err)
	}
	if out := promote(3, digestC, 0.5); !strings.Contains(out, validator.ReasonChangeFrozen) {
		t.Fatalf("promotion during a freeze:\n%s", out)
	}
	run(0, "release", "rollback", "rel", "--reason", "bake window burn")

	// Every server: the same decisions, byte-identical explanations, and
	// the evidence of each in its store, verifying.
	want := 10
	var first []string
	for _, s := range c.Servers {
		d := staleDomain(t, c, s, "rel", want)
		rs := d.GetRelease()
		if rs.GetStable() != digestA || rs.GetPhase() != pb.ReleasePhase_RELEASE_PHASE_ROLLED_BACK {
			t.Fatalf("%s: release state %v", s.ID, rs)
		}
		store, err := evidence.Open(filepath.Join(s.DataDir, "evidence"))
		if err != nil {
			t.Fatal(err)
		}
		var texts []string
		for _, dec := range rs.GetDecisions() {
			texts = append(texts, fsm.DescribeReleaseDecision(dec))
			for _, ref := range dec.GetEvidence() {
				b, err := store.Get(ref.GetDigest())
				if err != nil {
					t.Fatalf("%s: evidence %s of decision %d: %v", s.ID, ref.GetDigest(), dec.GetIndex(), err)
				}
				pt := map[string]string{"manifest": validator.PredicateManifest, "analysis": validator.PredicateAnalysis, "budget": validator.PredicateBudget}[ref.GetType()]
				if _, keyID, err := validator.VerifyEvidence(b, ref.GetType(), pt, rp.GetKeys()); err != nil || keyID != ref.GetKeyId() {
					t.Fatalf("%s: evidence %s does not verify: %v (key %s)", s.ID, ref.GetDigest(), err, keyID)
				}
			}
		}
		if first == nil {
			first = texts
			continue
		}
		for i := range texts {
			if texts[i] != first[i] {
				t.Fatalf("%s: decision %d's explanation differs:\n%s\nvs\n%s", s.ID, i, texts[i], first[i])
			}
		}
	}
	t.Logf("%d decisions, byte-identical on %d servers; the last:\n%s", len(first), len(c.Servers), first[len(first)-1])

	// The decision counters equal the decisions, on every server.
	for _, s := range c.Servers {
		want := map[string]string{
			`release_decisions_total{action="start_canary",reason="",result="allowed"}`:                        "3",
			`release_decisions_total{action="start_canary",reason="ManifestUnsigned",result="denied"}`:         "1",
			`release_decisions_total{action="start_canary",reason="ManifestSignatureInvalid",result="denied"}`: "1",
			`release_decisions_total{action="promote",reason="ErrorBudgetExhausted",result="denied"}`:          "1",
			`release_decisions_total{action="promote",reason="ChangeFrozen",result="denied"}`:                  "1",
			`release_decisions_total{action="promote",reason="",result="allowed"}`:                             "2",
			`release_decisions_total{action="rollback",reason="",result="allowed"}`:                            "1",
		}
		awaitMetrics(t, c, s, want)
	}
}

// awaitMetrics waits (bounded) until server s's /metrics has every line of
// want (series → value).
func awaitMetrics(t *testing.T, c *testcluster.Cluster, s *testcluster.Server, want map[string]string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var text string
		resp, err := c.HTTPClient(testcluster.Reader).Get(c.URL(s, "/metrics"))
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
			resp.Body.Close()
			text = string(b)
		}
		missing := ""
		for series, v := range want {
			if !strings.Contains(text, series+" "+v+"\n") {
				missing = series + " " + v
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: /metrics lacks %s", s.ID, missing)
		}
		time.Sleep(100 * time.Millisecond) // polling an observable condition, bounded
	}
}

// staleDomain reads a domain from one server's applied state, waiting
// (bounded) until it holds want release decisions.
func staleDomain(t *testing.T, c *testcluster.Cluster, s *testcluster.Server, name string, want int) *pb.Domain {
	t.Helper()
	conn, err := grpc.NewClient(s.GRPCAddr, c.DialOption(testcluster.Reader))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := pbgrpc.NewDomainsClient(conn).GetDomain(ctx, &pb.GetDomainRequest{Name: name, Read: &pb.ReadOptions{Stale: true}})
		cancel()
		if err == nil && len(resp.GetDomain().GetRelease().GetDecisions()) >= want {
			return resp.GetDomain()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d decisions after 20 s (err %v), want %d", s.ID, len(resp.GetDomain().GetRelease().GetDecisions()), err, want)
		}
		time.Sleep(50 * time.Millisecond) // polling an observable condition, bounded
	}
}
