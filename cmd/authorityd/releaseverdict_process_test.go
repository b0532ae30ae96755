package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/internal/testcluster"
	"github.com/aerodb/authority/validator"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

type testSigner struct {
	id   string
	priv ed25519.PrivateKey
}

func (s testSigner) Sign(_ context.Context, data []byte) ([]byte, error) {
	return ed25519.Sign(s.priv, data), nil
}
func (s testSigner) KeyID() (string, error)   { return s.id, nil }
func (s testSigner) Public() crypto.PublicKey { return s.priv.Public() }

// The release verdict and gates on a real server over mutual TLS (a
// reader's certificate), as Argo's web provider and Flagger's webhooks
// reach them through the verdict proxy (docs/ROLLOUTS-TEMPLATES.md): a
// started canary is pending (confirm-rollout open, confirm-promotion
// holding); once the controller aborts it, the verdict is fail and the
// rollback gate opens.
func TestProcessReleaseVerdict(t *testing.T) {
	c := testcluster.Start(t, 1)
	s := c.Servers[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	signer := testSigner{id: "rel-signer", priv: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))}
	rp := &pb.ReleasePolicy{Environment: "prod", Keys: []*pb.TrustedKey{{KeyId: signer.id, EvidenceType: "manifest", Ed25519PublicKey: signer.priv.Public().(ed25519.PublicKey)}}}
	if _, err := c.Dial(testcluster.Operator).CreateDomain(ctx, "rel.web-api", pb.DomainKind_DOMAIN_KIND_RELEASE, &pb.Policy{LeaseTtlMs: 120_000, Release: rp}); err != nil {
		t.Fatal(err)
	}
	ctl := c.Dial(identity.Identity{Role: identity.Releaser, Name: "web-api"})
	lease, err := ctl.Acquire(ctx, "rel.web-api", "web-api")
	if err != nil {
		t.Fatal(err)
	}
	const canary = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	body, _ := json.Marshal(validator.Statement{Type: validator.StatementType, PredicateType: validator.PredicateManifest, Predicate: []byte(`{}`),
		Subject: []validator.Subject{{Name: "web-api", Digest: map[string]string{"sha256": strings.TrimPrefix(canary, "sha256:")}}}})
	ds, err := dsse.NewEnvelopeSigner(signer)
	if err != nil {
		t.Fatal(err)
	}
	env, err := ds.SignPayload(ctx, validator.PayloadTypeInToto, body)
	if err != nil {
		t.Fatal(err)
	}
	envB, _ := json.Marshal(env)
	resp, err := ctl.ReleaseTransition(ctx, &pb.ReleaseTransition{Domain: "rel.web-api", Holder: "web-api", Epoch: lease.Epoch(),
		Action: pb.ReleaseAction_RELEASE_ACTION_START_CANARY, Canary: canary, Step: 1, Weight: 5, Evidence: []*pb.Evidence{{Type: "manifest", Envelope: envB}}})
	if err != nil || !resp.GetDecision().GetDecision().GetAllowed() {
		t.Fatalf("start-canary: %v %v", resp, err)
	}
	reader := c.HTTPClient(testcluster.Reader)
	// Wait (bounded) until the server applied the decision, then read.
	verdictOf := func(want string) map[string]any {
		t.Helper()
		for {
			code, b := get(t, ctx, reader, c.URL(s, "/v1/releases/rel.web-api/verdict?digest="+canary))
			var v map[string]any
			if code == http.StatusOK && json.Unmarshal([]byte(b), &v) == nil && v["verdict"] == want {
				return v
			}
			if ctx.Err() != nil {
				t.Fatalf("verdict never became %s: %d %s", want, code, b)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	post := func(gate string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.URL(s, "/v1/releases/rel.web-api/gates/"+gate),
			strings.NewReader(`{"name":"web-api","namespace":"production","phase":"Progressing"}`))
		r, err := reader.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r.StatusCode
	}
	v := verdictOf("inconclusive")
	if v["served_by"] != s.ID || v["phase"] != "progressing" {
		t.Errorf("pending canary: %v", v)
	}
	if a, b := post("confirm-rollout"), post("confirm-promotion"); a != http.StatusOK || b != http.StatusPreconditionFailed {
		t.Errorf("pending canary: confirm-rollout %d (want 200), confirm-promotion %d (want 412)", a, b)
	}
	if _, err := ctl.ReleaseTransition(ctx, &pb.ReleaseTransition{Domain: "rel.web-api", Holder: "web-api", Epoch: lease.Epoch(),
		Action: pb.ReleaseAction_RELEASE_ACTION_ABORT, Reason: "errors on the canary"}); err != nil {
		t.Fatal(err)
	}
	v = verdictOf("fail")
	t.Logf("after abort: %v", v)
	if a := post("rollback"); a != http.StatusOK {
		t.Errorf("aborted canary: rollback gate %d, want 200", a)
	}
}
