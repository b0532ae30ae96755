package client

import (
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// A renewal carrying a handover request closes HandoverRequested once,
// names the candidate, and dates the request's end from the renewal's
// send time (never later than the leader's view).
func TestLeaseHandoverRequested(t *testing.T) {
	l := &Lease{st: newLeaseState(time.Second, 100*time.Millisecond), handover: make(chan struct{})}
	seq := l.st.send(t0)
	if lost, renewed, keep := l.handle(&pb.KeepAliveResponse{Seq: seq, RemainingMs: 1000}); lost != nil || !renewed || !keep {
		t.Fatalf("plain renewal: %v %v %v", lost, renewed, keep)
	}
	select {
	case <-l.HandoverRequested():
		t.Fatal("closed without a request")
	default:
	}
	if l.HandoverCandidate() != "" || !l.HandoverDeadline().IsZero() {
		t.Fatal("candidate or deadline before a request")
	}
	seq = l.st.send(t0.Add(200 * time.Millisecond))
	l.handle(&pb.KeepAliveResponse{Seq: seq, RemainingMs: 1000, Handover: &pb.HandoverRequest{Candidate: "n2", RemainingMs: 5000}})
	select {
	case <-l.HandoverRequested():
	default:
		t.Fatal("not closed by a request")
	}
	if got := l.HandoverCandidate(); got != "n2" {
		t.Fatalf("candidate %q", got)
	}
	if want := t0.Add(5200 * time.Millisecond); !l.HandoverDeadline().Equal(want) {
		t.Fatalf("deadline %v, want send + remaining = %v", l.HandoverDeadline().Sub(t0), want.Sub(t0))
	}
	// A second request changes nothing (and does not close twice).
	seq = l.st.send(t0.Add(400 * time.Millisecond))
	l.handle(&pb.KeepAliveResponse{Seq: seq, RemainingMs: 1000, Handover: &pb.HandoverRequest{Candidate: "n3", RemainingMs: 9000}})
	if l.HandoverCandidate() != "n2" {
		t.Fatal("a later request replaced the first")
	}
}
