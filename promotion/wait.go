package promotion

import (
	"context"
	"fmt"
	"sync"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
)

// MaxWaitersPerDomain bounds the Acquire(wait) calls blocked on one lock on
// the leader; one more is refused at once with ErrTooManyWaiters.
const MaxWaitersPerDomain = 64

// maxWaitMargin is how long before the caller's deadline a waiting Acquire
// gives up (at most a quarter of the time left): its refusal is definite
// (nothing proposed) and must reach the caller, possibly through a
// forwarding follower, before the caller's own deadline.
const maxWaitMargin = 200 * time.Millisecond

// ErrTooManyWaiters refuses an Acquire(wait) when MaxWaitersPerDomain
// callers already wait for the lock. It is a failed precondition (nothing
// was proposed): acquire later, or without waiting.
var ErrTooManyWaiters = fmt.Errorf("%w: too many callers already wait for this lock", fsm.ErrPrecondition)

// Stopper stops a scheduled callback (*time.Timer is one).
type Stopper interface{ Stop() bool }

// TimerClock is a Clock that can also schedule a callback after d on its
// own time. The lock-wait expiry timers use it when the service's Clock
// implements it (tests' fake clock), and time.AfterFunc otherwise.
type TimerClock interface {
	Clock
	AfterFunc(d time.Duration, f func()) Stopper
}

// waitRoom holds the Acquire(wait) calls of one leadership term. Waiters of
// a domain block on its wake channel, which is closed (and replaced) by
// every event that may free the lock: a release, the expiry of the lease a
// waiter observed (one timer per domain with waiters), and the end of a
// waiter's own proposal. Waiters never read the log to find out: each
// wake-up re-checks the leader's state and lease table.
type waitRoom struct {
	clock Clock
	// lost is closed when this term's leadership ends: waiters answer
	// ErrNotLeader.
	lost chan struct{}

	mu      sync.Mutex
	closed  bool
	domains map[string]*lockWait
}

type lockWait struct {
	waiters int
	// parked: waiters blocked until the next signal (for tests).
	parked int
	wake   chan struct{}
	// granting: one waiter is proposing its acquire; the others wait for
	// its outcome instead of proposing entries that would be rejected.
	granting bool
	// timer fires at timerAt (the observed lease's expiry); gen tells a
	// stale callback from the current timer's.
	timer   Stopper
	timerAt time.Time
	gen     uint64
}

func newWaitRoom(clock Clock) *waitRoom {
	return &waitRoom{clock: clock, lost: make(chan struct{}), domains: map[string]*lockWait{}}
}

// join registers a waiter of domain.
func (r *waitRoom) join(domain string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrNotLeader
	}
	w, ok := r.domains[domain]
	if !ok {
		w = &lockWait{wake: make(chan struct{})}
		r.domains[domain] = w
	}
	if w.waiters >= MaxWaitersPerDomain {
		return fmt.Errorf("%w: domain %q has %d waiting acquires (limit MaxWaitersPerDomain = %d)",
			ErrTooManyWaiters, domain, w.waiters, MaxWaitersPerDomain)
	}
	w.waiters++
	return nil
}

// leave unregisters a waiter; the last one stops the domain's timer.
func (r *waitRoom) leave(domain string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w, ok := r.domains[domain]
	if !ok {
		return
	}
	if w.waiters--; w.waiters > 0 {
		return
	}
	if w.timer != nil {
		w.timer.Stop()
	}
	delete(r.domains, domain)
}

// wakeCh returns the channel the next signal of domain closes. A waiter
// takes it before checking the state, so a signal between its check and
// its wait is not missed.
func (r *waitRoom) wakeCh(domain string) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w, ok := r.domains[domain]; ok {
		return w.wake
	}
	return nil
}

// park counts a waiter blocking on wake until the next signal (which
// resets the count); unpark uncounts one that stopped waiting otherwise.
// Only a wake channel not yet closed counts.
func (r *waitRoom) park(domain string, wake <-chan struct{}, by int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w, ok := r.domains[domain]; ok && w.wake == wake {
		w.parked += by
	}
}

// signal wakes every waiter of domain (nil-safe: no room while demoted).
func (r *waitRoom) signal(domain string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.signalLocked(domain)
}

func (r *waitRoom) signalLocked(domain string) {
	if w, ok := r.domains[domain]; ok {
		close(w.wake)
		w.wake = make(chan struct{})
		w.parked = 0
	}
}

// claim lets one waiter propose; false while another waiter's proposal of
// the same domain is in flight.
func (r *waitRoom) claim(domain string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	w, ok := r.domains[domain]
	if !ok || w.granting {
		return false
	}
	w.granting = true
	return true
}

// unclaim ends a waiter's proposal and wakes the others to re-check.
func (r *waitRoom) unclaim(domain string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w, ok := r.domains[domain]; ok {
		w.granting = false
	}
	r.signalLocked(domain)
}

