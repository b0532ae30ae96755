package fsm

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
)

func eventTypes(evs []*pb.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.Type
	}
	return out
}

func field(ev *pb.Event, key string) string {
	for _, f := range ev.Fields {
		if f.Key == key {
			return f.Value
		}
	}
	return "<absent>"
}

// An allowed attempt emits AeroDB's six events in lifecycle order, all at
// the entry's index; a denied one stops at validation_failed with the
// failed invariant and reason.
// Readiness: P6-O1 (every attempt emits its events); docs/READINESS.md.
func TestPromotionEvents(t *testing.T) {
	h, attempt := readyToPromote(t)
	denied := cloneAttempt(attempt)
	denied.Request.RequestId = "too-early"
	denied.Lease.State = pb.LeaseState_LEASE_STATE_HELD
	res := h.ok(attemptCmd(denied))
	evs, _, err := h.f.EventsFrom(res.Index, 100)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{EventPromotionRequested, EventPromotionValidationStarted, EventPromotionValidationFailed}
	if !slices.Equal(eventTypes(evs), want) {
		t.Fatalf("denied attempt events %v, want %v", eventTypes(evs), want)
	}
	if f := evs[2]; field(f, "failure_reason") != "PrimaryStillActive" || field(f, "failed_invariant") != "AU-1 [P6-A1]" ||
		field(f, "requested_replica_id") != "n2" {
		t.Fatalf("validation_failed fields %v", f.Fields)
	}

	res = h.ok(attemptCmd(attempt))
	evs, _, _ = h.f.EventsFrom(res.Index, 100)
	want = []string{EventPromotionRequested, EventPromotionValidationStarted, EventPromotionValidationSucceeded,
		EventPromotionTransitionStarted, EventPromotionTransitionCompleted}
	if !slices.Equal(eventTypes(evs), want) {
		t.Fatalf("allowed attempt events %v, want %v", eventTypes(evs), want)
	}
	for i, ev := range evs {
		if ev.Index != res.Index || ev.Seq != uint32(i) || ev.Domain != "db1" {
			t.Fatalf("event %d: index %d seq %d domain %q", i, ev.Index, ev.Seq, ev.Domain)
		}
	}
	if last := evs[len(evs)-1]; field(last, "new_primary_id") != "n2" || last.Epoch != 2 {
		t.Fatalf("transition_completed %v", last)
	}
	if field(evs[0], "current_primary_id") != "n1" {
		t.Fatalf("requested %v", evs[0].Fields)
	}
}

// A rejected command emits nothing: bad input changes nothing, not even
// the event log.
func TestRejectedCommandEmitsNothing(t *testing.T) {
	h, _ := readyToPromote(t)
	before := h.index
	h.fails(advanceCmd(wmAdv("db1", "n9", 1, 500, []byte{1}, 1)), ErrFenced)
	evs, _, _ := h.f.EventsFrom(before+1, 100)
	if len(evs) != 0 {
		t.Fatalf("rejected command emitted %v", eventTypes(evs))
	}
}

