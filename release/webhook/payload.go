// Package webhook delivers the authority's release decisions to configured
// HTTP endpoints (issue 16, "Webhooks"): Flagger's event payload vocabulary
// ({name, namespace, phase, metadata{eventMessage, eventType, timestamp}})
// plus the authority's own fields (action, allowed, epochs, log index,
// explanation, evidence digests); HMAC-SHA256-signed bodies; retries with
// exponential backoff and jitter on 5xx, 429 and transport errors; and
// at-least-once delivery with a deterministic idempotency key per
// (domain, log index, seq, endpoint), so receivers de-duplicate with
// Deduper. See docs/RELEASE-WEBHOOKS.md.
package webhook

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// EventReleaseDecided is the committed event type every release decision
// emits (fsm.EventReleaseDecided; repeated here so this package links no
// server code).
const EventReleaseDecided = "release.decided"

// Bounds of a payload: every string field is cut to MaxFieldBytes, at most
// MaxEvidence digests of at most MaxDigestBytes are carried, so an encoded
// payload never exceeds MaxBodyBytes.
const (
	MaxFieldBytes  = 1024
	MaxEvidence    = 32
	MaxDigestBytes = 256
	MaxBodyBytes   = 64 << 10
)

// Actions a payload carries (the release transitions of the core).
var Actions = []string{"start_canary", "advance_step", "pause", "resume", "promote", "abort", "rollback"}

// Phases a release domain can be in (the core's phase names).
var Phases = []string{"stable", "progressing", "paused", "promoted", "aborted", "rolled_back"}

// Metadata is Flagger's event metadata.
type Metadata struct {
	// EventMessage is a one-line human explanation of the decision.
	EventMessage string `json:"eventMessage"`
	// EventType is "Normal" for an allowed start, advance, pause, resume or
	// promote, "Warning" for a denial, an abort or a rollback.
	EventType string `json:"eventType"`
	// Timestamp is the leader's stamp of the entry in Unix milliseconds, as
	// a decimal string (as Flagger sends it).
	Timestamp string `json:"timestamp"`
}

// Payload is the JSON body of one delivery.
type Payload struct {
	// Flagger's vocabulary.
	Name      string   `json:"name"`      // the release domain
	Namespace string   `json:"namespace"` // configured (the authority has none)
	Phase     string   `json:"phase"`     // Flagger-cased phase: Progressing, Paused, Promoted, Aborted, RolledBack, Stable
	Metadata  Metadata `json:"metadata"`

	// The authority's fields.
	Domain       string   `json:"domain"`
	Action       string   `json:"action"` // one of Actions
	Allowed      bool     `json:"allowed"`
	DenialReason string   `json:"denial_reason,omitempty"`
	ReleasePhase string   `json:"release_phase"` // one of Phases
	EpochBefore  uint64   `json:"epoch_before"`
	EpochAfter   uint64   `json:"epoch_after"`
	Holder       string   `json:"holder,omitempty"`
	LogIndex     uint64   `json:"log_index"`
	Seq          uint32   `json:"seq"`
	Stable       string   `json:"stable,omitempty"`
	Canary       string   `json:"canary,omitempty"`
	Step         uint32   `json:"step"`
	Weight       uint32   `json:"weight"`
	Reason       string   `json:"reason,omitempty"`
	Evidence     []string `json:"evidence,omitempty"` // "type=sha256:..." digests of the evidence the decision read
}

