package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/validator"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
)

// The compliance export (docs/RELEASES.md#compliance-export): a release
// domain's promotion, abort and rollback decisions (allowed and denied,
// each with its checks) and the evidence envelopes they cite, as ONE DSSE
// envelope over an in-toto Statement v1 whose subjects are the records'
// digests, signed with Ed25519.

// PredicateExport is the in-toto predicate type of an export bundle.
const PredicateExport = "https://aerodb.dev/release/export/v1"

// Bounds of an export bundle.
const (
	maxExportBytes    = 64 << 20
	maxExportRecords  = 4096
	maxExportEvidence = maxExportRecords * validator.MaxEvidencePerDecision
	maxExportKeys     = 256
)

// exportPredicate is the bundle's predicate.
type exportPredicate struct {
	Domain           string           `json:"domain"`
	Environment      string           `json:"environment"`
	ExportedAtUnixMs int64            `json:"exported_at_unix_ms"`
	SinceUnixMs      int64            `json:"since_unix_ms"`
	Actions          []string         `json:"actions"`
	Source           string           `json:"source"`
	EventsCompacted  bool             `json:"events_compacted"`
	AppliedIndex     uint64           `json:"applied_index"`
	PolicyKeys       []exportKey      `json:"policy_keys"`
	Records          []exportRecord   `json:"records"`
	Evidence         []exportEvidence `json:"evidence"`
}

// exportKey is a key the domain's release policy trusts for an evidence type.
type exportKey struct {
	KeyID        string `json:"key_id"`
	EvidenceType string `json:"evidence_type"`
	Ed25519      []byte `json:"ed25519_public_key"`
}

// exportRecord is one decision: Record is its recordBody (compact JSON), and
// Digest is the sha256 of exactly those bytes (also a subject of the
// statement).
type exportRecord struct {
	Name   string          `json:"name"`
	Digest string          `json:"digest"`
	Record json.RawMessage `json:"record"`
}

// recordBody is a record's content: the decision (authority.v1.ReleaseDecision,
// proto3 JSON with proto field names) and its explanation as the
// authority renders it (byte-identical on every server).
type recordBody struct {
	Domain      string          `json:"domain"`
	Explanation string          `json:"explanation"`
	Decision    json.RawMessage `json:"decision,omitempty"`
	// Event: a decision older than the state keeps, from its committed
	// release.decided event (authority.v1.Event; no per-check detail).
	Event json.RawMessage `json:"event,omitempty"`
}

// exportEvidence is an evidence envelope as the evidence store keeps it.
type exportEvidence struct {
	Digest   string `json:"digest"`
	Type     string `json:"type"`
	KeyID    string `json:"key_id"`
	Envelope []byte `json:"envelope"`
}

// exportOptions select the records of a domain.
type exportOptions struct {
	since   int64    // unix ms; 0: every record kept
	actions []string // validator.ActionName values
	now     time.Time
	// events: the domain's release.decided events older than its kept
	// decisions (fetchReleaseEvents); compacted: some were gone.
	events    []*pb.Event
	compacted bool
}