// Watchers wake on new events without polling; retention drops the oldest
// and a watch from before them is told so.
func TestEventsNotifyAndCompaction(t *testing.T) {
	f := New()
	f.ApplyCommand(1, 1, createLock("l0"))
	evs, wake, err := f.EventsFrom(2, 10)
	if err != nil || len(evs) != 0 {
		t.Fatalf("nothing after index 1: %v %v", evs, err)
	}
	select {
	case <-wake:
		t.Fatal("woke before anything happened")
	default:
	}
	f.ApplyCommand(2, 1, createLock("l1"))
	select {
	case <-wake:
	default:
		t.Fatal("no wake-up after an event")
	}
	last := uint64(2*EventRetention + 10)
	for i := uint64(3); i <= last; i++ {
		f.ApplyCommand(i, 1, createLock(lockName(i)))
	}
	if _, _, err := f.EventsFrom(1, 10); !errors.Is(err, ErrCompacted) {
		t.Fatalf("from a dropped index: %v", err)
	}
	if evs, _, err := f.EventsFrom(last-EventRetention+1, 2*EventRetention); err != nil || len(evs) != EventRetention {
		t.Fatalf("the last %d events must be retained: %d, %v", EventRetention, len(evs), err)
	}
	evs, _, err = f.EventsFrom(last, 10)
	if err != nil || len(evs) != 1 {
		t.Fatalf("latest event: %v %v", evs, err)
	}
	// The retained log survives snapshot and restore byte for byte.
	snap := mustSnapshot(t, f)
	g := New()
	if err := g.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mustSnapshot(t, g), snap) {
		t.Fatal("restored event log differs")
	}
	if _, _, err := g.EventsFrom(1, 10); !errors.Is(err, ErrCompacted) {
		t.Fatalf("compaction point lost on restore: %v", err)
	}
}

func lockName(i uint64) string { return "l" + u(i) }

