package checker

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aerodb/authority/jepsen-like/history"
	"github.com/aerodb/authority/observability"
)

// ---- builders ----

func invoke(t int64, p int, f, domain string, v history.Value) history.Record {
	return history.Record{Kind: history.KindOp, Time: t, Process: p, Type: history.Invoke, F: f, Domain: domain, Value: v}
}

func complete(t int64, p int, typ, f, domain string, v history.Value) history.Record {
	return history.Record{Kind: history.KindOp, Time: t, Process: p, Type: typ, F: f, Domain: domain, Value: v}
}

func withReq(r history.Record, id string) history.Record { r.RequestID = id; return r }

func agent(t int64, typ, domain, holder string, epoch uint64) history.Record {
	return history.Record{Kind: history.KindAgent, Time: t, Type: typ, Domain: domain, Value: history.Value{Holder: holder, Epoch: epoch}}
}

func fenced(t int64, typ, domain, holder string, epoch, seq uint64) history.Record {
	return history.Record{Kind: history.KindFenced, Time: t, Type: typ, Domain: domain, Value: history.Value{Holder: holder, Epoch: epoch, Seq: seq}}
}

func nemesis(t int64, typ, fault string) history.Record {
	return history.Record{Kind: history.KindNemesis, Time: t, Type: typ, Fault: fault}
}

func applied(t int64, node, domain string, epoch uint64) history.Record {
	return history.Record{Kind: history.KindApplied, Time: t, Node: node, Domain: domain, Value: history.Value{Epoch: epoch}}
}

func event(index uint64, seq uint32, typ, domain string, epoch uint64, holder string, kv ...string) observability.EventJSON {
	ev := observability.EventJSON{Index: index, Seq: seq, Type: typ, Domain: domain, Epoch: epoch, Holder: holder, Fields: []observability.KV{}}
	for i := 0; i+1 < len(kv); i += 2 {
		ev.Fields = append(ev.Fields, observability.KV{Key: kv[i], Value: kv[i+1]})
	}
	return ev
}

func grantEv(index uint64, domain string, epoch uint64, holder string) observability.EventJSON {
	return event(index, 0, evLeaseAcquired, domain, epoch, holder, "holder", holder, "epoch", fmt.Sprint(epoch), "reacquire", "false")
}

// promotionEvs is a decided promotion's events (allowed: the domain's new
// epoch and holder).
func promotionEvs(index uint64, domain string, epoch uint64, holder, cand, id string, allowed bool) []observability.EventJSON {
	evs := []observability.EventJSON{event(index, 0, "replication.promotion.validation_started", domain, epoch, holder, "requested_replica_id", cand, "request_id", id)}
	if !allowed {
		return append(evs, event(index, 1, evValidationFailed, domain, epoch, holder, "requested_replica_id", cand, "failed_invariant", "AU-1", "request_id", id))
	}
	return append(evs,
		event(index, 1, evValidationSucceeded, domain, epoch, holder, "requested_replica_id", cand, "request_id", id),
		event(index, 2, evTransitionCompleted, domain, epoch, holder, "new_primary_id", holder, "epoch", fmt.Sprint(epoch), "request_id", id))
}

func logs3(evs []observability.EventJSON) map[string][]observability.EventJSON {
	return map[string][]observability.EventJSON{"s1": evs, "s2": evs, "s3": evs}
}

func concat(parts ...[]observability.EventJSON) []observability.EventJSON {
	var out []observability.EventJSON
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func byName(rs []Result) map[string]Result {
	m := map[string]Result{}
	for _, r := range rs {
		m[r.Name] = r
	}
	return m
}

func expectValid(t *testing.T, r Result, want bool) {
	t.Helper()
	if r.Valid != want {
		t.Fatalf("%s: valid=%t, want %t: %s (counts %v)", r.Name, r.Valid, want, r.Details, r.Counts)
	}
	t.Logf("%s valid=%t: %s", r.Name, r.Valid, r.Details)
}

// ---- stored histories ----

func storedInput(t *testing.T, name string) Input {
	t.Helper()
	in, err := LoadInput(filepath.Join("..", "testdata", name+"-history.jsonl"), filepath.Join("..", "testdata", name+"-nodelogs"))
	if err != nil {
		t.Fatal(err)
	}
	if len(in.NodeLogs) != 3 {
		t.Fatalf("%s: loaded %d node logs, want 3", name, len(in.NodeLogs))
	}
	in.MinOpsAroundFaults = 3
	in.ExpectStaleRejections = true
	in.RequireHealedOpsPerDomain = true
	in.ArmedFailpoints = []string{"promote/after-commit-before-reply"}
	in.FailpointHits = map[string]int{"promote/after-commit-before-reply": 1}
	return in
}

func TestStoredGoodHistoryPassesEveryChecker(t *testing.T) {
	in := storedInput(t, "good")
	in.VizDir = t.TempDir()
	rs := CheckAll(in)
	if len(rs) != 9 {
		t.Fatalf("CheckAll returned %d results", len(rs))
	}
	for _, r := range rs {
		expectValid(t, r, true)
	}
	order := []string{NameLinearizable, NameOneHolderPerEpoch, NameEpochsMonotonic, NameNoLostWrites, NameNoOverlap, NameLiveness, NameIdenticalPrefixes, NamePolicyAntiFlapping, NameNoLostDBWrites}
	for i, r := range rs {
		if r.Name != order[i] {
			t.Errorf("result %d is %s, want %s", i, r.Name, order[i])
		}
	}
	lin := rs[0]
	if lin.Counts["resolved_from_logs"] != 1 || lin.Counts["dropped_unknown"] != 1 {
		t.Errorf("want the unknown promote resolved from the logs and the unknown read dropped: %v", lin.Counts)
	}
	if n := rs[6].Counts["duplicates_dropped"]; n != 2 {
		t.Errorf("s3's re-delivered events: %d dropped, want 2", n)
	}
	for _, d := range []string{"db1", "lock1"} {
		b, err := os.ReadFile(VizPath(in.VizDir, d))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "partition-leader") {
			t.Errorf("%s visualisation lacks the nemesis annotation", d)
		}
	}
}

