package promotion

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
)

// lockRig is newRig plus lock domain lk (TTL 400 ms) held by a at epoch 1.
func lockRig(t *testing.T) *rig {
	t.Helper()
	r := newRig(t, false)
	r.ok(r.svc.CreateDomain(r.ctx, "lk", pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: 400}))
	res, err := r.svc.Acquire(r.ctx, "lk", "a", nil)
	if err != nil || res.Epoch != 1 || res.Holder != "a" {
		t.Fatalf("a acquires lk: %v %v", res, err)
	}
	return r
}

// waiters is how many Acquire(wait) calls of domain are registered.
func (r *rig) waiters(domain string) int {
	room := r.svc.waits.Load()
	if room == nil {
		return 0
	}
	room.mu.Lock()
	defer room.mu.Unlock()
	if w, ok := room.domains[domain]; ok {
		return w.waiters
	}
	return 0
}

// parked is how many waiters of domain block until the next signal.
func (r *rig) parked(domain string) int {
	room := r.svc.waits.Load()
	room.mu.Lock()
	defer room.mu.Unlock()
	if w, ok := room.domains[domain]; ok {
		return w.parked
	}
	return 0
}

// awaitParked yields until n waiters of domain block on their wake
// channel: each has armed its expiry timer, so a fake-clock Advance after
// this reaches it (a timer armed after an Advance would be armed late).
func (r *rig) awaitParked(domain string, n int) {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r.parked(domain) != n {
		if time.Now().After(deadline) {
			r.t.Fatalf("%d waiters of %q parked, want %d", r.parked(domain), domain, n)
		}
		runtime.Gosched()
	}
}

// awaitWaiters yields until n calls wait for domain (no sleeping: the
// waiters are goroutines of this process).
func (r *rig) awaitWaiters(domain string, n int) {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r.waiters(domain) != n {
		if time.Now().After(deadline) {
			r.t.Fatalf("%d waiters of %q, want %d", r.waiters(domain), domain, n)
		}
		runtime.Gosched()
	}
}

type acquired struct {
	res *fsm.Result
	err error
}

func (r *rig) acquireWait(ctx context.Context, domain, holder string) <-chan acquired {
	out := make(chan acquired, 1)
	go func() {
		res, err := r.svc.AcquireWait(ctx, domain, holder, nil)
		out <- acquired{res, err}
	}()
	return out
}

// A refusal the leader can make alone (the holder's lease is valid in its
// table) proposes nothing, and is the error the FSM gives at apply.
func TestRefusedAcquireProposesNothing(t *testing.T) {
	r := lockRig(t)
	entries := r.log.count()
	_, err := r.svc.Acquire(r.ctx, "lk", "b", nil)
	if !errors.Is(err, fsm.ErrPrecondition) {
		t.Fatalf("b acquires a held lock: %v", err)
	}
	if r.log.count() != entries {
		t.Fatalf("a refused acquire proposed %d entries", r.log.count()-entries)
	}
	// The same acquire, sent through the log: the FSM refuses it with the
	// same error.
	res, perr := r.log.Propose(r.ctx, &pb.Command{Body: &pb.Command_Acquire{Acquire: &pb.Acquire{Domain: "lk", Holder: "b",
		Lease: &pb.LeaseObservation{Holder: "a", Epoch: 1, State: pb.LeaseState_LEASE_STATE_HELD, RemainingMs: 400}}}})
	if perr != nil || res.Err == nil || res.Err.Error() != err.Error() {
		t.Fatalf("FSM's refusal %v (%v), the leader's %v", res.Err, perr, err)
	}
	entries = r.log.count()
	// The holder itself: a lock is not re-acquired while held.
	if _, err := r.svc.Acquire(r.ctx, "lk", "a", nil); !errors.Is(err, fsm.ErrPrecondition) || r.log.count() != entries {
		t.Fatalf("a re-acquires its held lock: %v, %d entries", err, r.log.count()-entries)
	}
	// An aerodb domain: another member is refused without an entry; the
	// holder's re-acquire still goes through the log.
	if _, err := r.svc.Acquire(r.ctx, "db1", "n2", nil); !errors.Is(err, fsm.ErrPrecondition) || r.log.count() != entries {
		t.Fatalf("n2 acquires db1: %v, %d entries", err, r.log.count()-entries)
	}
	if res, err := r.svc.Acquire(r.ctx, "db1", "n1", nil); err != nil || res.Epoch != 1 || r.log.count() != entries+1 {
		t.Fatalf("n1 re-acquires db1: %v %v, %d entries", res, err, r.log.count()-entries)
	}
	// An expected epoch the FSM refuses first still goes to the log (its
	// error is EPOCH_STALE, not the lease's).
	stale := uint64(7)
	if _, err := r.svc.Acquire(r.ctx, "lk", "b", &stale); !errors.Is(err, fsm.ErrEpochStale) {
		t.Fatalf("stale expected epoch: %v", err)
	}
	// Once the lease expired on the leader, the acquire is proposed.
	r.clock.Advance(400 * time.Millisecond)
	if res, err := r.svc.Acquire(r.ctx, "lk", "b", nil); err != nil || res.Epoch != 2 || res.Holder != "b" {
		t.Fatalf("b after a's lease expired: %v %v", res, err)
	}
}

