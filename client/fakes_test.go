package client

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// fakeClock is a manual Clock: time moves only on Advance, which fires the
// timers that became due.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_000_000, 0)} }

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) NewTimer(d time.Duration) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTimer{clock: f, at: f.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.fired = true
		t.ch <- f.now
		return t
	}
	f.timers = append(f.timers, t)
	return t
}

// Jump moves time forward by d without firing any timer: a process paused
// (SIGSTOP) and resumed before its timers have run.
func (f *fakeClock) Jump(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

// Advance moves time forward by d and fires every due timer.
func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	kept := f.timers[:0]
	for _, t := range f.timers {
		if t.stopped {
			continue
		}
		if !f.now.Before(t.at) {
			t.fired = true
			t.ch <- f.now
			continue
		}
		kept = append(kept, t)
	}
	f.timers = kept
}

type fakeTimer struct {
	clock   *fakeClock
	at      time.Time
	ch      chan time.Time
	stopped bool
	fired   bool
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.clock.mu.Lock()
	defer t.clock.mu.Unlock()
	was := !t.stopped && !t.fired
	t.stopped = true
	return was
}

// fakeStream is a KeepAlive stream driven by the test.
type fakeStream struct {
	addr string
	ctx  context.Context
	sent chan *pb.KeepAliveRequest
	recv chan recvItem
}

type recvItem struct {
	resp *pb.KeepAliveResponse
	err  error
}

func (s *fakeStream) Send(r *pb.KeepAliveRequest) error {
	select {
	case s.sent <- r:
	default:
	}
	return nil
}

func (s *fakeStream) Recv() (*pb.KeepAliveResponse, error) {
	select {
	case it := <-s.recv:
		return it.resp, it.err
	case <-s.ctx.Done():
		return nil, s.ctx.Err()
	}
}

// streams hands the test every stream the lease opens.
type streams struct{ opened chan *fakeStream }

func (ss *streams) open(ctx context.Context, addr string) (keepAliveStream, error) {
	s := &fakeStream{addr: addr, ctx: ctx, sent: make(chan *pb.KeepAliveRequest, 64), recv: make(chan recvItem, 64)}
	ss.opened <- s
	return s, nil
}

// testClient is a Client with a fake clock that never dials.
func testClient(t *testing.T, clock Clock, endpoints ...string) *Client {
	t.Helper()
	if len(endpoints) == 0 {
		endpoints = []string{"a:1", "b:1", "c:1"}
	}
	c, err := newClient(Config{Endpoints: endpoints, Clock: clock, Rand: rand.NewPCG(1, 2)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// recvWithin receives from ch or fails the test after a generous real-time
// bound (a failure guard, not synchronisation).
func recvWithin[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}
