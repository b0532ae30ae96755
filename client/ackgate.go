package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"google.golang.org/grpc"
)

// maxAdvanceBatch bounds one Advance RPC: the servers refuse more than
// transport.MaxAdvancesPerRequest (1000) advances in one call.
const maxAdvanceBatch = 1000

// AdvanceWatermark commits a batch of watermark advances in one log entry
// and returns one error per advance (nil when it committed), each wrapping
// its sentinel: ErrFenced/ErrEpochStale (the epoch or holder moved: stop
// acknowledging for good), ErrLeaseExpired (the lease expired on the
// leader), ErrConflict (below the recorded watermark, or another hash at a
// recorded lsn), ErrNotFound, ErrInvalidArgument. The second result is the
// error of the call as a whole.
//
// Outcome: advancing to a position already recorded (same lsn and hash) is
// accepted as a no-op, so the call is retried across leader changes and
// transport failures. An error wrapping ErrOutcomeUnknown (the context ended
// after a send) means the advances may or may not have committed: call
// again with the same advances, or read the domains' watermarks.
//
// Most holders should use an AckGate, which batches across callers and
// domains.
func (c *Client) AdvanceWatermark(ctx context.Context, advances []*pb.WatermarkAdvance) ([]error, error) {
	req := &pb.AdvanceRequest{Advances: advances}
	resp, _, err := unary(ctx, c, retryIdempotent, false, func(ctx context.Context, conn *grpc.ClientConn) (*pb.AdvanceResponse, error) {
		return pbgrpc.NewWatermarksClient(conn).Advance(ctx, req)
	})
	if err != nil {
		return nil, err
	}
	if len(resp.GetResults()) != len(advances) {
		return nil, fmt.Errorf("authority: advance: %d results for %d advances", len(resp.GetResults()), len(advances))
	}
	errs := make([]error, len(advances))
	for i, r := range resp.GetResults() {
		if !r.GetOk() {
			errs[i] = reasonError(r.GetErrorReason(), r.GetErrorMessage())
			if errs[i] == nil {
				errs[i] = fmt.Errorf("%w: advance of %q failed without a reason", ErrInternal, r.GetDomain())
			}
		}
	}
	return errs, nil
}

// AckGateOption adjusts an AckGate.
type AckGateOption func(*AckGate)

// WithLease ties a gate to the holder's lease: once the lease is lost,
// WaitDurable returns the lease's error instead of acknowledging (the
// holder stops acting, AU-12).
func WithLease(l *Lease) AckGateOption { return func(g *AckGate) { g.lease = l } }

// AckGate is the durability gate of a database holder (DESIGN §6): the
// holder acknowledges a write, or makes a commit visible, only once
// WaitDurable returned nil for its position. Gates of one client share the
// client's batcher: the highest pending position per domain from all
// callers goes into one Advance RPC for all domains, with at most one RPC in
// flight (group commit). It is safe for concurrent use.
type AckGate struct {
	c         *Client
	key       gateKey
	lease     *Lease
	closed    chan struct{}
	closeOnce sync.Once
}

// NewAckGate returns the gate of holder at epoch over domain.
func NewAckGate(c *Client, domain, holder string, epoch uint64, opts ...AckGateOption) *AckGate {
	g := &AckGate{c: c, key: gateKey{domain: domain, holder: holder, epoch: epoch}, closed: make(chan struct{})}
	for _, f := range opts {
		f(g)
	}
	c.watermarkBatcher.register(g.key)
	return g
}