// buildExport makes the export statement of d from its committed release
// state: the selected decisions and, through lookup, the evidence they
// cite, each envelope checked against its digest and verified with the
// domain's policy keys (an export never carries evidence that does not
// verify).
func buildExport(d *pb.Domain, appliedIndex uint64, opts exportOptions, lookup func(digest string) ([]byte, error)) (*validator.Statement, *exportPredicate, error) {
	if d.GetKind() != pb.DomainKind_DOMAIN_KIND_RELEASE {
		return nil, nil, fmt.Errorf("domain %q is not a release domain", d.GetName())
	}
	pol := d.GetPolicy().GetRelease()
	pred := &exportPredicate{Domain: d.GetName(), Environment: pol.GetEnvironment(), ExportedAtUnixMs: opts.now.UnixMilli(),
		SinceUnixMs: opts.since, Actions: opts.actions, AppliedIndex: appliedIndex,
		Source:          "the domain's committed release state (its last decisions, at most 32, linearizable read) and, before them, its release.decided events",
		EventsCompacted: opts.compacted}
	for _, k := range pol.GetKeys() {
		pred.PolicyKeys = append(pred.PolicyKeys, exportKey{KeyID: k.GetKeyId(), EvidenceType: k.GetEvidenceType(), Ed25519: k.GetEd25519PublicKey()})
	}
	st := &validator.Statement{Type: validator.StatementType, PredicateType: PredicateExport}
	seen := map[string]bool{}
	addRecord := func(name string, body recordBody) error {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		var c bytes.Buffer
		if err := json.Compact(&c, b); err != nil {
			return err
		}
		sum := sha256.Sum256(c.Bytes())
		pred.Records = append(pred.Records, exportRecord{Name: name, Digest: "sha256:" + hex.EncodeToString(sum[:]), Record: c.Bytes()})
		st.Subject = append(st.Subject, validator.Subject{Name: name, Digest: map[string]string{"sha256": hex.EncodeToString(sum[:])}})
		return nil
	}
	addEvidence := func(index uint64, refs []*pb.EvidenceRef) error {
		for _, ref := range refs {
			if seen[ref.GetDigest()] {
				continue
			}
			seen[ref.GetDigest()] = true
			env, err := lookup(ref.GetDigest())
			if err != nil {
				return fmt.Errorf("decision %d: %s evidence %s: %w", index, ref.GetType(), ref.GetDigest(), err)
			}
			e := exportEvidence{Digest: ref.GetDigest(), Type: ref.GetType(), KeyID: ref.GetKeyId(), Envelope: env}
			if err := checkExportEvidence(e, pol.GetKeys()); err != nil {
				return fmt.Errorf("decision %d: %w", index, err)
			}
			pred.Evidence = append(pred.Evidence, e)
		}
		return nil
	}
	oldest := uint64(math.MaxUint64)
	if decs := d.GetRelease().GetDecisions(); len(decs) > 0 {
		oldest = decs[0].GetIndex()
	}
	for _, ev := range opts.events {
		if ev.GetType() != fsm.EventReleaseDecided || ev.GetDomain() != d.GetName() || ev.GetIndex() >= oldest ||
			ev.GetStampedUnixMs() < opts.since || !slices.Contains(opts.actions, eventField(ev, "action")) {
			continue
		}
		ej, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(ev)
		if err != nil {
			return nil, nil, err
		}
		refs, err := eventEvidence(ev)
		if err != nil {
			return nil, nil, err
		}
		if err := addRecord(fmt.Sprintf("%s/event/%d", d.GetName(), ev.GetIndex()), recordBody{Domain: d.GetName(), Explanation: describeEvent(ev), Event: ej}); err != nil {
			return nil, nil, err
		}
		if err := addEvidence(ev.GetIndex(), refs); err != nil {
			return nil, nil, err
		}
	}
	for _, rec := range d.GetRelease().GetDecisions() {
		if rec.GetStampedUnixMs() < opts.since || !slices.Contains(opts.actions, validator.ActionName(rec.GetAction())) {
			continue
		}
		dj, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(rec)
		if err != nil {
			return nil, nil, err
		}
		if err := addRecord(fmt.Sprintf("%s/decision/%d", d.GetName(), rec.GetIndex()),
			recordBody{Domain: d.GetName(), Explanation: fsm.DescribeReleaseDecision(rec), Decision: dj}); err != nil {
			return nil, nil, err
		}
		if err := addEvidence(rec.GetIndex(), rec.GetEvidence()); err != nil {
			return nil, nil, err
		}
	}
	if len(pred.Records) > maxExportRecords {
		return nil, nil, fmt.Errorf("%d records, more than %d", len(pred.Records), maxExportRecords)
	}
	return st, pred, nil
}

