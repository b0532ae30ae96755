package client

import "time"

// Clock is the monotonic clock the client measures lease deadlines, renewal
// intervals and retry backoff on. The default reads time.Now (which carries a
// monotonic reading, so wall-clock steps move nothing); tests pass a fake.
type Clock interface {
	// Now returns the current time (with a monotonic reading).
	Now() time.Time
	// NewTimer returns a timer that fires once after d (at once if d ≤ 0).
	NewTimer(d time.Duration) Timer
}

// Timer is a one-shot timer of a Clock.
type Timer interface {
	// C delivers the time once the timer fires.
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it stopped it.
	Stop() bool
}

// realClock is the default Clock.
type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time { return r.t.C }
func (r realTimer) Stop() bool          { return r.t.Stop() }
