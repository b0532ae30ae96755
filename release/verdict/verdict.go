// Package verdict answers "what did the authority decide about this
// release?" for tools users already run (docs/ROLLOUTS-TEMPLATES.md): Argo
// Rollouts' `web` metric provider reads GET /v1/releases/{domain}/verdict,
// Flagger's webhooks call /v1/releases/{domain}/gates/{gate} (200 = go,
// 412 = hold). Read-only and bounded; the verdict is a pure function of a
// release domain's applied state.
package verdict

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/validator"
)

// Verdicts (the words of the probe service and of the analysis evidence).
const (
	Pass         = "pass"
	Fail         = "fail"
	Inconclusive = "inconclusive"
)

// Gates, named as Flagger's webhook types.
const (
	GateConfirmRollout         = "confirm-rollout"
	GateConfirmTrafficIncrease = "confirm-traffic-increase"
	GateConfirmPromotion       = "confirm-promotion"
	GateRollback               = "rollback"
)

// Gates lists every gate.
var Gates = []string{GateConfirmRollout, GateConfirmTrafficIncrease, GateConfirmPromotion, GateRollback}

// MaxBodyBytes bounds the webhook body read (and ignored) on a POST.
const MaxBodyBytes = 64 << 10

// Decision summarises the domain's last decision.
type Decision struct {
	Index         uint64 `json:"index"`
	Action        string `json:"action"`
	Allowed       bool   `json:"allowed"`
	DenialReason  string `json:"denial_reason,omitempty"`
	Reason        string `json:"reason,omitempty"`
	StampedUnixMs int64  `json:"stamped_unix_ms"`
}

// Verdict is the answer (JSON).
type Verdict struct {
	Domain   string    `json:"domain"`
	Digest   string    `json:"digest,omitempty"`
	Verdict  string    `json:"verdict"`
	Status   string    `json:"status"`
	Gate     string    `json:"gate,omitempty"`
	Open     *bool     `json:"open,omitempty"`
	Phase    string    `json:"phase"`
	Stable   string    `json:"stable,omitempty"`
	Canary   string    `json:"canary,omitempty"`
	Step     uint32    `json:"step"`
	Weight   uint32    `json:"weight"`
	Epoch    uint64    `json:"epoch"`
	Decision *Decision `json:"decision,omitempty"`
	ServedBy string    `json:"served_by,omitempty"`
	Applied  uint64    `json:"applied_index,omitempty"`
}

// Of is the authority's verdict on digest (the current canary, or with
// none the stable release, when digest is empty) in release domain d:
//
//   - pass: the digest is stable and was not rolled back (an allowed
//     promote is committed);
//   - fail: the digest was a canary or stable in the kept decisions and is
//     neither now nor a known-good release (aborted, or rolled back away
//     from);
//   - inconclusive: its canary is still being decided, or the authority
//     does not know it, or it was superseded by a later promotion (it is
//     a known-good release).
func Of(d *pb.Domain, digest string) Verdict {
	rs := d.GetRelease()
	v := Verdict{Domain: d.GetName(), Digest: digest, Phase: validator.PhaseName(rs.GetPhase()), Stable: rs.GetStable(),
		Canary: rs.GetCanary(), Step: rs.GetStep(), Weight: rs.GetWeight(), Epoch: d.GetEpoch()}
	if n := len(rs.GetDecisions()); n > 0 {
		last := rs.GetDecisions()[n-1]
		v.Decision = &Decision{Index: last.GetIndex(), Action: validator.ActionName(last.GetAction()), Allowed: last.GetDecision().GetAllowed(),
			DenialReason: last.GetDecision().GetDenialReason(), Reason: last.GetReason(), StampedUnixMs: last.GetStampedUnixMs()}
	}
	if digest == "" {
		digest = rs.GetCanary()
		if digest == "" {
			digest = rs.GetStable()
		}
	}
	switch {
	case digest == "":
		v.Verdict, v.Status = Inconclusive, "no release"
	case digest == rs.GetCanary():
		v.Verdict, v.Status = Inconclusive, "canary "+validator.PhaseName(rs.GetPhase())+": decision pending"
	case digest == rs.GetStable() && rs.GetPhase() != pb.ReleasePhase_RELEASE_PHASE_ROLLED_BACK:
		v.Verdict, v.Status = Pass, "promoted: stable"
	case digest == rs.GetStable():
		// Rolled back to this release: it is stable again, as the last known good.
		v.Verdict, v.Status = Pass, "stable after a rollback (last known good)"
	case contains(rs.GetKnownGood(), digest):
		v.Verdict, v.Status = Inconclusive, "superseded by a later promotion"
	case seen(rs, digest):
		v.Verdict, v.Status = Fail, "aborted or rolled back"
	default:
		v.Verdict, v.Status = Inconclusive, "unknown to the authority"
	}
	return v
}