// eventEvidence parses a release.decided event's evidence field
// ("type=sha256:…,type=sha256:…"); the key ids are not in the event.
func eventEvidence(ev *pb.Event) ([]*pb.EvidenceRef, error) {
	var refs []*pb.EvidenceRef
	v := eventField(ev, "evidence")
	if v == "" {
		return nil, nil
	}
	for _, part := range strings.Split(v, ",") {
		typ, digest, ok := strings.Cut(part, "=")
		if !ok || len(refs) >= validator.MaxEvidencePerDecision {
			return nil, fmt.Errorf("event %d: malformed evidence field", ev.GetIndex())
		}
		refs = append(refs, &pb.EvidenceRef{Type: typ, Digest: digest})
	}
	return refs, nil
}

// describeEvent is a one-line explanation of a release.decided event.
func describeEvent(ev *pb.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "release %s at index %d (from the event log):", eventField(ev, "action"), ev.GetIndex())
	for _, f := range ev.GetFields() {
		if f.GetKey() != "action" && f.GetValue() != "" {
			fmt.Fprintf(&b, " %s=%s", f.GetKey(), f.GetValue())
		}
	}
	fmt.Fprintf(&b, ", epoch %d, holder %s", ev.GetEpoch(), ev.GetHolder())
	return b.String()
}

// fetchReleaseEvents reads domain's release.decided events with an index
// below stop from the start of the event log; compacted reports that the
// log no longer holds the first ones (the export then says so).
func fetchReleaseEvents(ctx context.Context, c *client.Client, domain string, stop uint64) (out []*pb.Event, compacted bool, err error) {
	if stop <= 1 || stop == math.MaxUint64 {
		return nil, false, nil
	}
	w, err := c.Watch(ctx, 1, domain)
	if err != nil {
		return nil, false, err
	}
	defer w.Close()
	for {
		ev, err := w.Next(ctx)
		if errors.Is(err, client.ErrCompacted) {
			return out, true, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("reading the event log: %w", err)
		}
		if ev.GetIndex() >= stop {
			return out, false, nil
		}
		if ev.GetType() == fsm.EventReleaseDecided {
			if len(out) >= maxExportRecords {
				return nil, false, fmt.Errorf("more than %d decisions in the event log: narrow with --since", maxExportRecords)
			}
			out = append(out, ev)
		}
	}
}

// checkExportEvidence: the envelope hashes to its digest and verifies with
// a key the policy trusts for its type, the key the decision recorded.
func checkExportEvidence(e exportEvidence, keys []*pb.TrustedKey) error {
	sum := sha256.Sum256(e.Envelope)
	if "sha256:"+hex.EncodeToString(sum[:]) != e.Digest {
		return fmt.Errorf("%s evidence %s: the envelope does not hash to its digest", e.Type, e.Digest)
	}
	pt, ok := predicateTypes[e.Type]
	if !ok {
		return fmt.Errorf("evidence %s: unknown type %.32q", e.Digest, e.Type)
	}
	_, id, err := validator.VerifyEvidence(e.Envelope, e.Type, pt, keys)
	if err != nil {
		return fmt.Errorf("%s evidence %s does not verify: %w", e.Type, e.Digest, err)
	}
	if e.KeyID != "" && id != e.KeyID {
		return fmt.Errorf("%s evidence %s: signed by %s, the decision recorded %s", e.Type, e.Digest, id, e.KeyID)
	}
	return nil
}

// marshalExport encodes the statement with its predicate (no HTML
// escaping, so the records' bytes are the ones their digests name).
func marshalExport(st *validator.Statement, pred *exportPredicate) ([]byte, error) {
	var pj bytes.Buffer
	enc := json.NewEncoder(&pj)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(pred); err != nil {
		return nil, err
	}
	s := *st
	s.Predicate = bytes.TrimSpace(pj.Bytes())
	var out bytes.Buffer
	enc = json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		return nil, err
	}
	return bytes.TrimSpace(out.Bytes()), nil
}