func TestStoredBadHistoryFailsTheIntendedCheckers(t *testing.T) {
	rs := byName(CheckAll(storedInput(t, "bad")))
	// What bad-history.jsonl breaks, and a phrase each failure must name.
	wantInvalid := map[string]string{
		NameLinearizable:      `domain "db1" is not linearizable`,       // stale read after promotion p1 returned
		NameOneHolderPerEpoch: `domain "lock1" epoch 2 has two holders`, // agent a3 believes in a2's epoch
		NameEpochsMonotonic:   "went back after a restart",              // s3 applied e3, then e2
		NameNoLostWrites:      "lsn ≥ 30",                               // acknowledged advance to lsn 30 lost
		NameNoOverlap:         "accepted",                               // a1 past a2's grant; stale accept
	}
	for name, r := range rs {
		phrase, bad := wantInvalid[name]
		expectValid(t, r, !bad)
		if bad && !strings.Contains(r.Details, phrase) {
			t.Errorf("%s: details lack %q: %s", name, phrase, r.Details)
		}
	}
	if r := rs[NameNoOverlap]; r.Counts["overlaps"] != 1 || r.Counts["stale_accepts"] != 1 {
		t.Errorf("no-overlap: want 1 overlap and 1 stale accept: %v", r.Counts)
	}
}

// ---- 1. linearizable ----

func TestLinearizableStaleReadAfterPromotion(t *testing.T) {
	base := []history.Record{
		invoke(10, 0, history.FRead, "d", history.Value{}),
		complete(20, 0, history.OK, history.FRead, "d", history.Value{Epoch: 1, Holder: "r1"}),
		withReq(invoke(30, 1, history.FPromote, "d", history.Value{Holder: "r2", ExpectedEpoch: 1}), "p1"),
		withReq(complete(40, 1, history.OK, history.FPromote, "d", history.Value{Epoch: 2, Holder: "r2", Outcome: history.OutcomeAllowed}), "p1"),
		invoke(50, 0, history.FRead, "d", history.Value{}),
	}
	stale := append(base[:len(base):len(base)], complete(60, 0, history.OK, history.FRead, "d", history.Value{Epoch: 1, Holder: "r1"}))
	fresh := append(base[:len(base):len(base)], complete(60, 0, history.OK, history.FRead, "d", history.Value{Epoch: 2, Holder: "r2"}))
	r := Linearizable(Input{History: stale})
	expectValid(t, r, false)
	if !strings.Contains(r.Details, "read() -> e1 r1") {
		t.Errorf("details should name the stale read: %s", r.Details)
	}
	expectValid(t, Linearizable(Input{History: fresh}), true)
}

func TestLinearizableCompareAndSet(t *testing.T) {
	// Two promotions both allowed from epoch 1: only one can be.
	h := func(secondOutcome string, secondEpoch uint64) []history.Record {
		return []history.Record{
			withReq(invoke(10, 0, history.FPromote, "d", history.Value{Holder: "r2", ExpectedEpoch: 1}), "a"),
			withReq(invoke(11, 1, history.FPromote, "d", history.Value{Holder: "r3", ExpectedEpoch: 1}), "b"),
			withReq(complete(20, 0, history.OK, history.FPromote, "d", history.Value{Epoch: 2, Outcome: history.OutcomeAllowed}), "a"),
			withReq(complete(21, 1, history.OK, history.FPromote, "d", history.Value{Epoch: secondEpoch, Outcome: secondOutcome}), "b"),
		}
	}
	expectValid(t, Linearizable(Input{History: h(history.OutcomeAllowed, 2)}), false)
	expectValid(t, Linearizable(Input{History: h(history.OutcomeAllowed, 3)}), false) // expected 1, but e3 needs e2 first
	expectValid(t, Linearizable(Input{History: h(history.OutcomeDenied, 0)}), true)
}