// PayloadFromEvent builds the payload of a committed release.decided event.
// It is pure. ok is false for any other event type and for a release event
// whose fields do not parse (unknown action or phase, bad numbers).
func PayloadFromEvent(ev *pb.Event, namespace string) (Payload, bool) {
	if ev == nil || ev.GetType() != EventReleaseDecided {
		return Payload{}, false
	}
	f := make(map[string]string, len(ev.GetFields()))
	for _, o := range ev.GetFields() {
		if _, dup := f[o.GetKey()]; !dup {
			f[o.GetKey()] = o.GetValue()
		}
	}
	action, phase := f["action"], f["phase"]
	if !contains(Actions, action) || !contains(Phases, phase) {
		return Payload{}, false
	}
	allowed, err := strconv.ParseBool(f["allowed"])
	if err != nil {
		return Payload{}, false
	}
	num := func(k string, bits int) (uint64, bool) {
		v, err := strconv.ParseUint(f[k], 10, bits)
		return v, err == nil
	}
	step, ok1 := num("step", 32)
	weight, ok2 := num("weight", 32)
	before, ok3 := num("epoch_before", 64)
	if !ok1 || !ok2 || !ok3 {
		return Payload{}, false
	}
	p := Payload{
		Name:         cut(ev.GetDomain()),
		Namespace:    cut(namespace),
		Phase:        flaggerPhase(phase),
		Domain:       cut(ev.GetDomain()),
		Action:       action,
		Allowed:      allowed,
		DenialReason: cut(f["denial_reason"]),
		ReleasePhase: phase,
		EpochBefore:  before,
		EpochAfter:   ev.GetEpoch(),
		Holder:       cut(ev.GetHolder()),
		LogIndex:     ev.GetIndex(),
		Seq:          ev.GetSeq(),
		Stable:       cut(f["stable"]),
		Canary:       cut(f["canary"]),
		Step:         uint32(step),
		Weight:       uint32(weight),
		Reason:       cut(f["reason"]),
	}
	if e := f["evidence"]; e != "" {
		for _, d := range strings.SplitN(e, ",", MaxEvidence+1) {
			if len(p.Evidence) == MaxEvidence {
				break
			}
			p.Evidence = append(p.Evidence, cutTo(d, MaxDigestBytes))
		}
	}
	p.Metadata = Metadata{
		EventMessage: cut(message(p)),
		EventType:    "Normal",
		Timestamp:    strconv.FormatInt(ev.GetStampedUnixMs(), 10),
	}
	if !allowed || action == "abort" || action == "rollback" {
		p.Metadata.EventType = "Warning"
	}
	return p, true
}

// Encode returns the JSON body of p (at most MaxBodyBytes for a payload
// built by PayloadFromEvent).
// It is compact JSON without HTML escaping (">" stays ">"). Receivers
// verify the signature over the bytes received, never a re-encoding.
func (p Payload) Encode() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(p); err != nil {
		return nil, err
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if len(b) > MaxBodyBytes {
		return nil, fmt.Errorf("webhook: payload of %d bytes exceeds %d", len(b), MaxBodyBytes)
	}
	return b, nil
}

func message(p Payload) string {
	verdict := "allowed"
	if !p.Allowed {
		verdict = "denied: " + p.DenialReason
	}
	m := fmt.Sprintf("%s of %s %s (phase %s, stable %q, canary %q, step %d, weight %d, epoch %d->%d)",
		p.Action, p.Domain, verdict, p.ReleasePhase, p.Stable, p.Canary, p.Step, p.Weight, p.EpochBefore, p.EpochAfter)
	if p.Reason != "" {
		m += ": " + p.Reason
	}
	return m
}

func flaggerPhase(phase string) string {
	switch phase {
	case "rolled_back":
		return "RolledBack"
	default:
		return strings.ToUpper(phase[:1]) + phase[1:]
	}
}

func contains(set []string, s string) bool {
	for _, x := range set {
		if x == s {
			return true
		}
	}
	return false
}

func cut(s string) string { return cutTo(s, MaxFieldBytes) }

// cutTo bounds s to n bytes on a rune boundary and replaces invalid UTF-8.
func cutTo(s string, n int) string {
	if len(s) > n {
		i := n
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s = s[:i]
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// DeliveryKey is the idempotency key of the delivery of the event at
// (logIndex, seq) of domain to the endpoint named endpoint: deterministic,
// so a redelivery (a retry, or after a restart) carries the same key and
// the receiver de-duplicates it. 32 lowercase hex digits.
func DeliveryKey(domain string, logIndex uint64, seq uint32, endpoint string) string {
	h := sha256.New()
	fmt.Fprintf(h, "aerodb-release-webhook/v1\x00%s\x00%d\x00%d\x00%s", domain, logIndex, seq, endpoint)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// SignatureHeader is the X-Authority-Signature value of body: "sha256=" and
// the hex HMAC-SHA256 of the body under secret (GitHub's scheme).
func SignatureHeader(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}