// seen: digest was a canary or stable after some kept decision.
func seen(rs *pb.ReleaseState, digest string) bool {
	for _, dec := range rs.GetDecisions() {
		if dec.GetCanary() == digest || dec.GetStable() == digest {
			return true
		}
	}
	return false
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

// Gate reports whether gate is open for v in state rs.
func Gate(gate string, rs *pb.ReleaseState, v Verdict) bool {
	switch gate {
	case GateConfirmRollout:
		return rs.GetCanary() != "" && (v.Digest == "" || v.Digest == rs.GetCanary()) &&
			(rs.GetPhase() == pb.ReleasePhase_RELEASE_PHASE_PROGRESSING || rs.GetPhase() == pb.ReleasePhase_RELEASE_PHASE_PAUSED)
	case GateConfirmTrafficIncrease:
		return rs.GetCanary() != "" && (v.Digest == "" || v.Digest == rs.GetCanary()) && rs.GetPhase() == pb.ReleasePhase_RELEASE_PHASE_PROGRESSING
	case GateConfirmPromotion:
		if v.Digest == "" {
			// Flagger asks about the canary it runs: open once the
			// authority's last decision promoted it.
			return rs.GetPhase() == pb.ReleasePhase_RELEASE_PHASE_PROMOTED
		}
		return v.Verdict == Pass
	case GateRollback:
		if v.Digest == "" {
			return rs.GetPhase() == pb.ReleasePhase_RELEASE_PHASE_ABORTED || rs.GetPhase() == pb.ReleasePhase_RELEASE_PHASE_ROLLED_BACK
		}
		return v.Verdict == Fail
	}
	return false
}

// Handler serves GET /v1/releases/{domain}/verdict and GET|POST
// /v1/releases/{domain}/gates/{gate} from lookup (a stale local read of
// the applied state). header, when set, adds the serving node and its
// applied index.
type Handler struct {
	Lookup func(name string) (*pb.Domain, bool)
	Served func() (node string, applied uint64)
}

// Register adds the handler's routes to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/releases/{domain}/verdict", h.serveVerdict)
	mux.HandleFunc("GET /v1/releases/{domain}/gates/{gate}", h.serveGate)
	mux.HandleFunc("POST /v1/releases/{domain}/gates/{gate}", h.serveGate)
}

func (h *Handler) domain(w http.ResponseWriter, r *http.Request) (*pb.Domain, string, bool) {
	name := r.PathValue("domain")
	if !validName(name) {
		writeError(w, http.StatusBadRequest, "invalid domain name")
		return nil, "", false
	}
	digest := r.URL.Query().Get("digest")
	if digest != "" && !validDigest(digest) {
		writeError(w, http.StatusBadRequest, "digest must be sha256:<64 lowercase hex>")
		return nil, "", false
	}
	d, ok := h.Lookup(name)
	if !ok || d.GetKind() != pb.DomainKind_DOMAIN_KIND_RELEASE {
		writeError(w, http.StatusNotFound, "no release domain of that name (stale local read)")
		return nil, "", false
	}
	return d, digest, true
}

func (h *Handler) serveVerdict(w http.ResponseWriter, r *http.Request) {
	d, digest, ok := h.domain(w, r)
	if !ok {
		return
	}
	h.write(w, http.StatusOK, Of(d, digest))
}

func (h *Handler) serveGate(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		// Flagger's payload is read (bounded) and ignored: the authority's
		// state decides, not what the caller says.
		if _, err := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, MaxBodyBytes)); err != nil {
			writeError(w, http.StatusRequestEntityTooLarge, "body larger than "+strconv.Itoa(MaxBodyBytes)+" bytes")
			return
		}
	}
	gate := r.PathValue("gate")
	if !contains(Gates, gate) {
		writeError(w, http.StatusNotFound, "unknown gate (want "+strings.Join(Gates, ", ")+")")
		return
	}
	d, digest, ok := h.domain(w, r)
	if !ok {
		return
	}
	v := Of(d, digest)
	open := Gate(gate, d.GetRelease(), v)
	v.Gate, v.Open = gate, &open
	code := http.StatusOK
	if !open {
		code = http.StatusPreconditionFailed
	}
	h.write(w, code, v)
}

func (h *Handler) write(w http.ResponseWriter, code int, v Verdict) {
	if h.Served != nil {
		v.ServedBy, v.Applied = h.Served()
		w.Header().Set("X-Authority-Read", "stale")
	}
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encoding the verdict")
		return
	}
	writeJSON(w, code, append(b, '\n'))
}

// validName: a domain name as the authority allows them (fsm.ValidateName:
// at most 128 bytes of letters, digits and, after the first, '.', '_', ':',
// '-'); this package links no server code.
func validName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != ':' && c != '-') {
			return false
		}
	}
	return true
}

func validDigest(s string) bool {
	h, ok := strings.CutPrefix(s, "sha256:")
	return ok && len(h) == 64 && strings.Trim(h, "0123456789abcdef") == ""
}

func writeError(w http.ResponseWriter, code int, msg string) {
	b, _ := json.Marshal(map[string]string{"error": msg})
	writeJSON(w, code, append(b, '\n'))
}

func writeJSON(w http.ResponseWriter, code int, b []byte) {
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(b)
}