func TestLinearizableUnknownOps(t *testing.T) {
	// An unknown promote may explain a later read of its effect ...
	h := []history.Record{
		invoke(5, 2, history.FRead, "d", history.Value{}),
		complete(8, 2, history.OK, history.FRead, "d", history.Value{Epoch: 1, Holder: "r1"}),
		withReq(invoke(10, 0, history.FPromote, "d", history.Value{Holder: "r2", ExpectedEpoch: 1}), "u"),
		withReq(complete(20, 0, history.Info, history.FPromote, "d", history.Value{}), "u"),
		invoke(30, 1, history.FRead, "d", history.Value{}),
		complete(40, 1, history.OK, history.FRead, "d", history.Value{Epoch: 2, Holder: "r2"}),
	}
	expectValid(t, Linearizable(Input{History: h}), true)
	// ... or it never happened.
	h2 := append(h[:4:4], invoke(30, 1, history.FRead, "d", history.Value{}),
		complete(40, 1, history.OK, history.FRead, "d", history.Value{Epoch: 1, Holder: "r1"}))
	expectValid(t, Linearizable(Input{History: h2}), true)
	// Resolved by request id: the logs say it was denied, so a read of its
	// effect is not linearizable.
	denied := logs3(concat([]observability.EventJSON{grantEv(1, "d", 1, "r1")}, promotionEvs(2, "d", 1, "r1", "r2", "u", false)))
	r := Linearizable(Input{History: h, NodeLogs: denied})
	expectValid(t, r, false)
	if r.Counts["resolved_from_logs"] != 1 {
		t.Errorf("want the unknown promote resolved: %v", r.Counts)
	}
	allowed := logs3(concat([]observability.EventJSON{grantEv(1, "d", 1, "r1")}, promotionEvs(2, "d", 2, "r2", "r2", "u", true)))
	expectValid(t, Linearizable(Input{History: h, NodeLogs: allowed}), true)
}

func TestLinearizableRetriedRequestTakesEffectOnce(t *testing.T) {
	// Attempt 1 times out, the retry (same request id) is answered with the
	// recorded outcome: one promotion, e1 -> e2, not e3.
	h := []history.Record{
		invoke(1, 9, history.FRead, "d", history.Value{}),
		complete(2, 9, history.OK, history.FRead, "d", history.Value{Epoch: 1, Holder: "r1"}),
		withReq(invoke(10, 0, history.FPromote, "d", history.Value{Holder: "r2", ExpectedEpoch: 1}), "x"),
		withReq(complete(20, 0, history.Info, history.FPromote, "d", history.Value{}), "x"),
		withReq(invoke(30, 1, history.FPromote, "d", history.Value{Holder: "r2", ExpectedEpoch: 1}), "x"),
		withReq(complete(40, 1, history.OK, history.FPromote, "d", history.Value{Epoch: 2, Outcome: history.OutcomeAllowed}), "x"),
		invoke(50, 2, history.FRead, "d", history.Value{}),
		complete(60, 2, history.OK, history.FRead, "d", history.Value{Epoch: 2, Holder: "r2"}),
	}
	r := Linearizable(Input{History: h})
	expectValid(t, r, true)
	if r.Counts["retried_requests"] != 1 {
		t.Errorf("want one retried request: %v", r.Counts)
	}
}

func TestLinearizableLocks(t *testing.T) {
	lockLogs := logs3([]observability.EventJSON{event(1, 0, evDomainCreated, "l", 0, "", "kind", "lock")})
	acq := func(p int, t0 int64, holder string, epoch uint64) []history.Record {
		return []history.Record{invoke(t0, p, history.FAcquire, "l", history.Value{Holder: holder}),
			complete(t0+5, p, history.OK, history.FAcquire, "l", history.Value{Epoch: epoch, Holder: holder})}
	}
	rel := func(p int, t0 int64, holder string, epoch uint64) []history.Record {
		return []history.Record{invoke(t0, p, history.FRelease, "l", history.Value{Holder: holder, Epoch: epoch}),
			complete(t0+5, p, history.OK, history.FRelease, "l", history.Value{Holder: holder, Epoch: epoch})}
	}
	good := concat2(acq(0, 10, "a", 1), rel(0, 20, "a", 1), acq(1, 30, "b", 2), rel(1, 40, "b", 2))
	expectValid(t, Linearizable(Input{History: good, NodeLogs: lockLogs}), true)
	// Two acquires returning the same epoch.
	expectValid(t, Linearizable(Input{History: concat2(acq(0, 10, "a", 1), acq(1, 30, "b", 1)), NodeLogs: lockLogs}), false)
	// Releasing twice (the second must have been fenced).
	expectValid(t, Linearizable(Input{History: concat2(acq(0, 10, "a", 1), rel(0, 20, "a", 1), rel(1, 30, "a", 1)), NodeLogs: lockLogs}), false)
	// Releasing an epoch it does not hold.
	expectValid(t, Linearizable(Input{History: concat2(acq(0, 10, "a", 1), acq(1, 20, "b", 2), rel(0, 30, "a", 1)), NodeLogs: lockLogs}), false)
}

