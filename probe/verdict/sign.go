package verdict

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/secure-systems-lab/go-securesystemslib/signerverifier"
)

// In-toto and DSSE identifiers.
const (
	PayloadType   = "application/vnd.in-toto+json"
	StatementType = "https://in-toto.io/Statement/v1"
	PredicateType = "https://aerodb.dev/attestations/probe-verdict/v1"
)

// Statement is an in-toto Statement v1 whose predicate is a Verdict.
type Statement struct {
	Type          string    `json:"_type"`
	Subject       []Subject `json:"subject"`
	PredicateType string    `json:"predicateType"`
	Predicate     Verdict   `json:"predicate"`
}

// Subject names what the statement is about: the probe flow (by the digest
// of its definition) in an environment.
type Subject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

// NewStatement wraps v.
func NewStatement(v Verdict) Statement {
	return Statement{
		Type:          StatementType,
		Subject:       []Subject{{Name: fmt.Sprintf("probe-flow:%s@%s", v.Flow, v.Env), Digest: map[string]string{"sha256": v.FlowDigest}}},
		PredicateType: PredicateType,
		Predicate:     v,
	}
}

// Signer signs verdicts with an Ed25519 key.
type Signer struct {
	es    *dsse.EnvelopeSigner
	keyID string
}

// LoadSigner reads a PEM (PKCS#8) Ed25519 private key.
func LoadSigner(path string) (*Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := signerverifier.LoadKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if key.KeyType != signerverifier.ED25519KeyType || key.KeyVal.Private == "" {
		return nil, fmt.Errorf("%s: not an Ed25519 private key", path)
	}
	sv, err := signerverifier.NewED25519SignerVerifierFromSSLibKey(key)
	if err != nil {
		return nil, err
	}
	es, err := dsse.NewEnvelopeSigner(sv)
	if err != nil {
		return nil, err
	}
	return &Signer{es: es, keyID: key.KeyID}, nil
}

// KeyID is the signing key's id (sha256 of its public key in
// securesystemslib's canonical form).
func (s *Signer) KeyID() string { return s.keyID }

// Sign returns a DSSE envelope over the in-toto Statement of v.
func (s *Signer) Sign(ctx context.Context, v Verdict) (*dsse.Envelope, error) {
	body, err := json.Marshal(NewStatement(v))
	if err != nil {
		return nil, err
	}
	return s.es.SignPayload(ctx, PayloadType, body)
}

// Verify checks env against the Ed25519 public key in pubPEM and returns
// the statement. A wrong payload type, statement type or predicate type is
// an error, as is any signature that does not verify.
func Verify(ctx context.Context, env *dsse.Envelope, pubPEM []byte) (*Statement, error) {
	key, err := signerverifier.LoadKey(pubPEM)
	if err != nil {
		return nil, err
	}
	if key.KeyType != signerverifier.ED25519KeyType {
		return nil, errors.New("not an Ed25519 public key")
	}
	key.KeyVal.Private = ""
	sv, err := signerverifier.NewED25519SignerVerifierFromSSLibKey(key)
	if err != nil {
		return nil, err
	}
	ev, err := dsse.NewEnvelopeVerifier(sv)
	if err != nil {
		return nil, err
	}
	if env.PayloadType != PayloadType {
		return nil, fmt.Errorf("payload type %q, want %q", env.PayloadType, PayloadType)
	}
	_, body, err := ev.VerifyAndDecode(ctx, env)
	if err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	var st Statement
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("statement: %w", err)
	}
	if st.Type != StatementType || st.PredicateType != PredicateType {
		return nil, fmt.Errorf("statement type %q / predicate %q are not a probe verdict", st.Type, st.PredicateType)
	}
	return &st, nil
}

// GenerateKey writes an Ed25519 key pair as PEM: prefix.key (PKCS#8,
// mode 0600) and prefix.pub (PKIX).
func GenerateKey(prefix string) (keyID string, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(prefix+".key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(prefix+".pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		return "", err
	}
	key, err := signerverifier.LoadKey(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
	if err != nil {
		return "", err
	}
	return key.KeyID, nil
}

// Digest is the hex sha256 of b.
func Digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
