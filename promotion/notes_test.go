package promotion

import (
	"fmt"
	"strings"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
)

// activeTimers counts the fake clock's armed timers.
func (c *fakeClock) activeTimers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.stopped {
			n++
		}
	}
	return n
}

// eventsSince renders the events of entries after index from, as
// "index type domain [fields]".
func eventsSince(t *testing.T, f *fsm.FSM, from uint64) []string {
	t.Helper()
	evs, _, err := f.EventsAfter(from+1, -1, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ev := range evs {
		var fields []string
		for _, o := range ev.Fields {
			fields = append(fields, o.Key+"="+o.Value)
		}
		out = append(out, fmt.Sprintf("%d %s %s %s", ev.Index-from, ev.Type, ev.Domain, strings.Join(fields, ",")))
	}
	return out
}

// Readiness §9 (issue 17): a manual domain's steady state has no timers and
// no log writes. The leader observes an expired lease and fencing
// rejections while serving requests that write nothing; the log does not
// grow however long the (fake) clock runs, and the observations reach the
// log ahead of the next write, in order, the fencing rejections coalesced.
func TestIdleLeaderWritesNothing(t *testing.T) {
	r := newRig(t, false)
	f := r.svc.fsm
	start := f.LastIndex()
	if n := r.clock.activeTimers(); n != 0 {
		t.Fatalf("a manual domain's leader armed %d timers", n)
	}
	// Idle: nothing is asked, nothing is written.
	for range 100 {
		r.clock.Advance(testTTL / 3)
	}
	// Requests that write nothing but make observations: the lease is
	// found expired, and three renewals at a stale epoch are fenced.
	if _, err := r.svc.Renew("db1", "n1", 1); err == nil {
		t.Fatal("renewal of an expired lease succeeded")
	}
	for range 3 {
		if _, err := r.svc.Renew("db1", "n1", 0); err == nil {
			t.Fatal("stale renewal succeeded")
		}
	}
	if _, err := r.svc.Renew("db1", "n2", 1); err == nil {
		t.Fatal("renewal by a non-holder succeeded")
	}
	for range 100 {
		r.clock.Advance(testTTL / 3)
	}
	if got := f.LastIndex(); got != start {
		t.Fatalf("the idle leader's log grew from %d to %d: %q", start, got, eventsSince(t, f, start))
	}
	if n := r.clock.activeTimers(); n != 0 {
		t.Fatalf("%d timers armed in steady state", n)
	}
	if p, d := r.svc.PendingNotes(); p != 2 || d != 0 {
		t.Fatalf("pending notes %d (dropped %d), want 2: the expiry and one coalesced fencing key", p, d)
	}
	// The next write carries them, ahead of itself.
	r.ok(r.svc.RegisterMember(r.ctx, &pb.RegisterMember{Domain: "db1", MemberId: "n4"}))
	got := eventsSince(t, f, start)
	want := []string{
		"1 " + fsm.EventLeaseExpired + " db1 ",
		"2 " + fsm.EventFencingRejected + " db1 kind=renewal,count=4",
	}
	if len(got) != 3 || fmt.Sprint(got[:2]) != fmt.Sprint(want) || !strings.HasPrefix(got[2], "3 ") {
		t.Fatalf("entries after the idle period:\n%s\nwant the two notes, then the write", strings.Join(got, "\n"))
	}
	if p, _ := r.svc.PendingNotes(); p != 0 {
		t.Fatalf("%d notes left pending after a write", p)
	}
	// Nothing pending: a flush writes nothing.
	idx := f.LastIndex()
	r.svc.FlushNotes(r.ctx)
	if f.LastIndex() != idx {
		t.Fatal("an empty flush wrote an entry")
	}
}

// A reader that needs the observations (a linearizable read calls
// FlushNotes) gets them without any other write; a follower notes nothing.
func TestNotesFlushedForAReader(t *testing.T) {
	r := newRig(t, false)
	f := r.svc.fsm
	r.clock.Advance(2 * testTTL)
	if _, err := r.svc.Renew("db1", "n1", 1); err == nil {
		t.Fatal("renewal of an expired lease succeeded")
	}
	start := f.LastIndex()
	r.svc.FlushNotes(r.ctx)
	if got := eventsSince(t, f, start); fmt.Sprint(got) != fmt.Sprint([]string{"1 " + fsm.EventLeaseExpired + " db1 "}) {
		t.Fatalf("flushed: %q", got)
	}
	r.svc.StepDown()
	r.svc.leaseExpired("db1")
	r.svc.fenced("db1", "renewal")
	if p, _ := r.svc.PendingNotes(); p != 0 {
		t.Fatalf("a follower holds %d notes", p)
	}
}

// The notebook is bounded: past noteQueue ordered notes and noteKinds
// fencing keys, observations are dropped and counted, never queued.
func TestNotebookBounded(t *testing.T) {
	n := newNotebook()
	for i := range noteQueue + 5 {
		n.note(noteLeaseExpired, fmt.Sprint("d", i))
	}
	for i := range noteKinds + 7 {
		n.fencedOnce(fmt.Sprint("d", i), "renewal")
		n.fencedOnce(fmt.Sprint("d", i), "renewal") // a kept key coalesces
	}
	if got := n.dropped.Load(); got != 5+2*7 {
		t.Fatalf("dropped %d, want 19", got)
	}
	notes := n.take()
	if len(notes) != noteQueue+noteKinds {
		t.Fatalf("took %d notes", len(notes))
	}
	if last := notes[len(notes)-1]; last.Kind != noteFencingRejected || last.Fields[1].Value != "2" {
		t.Fatalf("last note %v", last)
	}
	if len(n.take()) != 0 {
		t.Fatal("take did not empty the notebook")
	}
}