func concat2(parts ...[]history.Record) []history.Record {
	var out []history.Record
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// A pathological history (many concurrent unknown promotions and a read no
// order explains) must time out and fail, never pass or hang.
func TestLinearizableTimeoutFails(t *testing.T) {
	var h []history.Record
	for p := 0; p < 40; p++ {
		h = append(h, withReq(invoke(int64(10+p), p, history.FPromote, "d", history.Value{Holder: fmt.Sprintf("r%d", p)}), fmt.Sprint("u", p)),
			withReq(complete(int64(1000+p), p, history.Info, history.FPromote, "d", history.Value{}), fmt.Sprint("u", p)))
	}
	h = append(h, invoke(5, 100, history.FRead, "d", history.Value{}), complete(6, 100, history.OK, history.FRead, "d", history.Value{Epoch: 1, Holder: "r0"}))
	for i := 0; i < 40; i++ {
		h = append(h, invoke(int64(2000+10*i), 101, history.FRead, "d", history.Value{}),
			complete(int64(2005+10*i), 101, history.OK, history.FRead, "d", history.Value{Epoch: 1000, Holder: "nobody"}))
	}
	start := time.Now()
	r := Linearizable(Input{History: h, LinearizabilityTimeout: 200 * time.Millisecond})
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("timeout not honoured: %v", el)
	}
	expectValid(t, r, false)
	if !strings.Contains(r.Details, "timed out") {
		t.Errorf("details: %s", r.Details)
	}
	t.Logf("%v", time.Since(start))
}

func TestLinearizablePerformance(t *testing.T) {
	h := genHistory(1, 4, 8, 8000, 0.005)
	start := time.Now()
	r := Linearizable(Input{History: h})
	el := time.Since(start)
	expectValid(t, r, true)
	t.Logf("%d records, %d ops over %d domains (max concurrency %d) checked in %v",
		len(h), r.Counts["ops"], r.Counts["domains"], r.Counts["max_concurrency_any_domain"], el)
	if el > 3*time.Second {
		t.Errorf("8k ops took %v (want well under a second)", el)
	}
	// A single corrupted read makes it non-linearizable, found quickly.
	for i := len(h) * 5 / 8; i < len(h); i++ {
		if h[i].F == history.FRead && h[i].Type == history.OK && h[i].Value.Epoch > 3 {
			h[i].Value.Epoch -= 2
			break
		}
	}
	start = time.Now()
	expectValid(t, Linearizable(Input{History: h}), false)
	t.Logf("corrupted history rejected in %v", time.Since(start))
}

func BenchmarkLinearizable8k(b *testing.B) {
	h := genHistory(1, 4, 8, 8000, 0.005)
	for b.Loop() {
		if r := Linearizable(Input{History: h}); !r.Valid {
			b.Fatal(r.Details)
		}
	}
}

func TestVisualizeWritesAnnotations(t *testing.T) {
	h := []history.Record{
		nemesis(5, history.NemesisStart, "pause-leader"),
		invoke(10, 0, history.FRead, "d", history.Value{}),
		complete(20, 0, history.OK, history.FRead, "d", history.Value{Epoch: 1, Holder: "r1"}),
		nemesis(25, history.NemesisStop, "pause-leader"),
		agent(26, history.AgentHolds, "d", "r1", 1),
	}
	var sb strings.Builder
	if err := Visualize(&sb, Input{History: h}, "d"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"pause-leader", "agent r1", "read()", "holds e1"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("visualisation lacks %q", want)
		}
	}
}

// ---- 2. one holder per epoch ----

