package replication

import (
	"context"
	"sync"
	"time"
)

// QuorumGate is a primary's ack path in replica-quorum mode
// (DURABILITY_REPLICA_QUORUM): a write is acknowledged, and its commit made
// visible, once it is flushed locally and by K synchronous replicas of the
// primary's epoch. The node Offers exactly those positions (SyncTracker's
// Eligible, K = the policy's min_sync_replicas); no authority round trip
// is on that path.
//
// The watermark still advances, lazily, for progress, monitoring and
// faster promotions: Run commits the highest offered position through
// Durability at most once per interval (the next advance starts an
// interval after the previous one finished, so the authority records at
// most one watermark entry per interval), never beyond an offered
// position, so never beyond what K replicas flushed (the authority reads
// the watermark as a lower bound of acknowledged writes). WaitWatermark
// asks for an advance at once (a planned handover's final watermark).
//
// The first error from Durability is terminal, as for Gate: every waiter
// and every later Wait gets it (after ErrFenced the holder must never
// acknowledge again). A nil Durability never advances the watermark (the
// no-authority benchmark baseline). Safe for concurrent use; Run is its
// one goroutine.
type QuorumGate struct {
	d        Durability
	interval time.Duration
	after    func(time.Duration) <-chan time.Time

	mu           sync.Mutex
	acked        Position
	visible      uint64
	watermark    Position
	watermarkVis uint64
	advances     uint64
	urgent       uint64 // WaitWatermark wants the watermark at this lsn now
	err          error
	changed      chan struct{}
	kick         chan struct{}
}

// QuorumOption adjusts a QuorumGate.
type QuorumOption func(*QuorumGate)

// WithTimer replaces time.After for the interval between advances (tests).
func WithTimer(after func(time.Duration) <-chan time.Time) QuorumOption {
	return func(g *QuorumGate) { g.after = after }
}

// NewQuorumGate returns a gate whose acknowledged position and committed
// watermark start at durable with visible commit id visible (the domain's
// watermark when the holder starts, or Zero). interval ≤ 0 means 1 s.
func NewQuorumGate(d Durability, durable Position, visible uint64, interval time.Duration, opts ...QuorumOption) *QuorumGate {
	if interval <= 0 {
		interval = time.Second
	}
	g := &QuorumGate{d: d, interval: interval, after: time.After, acked: durable, visible: visible,
		watermark: durable, watermarkVis: visible, changed: make(chan struct{}), kick: make(chan struct{}, 1)}
	for _, f := range opts {
		f(g)
	}
	return g
}

// Offer acknowledges p (with the highest commit id visible at it): the
// caller guarantees p is flushed locally and by K synchronous replicas of
// its epoch. Offers at or below an earlier one are ignored, and so is
// everything after the gate stopped.
func (g *QuorumGate) Offer(p Position, visible uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if p.LSN <= g.acked.LSN || g.err != nil {
		return
	}
	g.acked, g.visible = p, max(g.visible, visible)
	g.broadcast()
	g.kickLocked()
}

func (g *QuorumGate) kickLocked() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

func (g *QuorumGate) broadcast() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// Run advances the watermark lazily until ctx ends or Durability fails;
// it returns why it stopped (the terminal error). With a nil Durability it
// only waits for ctx.
func (g *QuorumGate) Run(ctx context.Context) error {
	var wait <-chan time.Time // the interval since the previous advance
	for {
		g.mu.Lock()
		if g.err != nil {
			err := g.err
			g.mu.Unlock()
			return err
		}
		pos, vis := g.acked, g.visible
		pending := g.d != nil && pos.LSN > g.watermark.LSN
		urgent := g.urgent > g.watermark.LSN && g.urgent <= pos.LSN
		g.mu.Unlock()
		if pending && (wait == nil || urgent) {
			err := g.d.WaitDurable(ctx, pos.LSN, pos.Hash, vis)
			if err != nil {
				if ctx.Err() != nil {
					err = ErrGateStopped
				}
				g.Stop(err)
				return err
			}
			g.mu.Lock()
			g.advances++
			if pos.LSN > g.watermark.LSN {
				g.watermark, g.watermarkVis = pos, max(g.watermarkVis, vis)
				g.broadcast()
			}
			g.mu.Unlock()
			wait = g.after(g.interval)
			continue
		}
		select {
		case <-ctx.Done():
			g.Stop(ErrGateStopped)
			return ErrGateStopped
		case <-g.kick:
		case <-wait:
			wait = nil
		}
	}
}

// Stop fails every waiter, and every later Wait, with err (the first call
// wins); nothing is acknowledged after it.
func (g *QuorumGate) Stop(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err == nil {
		g.err = err
		g.broadcast()
	}
}

// Wait returns nil once lsn is acknowledged (flushed locally and by K
// replicas): the write may be acknowledged and its commit is visible.
// Otherwise the gate's terminal error, or ctx's error.
func (g *QuorumGate) Wait(ctx context.Context, lsn uint64) error {
	for {
		g.mu.Lock()
		acked, err, ch := g.acked.LSN, g.err, g.changed
		g.mu.Unlock()
		if err != nil {
			// Checked first: once stopped (fenced, stepped down) nothing
			// more is acknowledged, even what a replica flushed before.
			return err
		}
		if acked >= lsn {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// WaitWatermark asks for a watermark covering lsn at once (not waiting for
// the interval) and returns nil once one is committed; lsn must become
// acknowledged first. Otherwise the terminal error or ctx's.
func (g *QuorumGate) WaitWatermark(ctx context.Context, lsn uint64) error {
	g.mu.Lock()
	g.urgent = max(g.urgent, lsn)
	g.kickLocked()
	g.mu.Unlock()
	for {
		g.mu.Lock()
		wm, err, ch := g.watermark.LSN, g.err, g.changed
		g.mu.Unlock()
		if wm >= lsn {
			return nil
		}
		if err != nil {
			return err
		}
		if g.d == nil {
			return ErrGateStopped
		}
		select {
		case <-ch:
			g.mu.Lock()
			g.kickLocked() // lsn may just have been acknowledged
			g.mu.Unlock()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Durable is the highest acknowledged position and the visible commit id
// (the read bound) at it.
func (g *QuorumGate) Durable() (Position, uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.acked, g.visible
}

// Visible is the read bound: the highest acknowledged commit id.
func (g *QuorumGate) Visible() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.visible
}

// Watermark is the highest watermark this gate committed (or started
// with) and its visible commit id.
func (g *QuorumGate) Watermark() (Position, uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.watermark, g.watermarkVis
}

// Advances counts the watermark advances committed.
func (g *QuorumGate) Advances() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.advances
}

// Err is the gate's terminal error (nil while it runs).
func (g *QuorumGate) Err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}
