package main

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/validator"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
)

// newEvidenceCmd: make and check the signed evidence release decisions
// read (docs/RELEASES.md). Clients gather evidence; the core verifies it.
func newEvidenceCmd(o *options) *cobra.Command {
	return newGroupCmd("evidence", "Make and verify signed release evidence (DSSE over in-toto statements, Ed25519)",
		newEvidenceKeygenCmd(o), newEvidenceSignCmd(o), newEvidenceVerifyCmd(o))
}

// predicateTypes maps an evidence type to its in-toto predicate type.
var predicateTypes = map[string]string{
	validator.EvidenceManifest: validator.PredicateManifest,
	validator.EvidenceAnalysis: validator.PredicateAnalysis,
	validator.EvidenceBudget:   validator.PredicateBudget,
}

func newEvidenceKeygenCmd(o *options) *cobra.Command {
	var out, keyID, typ string
	cmd := &cobra.Command{
		Use:   "keygen --out KEY.pem --key-id ID --type manifest|analysis|budget",
		Short: "Write a new Ed25519 private key (PKCS#8 PEM, mode 0600) and print the policy's trusted-key entry",
		Args:  exactArgs(),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if err := checkNames("key id", keyID); err != nil {
				return err
			}
			if _, ok := predicateTypes[typ]; !ok {
				return usagef("--type must be manifest, analysis or budget")
			}
			pub, priv, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				return err
			}
			der, err := x509.MarshalPKCS8PrivateKey(priv)
			if err != nil {
				return err
			}
			f, err := os.OpenFile(out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			if err := errors.Join(pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}), f.Close()); err != nil {
				return err
			}
			// The entry for ReleasePolicy.keys (proto3 JSON: bytes in base64).
			b, err := protojson.Marshal(&pb.TrustedKey{KeyId: keyID, EvidenceType: typ, Ed25519PublicKey: pub})
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(o.stdout, "%s\n", b)
			return err
		}),
	}
	cmd.Flags().StringVar(&out, "out", "", "private key file to create")
	cmd.Flags().StringVar(&keyID, "key-id", "", "the key id signatures carry and the policy pins")
	cmd.Flags().StringVar(&typ, "type", "", "the evidence type the key is trusted for")
	markRequired(cmd, "out", "key-id", "type")
	return cmd
}

// pemSigner signs DSSE envelopes with an Ed25519 key named keyID.
type pemSigner struct {
	id   string
	priv ed25519.PrivateKey
}

func (s pemSigner) Sign(_ context.Context, data []byte) ([]byte, error) {
	return ed25519.Sign(s.priv, data), nil
}
func (s pemSigner) KeyID() (string, error)   { return s.id, nil }
func (s pemSigner) Public() crypto.PublicKey { return s.priv.Public() }

func loadEd25519(path string) (ed25519.PrivateKey, error) {
	b, err := readBounded(path, 64<<10)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an Ed25519 key", path)
	}
	return priv, nil
}

func newEvidenceSignCmd(o *options) *cobra.Command {
	var keyFile, keyID, typ, digest, predicateFile string
	cmd := &cobra.Command{
		Use:   "sign --key KEY.pem --key-id ID --type manifest|analysis|budget --digest sha256:HEX [--predicate FILE]",
		Short: "Print a DSSE envelope over an in-toto Statement v1 about DIGEST, signed with KEY",
		Long: `Prints (stdout) a DSSE envelope whose payload is an in-toto Statement v1 with
one subject (DIGEST) and the predicate of the evidence type:

  manifest  any JSON object (e.g. the image and its provenance)
  analysis  {"verdict":"pass|fail|inconclusive","metrics":[...],"window_end_unix_ms":N}
  budget    {"objective":0.999,"remaining":0.42,"measured_at_unix_ms":N}

--predicate FILE gives the predicate JSON (default {}).`,
		Args: exactArgs(),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			pt, ok := predicateTypes[typ]
			if !ok {
				return usagef("--type must be manifest, analysis or budget")
			}
			hexPart, ok := strings.CutPrefix(digest, "sha256:")
			if !ok || len(hexPart) != 64 {
				return usagef("--digest must be sha256:<64 hex>")
			}
			pred := json.RawMessage(`{}`)
			if predicateFile != "" {
				b, err := readBounded(predicateFile, validator.MaxEvidenceBytes/2)
				if err != nil {
					return usageError{err}
				}
				if !json.Valid(b) {
					return usagef("--predicate %s is not JSON", predicateFile)
				}
				pred = b
			}
			priv, err := loadEd25519(keyFile)
			if err != nil {
				return usageError{err}
			}
			body, err := json.Marshal(validator.Statement{Type: validator.StatementType, PredicateType: pt, Predicate: pred,
				Subject: []validator.Subject{{Name: typ, Digest: map[string]string{"sha256": hexPart}}}})
			if err != nil {
				return err
			}
			s, err := dsse.NewEnvelopeSigner(pemSigner{id: keyID, priv: priv})
			if err != nil {
				return err
			}
			env, err := s.SignPayload(cmd.Context(), validator.PayloadTypeInToto, body)
			if err != nil {
				return err
			}
			b, err := json.Marshal(env)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(o.stdout, "%s\n", b)
			return err
		}),
	}
	fs := cmd.Flags()
	fs.StringVar(&keyFile, "key", "", "Ed25519 private key (PKCS#8 PEM, from 'evidence keygen')")
	fs.StringVar(&keyID, "key-id", "", "the key id the release policy pins")
	fs.StringVar(&typ, "type", "", "evidence type")
	fs.StringVar(&digest, "digest", "", "the artefact's digest")
	fs.StringVar(&predicateFile, "predicate", "", "predicate JSON file")
	markRequired(cmd, "key", "key-id", "type", "digest")
	return cmd
}

func newEvidenceVerifyCmd(o *options) *cobra.Command {
	var typ, pubB64, keyID string
	cmd := &cobra.Command{
		Use:   "verify FILE --type T --key-id ID --public-key BASE64",
		Short: "Verify an evidence envelope as the authority's validator does (exit 1 when it does not verify)",
		Args:  exactArgs("FILE"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			pt, ok := predicateTypes[typ]
			if !ok {
				return usagef("--type must be manifest, analysis or budget")
			}
			pub, err := base64.StdEncoding.DecodeString(pubB64)
			if err != nil || len(pub) != ed25519.PublicKeySize {
				return usagef("--public-key must be a base64 32-byte Ed25519 public key")
			}
			b, err := readBounded(args[0], validator.MaxEvidenceBytes)
			if err != nil {
				return usageError{err}
			}
			st, id, err := validator.VerifyEvidence(b, typ, pt, []*pb.TrustedKey{{KeyId: keyID, EvidenceType: typ, Ed25519PublicKey: pub}})
			if err != nil {
				return err
			}
			var subjects []string
			for _, s := range st.Subject {
				subjects = append(subjects, "sha256:"+s.Digest["sha256"])
			}
			o.progressf("verified: %s evidence signed by %s about %s", typ, id, strings.Join(subjects, ","))
			return nil
		}),
	}
	cmd.Flags().StringVar(&typ, "type", "", "evidence type")
	cmd.Flags().StringVar(&pubB64, "public-key", "", "the trusted Ed25519 public key, base64")
	cmd.Flags().StringVar(&keyID, "key-id", "", "its key id")
	markRequired(cmd, "type", "public-key", "key-id")
	return cmd
}