func TestOneHolderPerEpoch(t *testing.T) {
	logs := logs3([]observability.EventJSON{grantEv(1, "l", 1, "a"), grantEv(2, "l", 2, "b")})
	bad := []history.Record{agent(10, history.AgentHolds, "l", "c", 2)}
	r := OneHolderPerEpoch(Input{History: bad, NodeLogs: logs})
	expectValid(t, r, false)
	if !strings.Contains(r.Details, `"b"`) || !strings.Contains(r.Details, `"c"`) {
		t.Errorf("details should name both holders: %s", r.Details)
	}
	good := []history.Record{agent(10, history.AgentHolds, "l", "b", 2), fenced(11, history.FencedAccept, "l", "b", 2, 1),
		invoke(12, 0, history.FRead, "l", history.Value{}), complete(13, 0, history.OK, history.FRead, "l", history.Value{Epoch: 2, Holder: "b"})}
	expectValid(t, OneHolderPerEpoch(Input{History: good, NodeLogs: logs}), true)
	// Two nodes' logs disagreeing on an epoch's holder.
	split := map[string][]observability.EventJSON{"s1": {grantEv(1, "l", 1, "a")}, "s2": {grantEv(1, "l", 1, "z")}}
	expectValid(t, OneHolderPerEpoch(Input{NodeLogs: split}), false)
	// A read response against an acquire response.
	resp := []history.Record{
		invoke(1, 0, history.FAcquire, "l", history.Value{Holder: "a"}), complete(2, 0, history.OK, history.FAcquire, "l", history.Value{Epoch: 5, Holder: "a"}),
		invoke(3, 1, history.FRead, "l", history.Value{}), complete(4, 1, history.OK, history.FRead, "l", history.Value{Epoch: 5, Holder: "q"}),
	}
	expectValid(t, OneHolderPerEpoch(Input{History: resp}), false)
}

// ---- 3. epochs monotonic ----

func TestEpochsMonotonic(t *testing.T) {
	good := []observability.EventJSON{grantEv(1, "l", 1, "a"), grantEv(2, "l", 2, "b"), grantEv(3, "l", 3, "a")}
	expectValid(t, EpochsMonotonic(Input{NodeLogs: logs3(good)}), true)
	reused := []observability.EventJSON{grantEv(1, "l", 1, "a"), grantEv(2, "l", 2, "b"), grantEv(3, "l", 2, "a")}
	expectValid(t, EpochsMonotonic(Input{NodeLogs: logs3(reused)}), false)
	// Nodes disagreeing on the grant sequence.
	other := []observability.EventJSON{grantEv(1, "l", 1, "a"), grantEv(3, "l", 2, "b")}
	expectValid(t, EpochsMonotonic(Input{NodeLogs: map[string][]observability.EventJSON{"s1": good, "s2": other}}), false)
	// A lagging node (a prefix) is fine.
	expectValid(t, EpochsMonotonic(Input{NodeLogs: map[string][]observability.EventJSON{"s1": good, "s2": good[:2]}}), true)
	// Applied state going back after a restart.
	back := []history.Record{applied(10, "s2", "l", 3), applied(20, "s2", "l", 2)}
	expectValid(t, EpochsMonotonic(Input{History: back, NodeLogs: logs3(good)}), false)
	forward := []history.Record{applied(10, "s2", "l", 2), applied(20, "s2", "l", 3)}
	expectValid(t, EpochsMonotonic(Input{History: forward, NodeLogs: logs3(good)}), true)
	// Applied epoch above what the node's final log ever granted.
	expectValid(t, EpochsMonotonic(Input{History: []history.Record{applied(10, "s2", "l", 4)}, NodeLogs: logs3(good)}), false)
}

// ---- 4. no lost acknowledged writes ----

