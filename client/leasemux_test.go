package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// batchServer is a fake leader answering KeepAlive streams as the server
// does: batches per lease (fenced domains fail alone), or, when legacy, as
// a server before batching (a batch reads as a renewal of domain "").
type batchServer struct {
	legacy bool
	mu     sync.Mutex
	fenced map[string]bool
	msgs   []*pb.KeepAliveRequest // every message received
	gate   chan struct{}          // when set, the first message waits for it
	opened atomic.Int32
	phys   chan *physStream
}

func newBatchServer() *batchServer {
	return &batchServer{fenced: map[string]bool{}, phys: make(chan *physStream, 16)}
}

func (f *batchServer) open(ctx context.Context, addr string) (keepAliveStream, error) {
	f.opened.Add(1)
	s := &physStream{f: f, ctx: ctx, out: make(chan recvItem, 4096)}
	f.phys <- s
	return s, nil
}

type physStream struct {
	f   *batchServer
	ctx context.Context
	out chan recvItem
}

func (s *physStream) Send(req *pb.KeepAliveRequest) error {
	f := s.f
	f.mu.Lock()
	first := len(f.msgs) == 0
	f.msgs = append(f.msgs, req)
	gate := f.gate
	f.mu.Unlock()
	if first && gate != nil {
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &pb.KeepAliveResponse{Seq: req.GetSeq()}
	switch {
	case len(req.GetDomains()) > 0 && f.legacy:
		resp.ErrorReason, resp.ErrorMessage = pb.ReasonInvalidArgument, "domain is empty"
	case len(req.GetDomains()) > 0:
		for i, d := range req.GetDomains() {
			if f.fenced[d] {
				resp.BatchRemainingMs = append(resp.BatchRemainingMs, 0)
				resp.Failures = append(resp.Failures, &pb.RenewalFailure{Index: uint32(i), ErrorReason: pb.ReasonFenced, ErrorMessage: "fenced " + d})
				continue
			}
			resp.BatchRemainingMs = append(resp.BatchRemainingMs, 1000)
		}
	default:
		resp.Domain, resp.Epoch = req.GetDomain(), req.GetEpoch()
		if f.fenced[req.GetDomain()] {
			resp.ErrorReason, resp.ErrorMessage = pb.ReasonFenced, "fenced"
		} else {
			resp.RemainingMs = 1000
		}
	}
	s.out <- recvItem{resp: resp}
	return nil
}

func (s *physStream) Recv() (*pb.KeepAliveResponse, error) {
	select {
	case it := <-s.out:
		return it.resp, it.err
	case <-s.ctx.Done():
		return nil, s.ctx.Err()
	}
}

// leaseCount is how many lease renewals the messages received carried, and
// the largest message.
func (f *batchServer) leaseCount() (total, largest int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.msgs {
		n := max(len(m.GetDomains()), 1)
		total += n
		largest = max(largest, n)
	}
	return total, largest
}

// muxLeases starts n leases of holder h (d-000…) on a client whose mux
// talks to f, and returns them once each was renewed once (or failed).
func muxLeases(t *testing.T, f *batchServer, n int, before func(c *Client)) (*Client, *fakeClock, []*Lease) {
	t.Helper()
	clock := newFakeClock()
	c := testClient(t, clock)
	c.mux().open = f.open
	if before != nil {
		before(c)
	}
	o, err := leaseOpts(time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ls []*Lease
	for i := range n {
		l := c.newLease(fmt.Sprintf("d-%03d", i), "h", 1, time.Second, o)
		if err := l.start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.lose(ErrClosed); l.stopRun(); <-l.done })
		ls = append(ls, l)
	}
	return c, clock, ls
}

func waitFirst(t *testing.T, l *Lease) {
	t.Helper()
	select {
	case <-l.first:
	case <-l.lost:
		t.Fatalf("%s lost: %v", l.domain, l.Err())
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no renewal within 10 s", l.domain)
	}
}

