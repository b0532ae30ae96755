package checker

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aerodb/authority/jepsen-like/history"
	"github.com/aerodb/authority/observability"
)

// policyRec is a decided policy attempt of domain "a" stamped at ms.
func policyRec(ms int64, id string, before, after uint64, cand string, allowed bool, term uint64, checks []string) history.Record {
	out := history.OutcomeDenied
	if allowed {
		out = history.OutcomeAllowed
	}
	return history.Record{Kind: history.KindPolicy, Time: ms * int64(time.Millisecond), Domain: "a", RequestID: id, Info: initiatorPolicy,
		Stamped: ms, Checks: checks, Value: history.Value{ExpectedEpoch: before, Epoch: after, Holder: cand, Outcome: out, Term: term}}
}

func TestPolicyAntiFlapping(t *testing.T) {
	all := validatorChecks
	in := func(recs ...history.Record) Input {
		return Input{History: recs, PolicyDwell: 2 * time.Second}
	}
	// Spaced by the dwell, every check: valid. A denial between them
	// (same epoch, past the backoff) changes nothing.
	good := in(policyRec(1000, "policy-1-1", 1, 2, "n2", true, 2, all),
		policyRec(1600, "policy-2-1", 2, 2, "n3", false, 2, all[:4]),
		policyRec(3000, "policy-2-2", 2, 3, "n3", true, 2, all))
	r := PolicyAntiFlapping(good)
	expectValid(t, r, true)
	if r.Counts["policy_promotions"] != 2 || r.Counts["min_gap_ms"] != 2000 {
		t.Errorf("counts %v", r.Counts)
	}
	// No policy records: vacuously valid.
	expectValid(t, PolicyAntiFlapping(Input{}), true)

	// A promotion 600 ms after the previous one (an operator's counts too).
	op := policyRec(1000, "op-1", 1, 2, "n2", true, 2, all)
	op.Info = "INITIATOR_OPERATOR"
	r = PolicyAntiFlapping(in(op, policyRec(1600, "policy-2-1", 2, 3, "n3", true, 2, all)))
	expectValid(t, r, false)
	if r.Counts["within_dwell"] != 1 || !strings.Contains(r.Details, "within the dwell") {
		t.Errorf("want one promotion within the dwell: %v %s", r.Counts, r.Details)
	}
	// A policy promotion without every validator check.
	r = PolicyAntiFlapping(in(policyRec(1000, "policy-1-1", 1, 2, "n2", true, 2, slices.Delete(slices.Clone(all), 4, 5))))
	expectValid(t, r, false)
	if !strings.Contains(r.Details, "old_holder_inactive") {
		t.Errorf("want the missing check named: %s", r.Details)
	}
	// Across terms (two leaders' clocks) the clock slack is allowed, in
	// one term it is not.
	skew := in(policyRec(1000, "policy-1-1", 1, 2, "n2", true, 2, all), policyRec(2500, "policy-2-1", 2, 3, "n3", true, 3, all))
	expectValid(t, PolicyAntiFlapping(skew), false)
	skew.PolicyClockSlack = 600 * time.Millisecond
	expectValid(t, PolicyAntiFlapping(skew), true)
	skew.History[1].Value.Term = 2
	expectValid(t, PolicyAntiFlapping(skew), false)
	// A policy promotion the nodes' logs do not show as allowed.
	denied := logs3(concat([]observability.EventJSON{grantEv(1, "a", 1, "n1")}, promotionEvs(2, "a", 1, "n1", "n2", "policy-1-1", false)))
	g := in(policyRec(1000, "policy-1-1", 1, 2, "n2", true, 2, all))
	g.NodeLogs = denied
	expectValid(t, PolicyAntiFlapping(g), false)
}

// The policy's promotions are not client operations: without modelling
// them a read of the promoted epoch is not linearizable.
func TestLinearizableModelsPolicyPromotions(t *testing.T) {
	logs := logs3(concat([]observability.EventJSON{grantEv(1, "a", 1, "n1")}, promotionEvs(2, "a", 2, "n2", "n2", "policy-1-1", true)))
	read := func(t0, t1 int64, epoch uint64, holder string) []history.Record {
		return []history.Record{invoke(t0, 1, history.FRead, "a", history.Value{}),
			complete(t1, 1, history.OK, history.FRead, "a", history.Value{Epoch: epoch, Holder: holder})}
	}
	h := concat2(read(1, 2, 1, "n1"), read(3000000000, 3000000001, 2, "n2"))
	expectValid(t, Linearizable(Input{History: h, NodeLogs: logs}), false)
	pol := policyRec(1000, "policy-1-1", 1, 2, "n2", true, 2, validatorChecks)
	expectValid(t, Linearizable(Input{History: append(slices.Clone(h), pol), NodeLogs: logs}), true)
	// Its interval comes from the clients' observations, not the stamp: a
	// stamp far off (a skewed clock) changes nothing.
	pol.Time = 10
	expectValid(t, Linearizable(Input{History: append(slices.Clone(h), pol), NodeLogs: logs}), true)
	// A read of the old epoch after one of the new is still caught.
	h2 := concat2(h, read(4000000000, 4000000001, 1, "n1"))
	expectValid(t, Linearizable(Input{History: append(h2, pol), NodeLogs: logs}), false)
}
