package promotion

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// fakeClock is a monotonic clock moved only by Advance. It is safe for
// concurrent use so the race test can share it. It is a TimerClock: Advance
// runs the callbacks that fall due (after releasing its lock).
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *fakeClock
	at      time.Time
	f       func()
	stopped bool
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Stopper {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	keep := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case !t.at.After(c.now):
			t.stopped = true
			due = append(due, t.f)
		default:
			keep = append(keep, t)
		}
	}
	c.timers = keep
	c.mu.Unlock()
	for _, f := range due {
		f()
	}
}

const ttl = 10 * time.Second

// leaderTable returns a promoted table holding db1 for alice at epoch 1.
func leaderTable(t testing.TB) (*LeaseTable, *fakeClock) {
	t.Helper()
	c := newFakeClock()
	tb := NewLeaseTable(c)
	tb.Promote(nil)
	if err := tb.Grant(Grant{Domain: "db1", Holder: "alice", Epoch: 1, TTL: ttl}); err != nil {
		t.Fatalf("Grant: %v", err)
	}
	return tb, c
}

func observe(t *testing.T, tb *LeaseTable, domain string) Observation {
	t.Helper()
	obs, err := tb.Observe(domain)
	if err != nil {
		t.Fatalf("Observe(%q): %v", domain, err)
	}
	return obs
}

func wantStatus(t *testing.T, tb *LeaseTable, domain string, status LeaseStatus, remaining time.Duration) {
	t.Helper()
	obs := observe(t, tb, domain)
	if obs.Status != status || obs.Remaining != remaining {
		t.Fatalf("Observe(%q) = %v with %v remaining, want %v with %v", domain, obs.Status, obs.Remaining, status, remaining)
	}
}

func renewErr(t *testing.T, tb *LeaseTable, holder string, epoch uint64, want error) {
	t.Helper()
	d, err := tb.Renew("db1", holder, epoch)
	if !errors.Is(err, want) || d != 0 {
		t.Fatalf("Renew(db1, %s, %d) = %v, %v; want 0, %v", holder, epoch, d, err, want)
	}
}

func TestLeaseGrantHeldWithFullTTL(t *testing.T) {
	tb, _ := leaderTable(t)
	want := Observation{Domain: "db1", Holder: "alice", Epoch: 1, Status: LeaseHeld, Remaining: ttl}
	if got := observe(t, tb, "db1"); got != want {
		t.Fatalf("Observe = %+v, want %+v", got, want)
	}
	if tb.Len() != 1 {
		t.Fatalf("Len() = %d, want 1", tb.Len())
	}
	if got := observe(t, tb, "nope"); got != (Observation{Domain: "nope", Status: LeaseNone}) {
		t.Fatalf("unknown domain: %+v", got)
	}
}

func TestLeaseRenewBeforeExpiryExtends(t *testing.T) {
	tb, c := leaderTable(t)
	for range 5 {
		c.Advance(ttl - time.Nanosecond)
		d, err := tb.Renew("db1", "alice", 1)
		if err != nil || d != ttl {
			t.Fatalf("Renew = %v, %v; want %v, nil", d, err, ttl)
		}
		wantStatus(t, tb, "db1", LeaseHeld, ttl)
	}
	c.Advance(3 * time.Second)
	wantStatus(t, tb, "db1", LeaseHeld, ttl-3*time.Second)
}

func TestLeaseRenewAtExpiryFailsForever(t *testing.T) {
	for name, gap := range map[string]time.Duration{"atExpiry": ttl, "afterExpiry": ttl + time.Hour} {
		t.Run(name, func(t *testing.T) {
			tb, c := leaderTable(t)
			c.Advance(gap)
			renewErr(t, tb, "alice", 1, ErrLeaseExpired)
			wantStatus(t, tb, "db1", LeaseExpired, 0)
			c.Advance(time.Second)
			renewErr(t, tb, "alice", 1, ErrLeaseExpired)
			wantStatus(t, tb, "db1", LeaseExpired, 0)
		})
	}
}