func TestNoLostAcknowledgedWrites(t *testing.T) {
	logs := logs3(concat(
		[]observability.EventJSON{grantEv(1, "l", 1, "a")},
		promotionEvs(2, "d", 2, "r2", "r2", "p1", true),
		promotionEvs(3, "d", 2, "r2", "r3", "p2", false),
		[]observability.EventJSON{
			event(4, 0, evLeaseReleased, "l", 1, "a", "holder", "a", "epoch", "1"),
			event(5, 0, evWatermarkAdvanced, "d", 2, "r2", "lsn", "20", "visible_commit_id", "9"),
		}))
	acks := func(extra ...history.Record) []history.Record {
		h := []history.Record{
			invoke(1, 0, history.FAcquire, "l", history.Value{Holder: "a"}), complete(2, 0, history.OK, history.FAcquire, "l", history.Value{Epoch: 1}),
			withReq(invoke(3, 1, history.FPromote, "d", history.Value{Holder: "r2", ExpectedEpoch: 1}), "p1"),
			withReq(complete(4, 1, history.OK, history.FPromote, "d", history.Value{Epoch: 2, Outcome: history.OutcomeAllowed}), "p1"),
			withReq(invoke(5, 2, history.FPromote, "d", history.Value{Holder: "r3", ExpectedEpoch: 1}), "p2"),
			withReq(complete(6, 2, history.OK, history.FPromote, "d", history.Value{Outcome: history.OutcomeDenied}), "p2"),
			invoke(7, 0, history.FRelease, "l", history.Value{Holder: "a", Epoch: 1}), complete(8, 0, history.OK, history.FRelease, "l", history.Value{}),
			invoke(9, 3, history.FAdvance, "d", history.Value{Holder: "r2", Epoch: 2, Lsn: 15}), complete(10, 3, history.OK, history.FAdvance, "d", history.Value{}),
		}
		return append(h, extra...)
	}
	r := NoLostAcknowledgedWrites(Input{History: acks(), NodeLogs: logs})
	expectValid(t, r, true)
	if r.Counts["acknowledged"] != 5 {
		t.Errorf("acknowledged %d, want 5", r.Counts["acknowledged"])
	}
	cases := map[string][]history.Record{
		"advance beyond the log": {invoke(11, 3, history.FAdvance, "d", history.Value{Holder: "r2", Epoch: 2, Lsn: 25}), complete(12, 3, history.OK, history.FAdvance, "d", history.Value{})},
		"promote not in the log": {withReq(invoke(11, 4, history.FPromote, "d", history.Value{Holder: "r1", ExpectedEpoch: 2}), "p9"),
			withReq(complete(12, 4, history.OK, history.FPromote, "d", history.Value{Epoch: 3, Outcome: history.OutcomeAllowed}), "p9")},
		"denied acknowledged as allowed": {withReq(invoke(11, 4, history.FPromote, "d", history.Value{Holder: "r3", ExpectedEpoch: 1}), "p2"),
			withReq(complete(12, 4, history.OK, history.FPromote, "d", history.Value{Epoch: 2, Outcome: history.OutcomeAllowed}), "p2")},
		"acquire not in the log": {invoke(11, 5, history.FAcquire, "l", history.Value{Holder: "b"}), complete(12, 5, history.OK, history.FAcquire, "l", history.Value{Epoch: 2})},
		"release not in the log": {invoke(11, 5, history.FRelease, "l", history.Value{Holder: "b", Epoch: 2}), complete(12, 5, history.OK, history.FRelease, "l", history.Value{})},
	}
	for name, extra := range cases {
		t.Run(name, func(t *testing.T) {
			expectValid(t, NoLostAcknowledgedWrites(Input{History: acks(extra...), NodeLogs: logs}), false)
		})
	}
	// One node missing an acknowledged write is enough.
	partial := logs3(logs["s1"])
	partial["s3"] = logs["s1"][:len(logs["s1"])-1]
	expectValid(t, NoLostAcknowledgedWrites(Input{History: acks(), NodeLogs: partial}), false)
	// Acknowledged writes and no logs: not vacuously valid.
	expectValid(t, NoLostAcknowledgedWrites(Input{History: acks()}), false)
	// Failed and unknown writes need not be anywhere.
	unacked := acks(invoke(11, 6, history.FAcquire, "l", history.Value{Holder: "z"}), complete(12, 6, history.Info, history.FAcquire, "l", history.Value{}),
		invoke(13, 7, history.FAdvance, "d", history.Value{Holder: "r2", Epoch: 2, Lsn: 99}), complete(14, 7, history.Fail, history.FAdvance, "d", history.Value{}))
	expectValid(t, NoLostAcknowledgedWrites(Input{History: unacked, NodeLogs: logs}), true)
}

// ---- 5. no overlapping primaries ----

func TestNoOverlappingPrimariesBeliefs(t *testing.T) {
	h := func(lostAt int64) []history.Record {
		return []history.Record{
			agent(10, history.AgentHolds, "l", "a", 1),
			invoke(50, 1, history.FAcquire, "l", history.Value{Holder: "b"}),
			complete(60, 1, history.OK, history.FAcquire, "l", history.Value{Epoch: 2, Holder: "b"}),
			agent(lostAt, history.AgentLost, "l", "a", 1),
			agent(61, history.AgentHolds, "l", "b", 2),
		}
	}
	r := NoOverlappingPrimaries(Input{History: h(61)})
	expectValid(t, r, false)
	if !strings.Contains(r.Details, "past 60") {
		t.Errorf("details: %s", r.Details)
	}
	expectValid(t, NoOverlappingPrimaries(Input{History: h(60)}), true) // gave up by the grant's return: no slack needed
	expectValid(t, NoOverlappingPrimaries(Input{History: h(45)}), true)
	// Never gave up at all.
	expectValid(t, NoOverlappingPrimaries(Input{History: h(60)[:3]}), false)
	// A promotion's return ends beliefs in older epochs too.
	p := []history.Record{
		agent(10, history.AgentHolds, "d", "r1", 1),
		withReq(invoke(20, 0, history.FPromote, "d", history.Value{Holder: "r2", ExpectedEpoch: 1}), "p"),
		withReq(complete(30, 0, history.OK, history.FPromote, "d", history.Value{Epoch: 2, Outcome: history.OutcomeAllowed}), "p"),
		agent(31, history.AgentLost, "d", "r1", 1),
	}
	expectValid(t, NoOverlappingPrimaries(Input{History: p}), false)
}