// signExport returns the DSSE envelope (JSON) over the statement.
func signExport(ctx context.Context, statement []byte, keyID string, priv ed25519.PrivateKey) ([]byte, error) {
	s, err := dsse.NewEnvelopeSigner(pemSigner{id: keyID, priv: priv})
	if err != nil {
		return nil, err
	}
	env, err := s.SignPayload(ctx, validator.PayloadTypeInToto, statement)
	if err != nil {
		return nil, err
	}
	return json.Marshal(env)
}

// exportSummary is what verify-export found.
type exportSummary struct {
	Domain   string
	KeyID    string
	Records  int
	Evidence int
}

// verifyExport checks a bundle: the DSSE signature by pub, the statement,
// every record against its subject digest, and every evidence digest a
// record cites: present, hashing to its digest and verifying with the
// policy keys the bundle carries under the key the decision recorded.
func verifyExport(bundle []byte, pub ed25519.PublicKey, keyID string) (*exportSummary, error) {
	if len(bundle) > maxExportBytes {
		return nil, fmt.Errorf("bundle is %d bytes, more than %d", len(bundle), maxExportBytes)
	}
	var env dsse.Envelope
	if err := json.Unmarshal(bundle, &env); err != nil {
		return nil, errors.New("not a DSSE envelope (JSON)")
	}
	if env.PayloadType != validator.PayloadTypeInToto {
		return nil, fmt.Errorf("payload type is not %s", validator.PayloadTypeInToto)
	}
	if n := len(env.Signatures); n == 0 || n > validator.MaxEvidenceSignatures {
		return nil, fmt.Errorf("%d signatures (want 1..%d)", n, validator.MaxEvidenceSignatures)
	}
	// One verifier of pub per key id the signatures carry (or only keyID):
	// the DSSE library skips a signature whose key id differs.
	var vs []dsse.Verifier
	for _, s := range env.Signatures {
		if (keyID == "" || s.KeyID == keyID) && !slices.ContainsFunc(vs, func(v dsse.Verifier) bool { id, _ := v.KeyID(); return id == s.KeyID }) {
			vs = append(vs, exportVerifier{id: s.KeyID, pub: pub})
		}
	}
	if len(vs) == 0 {
		return nil, fmt.Errorf("no signature carries key id %.64q", keyID)
	}
	v, err := dsse.NewEnvelopeVerifier(vs...)
	if err != nil {
		return nil, err
	}
	accepted, body, err := v.VerifyAndDecode(context.Background(), &env)
	if err != nil || len(accepted) == 0 {
		return nil, errors.New("signature does not verify with the given public key")
	}
	var st validator.Statement
	if err := strictJSON(body, &st); err != nil || st.Type != validator.StatementType || st.PredicateType != PredicateExport {
		return nil, fmt.Errorf("not an in-toto Statement v1 of predicate type %s", PredicateExport)
	}
	var pred exportPredicate
	if err := strictJSON(st.Predicate, &pred); err != nil {
		return nil, fmt.Errorf("export predicate: %w", err)
	}
	if len(pred.Records) > maxExportRecords || len(pred.Evidence) > maxExportEvidence || len(pred.PolicyKeys) > maxExportKeys {
		return nil, errors.New("bundle exceeds its bounds (records, evidence or keys)")
	}
	// Subjects and records: one to one, by name and digest.
	subjects := map[string]string{}
	for _, s := range st.Subject {
		if _, dup := subjects[s.Name]; dup {
			return nil, fmt.Errorf("subject %.200q twice", s.Name)
		}
		subjects[s.Name] = s.Digest["sha256"]
	}
	if len(subjects) != len(pred.Records) {
		return nil, fmt.Errorf("%d subjects for %d records", len(subjects), len(pred.Records))
	}
	var keys []*pb.TrustedKey
	for _, k := range pred.PolicyKeys {
		keys = append(keys, &pb.TrustedKey{KeyId: k.KeyID, EvidenceType: k.EvidenceType, Ed25519PublicKey: k.Ed25519})
	}
	evidence := map[string]exportEvidence{}
	for _, e := range pred.Evidence {
		evidence[e.Digest] = e
	}
	verified := map[string]bool{}
	for _, r := range pred.Records {
		sum := sha256.Sum256(r.Record)
		h := hex.EncodeToString(sum[:])
		if subjects[r.Name] != h || r.Digest != "sha256:"+h {
			return nil, fmt.Errorf("record %.200q does not hash to its subject digest", r.Name)
		}
		var body recordBody
		if err := strictJSON(r.Record, &body); err != nil {
			return nil, fmt.Errorf("record %.200q: %w", r.Name, err)
		}
		if body.Domain != pred.Domain {
			return nil, fmt.Errorf("record %.200q is not of the bundle's domain", r.Name)
		}
		var refs []*pb.EvidenceRef
		var want string
		switch {
		case len(body.Decision) > 0 && len(body.Event) == 0:
			var rec pb.ReleaseDecision
			if err := protojson.Unmarshal(body.Decision, &rec); err != nil {
				return nil, fmt.Errorf("record %.200q: %w", r.Name, err)
			}
			want, refs = fmt.Sprintf("%s/decision/%d", pred.Domain, rec.GetIndex()), rec.GetEvidence()
		case len(body.Event) > 0 && len(body.Decision) == 0:
			var ev pb.Event
			if err := protojson.Unmarshal(body.Event, &ev); err != nil {
				return nil, fmt.Errorf("record %.200q: %w", r.Name, err)
			}
			if ev.GetDomain() != pred.Domain || ev.GetType() != fsm.EventReleaseDecided {
				return nil, fmt.Errorf("record %.200q is not a release decision of the bundle's domain", r.Name)
			}
			var err error
			if refs, err = eventEvidence(&ev); err != nil {
				return nil, err
			}
			want = fmt.Sprintf("%s/event/%d", pred.Domain, ev.GetIndex())
		default:
			return nil, fmt.Errorf("record %.200q holds neither one decision nor one event", r.Name)
		}
		if r.Name != want {
			return nil, fmt.Errorf("record %.200q is named not as its domain and index (%s)", r.Name, want)
		}
		for _, ref := range refs {
			e, ok := evidence[ref.GetDigest()]
			if !ok {
				return nil, fmt.Errorf("record %s: %s evidence %.80s is not in the bundle", r.Name, ref.GetType(), ref.GetDigest())
			}
			if e.Type != ref.GetType() || ref.GetKeyId() != "" && e.KeyID != ref.GetKeyId() {
				return nil, fmt.Errorf("record %s: evidence %.80s carried as %.32s/%.64s, recorded as %.32s/%.64s", r.Name, ref.GetDigest(), e.Type, e.KeyID, ref.GetType(), ref.GetKeyId())
			}
			if verified[e.Digest] {
				continue
			}
			if err := checkExportEvidence(e, keys); err != nil {
				return nil, fmt.Errorf("record %s: %w", r.Name, err)
			}
			verified[e.Digest] = true
		}
	}
	if len(verified) != len(evidence) {
		return nil, fmt.Errorf("%d evidence envelopes no record cites", len(evidence)-len(verified))
	}
	return &exportSummary{Domain: pred.Domain, KeyID: accepted[0].KeyID, Records: len(pred.Records), Evidence: len(evidence)}, nil
}