// A reader can resume inside an entry: a 4096-advance batch emits 4096
// events at one index, more than one read returns.
func TestEventsAfterResumesInsideAnEntry(t *testing.T) {
	f := New()
	idx := uint64(0)
	next := func(cmd *pb.Command) { idx++; f.ApplyCommand(idx, 1, cmd) }
	var advs []*pb.WatermarkAdvance
	for i := range 3 {
		name := "db" + u(uint64(i))
		next(&pb.Command{Body: &pb.Command_CreateDomain{CreateDomain: &pb.CreateDomain{Name: name,
			Kind: pb.DomainKind_DOMAIN_KIND_AERODB, Policy: manualPolicy()}}})
		next(registerCmd(name, "n1"))
		next(assignCmd(name, "n1"))
		advs = append(advs, wmAdv(name, "n1", 1, 10, []byte{1}, 1))
	}
	next(advanceCmd(advs...))
	var got []*pb.Event
	from, after := idx, int64(-1)
	for {
		evs, _, err := f.EventsAfter(from, after, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		got = append(got, evs...)
		from, after = evs[0].Index, int64(evs[0].Seq)
	}
	if len(got) != 3 || got[0].Seq != 0 || got[2].Seq != 2 {
		t.Fatalf("resumed reads gave %d events", len(got))
	}
}

func intentCmd(a *pb.PromotionAttempt) *pb.Command {
	return &pb.Command{Body: &pb.Command_PromotionIntent{PromotionIntent: &pb.PromotionIntent{Request: a.Request}}}
}

func promotionAbortCmd(domain, id string) *pb.Command {
	return &pb.Command{Body: &pb.Command_PromotionAbort{PromotionAbort: &pb.PromotionAbort{Domain: domain, RequestId: id,
		LastKnownState: "PromotionRequested"}}}
}

// An intent announces the request once; the attempt that follows decides it
// without announcing it again; the intent is then no longer pending.
func TestIntentThenAttempt(t *testing.T) {
	h, attempt := readyToPromote(t)
	first := h.index + 1
	h.ok(intentCmd(attempt))
	h.unchanged(intentCmd(attempt)) // idempotent
	if p := h.f.PendingIntents(); len(p) != 1 || p[0].RequestID != attempt.Request.RequestId || p[0].Candidate != "n2" {
		t.Fatalf("pending %+v", p)
	}
	h.ok(attemptCmd(attempt))
	evs, _, _ := h.f.EventsFrom(first, 100)
	want := []string{EventPromotionRequested, EventPromotionValidationStarted, EventPromotionValidationSucceeded,
		EventPromotionTransitionStarted, EventPromotionTransitionCompleted}
	if !slices.Equal(eventTypes(evs), want) {
		t.Fatalf("events %v, want %v", eventTypes(evs), want)
	}
	if len(h.f.PendingIntents()) != 0 {
		t.Fatal("decided attempt still pending")
	}
	// An intent for an id already decided changes nothing.
	if res := h.unchanged(intentCmd(attempt)); !res.Duplicate {
		t.Fatalf("intent after the decision: %+v", res)
	}
}

// An abort records aborted_on_crash for a pending request and forgets it;
// an abort of nothing pending is refused and changes nothing.
func TestAbortPendingIntent(t *testing.T) {
	h, attempt := readyToPromote(t)
	h.fails(promotionAbortCmd("db1", attempt.Request.RequestId), ErrPrecondition)
	h.ok(intentCmd(attempt))
	res := h.ok(promotionAbortCmd("db1", attempt.Request.RequestId))
	evs, _, _ := h.f.EventsFrom(res.Index, 10)
	if len(evs) != 1 || evs[0].Type != EventPromotionAbortedOnCrash || field(evs[0], "last_known_state") != "PromotionRequested" ||
		field(evs[0], "requested_replica_id") != "n2" {
		t.Fatalf("abort events %v", evs)
	}
	if d := h.domain("db1"); d.Epoch != 1 || len(d.Pending) != 0 {
		t.Fatalf("after abort: epoch %d pending %d", d.Epoch, len(d.Pending))
	}
	h.fails(promotionAbortCmd("db1", attempt.Request.RequestId), ErrPrecondition)
}

func TestPendingIntentsBounded(t *testing.T) {
	h, attempt := readyToPromote(t)
	for i := range MaxPending {
		a := cloneAttempt(attempt)
		a.Request.RequestId = "p" + u(uint64(i))
		h.ok(intentCmd(a))
	}
	a := cloneAttempt(attempt)
	a.Request.RequestId = "one-too-many"
	h.fails(intentCmd(a), ErrPrecondition)
}

func TestRegisterServerAndNotes(t *testing.T) {
	h, _ := readyToPromote(t)
	res := h.ok(&pb.Command{Body: &pb.Command_RegisterServer{RegisterServer: &pb.RegisterServer{Id: "s4", GrpcAddress: "127.0.0.1:8004"}}})
	if got := h.f.ServerAddresses()["s4"]; got != "127.0.0.1:8004" {
		t.Fatalf("server directory %v", h.f.ServerAddresses())
	}
	h.fails(&pb.Command{Body: &pb.Command_RegisterServer{RegisterServer: &pb.RegisterServer{Id: "s5"}}}, ErrInvalid)
	h.ok(&pb.Command{Body: &pb.Command_Note{Note: &pb.Note{Kind: "lease_expired", Domain: "db1",
		Fields: []*pb.Observed{{Key: "holder", Value: "n1"}}}}})
	h.ok(&pb.Command{Body: &pb.Command_Note{Note: &pb.Note{Kind: "leader_changed"}}})
	h.fails(&pb.Command{Body: &pb.Command_Note{Note: &pb.Note{Kind: "gossip"}}}, ErrInvalid)
	h.fails(&pb.Command{Body: &pb.Command_Note{Note: &pb.Note{Kind: "lease_expired", Domain: "nope"}}}, ErrNotFound)
	evs, _, _ := h.f.EventsFrom(res.Index, 10)
	want := []string{EventServerRegistered, EventLeaseExpired, EventLeaderChanged}
	if !slices.Equal(eventTypes(evs), want) {
		t.Fatalf("events %v, want %v", eventTypes(evs), want)
	}
	if evs[1].Domain != "db1" || evs[1].Epoch != 1 || field(evs[1], "holder") != "n1" {
		t.Fatalf("lease_expired event %v", evs[1])
	}
	// The directory survives snapshot and restore.
	g := New()
	if err := g.Restore(bytes.NewReader(mustSnapshot(t, h.f))); err != nil {
		t.Fatal(err)
	}
	if g.ServerAddresses()["s4"] != "127.0.0.1:8004" {
		t.Fatal("server directory lost on restore")
	}
}
