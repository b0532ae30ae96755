package client

import (
	"context"
	"slices"
	"sync"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// leaseMux carries the renewals of every Lease of a client over one
// KeepAlive stream per (server address, holder), coalescing the renewals
// queued while a message is being sent into batched messages (at most
// MaxRenewalsPerMessage leases each). Each Lease keeps its own goroutine,
// timers, deadline arithmetic and reconnection logic: it sees a virtual
// stream (muxStream) that behaves as a stream of its own — its renewals
// answered in order with its own sequence numbers, and the shared stream's
// failure (e.g. NOT_LEADER from a follower) delivered to every Lease on it,
// each of which then reconnects as before.
//
// One stream per holder, not one per address: a message names one holder,
// and a server refusing a holder (authorization) ends that stream, which
// then ends only that holder's leases, as it did with a stream per lease.
type leaseMux struct {
	c *Client
	// open opens a physical KeepAlive stream (Client.openKeepAlive; tests
	// replace it).
	open func(ctx context.Context, addr string) (keepAliveStream, error)

	mu    sync.Mutex
	conns map[muxKey]*muxConn
}

type muxKey struct{ addr, holder string }

// mux returns the client's lease mux, creating it on first use.
func (c *Client) mux() *leaseMux {
	c.muxOnce.Do(func() {
		c.leaseMux = &leaseMux{c: c, open: c.openKeepAlive, conns: map[muxKey]*muxConn{}}
	})
	return c.leaseMux
}

// muxConn is one physical stream shared by the virtual streams of the
// leases of one holder on one server.
type muxConn struct {
	m   *leaseMux
	key muxKey
	rc  *renewConn

	users int // open virtual streams; guarded by m.mu

	mu      sync.Mutex
	dead    bool
	streams map[*muxStream]struct{}
	queue   []muxEntry
	kick    chan struct{}
}

type muxEntry struct {
	s   *muxStream
	req *pb.KeepAliveRequest
}

// openStream opens a virtual stream for holder's lease to addr; it ends
// when ctx ends.
func (m *leaseMux) openStream(ctx context.Context, addr, holder string) (keepAliveStream, error) {
	key := muxKey{addr, holder}
	m.mu.Lock()
	mc := m.conns[key]
	if mc == nil || mc.rc.failed() {
		rc, err := newRenewConn(m.c.life, addr, m.open)
		if err != nil {
			m.mu.Unlock()
			return nil, err
		}
		mc = &muxConn{m: m, key: key, rc: rc, streams: map[*muxStream]struct{}{}, kick: make(chan struct{}, 1)}
		m.conns[key] = mc
		go mc.run()
	}
	mc.users++
	m.mu.Unlock()
	s := &muxStream{mc: mc, ctx: ctx, notify: make(chan struct{}, 1)}
	mc.mu.Lock()
	if mc.dead {
		s.err = mc.rc.errNow()
	} else {
		mc.streams[s] = struct{}{}
	}
	mc.mu.Unlock()
	context.AfterFunc(ctx, func() { mc.leave(s) })
	return s, nil
}

// leave drops a virtual stream whose lease disconnected. A stream left
// with renewals unanswered (the lease gave up waiting: a paused or
// partitioned server) is no longer handed to new leases, which open a
// fresh one; the last to leave closes the physical stream.
func (mc *muxConn) leave(s *muxStream) {
	s.mu.Lock()
	s.closed = true
	suspect := s.unanswered > 0
	s.mu.Unlock()
	mc.mu.Lock()
	delete(mc.streams, s)
	mc.mu.Unlock()
	m := mc.m
	m.mu.Lock()
	mc.users--
	last := mc.users == 0
	if (last || suspect) && m.conns[mc.key] == mc {
		delete(m.conns, mc.key)
	}
	m.mu.Unlock()
	if last {
		mc.rc.close()
	}
}

// enqueue queues a renewal for the next message.
func (mc *muxConn) enqueue(e muxEntry) {
	mc.mu.Lock()
	mc.queue = append(mc.queue, e)
	mc.mu.Unlock()
	select {
	case mc.kick <- struct{}{}:
	default:
	}
}

// run sends what is queued, as batches, until the physical stream fails;
// then every virtual stream gets the stream's error.
func (mc *muxConn) run() {
	for {
		select {
		case <-mc.kick:
		case <-mc.rc.done:
			mc.failAll(mc.rc.errNow())
			return
		}
		mc.mu.Lock()
		q := mc.queue
		mc.queue = nil
		mc.mu.Unlock()
		// A lease that left (released, lost, reconnecting) since it queued
		// a renewal needs no answer: leave its renewal out.
		q = slices.DeleteFunc(q, func(e muxEntry) bool { return e.s.isClosed() })
		for len(q) > 0 {
			batch := q[:min(len(q), MaxRenewalsPerMessage)]
			q = q[len(batch):]
			domains, epochs := make([]string, len(batch)), make([]uint64, len(batch))
			for i, e := range batch {
				domains[i], epochs[i] = e.req.GetDomain(), e.req.GetEpoch()
			}
			mc.rc.renewBatch(mc.key.holder, domains, epochs, func(resp *pb.KeepAliveResponse, err error) {
				if err == nil { // a stream error reaches every virtual stream through failAll
					mc.deliver(batch, resp)
				}
			})
		}
	}
}

// deliver answers each lease of a batch as a single-lease response to its
// own renewal (its domain, epoch and sequence number).
func (mc *muxConn) deliver(batch []muxEntry, resp *pb.KeepAliveResponse) {
	out := make([]*pb.KeepAliveResponse, len(batch))
	whole := resp.GetErrorReason() != "" || len(resp.GetBatchRemainingMs()) != len(batch)
	for i, e := range batch {
		r := &pb.KeepAliveResponse{Header: resp.GetHeader(), Domain: e.req.GetDomain(), Epoch: e.req.GetEpoch(), Seq: e.req.GetSeq()}
		switch {
		case whole && resp.GetErrorReason() != "":
			r.ErrorReason, r.ErrorMessage = resp.GetErrorReason(), resp.GetErrorMessage()
		case whole:
			r.ErrorReason, r.ErrorMessage = pb.ReasonInternal, "authority: a batched renewal answered without its results"
		default:
			r.RemainingMs = resp.GetBatchRemainingMs()[i]
		}
		out[i] = r
	}
	if !whole {
		for _, f := range resp.GetFailures() {
			if i := int(f.GetIndex()); i < len(out) {
				out[i].RemainingMs, out[i].ErrorReason, out[i].ErrorMessage = 0, f.GetErrorReason(), f.GetErrorMessage()
			}
		}
		for _, h := range resp.GetHandovers() {
			if i := int(h.GetIndex()); i < len(out) && out[i].ErrorReason == "" {
				out[i].Handover = h.GetHandover()
			}
		}
	}
	for i, e := range batch {
		e.s.push(out[i])
	}
}

// failAll ends every virtual stream with the physical stream's error.
func (mc *muxConn) failAll(err error) {
	mc.mu.Lock()
	mc.dead = true
	streams := mc.streams
	mc.streams = map[*muxStream]struct{}{}
	mc.mu.Unlock()
	m := mc.m
	m.mu.Lock()
	if m.conns[mc.key] == mc {
		delete(m.conns, mc.key)
	}
	m.mu.Unlock()
	for s := range streams {
		s.fail(err)
	}
}

// errNow is the error the stream failed with (nil while it has not).
func (rc *renewConn) errNow() error {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.err
}

// muxStream is one Lease's virtual KeepAlive stream on a muxConn.
type muxStream struct {
	mc  *muxConn
	ctx context.Context

	mu         sync.Mutex
	resps      []*pb.KeepAliveResponse
	err        error
	closed     bool
	unanswered int
	notify     chan struct{}
}

// Send queues the renewal for the shared stream's next message.
func (s *muxStream) Send(req *pb.KeepAliveRequest) error {
	s.mu.Lock()
	switch {
	case s.err != nil:
		err := s.err
		s.mu.Unlock()
		return err
	case s.closed:
		s.mu.Unlock()
		return s.ctx.Err()
	}
	s.unanswered++
	s.mu.Unlock()
	s.mc.enqueue(muxEntry{s: s, req: req})
	return nil
}

// Recv returns the next answer to this lease's renewals, or the shared
// stream's error, or the context's.
func (s *muxStream) Recv() (*pb.KeepAliveResponse, error) {
	for {
		s.mu.Lock()
		if len(s.resps) > 0 {
			r := s.resps[0]
			s.resps[0] = nil
			s.resps = s.resps[1:]
			s.mu.Unlock()
			return r, nil
		}
		err := s.err
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		select {
		case <-s.notify:
		case <-s.ctx.Done():
			return nil, s.ctx.Err()
		}
	}
}

func (s *muxStream) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *muxStream) push(r *pb.KeepAliveResponse) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.unanswered--
	s.resps = append(s.resps, r)
	s.mu.Unlock()
	s.wake()
}

func (s *muxStream) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
	s.wake()
}

func (s *muxStream) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}