func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// exportVerifier is the bundle signer's Ed25519 key under a key id.
type exportVerifier struct {
	id  string
	pub ed25519.PublicKey
}

func (v exportVerifier) Verify(_ context.Context, data, sig []byte) error {
	if !ed25519.Verify(v.pub, data, sig) {
		return errors.New("bad signature")
	}
	return nil
}
func (v exportVerifier) KeyID() (string, error)   { return v.id, nil }
func (v exportVerifier) Public() crypto.PublicKey { return v.pub }

// evidenceDirLookup reads evidence from evidence stores (a server's
// DATA/evidence, or a copy of it): DIR/sha256/<hex>, checked against its
// name.
func evidenceDirLookup(dirs []string) func(string) ([]byte, error) {
	return func(digest string) ([]byte, error) {
		h, ok := strings.CutPrefix(digest, "sha256:")
		if !ok || len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
			return nil, errors.New("not a sha256:<64 hex> digest")
		}
		for _, dir := range dirs {
			b, err := readBounded(filepath.Join(dir, "sha256", h), validator.MaxEvidenceBytes)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, err
			}
			sum := sha256.Sum256(b)
			if hex.EncodeToString(sum[:]) != h {
				return nil, fmt.Errorf("%s does not hash to its name (damaged)", filepath.Join(dir, "sha256", h))
			}
			return b, nil
		}
		return nil, errors.New("not found in any --evidence-dir")
	}
}