func TestLeaseRenewFenced(t *testing.T) {
	tb, _ := leaderTable(t)
	renewErr(t, tb, "alice", 0, ErrFenced)
	renewErr(t, tb, "alice", 2, ErrFenced)
	renewErr(t, tb, "bob", 1, ErrFenced)
	if _, err := tb.Renew("db2", "alice", 1); !errors.Is(err, ErrNoLease) {
		t.Fatalf("Renew of an unknown domain: %v, want ErrNoLease", err)
	}
	wantStatus(t, tb, "db1", LeaseHeld, ttl) // failed renewals change nothing
}

func TestLeaseNewEpochFencesOld(t *testing.T) {
	tb, c := leaderTable(t)
	c.Advance(time.Second)
	if err := tb.Grant(Grant{Domain: "db1", Holder: "bob", Epoch: 2, TTL: ttl}); err != nil {
		t.Fatal(err)
	}
	renewErr(t, tb, "alice", 1, ErrFenced)
	if d, err := tb.Renew("db1", "bob", 2); err != nil || d != ttl {
		t.Fatalf("Renew(bob, 2) = %v, %v", d, err)
	}
	if got := observe(t, tb, "db1"); got.Holder != "bob" || got.Epoch != 2 {
		t.Fatalf("Observe = %+v, want bob at epoch 2", got)
	}
}

func TestLeaseLowerOrEqualEpochGrantIgnored(t *testing.T) {
	tb, c := leaderTable(t)
	if err := tb.Grant(Grant{Domain: "db1", Holder: "bob", Epoch: 3, TTL: ttl}); err != nil {
		t.Fatal(err)
	}
	c.Advance(ttl) // bob's lease expires here
	for _, g := range []Grant{
		{Domain: "db1", Holder: "alice", Epoch: 2, TTL: ttl}, // older epoch
		{Domain: "db1", Holder: "carol", Epoch: 3, TTL: ttl}, // epoch 3 names bob
	} {
		if err := tb.Grant(g); err != nil {
			t.Fatal(err)
		}
	}
	want := Observation{Domain: "db1", Holder: "bob", Epoch: 3, Status: LeaseExpired}
	if got := observe(t, tb, "db1"); got != want {
		t.Fatalf("Observe = %+v, want %+v", got, want)
	}
}

// A committed re-acquire by the same holder at the same epoch starts a fresh
// lease after expiry.
func TestLeaseSameHolderReacquire(t *testing.T) {
	tb, c := leaderTable(t)
	if err := tb.Grant(Grant{Domain: "db1", Holder: "bob", Epoch: 3, TTL: ttl}); err != nil {
		t.Fatal(err)
	}
	c.Advance(ttl)
	renewErr(t, tb, "bob", 3, ErrLeaseExpired)
	if err := tb.Grant(Grant{Domain: "db1", Holder: "bob", Epoch: 3, TTL: ttl}); err != nil {
		t.Fatal(err)
	}
	want := Observation{Domain: "db1", Holder: "bob", Epoch: 3, Status: LeaseHeld, Remaining: ttl}
	if got := observe(t, tb, "db1"); got != want {
		t.Fatalf("Observe = %+v, want %+v", got, want)
	}
}

func TestLeaseRelease(t *testing.T) {
	tb, _ := leaderTable(t)
	tb.Release("db1", 0) // older epoch: no-op
	wantStatus(t, tb, "db1", LeaseHeld, ttl)
	tb.Release("db1", 1)
	wantStatus(t, tb, "db1", LeaseReleased, 0)
	renewErr(t, tb, "alice", 1, ErrFenced)
	tb.Release("nope", 1) // unknown domain: nothing recorded
	if tb.Len() != 1 {
		t.Fatalf("Len() = %d, want 1", tb.Len())
	}
}

func TestLeaseReleaseOfNewerEpochFences(t *testing.T) {
	tb, _ := leaderTable(t)
	tb.Release("db1", 4)
	want := Observation{Domain: "db1", Epoch: 4, Status: LeaseReleased}
	if got := observe(t, tb, "db1"); got != want {
		t.Fatalf("Observe = %+v, want %+v", got, want)
	}
	renewErr(t, tb, "alice", 1, ErrFenced)
}

