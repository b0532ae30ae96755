package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
)

// MaxRenewalsPerMessage is the most leases one KeepAlive message renews;
// longer lists are split into several messages.
const MaxRenewalsPerMessage = pb.MaxRenewalsPerKeepAlive

// renewConn is one KeepAlive stream carrying renewal messages, each matched
// to its answer by seq. It is safe for concurrent use. Once the stream
// fails, every message waiting for an answer, and every later one, gets the
// stream's error.
type renewConn struct {
	addr   string
	stream keepAliveStream
	cancel context.CancelFunc

	sendMu sync.Mutex // serializes Send

	mu      sync.Mutex
	nextSeq uint64
	waiting map[uint64]func(*pb.KeepAliveResponse, error)
	err     error
	done    chan struct{} // closed when the stream failed

	// single: the server answered a well-formed batch with
	// INVALID_ARGUMENT and no results, as servers before batching do (they
	// read the message as a renewal of domain ""): send one lease a
	// message on this stream from now on.
	single atomic.Bool
}

// openKeepAlive opens a KeepAlive stream to addr on the client's connection.
func (c *Client) openKeepAlive(ctx context.Context, addr string) (keepAliveStream, error) {
	conn, err := c.conn(addr)
	if err != nil {
		return nil, err
	}
	return pbgrpc.NewLeasesClient(conn).KeepAlive(ctx)
}

// newRenewConn opens a stream to addr with open (a test double, or
// Client.openKeepAlive) and starts its receiver.
func newRenewConn(life context.Context, addr string, open func(context.Context, string) (keepAliveStream, error)) (*renewConn, error) {
	ctx, cancel := context.WithCancel(life)
	s, err := open(ctx, addr)
	if err != nil {
		cancel()
		return nil, err
	}
	rc := &renewConn{addr: addr, stream: s, cancel: cancel, waiting: map[uint64]func(*pb.KeepAliveResponse, error){}, done: make(chan struct{})}
	go rc.receive()
	return rc, nil
}

// send sends req (its Seq is set here) and calls on, from the receiver
// goroutine, exactly once: with the answer, or with the stream's error.
func (rc *renewConn) send(req *pb.KeepAliveRequest, on func(*pb.KeepAliveResponse, error)) {
	rc.mu.Lock()
	if rc.err != nil {
		err := rc.err
		rc.mu.Unlock()
		on(nil, err)
		return
	}
	rc.nextSeq++
	req.Seq = rc.nextSeq
	rc.waiting[req.Seq] = on
	rc.mu.Unlock()
	rc.sendMu.Lock()
	// A failed Send means the stream ended: Recv reports why, and the
	// receiver fails every waiter with it.
	_ = rc.stream.Send(req)
	rc.sendMu.Unlock()
}

func (rc *renewConn) receive() {
	for {
		resp, err := rc.stream.Recv()
		if err != nil {
			rc.fail(err)
			return
		}
		rc.mu.Lock()
		on := rc.waiting[resp.GetSeq()]
		delete(rc.waiting, resp.GetSeq())
		rc.mu.Unlock()
		if on != nil {
			on(resp, nil)
		}
	}
}

// fail ends the stream with err (the first error wins) and tells every
// waiter.
func (rc *renewConn) fail(err error) {
	rc.mu.Lock()
	if rc.err != nil {
		rc.mu.Unlock()
		return
	}
	rc.err = err
	waiting := rc.waiting
	rc.waiting = nil
	close(rc.done)
	rc.mu.Unlock()
	rc.cancel()
	for _, on := range waiting {
		on(nil, err)
	}
}

// close ends the stream (its waiters get ErrClosed).
func (rc *renewConn) close() {
	rc.fail(ErrClosed)
}

// failed reports whether the stream has ended.
func (rc *renewConn) failed() bool {
	select {
	case <-rc.done:
		return true
	default:
		return false
	}
}

// renewBatch renews leases of holder (at most MaxRenewalsPerMessage) in one
// message, or one message a lease on a server that predates batches, and
// calls on once with the answer in batch form (BatchRemainingMs, Failures,
// Handovers by index; or a top-level ErrorReason for all) or the stream's
// error.
func (rc *renewConn) renewBatch(holder string, domains []string, epochs []uint64, on func(*pb.KeepAliveResponse, error)) {
	if rc.single.Load() {
		rc.renewEach(holder, domains, epochs, on)
		return
	}
	rc.send(&pb.KeepAliveRequest{Holder: holder, Domains: domains, Epochs: epochs}, func(resp *pb.KeepAliveResponse, err error) {
		if err == nil && len(resp.GetBatchRemainingMs()) != len(domains) && resp.GetErrorReason() == pb.ReasonInvalidArgument && wellFormed(domains, epochs) {
			rc.single.Store(true)
			// Not on the receiver goroutine: a blocked Send must not stop
			// the answers that unblock it.
			go rc.renewEach(holder, domains, epochs, on)
			return
		}
		on(resp, err)
	})
}