func TestNoOverlappingPrimariesFencing(t *testing.T) {
	base := []history.Record{fenced(10, history.FencedAccept, "l", "a", 1, 1), fenced(20, history.FencedAccept, "l", "b", 2, 1)}
	staleAccept := append(base[:2:2], fenced(30, history.FencedAccept, "l", "a", 1, 2))
	staleReject := append(base[:2:2], fenced(30, history.FencedReject, "l", "a", 1, 2))
	expectValid(t, NoOverlappingPrimaries(Input{History: staleAccept}), false)
	expectValid(t, NoOverlappingPrimaries(Input{History: staleReject}), true)
	r := NoOverlappingPrimaries(Input{History: staleReject, ExpectStaleRejections: true})
	expectValid(t, r, true)
	if r.Counts["stale_rejects"] != 1 {
		t.Errorf("counts %v", r.Counts)
	}
	// A pause-holder run that never saw a stale write proves nothing.
	expectValid(t, NoOverlappingPrimaries(Input{History: base, ExpectStaleRejections: true}), false)
	// Epochs are per domain.
	other := append(base[:2:2], fenced(30, history.FencedAccept, "m", "a", 1, 1))
	expectValid(t, NoOverlappingPrimaries(Input{History: other}), true)
}

// ---- 6. liveness ----

func TestLiveness(t *testing.T) {
	var h []history.Record
	read := func(p int, t0 int64) {
		h = append(h, invoke(t0, p, history.FRead, "d", history.Value{}), complete(t0+1, p, history.OK, history.FRead, "d", history.Value{Epoch: 1, Holder: "a"}))
	}
	read(0, 10)
	read(0, 20)
	h = append(h, nemesis(30, history.NemesisStart, "kill-leader"))
	read(0, 40)
	h = append(h, nemesis(50, history.NemesisStop, "kill-leader"))
	read(0, 60)
	in := Input{History: h, MinOpsAroundFaults: 2, ArmedFailpoints: []string{"promote/validated"}, FailpointHits: map[string]int{"promote/validated": 3}}
	r := Liveness(in)
	expectValid(t, r, false) // one op after healing
	if !strings.Contains(r.Details, "1 ok ops after") {
		t.Errorf("details: %s", r.Details)
	}
	read(0, 70)
	in.History = h
	expectValid(t, Liveness(in), true)
	in.FailpointHits = map[string]int{}
	expectValid(t, Liveness(in), false) // armed, never fired
	in.FailpointHits = map[string]int{"promote/validated": 1}
	in.History = h[:len(h)-4] // the fault never healed
	in.History = append(in.History[:6:6], in.History[7:]...)
	expectValid(t, Liveness(in), false)
	// After healing, each domain needs a read and a write.
	in.History, in.MinOpsAroundFaults, in.RequireHealedOpsPerDomain = h, 1, true
	expectValid(t, Liveness(in), false)
	in.History = append(h, invoke(80, 1, history.FRenew, "d", history.Value{Holder: "a", Epoch: 1}), complete(81, 1, history.OK, history.FRenew, "d", history.Value{}))
	expectValid(t, Liveness(in), true)
}

func TestLivenessHandoverBound(t *testing.T) {
	const ms = int64(time.Millisecond)
	pause := func(t0, t1 int64, holder string) []history.Record {
		start := nemesis(t0, history.NemesisStart, "pause-holder")
		start.Domain, start.Value.Holder = "f", holder
		return []history.Record{start, nemesis(t1, history.NemesisStop, "pause-holder")}
	}
	base := []history.Record{agent(0, history.AgentHolds, "f", "a", 1)}
	in := Input{HandoverBound: 2500 * time.Millisecond}
	// b takes the domain 1.2 s into a 3.5 s pause of a: handed over.
	in.History = concat2(base, pause(1000*ms, 4500*ms, "a"), []history.Record{
		agent(1000*ms+2000*ms, history.AgentLost, "f", "a", 1), agent(2200*ms, history.AgentHolds, "f", "b", 2)})
	r := Liveness(in)
	expectValid(t, r, true)
	if r.Counts["handovers"] != 1 || r.Counts["max_handover_ms"] != 1200 {
		t.Errorf("counts %v", r.Counts)
	}
	// An ok acquire by another holder counts too.
	in.History = concat2(base, pause(1000*ms, 4500*ms, "a"), []history.Record{
		invoke(1500*ms, 7, history.FAcquire, "f", history.Value{Holder: "c"}),
		complete(1600*ms, 7, history.OK, history.FAcquire, "f", history.Value{Holder: "c", Epoch: 2})})
	expectValid(t, Liveness(in), true)
	// Nobody got it until after the pause: someone kept a's lease alive.
	in.History = concat2(base, pause(1000*ms, 4500*ms, "a"), []history.Record{agent(5600*ms, history.AgentHolds, "f", "b", 2)})
	r = Liveness(in)
	expectValid(t, r, false)
	if !strings.Contains(r.Details, `holder "a" of "f" stopped renewing`) || !strings.Contains(r.Details, `first to "b" 4.6s after`) {
		t.Errorf("details: %s", r.Details)
	}
	// a's own re-acquire is no handover.
	in.History = concat2(base, pause(1000*ms, 4500*ms, "a"), []history.Record{agent(2000*ms, history.AgentHolds, "f", "a", 1)})
	expectValid(t, Liveness(in), false)
	// Nothing to check fails: a pause shorter than the bound, or of a
	// holder that did not hold the domain.
	in.History = concat2(base, pause(1000*ms, 2000*ms, "a"))
	expectValid(t, Liveness(in), false)
	in.History = concat2(base, pause(1000*ms, 4500*ms, "z"))
	r = Liveness(in)
	expectValid(t, r, false)
	if r.Counts["paused_not_holding"] != 1 {
		t.Errorf("counts %v", r.Counts)
	}
	// Without a bound, none of this is checked.
	in.HandoverBound = 0
	expectValid(t, Liveness(in), true)
}