// A client's leases of one holder share one stream, and renewals queued
// while a message is in flight go out together in one batched message;
// each lease gets its own answer.
func TestLeasesShareOneStreamInBatches(t *testing.T) {
	f := newBatchServer()
	f.gate = make(chan struct{})
	const n = 50
	c, _, ls := muxLeases(t, f, n, nil)
	// The first message waits at the server; every other lease's first
	// renewal queues behind it.
	deadline := time.Now().Add(10 * time.Second)
	var inFirst, queued int
	for {
		c.mux().mu.Lock()
		queued = 0
		for _, mc := range c.mux().conns {
			mc.mu.Lock()
			queued += len(mc.queue)
			mc.mu.Unlock()
		}
		c.mux().mu.Unlock()
		f.mu.Lock()
		if len(f.msgs) > 0 {
			inFirst = len(f.msgs[0].GetDomains())
		}
		f.mu.Unlock()
		if inFirst > 0 && inFirst+queued == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d renewals in the first message, %d queued; want %d in all", inFirst, queued, n)
		}
		time.Sleep(time.Millisecond)
	}
	close(f.gate)
	for _, l := range ls {
		waitFirst(t, l)
	}
	total, _ := f.leaseCount()
	f.mu.Lock()
	msgs := len(f.msgs)
	f.mu.Unlock()
	if f.opened.Load() != 1 || total != n || msgs != 2 {
		t.Fatalf("%d streams opened, %d renewals sent in %d messages; want 1, %d in 2 (%d + %d)", f.opened.Load(), total, msgs, n, inFirst, queued)
	}
}

// A fenced lease in a batch is lost alone; the others are renewed.
func TestMuxFencedLeaseAlone(t *testing.T) {
	f := newBatchServer()
	f.fenced["d-002"] = true
	_, _, ls := muxLeases(t, f, 5, nil)
	for i, l := range ls {
		if i == 2 {
			select {
			case <-l.Lost():
			case <-time.After(10 * time.Second):
				t.Fatal("the fenced lease was not lost")
			}
			if err := l.Err(); !isFenced(err) {
				t.Fatalf("fenced lease: %v", err)
			}
			continue
		}
		waitFirst(t, l)
		if err := l.Check(); err != nil {
			t.Fatalf("%s: %v", l.domain, err)
		}
	}
}

func isFenced(err error) bool { return errors.Is(err, ErrFenced) }