// wellFormed is what the client can check of a batch before blaming the
// server for refusing it.
func wellFormed(domains []string, epochs []uint64) bool {
	if len(domains) == 0 || len(domains) != len(epochs) || len(domains) > MaxRenewalsPerMessage {
		return false
	}
	for i, d := range domains {
		if d == "" || epochs[i] == 0 {
			return false
		}
	}
	return true
}

// renewEach renews a batch one lease a message and answers on in batch form
// once every lease was answered.
func (rc *renewConn) renewEach(holder string, domains []string, epochs []uint64, on func(*pb.KeepAliveResponse, error)) {
	n := len(domains)
	out := &pb.KeepAliveResponse{BatchRemainingMs: make([]uint64, n)}
	var mu sync.Mutex
	left, failed := n, error(nil)
	for i := range n {
		rc.send(&pb.KeepAliveRequest{Domain: domains[i], Holder: holder, Epoch: epochs[i]}, func(resp *pb.KeepAliveResponse, err error) {
			mu.Lock()
			switch {
			case err != nil:
				failed = err
			case resp.GetErrorReason() != "":
				out.Failures = append(out.Failures, &pb.RenewalFailure{Index: uint32(i), ErrorReason: resp.GetErrorReason(), ErrorMessage: resp.GetErrorMessage()})
			default:
				out.Header = resp.GetHeader()
				out.BatchRemainingMs[i] = resp.GetRemainingMs()
				if h := resp.GetHandover(); h != nil {
					out.Handovers = append(out.Handovers, &pb.RenewalHandover{Index: uint32(i), Handover: h})
				}
			}
			left--
			last := left == 0
			mu.Unlock()
			if last {
				on(out, failed)
			}
		})
	}
}

// LeaseRef names a lease to renew: a domain at the epoch it is held.
type LeaseRef struct {
	Domain string
	Epoch  uint64
}

// RenewResult is the outcome of one lease of Renewals.Renew.
type RenewResult struct {
	// Sent is when the message carrying the renewal was sent (the client's
	// Clock, read before sending). A holder that keeps its own deadline
	// moves it to Sent + min(Remaining, TTL) − margin, never later, as a
	// Lease does.
	Sent time.Time
	// Remaining is the TTL the leader granted from its receipt; zero when
	// Err is set.
	Remaining time.Duration
	// Err is why this lease was not renewed: ErrFenced, ErrLeaseExpired,
	// ErrNoLease, ErrNotFound, ErrPermissionDenied (the lease is gone for
	// good), or a transient error (NOT_LEADER while a new leader starts).
	Err error
	// Handover, when set, is an operator's request that the holder hand
	// over to Handover.Candidate (planned switchover).
	Handover *pb.HandoverRequest
}

// Renewals renews many leases in batched KeepAlive messages on one stream
// to the leader: up to MaxRenewalsPerMessage leases a message, answered by
// one message with each lease's result. Renewals never touch the log. It
// is safe for concurrent use: concurrent Renew calls pipeline their
// messages on the stream. Open several (one per stream) to spread the work
// over connections' streams; Lease does not need it (a client's leases
// already share one stream per holder and leader).
type Renewals struct {
	c  *Client
	mu sync.Mutex
	rc *renewConn
}

// OpenRenewals opens a KeepAlive stream to the current leader (as far as
// the client knows; a NOT_LEADER answer moves it to the leader on the next
// Renew). Close it when done; Client.Close closes it too.
func (c *Client) OpenRenewals(ctx context.Context) (*Renewals, error) {
	r := &Renewals{c: c}
	if err := c.track(r); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		c.untrack(r)
		return nil, err
	}
	if _, err := r.conn(); err != nil {
		c.untrack(r)
		return nil, err
	}
	return r, nil
}

// conn returns the stream, opening one to the current leader when there is
// none or the last one failed.
func (r *Renewals) conn() (*renewConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rc != nil && !r.rc.failed() {
		return r.rc, nil
	}
	r.c.mu.Lock()
	closed := r.c.closed
	r.c.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	rc, err := newRenewConn(r.c.life, r.c.currentAddr(), r.c.mux().open)
	if err != nil {
		return nil, mapError(err)
	}
	r.rc = rc
	return rc, nil
}