// parsePublicKey reads an Ed25519 public key: base64 (as 'evidence keygen'
// prints it), or a file holding a PEM "PUBLIC KEY" (PKIX) or a PKCS#8
// private key (its public half).
func parsePublicKey(s string) (ed25519.PublicKey, error) {
	if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) == ed25519.PublicKeySize {
		return ed25519.PublicKey(b), nil
	}
	b, err := readBounded(s, 64<<10)
	if err != nil {
		return nil, fmt.Errorf("--pubkey is neither a base64 Ed25519 key nor a readable file: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		if k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b))); err == nil && len(k) == ed25519.PublicKeySize {
			return ed25519.PublicKey(k), nil
		}
		return nil, fmt.Errorf("%s: no PEM block", s)
	}
	switch blk.Type {
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, err
		}
		if pub, ok := k.(ed25519.PublicKey); ok {
			return pub, nil
		}
	case "PRIVATE KEY":
		priv, err := loadEd25519(s)
		if err != nil {
			return nil, err
		}
		return priv.Public().(ed25519.PublicKey), nil
	}
	return nil, fmt.Errorf("%s: not an Ed25519 key", s)
}

// parseSince reads --since: RFC 3339, or a duration back from now.
func parseSince(s string, now time.Time) (int64, error) {
	if s == "" {
		return 0, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UnixMilli(), nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d).UnixMilli(), nil
	}
	return 0, usagef("--since must be RFC 3339 (2026-12-01T00:00:00Z) or a duration (720h)")
}