// Waiters block on the leader without writing, and a release costs one
// entry and its grant one more, however many wait.
func TestAcquireWaitOneEntryPerGrant(t *testing.T) {
	r := lockRig(t)
	const n = 5
	entries := r.log.count()
	results := make(chan acquired, n)
	for _, h := range []string{"b", "c", "d", "e", "f"} {
		go func() { results <- <-r.acquireWait(r.ctx, "lk", h) }()
	}
	r.awaitWaiters("lk", n)
	if r.log.count() != entries {
		t.Fatalf("waiting wrote %d entries", r.log.count()-entries)
	}
	// While one waiter's acquire is in flight, every other waiter has
	// re-checked and parked again instead of proposing its own.
	r.log.beforeAcquire = func() {
		deadline := time.Now().Add(10 * time.Second)
		for r.parked("lk") != r.waiters("lk")-1 {
			if time.Now().After(deadline) {
				t.Errorf("a waiter's acquire in flight: %d of the other %d waiters parked", r.parked("lk"), r.waiters("lk")-1)
				return
			}
			runtime.Gosched()
		}
	}
	holder, epoch := "a", uint64(1)
	for i := range n {
		if _, err := r.svc.Release(r.ctx, "lk", holder, epoch); err != nil {
			t.Fatalf("release %d: %v", i, err)
		}
		got := <-results
		if got.err != nil || got.res.Epoch != epoch+1 {
			t.Fatalf("grant %d: %+v", i, got)
		}
		holder, epoch = got.res.Holder, got.res.Epoch
		if want := entries + 2*(i+1); r.log.count() != want {
			t.Fatalf("after %d releases: %d entries, want %d (one per release and one per grant)", i+1, r.log.count()-entries, 2*(i+1))
		}
	}
	r.awaitWaiters("lk", 0)
}

// A waiter is woken by the expiry of the lease it waits on (the leader's
// timer; nothing polls the log), and proposes then.
func TestAcquireWaitWokenByExpiry(t *testing.T) {
	r := lockRig(t)
	ch := r.acquireWait(r.ctx, "lk", "b")
	r.awaitWaiters("lk", 1)
	r.awaitParked("lk", 1)
	entries := r.log.count()
	// A renewal moves the expiry: the timer fires at the old one, the
	// waiter re-checks and waits again.
	r.clock.Advance(300 * time.Millisecond)
	if _, err := r.svc.Renew("lk", "a", 1); err != nil {
		t.Fatal(err)
	}
	r.clock.Advance(300 * time.Millisecond) // the old expiry: wakes the waiter
	r.awaitParked("lk", 1)                  // re-armed at the new expiry
	select {
	case got := <-ch:
		t.Fatalf("granted while a's renewed lease runs: %+v", got)
	default:
	}
	r.clock.Advance(100 * time.Millisecond)
	got := <-ch
	if got.err != nil || got.res.Holder != "b" || got.res.Epoch != 2 || r.log.count() != entries+1 {
		t.Fatalf("after expiry: %+v, %d entries", got, r.log.count()-entries)
	}
}

// The caller's deadline ends the wait with the definite refusal (nothing
// proposed); leadership loss ends it with ErrNotLeader; waiters are bounded.
func TestAcquireWaitEnds(t *testing.T) {
	r := lockRig(t)
	entries := r.log.count()
	ctx, cancel := context.WithTimeout(r.ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.svc.AcquireWait(ctx, "lk", "b", nil)
	if !errors.Is(err, fsm.ErrPrecondition) || ctx.Err() != nil || r.log.count() != entries {
		t.Fatalf("wait until the deadline: %v after %v (ctx %v), %d entries", err, time.Since(start), ctx.Err(), r.log.count()-entries)
	}
	// Not waitable: an aerodb domain held by another is refused at once.
	if _, err := r.svc.AcquireWait(r.ctx, "db1", "n2", nil); !errors.Is(err, fsm.ErrPrecondition) {
		t.Fatalf("aerodb: %v", err)
	}
	var waiting []<-chan acquired
	for range MaxWaitersPerDomain {
		waiting = append(waiting, r.acquireWait(r.ctx, "lk", "b"))
	}
	r.awaitWaiters("lk", MaxWaitersPerDomain)
	if _, err := r.svc.AcquireWait(r.ctx, "lk", "c", nil); !errors.Is(err, ErrTooManyWaiters) || !errors.Is(err, fsm.ErrPrecondition) {
		t.Fatalf("one waiter too many: %v", err)
	}
	r.svc.StepDown()
	for _, ch := range waiting {
		if got := <-ch; !errors.Is(got.err, ErrNotLeader) {
			t.Fatalf("waiter after step-down: %+v", got)
		}
	}
	if r.log.count() != entries {
		t.Fatalf("%d entries written", r.log.count()-entries)
	}
	// The next term serves waiters again.
	if err := r.svc.BecomeLeader(r.ctx); err != nil {
		t.Fatal(err)
	}
	ch := r.acquireWait(r.ctx, "lk", "b")
	r.awaitWaiters("lk", 1)
	if _, err := r.svc.Release(r.ctx, "lk", "a", 1); err != nil {
		t.Fatal(err)
	}
	if got := <-ch; got.err != nil || got.res.Holder != "b" {
		t.Fatalf("waiter in the next term: %+v", got)
	}
}
