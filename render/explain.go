package render

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"sort"
	"strings"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// Explanation is the explanation artifact of one attempt (AeroDB P6-O2):
// the request, every check with its invariant, what was observed and what
// was required, the waivers, the outcome, the log index and the epochs.
// Field order is fixed by this struct, so the JSON is byte-identical for
// equal records on every node.
type Explanation struct {
	Request         ExplainedRequest `json:"request"`
	Outcome         string           `json:"outcome"`
	DenialReason    string           `json:"denial_reason,omitempty"`
	FailedInvariant string           `json:"failed_invariant,omitempty"`
	Committed       bool             `json:"committed"`
	LogIndex        uint64           `json:"log_index"`
	Term            uint64           `json:"term"`
	EpochBefore     uint64           `json:"epoch_before"`
	EpochAfter      uint64           `json:"epoch_after"`
	HolderBefore    string           `json:"holder_before"`
	HolderAfter     string           `json:"holder_after"`
	WaiversApplied  []string         `json:"waivers_applied"`
	Checks          []ExplainedCheck `json:"checks"`
	Evidence        Evidence         `json:"evidence"`
	StampedUnixMs   int64            `json:"stamped_unix_ms"`
}

type ExplainedRequest struct {
	RequestID     string   `json:"request_id"`
	Domain        string   `json:"domain"`
	Candidate     string   `json:"candidate"`
	ExpectedEpoch *uint64  `json:"expected_epoch"`
	Reason        string   `json:"reason"`
	Waivers       []string `json:"waivers"`
	InitiatedBy   string   `json:"initiated_by"`
}

type ExplainedCheck struct {
	Name      string `json:"name"`
	Invariant string `json:"invariant"`
	Satisfied bool   `json:"satisfied"`
	WaivedBy  string `json:"waived_by,omitempty"`
	Reason    string `json:"reason,omitempty"`
	// Observed are the candidate's / holder's values; Required what the
	// rule compared them with. Both keep the validator's fixed order.
	Observed []KV   `json:"observed"`
	Required []KV   `json:"required"`
	Detail   string `json:"detail"`
}

// KV is one named value (a list keeps the order a map would lose).
type KV struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type Evidence struct {
	Lease           *ExplainedLease  `json:"lease"`
	CandidateReport *ExplainedReport `json:"candidate_report"`
	ReportAgeMs     uint64           `json:"report_age_ms"`
}

type ExplainedLease struct {
	Holder      string `json:"holder"`
	Epoch       uint64 `json:"epoch"`
	State       string `json:"state"`
	RemainingMs uint64 `json:"remaining_ms"`
	LeaderTerm  uint64 `json:"leader_term"`
	LeaderID    string `json:"leader_id"`
}

type ExplainedReport struct {
	MemberID        string `json:"member_id"`
	Epoch           uint64 `json:"epoch"`
	FlushedLsn      uint64 `json:"flushed_lsn"`
	FlushedHash     string `json:"flushed_hash"`
	WatermarkLsn    uint64 `json:"watermark_lsn"`
	HashAtWatermark string `json:"hash_at_watermark"`
	AppliedCommitID uint64 `json:"applied_commit_id"`
	ReadSafe        bool   `json:"read_safe"`
	State           string `json:"state"`
}

// requiredKeys names, per check, the observed keys that are the rule's
// requirement rather than the candidate's value.
var requiredKeys = map[string][]string{
	"expected_epoch":               {"current_epoch"},
	"candidate_report":             {"current_epoch", "max_age_ms"},
	"candidate_contains_watermark": {"watermark_lsn"},
	"history_prefix":               {"watermark_lsn", "watermark_hash"},
	"mvcc_visibility":              {"visible_commit_id"},
	"old_holder_inactive":          {"holder", "epoch"},
}

// RequiredKeys returns the observed keys of check that render shows as the
// rule's requirement (a copy; nil for a check with none). The validator's
// tests check that its checks still emit these keys.
func RequiredKeys(check string) []string {
	return append([]string(nil), requiredKeys[check]...)
}

