package fsm

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"
)

// authorityTriple is a domain's (epoch, holder, released) as a comparable value.
type authorityTriple struct {
	epoch    uint64
	holder   string
	released bool
}

func authorityIn(h *harness, dom string) authorityTriple {
	d := h.domain(dom)
	return authorityTriple{d.Epoch, d.Holder, d.Released}
}

// P6-A2 (AU-2): a promotion is atomic — exactly one log entry. The intent
// before it changes no authority; the PromotionAttempt entry changes the
// epoch and the holder together, in its one apply, and nothing after it
// undoes that: its record is permanent (P6-F2: committed ⇒ the new
// authority stands), even when the bounded ring of denied records is
// overrun behind it and a stale attempt follows.
func TestPromotionIsExactlyOneEntry(t *testing.T) {
	h, attempt := readyToPromote(t)
	attempt.Request.ExpectedEpoch = u64p(1)
	before := authorityIn(h, "db1")
	h.ok(intentCmd(attempt))
	if got := authorityIn(h, "db1"); got != before {
		t.Fatalf("the intent changed authority: %+v → %+v", before, got)
	}
	res := h.ok(attemptCmd(attempt))
	if got := authorityIn(h, "db1"); got != (authorityTriple{2, "n2", false}) || res.Epoch != 2 || res.Holder != "n2" {
		t.Fatalf("after the one attempt entry: %+v (result epoch %d holder %s), want epoch 2 held by n2", got, res.Epoch, res.Holder)
	}
	if d := h.domain("db1"); d.EpochIndex != h.index {
		t.Fatalf("epoch index %d, want the attempt's own index %d", d.EpochIndex, h.index)
	}
	allowed := res.Attempt
	// Overrun the denied ring (64) with stale attempts: each is denied
	// (expected epoch 1 at epoch 2) and none touches authority.
	for i := range 80 {
		a := cloneAttempt(attempt)
		a.Request.RequestId = "stale-" + u(uint64(i))
		if r := h.ok(attemptCmd(a)); r.Attempt.GetDecision().GetAllowed() {
			t.Fatalf("stale attempt %d allowed", i)
		}
	}
	if got := authorityIn(h, "db1"); got != (authorityTriple{2, "n2", false}) {
		t.Fatalf("authority after stale attempts: %+v", got)
	}
	if rec, ok := h.f.Attempt("db1", attempt.Request.RequestId); !ok || !proto.Equal(rec, allowed) {
		t.Fatalf("the allowed record is gone or changed after the denied ring overran: %v %t", rec, ok)
	}
}

// P6-F2 (AU-2, AU-10): crash safety at the state machine. A "crash"
// before the attempt commits leaves a state (here: a snapshot taken after
// the intent, restored into a fresh FSM, as a restarted node would) in
// which nothing changed but the durable intent; the abort a new leader
// writes changes no authority either. A state taken after the attempt
// committed restores with the new authority standing, byte for byte.
func TestCrashSafeBeforeAndAfterCommit(t *testing.T) {
	h, attempt := readyToPromote(t)
	before := authorityIn(h, "db1")
	h.ok(intentCmd(attempt))
	mid, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	h.ok(attemptCmd(attempt))
	after, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}

	crashed := &harness{t: t, f: New(), index: h.index - 1}
	if err := crashed.f.Restore(bytes.NewReader(mid)); err != nil {
		t.Fatal(err)
	}
	if got := authorityIn(crashed, "db1"); got != before {
		t.Fatalf("restored before commit: %+v, want unchanged %+v", got, before)
	}
	if p := crashed.f.PendingIntents(); len(p) != 1 || p[0].RequestID != attempt.Request.RequestId {
		t.Fatalf("restored before commit: pending %+v, want the one durable intent", p)
	}
	if _, ok := crashed.f.Attempt("db1", attempt.Request.RequestId); ok {
		t.Fatal("restored before commit: the undecided attempt has a record")
	}
	crashed.ok(promotionAbortCmd("db1", attempt.Request.RequestId))
	if got := authorityIn(crashed, "db1"); got != before || len(crashed.f.PendingIntents()) != 0 {
		t.Fatalf("after the abort: %+v pending %v, want unchanged and nothing pending", got, crashed.f.PendingIntents())
	}

	restarted := New()
	if err := restarted.Restore(bytes.NewReader(after)); err != nil {
		t.Fatal(err)
	}
	d, _ := restarted.Domain("db1")
	if d.Epoch != 2 || d.Holder != "n2" || len(d.Pending) != 0 {
		t.Fatalf("restored after commit: epoch %d holder %s pending %v, want epoch 2 held by n2", d.Epoch, d.Holder, d.Pending)
	}
	want, _ := h.f.Attempt("db1", attempt.Request.RequestId)
	if got, ok := restarted.Attempt("db1", attempt.Request.RequestId); !ok || !proto.Equal(got, want) {
		t.Fatal("restored after commit: the record differs")
	}
	if a, b := mustHash(t, h.f), mustHash(t, restarted); a != b {
		t.Fatal("restored after commit: state hash differs")
	}
}
