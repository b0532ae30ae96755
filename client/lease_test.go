package client

import (
	"context"
	"errors"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var t0 = time.Unix(1_000_000, 0)

func TestLeaseStateDeadlineFromSendTime(t *testing.T) {
	s := newLeaseState(time.Second, 100*time.Millisecond)
	if s.expired(t0.Add(time.Hour)) {
		t.Fatal("no deadline before the first success must not expire")
	}
	seq := s.send(t0)
	// The response arrives 400 ms later: the deadline counts from the send.
	if !s.success(seq, time.Second) {
		t.Fatal("first success must set the deadline")
	}
	if want := t0.Add(900 * time.Millisecond); !s.deadline.Equal(want) {
		t.Fatalf("deadline %v, want send + TTL − margin = %v", s.deadline.Sub(t0), want.Sub(t0))
	}
	if s.expired(t0.Add(899*time.Millisecond)) || !s.expired(t0.Add(900*time.Millisecond)) {
		t.Fatal("expiry must happen exactly at the deadline")
	}
}

func TestLeaseStateNeverBeyondTTLNorBackwards(t *testing.T) {
	s := newLeaseState(time.Second, 100*time.Millisecond)
	s1 := s.send(t0)
	s2 := s.send(t0.Add(300 * time.Millisecond))
	// The server grants more than our TTL: capped at TTL.
	s.success(s2, 5*time.Second)
	if want := t0.Add(1200 * time.Millisecond); !s.deadline.Equal(want) {
		t.Fatalf("deadline %v, want %v (capped at the TTL)", s.deadline.Sub(t0), want.Sub(t0))
	}
	// A late answer to the older renewal must not move it back.
	if s.success(s1, time.Second) {
		t.Fatal("answer to a superseded renewal moved the deadline")
	}
	if want := t0.Add(1200 * time.Millisecond); !s.deadline.Equal(want) {
		t.Fatalf("deadline moved backwards to %v", s.deadline.Sub(t0))
	}
	// A newer renewal granting less than before (but later) still cannot
	// move it back.
	s3 := s.send(t0.Add(400 * time.Millisecond))
	if s.success(s3, 500*time.Millisecond) {
		t.Fatal("a shorter grant moved the deadline")
	}
	if want := t0.Add(1200 * time.Millisecond); !s.deadline.Equal(want) {
		t.Fatalf("deadline moved backwards to %v", s.deadline.Sub(t0))
	}
	// A grant no longer than the margin gives nothing.
	s4 := s.send(t0.Add(500 * time.Millisecond))
	if s.success(s4, 100*time.Millisecond) {
		t.Fatal("a grant ≤ margin must not extend")
	}
	// Unknown sequence numbers change nothing.
	if s.success(99, time.Second) {
		t.Fatal("unknown seq extended the lease")
	}
}

func TestLeaseStateGrantedAndPending(t *testing.T) {
	s := newLeaseState(2*time.Second, 200*time.Millisecond)
	s.granted(t0)
	if want := t0.Add(1800 * time.Millisecond); !s.deadline.Equal(want) {
		t.Fatalf("granted deadline %v, want %v", s.deadline.Sub(t0), want.Sub(t0))
	}
	s.send(t0.Add(time.Second))
	s.send(t0.Add(2 * time.Second))
	if old, ok := s.oldestPending(); !ok || !old.Equal(t0.Add(time.Second)) {
		t.Fatalf("oldest pending %v %v", old, ok)
	}
	s.dropPending()
	if _, ok := s.oldestPending(); ok {
		t.Fatal("pending after drop")
	}
}

func TestLeaseOptionsValidation(t *testing.T) {
	o, err := leaseOpts(time.Second, nil)
	if err != nil || o.margin != 100*time.Millisecond || o.interval != time.Second/3 {
		t.Fatalf("defaults: %+v %v", o, err)
	}
	if o, _ := leaseOpts(200*time.Millisecond, nil); o.margin != 50*time.Millisecond {
		t.Fatalf("margin floor: %v", o.margin)
	}
	for _, bad := range [][]LeaseOption{{WithMargin(time.Second)}, {WithRenewInterval(950 * time.Millisecond)}, {WithMargin(-1)}} {
		if _, err := leaseOpts(time.Second, bad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("want ErrInvalidArgument, got %v", err)
		}
	}
	if _, err := leaseOpts(0, nil); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("TTL 0: %v", err)
	}
}