// WaitDurable returns nil once a watermark ≥ lsn of this gate's epoch is
// committed. hash is the chain hash at lsn and visibleCommitID the highest
// commit id visible at it; callers with concurrent positions must pass
// consistent ones (the highest lsn pending wins). A position at or below
// the committed one returns nil at once.
//
// Errors: ErrFenced (or ErrEpochStale) once the epoch moved; from then on
// every call returns it at once: the holder must never acknowledge again.
// ErrLeaseExpired, ErrConflict and others fail the positions they cover.
// The context's error means the caller stopped waiting: the position may
// still become durable (a later call learns it).
func (g *AckGate) WaitDurable(ctx context.Context, lsn uint64, hash []byte, visibleCommitID uint64) error {
	select {
	case <-g.closed:
		return ErrClosed
	default:
	}
	var lost <-chan struct{}
	if g.lease != nil {
		if err := g.lease.Err(); err != nil {
			return err
		}
		lost = g.lease.Lost()
	}
	adv := &pb.WatermarkAdvance{Domain: g.key.domain, Epoch: g.key.epoch, Holder: g.key.holder, Lsn: lsn,
		Hash: bytes.Clone(hash), VisibleCommitId: visibleCommitID}
	w, err := g.c.watermarkBatcher.submit(g.key, adv)
	if err != nil || w == nil {
		return err
	}
	select {
	case err := <-w.ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-g.closed:
		return ErrClosed
	case <-lost:
		return g.lease.Err()
	}
}

// Close ends the gate: waiting and later calls return ErrClosed. Other
// gates of the same (domain, holder, epoch) are unaffected.
func (g *AckGate) Close() {
	g.closeOnce.Do(func() {
		close(g.closed)
		g.c.watermarkBatcher.unregister(g.key)
	})
}

// gateKey names the watermark stream of one holder at one epoch.
type gateKey struct {
	domain, holder string
	epoch          uint64
}

// gateState is the batcher's view of one gateKey.
type gateState struct {
	refs      int
	durable   uint64 // positions ≤ durable are committed (valid when known)
	known     bool
	want      *pb.WatermarkAdvance // highest position not yet sent
	inflight  *pb.WatermarkAdvance // the position in the RPC in flight
	waiters   []*waiter
	fencedErr error // set once: the epoch moved
}

type waiter struct {
	lsn uint64
	ch  chan error // buffered: the batcher never blocks on it
}

// watermarkBatcher is the client's group commit: Config.AckGateInflight
// flusher goroutines (started on first use, stopped by Client.Close) each
// own one RPC at a time; callers only touch gates under mu. A gate's
// position in flight is in one RPC only (collect skips a gate with one in
// flight), so a gate's positions reach the servers in order.
type watermarkBatcher struct {
	c       *Client
	mu      sync.Mutex
	gates   map[gateKey]*gateState
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	running sync.WaitGroup
	started bool
	closed  bool
}

func newWatermarkBatcher(c *Client) *watermarkBatcher {
	return &watermarkBatcher{c: c, gates: map[gateKey]*gateState{}, kick: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
}

func (b *watermarkBatcher) state(k gateKey) *gateState {
	st := b.gates[k]
	if st == nil {
		st = &gateState{}
		b.gates[k] = st
	}
	return st
}

func (b *watermarkBatcher) register(k gateKey) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.state(k).refs++
}

func (b *watermarkBatcher) unregister(k gateKey) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.gates[k]
	if st == nil {
		return
	}
	st.refs--
	if st.refs <= 0 && st.want == nil && st.inflight == nil && len(st.waiters) == 0 {
		delete(b.gates, k)
	}
}

// submit queues a position; it returns a nil waiter when the position is
// already durable.
func (b *watermarkBatcher) submit(k gateKey, adv *pb.WatermarkAdvance) (*waiter, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	st := b.state(k)
	if st.fencedErr != nil {
		return nil, st.fencedErr
	}
	if st.known && adv.Lsn <= st.durable {
		return nil, nil
	}
	w := &waiter{lsn: adv.Lsn, ch: make(chan error, 1)}
	st.waiters = append(st.waiters, w)
	covered := st.inflight != nil && adv.Lsn <= st.inflight.Lsn || st.want != nil && adv.Lsn <= st.want.Lsn
	if !covered {
		st.want = adv
	}
	if !b.started {
		b.started = true
		n := b.c.cfg.AckGateInflight
		b.running.Add(n)
		for range n {
			go b.flusher()
		}
		go func() { b.running.Wait(); close(b.done) }()
	}
	select {
	case b.kick <- struct{}{}:
	default:
	}
	return w, nil
}