// Close ends the stream; Renew calls waiting on it return ErrClosed.
func (r *Renewals) Close() error {
	r.closeWith(ErrClosed)
	r.c.untrack(r)
	return nil
}

func (r *Renewals) closeWith(err error) {
	r.mu.Lock()
	rc := r.rc
	r.rc = nil
	r.mu.Unlock()
	if rc != nil {
		rc.fail(err)
	}
}

// Renew renews the leases of holder (a node renews only its own leases),
// sending them in messages of at most MaxRenewalsPerMessage, and waits for
// every answer: out[i] (len(out) == len(leases)) is leases[i]'s result. A
// lease that fails does not fail the others. The returned error fails the
// whole call (the stream broke, the context ended, or every server said
// NOT_LEADER): then no result in out may be trusted and none of these
// renewals counts. A stream that fails with NOT_LEADER and a leader hint
// is reopened on the leader and the call is sent again there, once.
func (r *Renewals) Renew(ctx context.Context, holder string, leases []LeaseRef, out []RenewResult) error {
	if len(out) != len(leases) {
		return fmt.Errorf("%w: %d leases, %d results", ErrInvalidArgument, len(leases), len(out))
	}
	err := r.renew(ctx, holder, leases, out)
	if err == nil {
		return nil
	}
	if class, hint := r.c.classify(err); class == classNotLeader && hint != "" {
		r.c.noteHint(err)
		r.c.setLeader(hint)
		return r.renew(ctx, holder, leases, out)
	}
	return err
}

func (r *Renewals) renew(ctx context.Context, holder string, leases []LeaseRef, out []RenewResult) error {
	if len(leases) == 0 {
		return nil
	}
	rc, err := r.conn()
	if err != nil {
		return err
	}
	msgs := (len(leases) + MaxRenewalsPerMessage - 1) / MaxRenewalsPerMessage
	type answer struct {
		from int
		sent time.Time
		resp *pb.KeepAliveResponse
		err  error
	}
	answers := make(chan answer, msgs)
	domains := make([]string, len(leases))
	epochs := make([]uint64, len(leases))
	for i, l := range leases {
		domains[i], epochs[i] = l.Domain, l.Epoch
	}
	for from := 0; from < len(leases); from += MaxRenewalsPerMessage {
		to := min(from+MaxRenewalsPerMessage, len(leases))
		sent := r.c.cfg.Clock.Now() // before sending: deadlines count from here
		rc.renewBatch(holder, domains[from:to], epochs[from:to], func(resp *pb.KeepAliveResponse, err error) {
			answers <- answer{from: from, sent: sent, resp: resp, err: err}
		})
	}
	var first error
	for range msgs {
		var a answer
		select {
		case a = <-answers:
		case <-ctx.Done():
			return ctx.Err()
		}
		if a.err != nil {
			if first == nil {
				first = mapError(a.err)
			}
			continue
		}
		r.c.noteHeader(a.resp.GetHeader())
		n := min(MaxRenewalsPerMessage, len(leases)-a.from)
		fillResults(a.resp, a.sent, out[a.from:a.from+n])
	}
	if first != nil {
		if errors.Is(first, ErrClosed) {
			return ErrClosed
		}
		r.closeWith(first) // the next call opens a new stream
	}
	return first
}

// fillResults spreads a batch answer over out (one per lease of the batch).
func fillResults(resp *pb.KeepAliveResponse, sent time.Time, out []RenewResult) {
	if reason := resp.GetErrorReason(); reason != "" || len(resp.GetBatchRemainingMs()) != len(out) {
		err := reasonError(reason, resp.GetErrorMessage())
		if err == nil {
			err = fmt.Errorf("authority: batch of %d renewals answered with %d results", len(out), len(resp.GetBatchRemainingMs()))
		}
		for i := range out {
			out[i] = RenewResult{Sent: sent, Err: err}
		}
		return
	}
	for i, ms := range resp.GetBatchRemainingMs() {
		out[i] = RenewResult{Sent: sent, Remaining: time.Duration(ms) * time.Millisecond}
	}
	for _, f := range resp.GetFailures() {
		if i := int(f.GetIndex()); i < len(out) {
			out[i] = RenewResult{Sent: sent, Err: reasonError(f.GetErrorReason(), f.GetErrorMessage())}
		}
	}
	for _, h := range resp.GetHandovers() {
		if i := int(h.GetIndex()); i < len(out) && out[i].Err == nil {
			out[i].Handover = h.GetHandover()
		}
	}
}