// Against a server before batching, the mux falls back to one lease a
// message on that stream: every lease is renewed, and once the first
// answer has shown the server does not batch, every later renewal goes
// singly. (How many batched messages precede that answer depends on timing:
// the mux sends without waiting for answers.)
func TestMuxLegacyServerFallback(t *testing.T) {
	const n = 8
	f := newBatchServer()
	f.legacy = true
	_, clock, ls := muxLeases(t, f, n, nil)
	for _, l := range ls {
		waitFirst(t, l)
	}
	batched := func(msgs []*pb.KeepAliveRequest) (b int) {
		for _, m := range msgs {
			if len(m.GetDomains()) > 0 {
				b++
			}
		}
		return b
	}
	f.mu.Lock()
	before := len(f.msgs)
	first := batched(f.msgs)
	f.mu.Unlock()
	if first == 0 {
		t.Fatal("no batched message was tried")
	}
	// The next round of renewals (each lease renews every TTL/3).
	deadline := time.Now().Add(10 * time.Second)
	for {
		clock.Advance(50 * time.Millisecond)
		f.mu.Lock()
		later := slices.Clone(f.msgs[before:])
		f.mu.Unlock()
		if len(later) >= n {
			if b := batched(later); b != 0 {
				t.Fatalf("%d batched messages after the fallback (and %d before it), want none", b, first)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d renewals after the first round, want %d", len(later), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A shared stream's failure reaches every lease on it; each reconnects (to
// the hinted leader) and renews on a new shared stream.
func TestMuxStreamFailureReachesEveryLease(t *testing.T) {
	f := newBatchServer()
	_, clock, ls := muxLeases(t, f, 4, nil)
	for _, l := range ls {
		waitFirst(t, l)
	}
	first := <-f.phys
	total0, _ := f.leaseCount()
	first.out <- recvItem{err: status.Error(codes.Unavailable, "connection reset")}
	// Each lease retries after a backoff on its (fake) clock.
	deadline := time.Now().Add(10 * time.Second)
	for total, _ := f.leaseCount(); f.opened.Load() < 2 || total < total0+len(ls); total, _ = f.leaseCount() {
		if time.Now().After(deadline) {
			t.Fatalf("%d streams opened, %d renewals after the failure; want a new stream and %d", f.opened.Load(), total-total0, len(ls))
		}
		clock.Advance(5 * time.Millisecond)
		time.Sleep(time.Millisecond)
	}
	if n := f.opened.Load(); n != 2 {
		t.Fatalf("%d streams opened, want 2 (the leases share the new one)", n)
	}
	for _, l := range ls {
		if err := l.Check(); err != nil {
			t.Fatalf("%s: %v", l.domain, err)
		}
	}
}

// Renewals.Renew splits a long list into messages of at most
// MaxRenewalsPerMessage, answers every lease in order, and fails a fenced
// lease alone.
func TestRenewalsRenew(t *testing.T) {
	f := newBatchServer()
	f.fenced["d-1500"] = true
	c := testClient(t, newFakeClock())
	c.mux().open = f.open
	r, err := c.OpenRenewals(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	leases := make([]LeaseRef, 3000)
	for i := range leases {
		leases[i] = LeaseRef{Domain: fmt.Sprintf("d-%04d", i), Epoch: 1}
	}
	out := make([]RenewResult, len(leases))
	if err := r.Renew(context.Background(), "h", leases, out); err != nil {
		t.Fatal(err)
	}
	for i, o := range out {
		if i == 1500 {
			if !isFenced(o.Err) {
				t.Fatalf("d-1500: %+v", o)
			}
			continue
		}
		if o.Err != nil || o.Remaining != time.Second || o.Sent.IsZero() {
			t.Fatalf("lease %d: %+v", i, o)
		}
	}
	total, largest := f.leaseCount()
	if total != 3000 || largest != MaxRenewalsPerMessage || len(f.msgs) != 3 {
		t.Fatalf("%d renewals in %d messages, largest %d", total, len(f.msgs), largest)
	}
}

// A batch answer reaches each lease as an answer to its own renewal: a
// failure listed for one index fails that lease alone, a handover reaches
// only its lease, and a whole-batch refusal reaches all.
func TestMuxDeliverPerLease(t *testing.T) {
	mc := &muxConn{}
	var entries []muxEntry
	for i := range 3 {
		s := &muxStream{ctx: context.Background(), notify: make(chan struct{}, 1), unanswered: 1}
		entries = append(entries, muxEntry{s: s, req: &pb.KeepAliveRequest{Domain: fmt.Sprintf("d%d", i), Holder: "h", Epoch: 4, Seq: uint64(10 + i)}})
	}
	mc.deliver(entries, &pb.KeepAliveResponse{BatchRemainingMs: []uint64{900, 0, 800},
		Failures:  []*pb.RenewalFailure{{Index: 1, ErrorReason: pb.ReasonFenced, ErrorMessage: "moved on"}},
		Handovers: []*pb.RenewalHandover{{Index: 2, Handover: &pb.HandoverRequest{Candidate: "c", RemainingMs: 5}}}})
	got := func(i int) *pb.KeepAliveResponse {
		r, err := entries[i].s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r0, r1, r2 := got(0), got(1), got(2)
	if r0.GetErrorReason() != "" || r0.GetRemainingMs() != 900 || r0.GetSeq() != 10 || r0.GetDomain() != "d0" || r0.GetHandover() != nil {
		t.Errorf("lease 0: %v", r0)
	}
	if r1.GetErrorReason() != pb.ReasonFenced || r1.GetRemainingMs() != 0 || r1.GetSeq() != 11 {
		t.Errorf("lease 1: %v", r1)
	}
	if r2.GetErrorReason() != "" || r2.GetRemainingMs() != 800 || r2.GetHandover().GetCandidate() != "c" || r2.GetEpoch() != 4 {
		t.Errorf("lease 2: %v", r2)
	}
	mc.deliver(entries, &pb.KeepAliveResponse{ErrorReason: pb.ReasonNotLeader, ErrorMessage: "barrier pending"})
	for i := range entries {
		if r := got(i); r.GetErrorReason() != pb.ReasonNotLeader || r.GetSeq() != uint64(10+i) {
			t.Errorf("lease %d after a whole-batch refusal: %v", i, r)
		}
	}
}