func newReleaseExportCmd(o *options) *cobra.Command {
	var domain, since, keyFile, keyID, out string
	var dirs, actions []string
	cmd := &cobra.Command{
		Use:   "export --domain D --signing-key KEY.pem --out FILE --evidence-dir DIR [--since T]",
		Short: "Export a release domain's promotion, abort and rollback records with their evidence as one signed bundle",
		Long: `Writes ONE DSSE envelope (Ed25519, --signing-key from 'evidence keygen'; --key
is the TLS client key, as everywhere) over an in-toto
Statement v1 (predicate type ` + PredicateExport + `) holding:

  records    every selected decision of the domain (allowed and denied, with
             every check and its evidence digests), each a subject of the
             statement by the sha256 of its bytes
  evidence   every evidence envelope those decisions cite, read from the
             evidence stores (--evidence-dir: a server's DATA/evidence or a
             copy), checked against its digest and verified with the policy
  policy     the release policy's trusted keys

The records are the domain's kept decisions (its committed state, a linearizable
read: the last 32, with every check) and, before them, its release.decided
events from the event log (without the per-check detail); when the log was
compacted, the bundle says so (events_compacted). Verify with 'authorityctl release verify-export'.`,
		Args: exactArgs(),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if err := checkNames("domain", domain, "key id", keyID); err != nil {
				return err
			}
			for _, a := range actions {
				if !slices.Contains(validReleaseActions(), a) {
					return usagef("--actions: unknown action %.32q (want %s)", a, strings.Join(validReleaseActions(), ", "))
				}
			}
			now := time.Now()
			sinceMs, err := parseSince(since, now)
			if err != nil {
				return err
			}
			priv, err := loadEd25519(keyFile)
			if err != nil {
				return usageError{err}
			}
			ctx, cancel := o.withTimeout(cmd.Context())
			defer cancel()
			c, err := o.connect(ctx)
			if err != nil {
				return err
			}
			defer closeQuietly(c)
			d, err := c.GetDomain(ctx, domain)
			if err != nil {
				return err
			}
			stop := uint64(math.MaxUint64)
			if decs := d.GetRelease().GetDecisions(); len(decs) > 0 {
				stop = decs[0].GetIndex()
			}
			events, compacted, err := fetchReleaseEvents(ctx, c, domain, stop)
			if err != nil {
				return err
			}
			st, pred, err := buildExport(d, d.GetUpdatedIndex(), exportOptions{since: sinceMs, actions: actions, now: now,
				events: events, compacted: compacted}, evidenceDirLookup(dirs))
			if err != nil {
				return err
			}
			body, err := marshalExport(st, pred)
			if err != nil {
				return err
			}
			bundle, err := signExport(ctx, body, keyID, priv)
			if err != nil {
				return err
			}
			// What we write must verify (the records' bytes are their digests').
			if _, err := verifyExport(bundle, priv.Public().(ed25519.PublicKey), keyID); err != nil {
				return fmt.Errorf("the bundle does not verify (a bug): %w", err)
			}
			if err := os.WriteFile(out, bundle, 0o644); err != nil {
				return err
			}
			sum := sha256.Sum256(bundle)
			o.progressf("exported %d records and %d evidence envelopes of %s to %s (sha256:%x, signed by %s)",
				len(pred.Records), len(pred.Evidence), domain, out, sum, keyID)
			if compacted {
				o.progressf("warning: the event log no longer holds the oldest decisions (compacted): the bundle says so (events_compacted)")
			}
			return nil
		}),
	}
	fs := cmd.Flags()
	fs.StringVar(&domain, "domain", "", "the release domain")
	fs.StringVar(&since, "since", "", "only records stamped at or after: RFC 3339 or a duration back from now (720h)")
	fs.StringVar(&keyFile, "signing-key", "", "Ed25519 private key signing the bundle (PKCS#8 PEM, from 'evidence keygen')")
	fs.StringVar(&keyID, "key-id", "export", "the key id the bundle's signature carries")
	fs.StringVar(&out, "out", "", "bundle file to write")
	fs.StringArrayVar(&dirs, "evidence-dir", nil, "an evidence store (DATA/evidence of a server, or a copy); repeatable")
	fs.StringSliceVar(&actions, "actions", []string{"promote", "abort", "rollback"}, "the decisions to export")
	markRequired(cmd, "domain", "signing-key", "out", "evidence-dir")
	return cmd
}

func validReleaseActions() []string {
	var out []string
	for a := pb.ReleaseAction_RELEASE_ACTION_START_CANARY; a <= pb.ReleaseAction_RELEASE_ACTION_ROLLBACK; a++ {
		out = append(out, validator.ActionName(a))
	}
	return out
}

func newReleaseVerifyExportCmd(o *options) *cobra.Command {
	var pubkey, keyID string
	cmd := &cobra.Command{
		Use:   "verify-export FILE --pubkey KEY",
		Short: "Verify an export bundle: its signature, every record's digest, every evidence digest resolving and verifying (exit 1 when not)",
		Args:  exactArgs("FILE"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			pub, err := parsePublicKey(pubkey)
			if err != nil {
				return usageError{err}
			}
			b, err := readBounded(args[0], maxExportBytes)
			if err != nil {
				return usageError{err}
			}
			s, err := verifyExport(b, pub, keyID)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(o.stdout, "verified: %s, %d records, %d evidence envelopes, signed by %s\n", s.Domain, s.Records, s.Evidence, s.KeyID)
			return err
		}),
	}
	cmd.Flags().StringVar(&pubkey, "pubkey", "", "the signer's Ed25519 public key: base64, or a PEM file (PUBLIC KEY, or the private key)")
	cmd.Flags().StringVar(&keyID, "key-id", "", "require this key id on the signature (default: any)")
	markRequired(cmd, "pubkey")
	return cmd
}