// flusher sends batches while positions are pending, one RPC at a time;
// what arrives meanwhile goes into another flusher's RPC or its next one.
func (b *watermarkBatcher) flusher() {
	defer b.running.Done()
	for {
		select {
		case <-b.stop:
			return
		case <-b.kick:
		}
		for {
			keys, advs := b.collect()
			if len(advs) == 0 {
				break
			}
			if len(advs) == maxAdvanceBatch {
				b.kickAnother() // more is pending: another flusher may take it now
			}
			errs, err := b.c.AdvanceWatermark(b.c.life, advs)
			for i, k := range keys {
				var e error
				if err != nil {
					e = err
				} else {
					e = errs[i]
				}
				if errors.Is(e, ErrConflict) {
					e = b.resolveConflict(k, advs[i], e)
				}
				b.settle(k, advs[i], e)
			}
		}
	}
}

// kickAnother wakes an idle flusher, if any, for positions that arrive
// while this one's RPC is in flight.
func (b *watermarkBatcher) kickAnother() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// collect moves every gate's wanted position in flight.
func (b *watermarkBatcher) collect() ([]gateKey, []*pb.WatermarkAdvance) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var keys []gateKey
	var advs []*pb.WatermarkAdvance
	for k, st := range b.gates {
		if st.want == nil || st.inflight != nil {
			continue
		}
		if len(advs) == maxAdvanceBatch {
			break // the rest goes in the next batch: collect runs until empty
		}
		st.inflight, st.want = st.want, nil
		keys, advs = append(keys, k), append(advs, st.inflight)
	}
	return keys, advs
}

// resolveConflict reads the domain after a conflict: a recorded watermark
// of this epoch at or beyond the position (with the same hash at an equal
// lsn) means the position is durable (another gate, an earlier process, or
// a retried request recorded it).
func (b *watermarkBatcher) resolveConflict(k gateKey, adv *pb.WatermarkAdvance, err error) error {
	ctx, cancel := context.WithTimeout(b.c.life, b.c.cfg.RequestTimeout)
	defer cancel()
	d, gerr := b.c.GetDomain(ctx, k.domain)
	if gerr != nil {
		return err
	}
	wm := d.GetWatermark()
	if wm.GetEpoch() == k.epoch && d.GetEpoch() == k.epoch && d.GetHolder() == k.holder &&
		(wm.GetLsn() > adv.Lsn || wm.GetLsn() == adv.Lsn && bytes.Equal(wm.GetHash(), adv.Hash)) {
		b.mu.Lock()
		defer b.mu.Unlock()
		st := b.state(k)
		if !st.known || wm.GetLsn() > st.durable {
			st.durable, st.known = wm.GetLsn(), true
		}
		return nil
	}
	return err
}

// settle records the outcome of an in-flight position and wakes waiters.
func (b *watermarkBatcher) settle(k gateKey, adv *pb.WatermarkAdvance, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.state(k)
	st.inflight = nil
	switch {
	case err == nil:
		if !st.known || adv.Lsn > st.durable {
			st.durable, st.known = adv.Lsn, true
		}
		b.wake(st, func(w *waiter) (error, bool) { return nil, w.lsn <= st.durable })
		if st.want != nil && st.want.Lsn <= st.durable {
			st.want = nil
		}
	case errors.Is(err, ErrFenced):
		st.fencedErr, st.want = err, nil
		b.wake(st, func(*waiter) (error, bool) { return err, true })
	default:
		b.wake(st, func(w *waiter) (error, bool) { return err, w.lsn <= adv.Lsn })
	}
	if st.refs <= 0 && st.want == nil && len(st.waiters) == 0 && st.fencedErr == nil {
		delete(b.gates, k)
	}
}

// wake answers the waiters f selects and keeps the others.
func (b *watermarkBatcher) wake(st *gateState, f func(*waiter) (error, bool)) {
	kept := st.waiters[:0]
	for _, w := range st.waiters {
		if err, ok := f(w); ok {
			w.ch <- err
		} else {
			kept = append(kept, w)
		}
	}
	clear(st.waiters[len(kept):])
	st.waiters = kept
}

// close stops the flusher and fails every waiter with ErrClosed.
func (b *watermarkBatcher) close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	started := b.started
	for _, st := range b.gates {
		b.wake(st, func(*waiter) (error, bool) { return ErrClosed, true })
	}
	b.mu.Unlock()
	close(b.stop)
	if started {
		b.c.stopLife() // ends an RPC in flight
		<-b.done
	}
}