// RequiredKeyChecks returns, sorted, the checks RequiredKeys knows.
func RequiredKeyChecks() []string {
	out := make([]string, 0, len(requiredKeys))
	for k := range requiredKeys {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Explain builds the artifact of a record. committed is false for dry runs
// and immediate rejections (LogIndex 0).
func Explain(rec *pb.AttemptRecord) *Explanation {
	q, d := rec.GetRequest(), rec.GetDecision()
	e := &Explanation{
		Request: ExplainedRequest{RequestID: q.GetRequestId(), Domain: q.GetDomain(), Candidate: q.GetCandidate(),
			Reason: q.GetReason(), Waivers: nonNil(q.GetWaivers()), InitiatedBy: enumName(q.GetInitiatedBy().String(), "INITIATOR_")},
		Outcome: "denied", DenialReason: d.GetDenialReason(), FailedInvariant: d.GetFailedInvariant(),
		Committed: rec.LogIndex > 0, LogIndex: rec.LogIndex, Term: rec.Term,
		EpochBefore: rec.EpochBefore, EpochAfter: rec.EpochAfter, HolderBefore: rec.HolderBefore, HolderAfter: rec.HolderAfter,
		WaiversApplied: nonNil(d.GetWaiversApplied()), Checks: []ExplainedCheck{},
		Evidence:      Evidence{Lease: lease(rec.GetLease()), CandidateReport: report(rec.GetCandidateReport()), ReportAgeMs: rec.ReportAgeMs},
		StampedUnixMs: rec.StampedUnixMs,
	}
	if q.ExpectedEpoch != nil {
		v := q.GetExpectedEpoch()
		e.Request.ExpectedEpoch = &v
	}
	if d.GetAllowed() {
		e.Outcome = "allowed"
	}
	for _, c := range d.GetChecks() {
		e.Checks = append(e.Checks, check(c))
	}
	return e
}

// ExplanationJSON renders the artifact as indented JSON ending in a newline:
// byte-identical for equal records.
func ExplanationJSON(rec *pb.AttemptRecord) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(Explain(rec)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func check(c *pb.Check) ExplainedCheck {
	out := ExplainedCheck{Name: c.Name, Invariant: c.Invariant, Satisfied: c.Satisfied, WaivedBy: c.WaivedBy, Reason: c.Reason,
		Observed: []KV{}, Required: []KV{}, Detail: c.Detail}
	req := requiredKeys[c.Name]
	for _, o := range c.Observed {
		kv := KV{Key: o.Key, Value: o.Value}
		if contains(req, o.Key) {
			out.Required = append(out.Required, kv)
		} else {
			out.Observed = append(out.Observed, kv)
		}
	}
	return out
}

func lease(l *pb.LeaseObservation) *ExplainedLease {
	if l == nil {
		return nil
	}
	return &ExplainedLease{Holder: l.Holder, Epoch: l.Epoch, State: enumName(l.State.String(), "LEASE_STATE_"),
		RemainingMs: l.RemainingMs, LeaderTerm: l.LeaderTerm, LeaderID: l.LeaderId}
}

func report(r *pb.ProgressReport) *ExplainedReport {
	if r == nil {
		return nil
	}
	return &ExplainedReport{MemberID: r.MemberId, Epoch: r.Epoch, FlushedLsn: r.FlushedLsn, FlushedHash: hex.EncodeToString(r.FlushedHash),
		WatermarkLsn: r.WatermarkLsn, HashAtWatermark: hex.EncodeToString(r.HashAtWatermark), AppliedCommitID: r.AppliedCommitId,
		ReadSafe: r.ReadSafe, State: enumName(r.State.String(), "REPLICA_STATE_")}
}

func enumName(s, prefix string) string { return strings.ToLower(strings.TrimPrefix(s, prefix)) }

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