func TestLeaseDemotedRefusesEverything(t *testing.T) {
	check := func(t *testing.T, tb *LeaseTable) {
		t.Helper()
		if err := tb.Grant(Grant{Domain: "db1", Holder: "alice", Epoch: 1, TTL: ttl}); !errors.Is(err, ErrNotLeader) {
			t.Fatalf("Grant: %v, want ErrNotLeader", err)
		}
		if _, err := tb.Renew("db1", "alice", 1); !errors.Is(err, ErrNotLeader) {
			t.Fatalf("Renew: %v, want ErrNotLeader", err)
		}
		if obs, err := tb.Observe("db1"); !errors.Is(err, ErrNotLeader) || obs != (Observation{}) {
			t.Fatalf("Observe: %+v, %v; want zero, ErrNotLeader", obs, err)
		}
		tb.Release("db1", 1)
		if tb.Len() != 0 {
			t.Fatalf("Len() = %d, want 0", tb.Len())
		}
	}
	t.Run("new", func(t *testing.T) { check(t, NewLeaseTable(newFakeClock())) })
	t.Run("demoted", func(t *testing.T) {
		tb, _ := leaderTable(t)
		tb.Demote()
		check(t, tb)
	})
}

// A lease that expired on this node before it lost leadership gets a full TTL
// again when it is promoted later. This is safe (see Promote): the holder's
// own deadline ran from its send time, and only the current leader's
// observation can justify a promotion.
func TestLeasePromoteResetsEveryLeaseToFullTTL(t *testing.T) {
	tb, c := leaderTable(t)
	if err := tb.Grant(Grant{Domain: "db2", Holder: "bob", Epoch: 7, TTL: 2 * ttl}); err != nil {
		t.Fatal(err)
	}
	c.Advance(ttl + time.Second) // db1 expired, db2 held
	wantStatus(t, tb, "db1", LeaseExpired, 0)
	tb.Demote()
	c.Advance(24 * time.Hour)
	tb.Promote([]Grant{
		{Domain: "db1", Holder: "alice", Epoch: 1, TTL: ttl},
		{Domain: "db2", Holder: "bob", Epoch: 7, TTL: 2 * ttl},
		{Domain: "db2", Holder: "carol", Epoch: 6, TTL: ttl}, // older epoch: ignored
	})
	if tb.Len() != 2 {
		t.Fatalf("Len() = %d, want 2", tb.Len())
	}
	wantStatus(t, tb, "db1", LeaseHeld, ttl)
	wantStatus(t, tb, "db2", LeaseHeld, 2*ttl)
	if got := observe(t, tb, "db2"); got.Holder != "bob" {
		t.Fatalf("db2 holder = %q, want bob", got.Holder)
	}
	if d, err := tb.Renew("db1", "alice", 1); err != nil || d != ttl {
		t.Fatalf("Renew after Promote = %v, %v", d, err)
	}
}

func TestLeasePromoteReplacesPreviousTable(t *testing.T) {
	tb, _ := leaderTable(t)
	tb.Promote([]Grant{{Domain: "db2", Holder: "bob", Epoch: 1, TTL: ttl}})
	wantStatus(t, tb, "db1", LeaseNone, 0)
	wantStatus(t, tb, "db2", LeaseHeld, ttl)
}

func TestLeaseStatusString(t *testing.T) {
	for s, want := range map[LeaseStatus]string{
		LeaseNone: "None", LeaseHeld: "Held", LeaseExpired: "Expired",
		LeaseReleased: "Released", LeaseStatus(9): "LeaseStatus(9)",
	} {
		if got := s.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(s), got, want)
		}
	}
}

// Run with -race: renewals, observations, grants and a clock all race.
func TestLeaseConcurrentRenew(t *testing.T) {
	tb, c := leaderTable(t)
	const domains, workers, rounds = 4, 16, 200
	for i := range domains {
		g := Grant{Domain: fmt.Sprint("d", i), Holder: "h", Epoch: 1, TTL: time.Hour}
		if err := tb.Grant(g); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			domain := fmt.Sprint("d", w%domains)
			for range rounds {
				if _, err := tb.Renew(domain, "h", 1); err != nil {
					errs <- err
					return
				}
				if _, err := tb.Observe(domain); err != nil {
					errs <- err
					return
				}
				c.Advance(time.Millisecond)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := observe(t, tb, "d0"); got.Status != LeaseHeld {
		t.Fatalf("d0 after concurrent renewals: %+v, want held", got)
	}
}

func BenchmarkRenew(b *testing.B) {
	tb, _ := leaderTable(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tb.Renew("db1", "alice", 1); err != nil {
			b.Fatal(err)
		}
	}
}