// armExpiry makes sure the waiters of domain are woken at (no later than)
// the expiry of the lease they observed. An earlier timer is kept: when it
// fires the waiters re-check and re-arm. A time already past wakes them at
// once.
func (r *waitRoom) armExpiry(domain string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w, ok := r.domains[domain]
	if !ok || r.closed {
		return
	}
	if w.timer != nil && !w.timerAt.After(at) {
		return
	}
	remaining := at.Sub(r.clock.Now())
	if remaining <= 0 {
		r.signalLocked(domain)
		return
	}
	if w.timer != nil {
		w.timer.Stop()
	}
	w.gen++
	gen := w.gen
	fire := func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if cur, ok := r.domains[domain]; ok && cur == w && w.gen == gen && !r.closed {
			w.timer = nil
			r.signalLocked(domain)
		}
	}
	w.timerAt = at
	if tc, ok := r.clock.(TimerClock); ok {
		w.timer = tc.AfterFunc(remaining, fire)
	} else {
		w.timer = time.AfterFunc(remaining, fire)
	}
}

// close ends the term: every waiter answers ErrNotLeader, timers stop.
func (r *waitRoom) close() {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.closed = true
	close(r.lost)
	for _, w := range r.domains {
		if w.timer != nil {
			w.timer.Stop()
			w.timer = nil
		}
	}
}

// heldRefusal is the refusal the FSM would give an Acquire of a (the
// domain as applied here) by holder, when the leader's lease table (obs)
// holds the current holder's lease as valid; nil when the acquire must go
// through the log (free, released, expired, a re-acquire by an aerodb
// holder, or an expected epoch the FSM refuses first). waitable: the
// refusal ends when the lock is released or its lease expires (lock and
// release domains). It only refuses, never grants: the FSM validates every
// acquire that is proposed.
func heldRefusal(a fsm.Authority, holder string, expectedEpoch *uint64, obs Observation) (refusal error, waitable bool) {
	if err := fsm.ValidateName("holder", holder); err != nil {
		return nil, false // the FSM refuses it first, with its own error
	}
	if a.Epoch == 0 || a.Released || a.Holder == "" {
		return nil, false
	}
	if obs.Status != LeaseHeld || obs.Holder != a.Holder || obs.Epoch != a.Epoch {
		return nil, false
	}
	if expectedEpoch != nil && *expectedEpoch != a.Epoch {
		return nil, false
	}
	if a.Kind == pb.DomainKind_DOMAIN_KIND_AERODB {
		if holder == a.Holder {
			return nil, false
		}
		return fmt.Errorf("%w: only the current holder of aerodb domain %q may re-acquire; authority moves by promotion", fsm.ErrPrecondition, a.Domain), false
	}
	return fmt.Errorf("%w: domain %q is held by %q at epoch %d and its lease has not expired", fsm.ErrPrecondition, a.Domain, a.Holder, a.Epoch), true
}

// AcquireWait is Acquire that waits, on the leader and without writing to
// the log, while another holder's lease of the lock is valid: it proposes
// once, when the lock is released or that lease expired here. It gives up
// shortly before ctx's deadline (a definite refusal: nothing proposed), and
// answers ErrNotLeader when leadership ends. At most MaxWaitersPerDomain
// calls wait per domain (ErrTooManyWaiters). Only one waiter of a domain
// proposes at a time, so waiters do not race each other into rejected
// entries. Refusals that waiting cannot end (an aerodb domain held by
// another) are returned at once.
func (s *Service) AcquireWait(ctx context.Context, domain, holder string, expectedEpoch *uint64) (*fsm.Result, error) {
	if err := s.checkReady(); err != nil {
		return nil, err
	}
	room := s.waits.Load()
	if room == nil {
		return nil, ErrNotLeader
	}
	if err := room.join(domain); err != nil {
		return nil, err
	}
	defer room.leave(domain)
	giveUp := ctx.Done()
	if dl, ok := ctx.Deadline(); ok {
		margin := min(maxWaitMargin, time.Until(dl)/4)
		wctx, cancel := context.WithDeadline(ctx, dl.Add(-margin))
		defer cancel()
		giveUp = wctx.Done()
	}
	var refusal error
	for {
		wake := room.wakeCh(domain)
		if err := s.checkReady(); err != nil {
			return nil, err
		}
		// Read before observing: now + Remaining is then no later than
		// the lease's expiry.
		now := s.clock.Now()
		before, obs, held, waitable, err := s.checkAcquire(domain, holder, expectedEpoch)
		if err != nil {
			return nil, err
		}
		switch {
		case held != nil && !waitable:
			return nil, held
		case held != nil:
			refusal = held
			room.armExpiry(domain, now.Add(obs.Remaining))
		case room.claim(domain):
			res, err := s.proposeAcquire(ctx, before, obs, holder, expectedEpoch)
			room.unclaim(domain)
			return res, err
		default:
			refusal = fmt.Errorf("%w: domain %q is being granted to another waiting caller", fsm.ErrPrecondition, domain)
		}
		room.park(domain, wake, 1)
		select {
		case <-wake:
		case <-room.lost:
			return nil, fmt.Errorf("%w: leadership lost while waiting for %q", ErrNotLeader, domain)
		case <-giveUp:
			room.park(domain, wake, -1)
			return nil, refusal
		}
	}
}
