package validator

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// libVerifier is how VerifyEvidence used go-securesystemslib before it
// verified envelopes itself (dsseVerify).
type libVerifier struct {
	id  string
	pub ed25519.PublicKey
}

func (v libVerifier) Verify(_ context.Context, data, sig []byte) error {
	if !ed25519.Verify(v.pub, data, sig) {
		return errors.New("bad signature")
	}
	return nil
}
func (v libVerifier) KeyID() (string, error)   { return v.id, nil }
func (v libVerifier) Public() crypto.PublicKey { return v.pub }

// dsseVerify accepts and rejects what go-securesystemslib's verifier at
// threshold 1 did, with the same key id: a differential test over fixed
// keys (seeds 1..3) and hand-made envelopes.
func TestDSSEVerifyMatchesTheLibrary(t *testing.T) {
	key := func(seed byte) ed25519.PrivateKey {
		s := make([]byte, ed25519.SeedSize)
		s[0] = seed
		return ed25519.NewKeyFromSeed(s)
	}
	k1, k2, k3 := key(1), key(2), key(3)
	payload := []byte(`{"_type":"https://in-toto.io/Statement/v1"}`)
	sign := func(k ed25519.PrivateKey, typ string, body []byte) []byte {
		return ed25519.Sign(k, dsse.PAE(typ, body))
	}
	std, url := base64.StdEncoding.EncodeToString, base64.URLEncoding.EncodeToString
	good1 := sign(k1, PayloadTypeInToto, payload)
	good2 := sign(k2, PayloadTypeInToto, payload)
	wrongType := sign(k1, "text/plain", payload)
	env := func(sigs ...dsseSignature) *dsseEnvelope {
		return &dsseEnvelope{PayloadType: PayloadTypeInToto, Payload: std(payload), Signatures: sigs}
	}
	trusted := func(ks ...any) []*pb.TrustedKey {
		var out []*pb.TrustedKey
		for i := 0; i < len(ks); i += 2 {
			out = append(out, &pb.TrustedKey{KeyId: ks[i].(string), Ed25519PublicKey: ks[i+1].(ed25519.PrivateKey).Public().(ed25519.PublicKey)})
		}
		return out
	}
	urlPayload := env(dsseSignature{Sig: std(good1)})
	urlPayload.Payload = url(payload)
	badPayload := env(dsseSignature{Sig: std(good1)})
	badPayload.Payload = "%%%"
	cases := []struct {
		name string
		env  *dsseEnvelope
		keys []*pb.TrustedKey
	}{
		{"one good", env(dsseSignature{KeyID: "a", Sig: std(good1)}), trusted("a", k1)},
		{"no key id in signature", env(dsseSignature{Sig: std(good1)}), trusted("a", k1)},
		{"url alphabet", env(dsseSignature{Sig: url(good1)}), trusted("a", k1)},
		{"url payload", urlPayload, trusted("a", k1)},
		{"bad payload base64", badPayload, trusted("a", k1)},
		{"key id mismatch", env(dsseSignature{KeyID: "b", Sig: std(good1)}), trusted("a", k1)},
		{"untrusted key", env(dsseSignature{Sig: std(sign(k3, PayloadTypeInToto, payload))}), trusted("a", k1, "b", k2)},
		{"wrong payload type signed", env(dsseSignature{Sig: std(wrongType)}), trusted("a", k1)},
		{"second signature good", env(dsseSignature{Sig: std(wrongType)}, dsseSignature{Sig: std(good2)}), trusted("a", k1, "b", k2)},
		{"both good, first wins", env(dsseSignature{Sig: std(good2)}, dsseSignature{Sig: std(good1)}), trusted("a", k1, "b", k2)},
		{"later signature not base64", env(dsseSignature{Sig: std(good1)}, dsseSignature{Sig: "!!"}), trusted("a", k1)},
		{"trusted key without id", env(dsseSignature{Sig: std(good1)}), trusted("", k1)},
		{"signature names the fingerprint", env(dsseSignature{KeyID: sshFingerprint(k1.Public().(ed25519.PublicKey)), Sig: std(good1)}), trusted("", k1)},
		{"signature names another id, key without id", env(dsseSignature{KeyID: "a", Sig: std(good1)}), trusted("", k1)},
		{"same key twice", env(dsseSignature{Sig: std(good1)}), trusted("a", k1, "a2", k1)},
	}
	for _, c := range cases {
		var vs []dsse.Verifier
		for _, k := range c.keys {
			vs = append(vs, libVerifier{id: k.GetKeyId(), pub: k.GetEd25519PublicKey()})
		}
		lib, err := dsse.NewEnvelopeVerifier(vs...)
		if err != nil {
			t.Fatal(err)
		}
		libEnv := &dsse.Envelope{PayloadType: c.env.PayloadType, Payload: c.env.Payload}
		for _, s := range c.env.Signatures {
			libEnv.Signatures = append(libEnv.Signatures, dsse.Signature{KeyID: s.KeyID, Sig: s.Sig})
		}
		accepted, libBody, libErr := lib.VerifyAndDecode(context.Background(), libEnv)
		libOK := libErr == nil && len(accepted) > 0
		id, body, err := dsseVerify(c.env, c.keys)
		if ok := err == nil; ok != libOK {
			t.Errorf("%s: dsseVerify ok=%v (%v), the library ok=%v (%v)", c.name, ok, err, libOK, libErr)
			continue
		}
		if libOK && (id != accepted[0].KeyID || string(body) != string(libBody)) {
			t.Errorf("%s: dsseVerify accepted key %q, the library %q", c.name, id, accepted[0].KeyID)
		}
	}
}