// startFakeLease runs a Lease against fake streams on a fake clock.
func startFakeLease(t *testing.T) (*Lease, *fakeClock, *streams, chan *pb.KeepAliveResponse) {
	t.Helper()
	clock := newFakeClock()
	c := testClient(t, clock)
	o, err := leaseOpts(time.Second, []LeaseOption{WithMargin(100 * time.Millisecond), WithRenewInterval(300 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	l := c.newLease("d", "h", 7, time.Second, o)
	ss := &streams{opened: make(chan *fakeStream, 8)}
	l.open = ss.open
	handled := make(chan *pb.KeepAliveResponse, 64)
	l.observe = func(r *pb.KeepAliveResponse) { handled <- r }
	if err := l.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.lose(ErrClosed); l.stopRun(); <-l.done })
	return l, clock, ss, handled
}

func TestLeaseLostExactlyOnceAtDeadline(t *testing.T) {
	l, clock, ss, handled := startFakeLease(t)
	s := recvWithin(t, ss.opened, "stream")
	req := recvWithin(t, s.sent, "first renewal")
	if req.GetDomain() != "d" || req.GetHolder() != "h" || req.GetEpoch() != 7 || req.GetSeq() != 1 {
		t.Fatalf("renewal %v", req)
	}
	sendAt := clock.Now()
	clock.Advance(200 * time.Millisecond) // the answer is slow: the deadline still counts from the send
	s.recv <- recvItem{resp: &pb.KeepAliveResponse{Seq: 1, Epoch: 7, RemainingMs: 1000}}
	recvWithin(t, handled, "response handled")
	if want := sendAt.Add(900 * time.Millisecond); !l.Deadline().Equal(want) {
		t.Fatalf("deadline %v after send, want 900ms", l.Deadline().Sub(sendAt))
	}
	select {
	case <-l.Lost():
		t.Fatal("lost while held")
	default:
	}
	// No further renewal succeeds: the lease is lost at the deadline.
	clock.Advance(700 * time.Millisecond)
	recvWithin(t, l.Lost(), "loss at the deadline")
	if !errors.Is(l.Err(), ErrLeaseLost) {
		t.Fatalf("Err = %v, want ErrLeaseLost", l.Err())
	}
	if !errors.Is(context.Cause(l.Context()), ErrLeaseLost) {
		t.Fatalf("context cause = %v", context.Cause(l.Context()))
	}
	// Exactly once: later causes change nothing, and it never renews again.
	l.lose(ErrFenced)
	clock.Advance(10 * time.Second)
	if !errors.Is(l.Err(), ErrLeaseLost) {
		t.Fatalf("Err changed to %v", l.Err())
	}
	recvWithin(t, l.done, "goroutine end")
}

// TestLeaseCheckReadsTheClock: a holder resumed past its deadline before
// the lease's timer has run is told so by Check, Valid, Lost, Context and
// Err at once, and the lease stops renewing. Without the clock read at the
// call, every one of them would still say "held".
func TestLeaseCheckReadsTheClock(t *testing.T) {
	l, clock, ss, handled := startFakeLease(t)
	s := recvWithin(t, ss.opened, "stream")
	recvWithin(t, s.sent, "first renewal")
	s.recv <- recvItem{resp: &pb.KeepAliveResponse{Seq: 1, Epoch: 7, RemainingMs: 1000}}
	recvWithin(t, handled, "response handled")
	if err := l.Check(); err != nil || !l.Valid() {
		t.Fatalf("Check = %v while held", err)
	}
	clock.Jump(l.Deadline().Sub(clock.Now()) - time.Nanosecond)
	if err := l.Check(); err != nil || l.Context().Err() != nil {
		t.Fatalf("one nanosecond before the deadline: Check = %v, context %v", err, l.Context().Err())
	}
	clock.Jump(time.Nanosecond) // at the deadline; no timer has fired
	if l.Valid() {
		t.Fatal("Valid at the deadline")
	}
	if !errors.Is(l.Check(), ErrLeaseLost) || !errors.Is(l.Err(), ErrLeaseLost) {
		t.Fatalf("Check = %v, Err = %v; want ErrLeaseLost", l.Check(), l.Err())
	}
	select {
	case <-l.Lost():
	default:
		t.Fatal("Lost() still open past the deadline")
	}
	if l.Context().Err() == nil || !errors.Is(context.Cause(l.Context()), ErrLeaseLost) {
		t.Fatalf("context err %v cause %v", l.Context().Err(), context.Cause(l.Context()))
	}
	recvWithin(t, l.done, "goroutine end: a lost lease never renews")
}

// TestLeaseContextDoneReadsTheClock: the first thing a holder often looks
// at is ctx.Done() in a select; it too sees a deadline passed during a
// pause.
func TestLeaseContextDoneReadsTheClock(t *testing.T) {
	l, clock, ss, handled := startFakeLease(t)
	s := recvWithin(t, ss.opened, "stream")
	recvWithin(t, s.sent, "first renewal")
	s.recv <- recvItem{resp: &pb.KeepAliveResponse{Seq: 1, Epoch: 7, RemainingMs: 1000}}
	recvWithin(t, handled, "response handled")
	ctx := l.Context()
	clock.Jump(5 * time.Second)
	select {
	case <-ctx.Done():
	default:
		t.Fatal("ctx.Done() open past the deadline")
	}
}

func TestLeaseFencedResponseLosesAtOnce(t *testing.T) {
	l, clock, ss, handled := startFakeLease(t)
	s := recvWithin(t, ss.opened, "stream")
	recvWithin(t, s.sent, "first renewal")
	s.recv <- recvItem{resp: &pb.KeepAliveResponse{Seq: 1, RemainingMs: 1000}}
	recvWithin(t, handled, "response handled")
	clock.Advance(300 * time.Millisecond)
	req := recvWithin(t, s.sent, "second renewal")
	s.recv <- recvItem{resp: &pb.KeepAliveResponse{Seq: req.GetSeq(), ErrorReason: pb.ReasonFenced, ErrorMessage: "epoch moved to 8"}}
	recvWithin(t, l.Lost(), "loss on FENCED")
	if !errors.Is(l.Err(), ErrFenced) || l.Err().Error() != "epoch moved to 8" {
		t.Fatalf("Err = %v, want ErrFenced with the server's message", l.Err())
	}
	if l.Context().Err() == nil {
		t.Fatal("lease context not cancelled")
	}
}

func TestLeaseFollowsNotLeaderHint(t *testing.T) {
	l, _, ss, handled := startFakeLease(t)
	s := recvWithin(t, ss.opened, "stream")
	recvWithin(t, s.sent, "first renewal")
	st, _ := status.New(codes.Unavailable, "not the leader").WithDetails(&errdetails.ErrorInfo{
		Reason: pb.ReasonNotLeader, Domain: pb.ErrorDomain, Metadata: map[string]string{pb.MetaLeaderID: "s9", pb.MetaLeaderAddr: "leader:9"}})
	s.recv <- recvItem{err: st.Err()}
	s2 := recvWithin(t, ss.opened, "stream to the hinted leader")
	if s2.addr != "leader:9" {
		t.Fatalf("reconnected to %q, want the hinted leader:9", s2.addr)
	}
	req := recvWithin(t, s2.sent, "renewal on the new stream")
	s2.recv <- recvItem{resp: &pb.KeepAliveResponse{Seq: req.GetSeq(), RemainingMs: 1000}}
	recvWithin(t, handled, "response handled")
	if l.Deadline().IsZero() || l.Err() != nil {
		t.Fatalf("deadline %v err %v", l.Deadline(), l.Err())
	}
}

func TestLeaseAbandonsSilentStream(t *testing.T) {
	l, clock, ss, _ := startFakeLease(t)
	s := recvWithin(t, ss.opened, "stream")
	recvWithin(t, s.sent, "first renewal")
	// No answer for a whole interval: the lease tries another server.
	clock.Advance(300 * time.Millisecond)
	s2 := recvWithin(t, ss.opened, "second stream")
	if s2.addr == s.addr {
		t.Fatalf("reconnected to the silent server %q", s.addr)
	}
	if l.Err() != nil {
		t.Fatal(l.Err())
	}
}