// ---- 7. identical prefixes ----

func TestIdenticalPrefixes(t *testing.T) {
	evs := []observability.EventJSON{grantEv(1, "l", 1, "a"), event(2, 0, evLeaseReleased, "l", 1, "a", "holder", "a", "epoch", "1"), grantEv(3, "l", 2, "b")}
	expectValid(t, IdenticalPrefixes(Input{NodeLogs: map[string][]observability.EventJSON{"s1": evs, "s2": evs[:2], "s3": evs}}), true)
	diverged := []observability.EventJSON{evs[0], event(2, 0, evLeaseReleased, "l", 1, "a", "holder", "a", "epoch", "9")}
	r := IdenticalPrefixes(Input{NodeLogs: map[string][]observability.EventJSON{"s1": evs, "s2": diverged}})
	expectValid(t, r, false)
	if !strings.Contains(r.Details, "node s2 diverges from s1 at event 1") {
		t.Errorf("details: %s", r.Details)
	}
	// Re-delivered duplicates are dropped; a conflicting duplicate or an
	// out-of-order event fails.
	redelivered := append(evs[:3:3], evs[1], evs[2])
	r = IdenticalPrefixes(Input{NodeLogs: map[string][]observability.EventJSON{"s1": evs, "s2": redelivered}})
	expectValid(t, r, true)
	if r.Counts["duplicates_dropped"] != 2 {
		t.Errorf("counts %v", r.Counts)
	}
	conflicting := append(evs[:3:3], diverged[1])
	expectValid(t, IdenticalPrefixes(Input{NodeLogs: map[string][]observability.EventJSON{"s1": evs, "s2": conflicting}}), false)
	outOfOrder := []observability.EventJSON{evs[0], evs[2], event(2, 5, evLeaseReleased, "l", 1, "a")}
	expectValid(t, IdenticalPrefixes(Input{NodeLogs: map[string][]observability.EventJSON{"s1": outOfOrder}}), false)
	expectValid(t, IdenticalPrefixes(Input{}), false)
}

func TestLoadInputMissingFiles(t *testing.T) {
	if _, err := LoadInput(filepath.Join(t.TempDir(), "nope.jsonl"), ""); err == nil {
		t.Fatal("want an error for a missing history")
	}
	dir := t.TempDir()
	hp := filepath.Join(dir, "h.jsonl")
	if err := os.WriteFile(hp, []byte(`{"kind":"op","time":1,"process":0,"type":"invoke","f":"read","domain":"d"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "s1.events"), []byte("{not json\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadInput(hp, dir); err == nil {
		t.Fatal("want an error for a corrupt event log")
	}
}

// Soak seed 527983946 (5 nodes; pause leader ×3, pause holder) failed only
// because porcupine timed out on domain db after 10 s: 745 operations over
// 14 lanes, most of them promotion denials and unknown promotions that no
// node had committed, each left open to the end of the history. A denial
// changes no state in any state and an attempt in no node's final log never
// happened, so both are now left out of the search. The stored history (the
// db domain's records and s1's db events) must check as linearizable.
func TestStoredSoakHistoryDenialsDoNotBlowUpTheSearch(t *testing.T) {
	dir := t.TempDir()
	gunzip(t, filepath.Join("..", "testdata", "soak-527983946-history.jsonl.gz"), filepath.Join(dir, "history.jsonl"))
	os.Mkdir(filepath.Join(dir, "nodes"), 0o755)
	gunzip(t, filepath.Join("..", "testdata", "soak-527983946-nodelogs", "s1.events.gz"), filepath.Join(dir, "nodes", "s1.events"))
	in, err := LoadInput(filepath.Join(dir, "history.jsonl"), filepath.Join(dir, "nodes"))
	if err != nil {
		t.Fatal(err)
	}
	r := Linearizable(in)
	if !r.Valid {
		t.Fatalf("stored soak history: %s", r.Details)
	}
	if r.Counts["denied_unconstrained"] == 0 || r.Counts["unknown_never_committed"] == 0 {
		t.Fatalf("the history should have denials and never-committed unknowns left out: %v", r.Counts)
	}
	t.Logf("%s %v", r.Details, r.Counts)
}

func gunzip(t *testing.T, from, to string) {
	t.Helper()
	f, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
