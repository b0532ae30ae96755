package replication

import (
	"context"
	"errors"
	"sync"
)

// Durability commits watermarks on the authority: WaitDurable returns nil
// once a watermark ≥ lsn of the holder's epoch is committed, and an error
// wrapping client.ErrFenced once the epoch moved. *client.AckGate
// implements it.
type Durability interface {
	WaitDurable(ctx context.Context, lsn uint64, hash []byte, visibleCommitID uint64) error
}

// ErrGateStopped is returned by Gate.Wait after Stop or once Run ended
// because its context did.
var ErrGateStopped = errors.New("replication: ack gate stopped")

// Gate is a primary's ack gate (DESIGN §6). Writers append and flush
// their record, then Wait for its lsn; the node Offers the highest
// position the watermark may cover (locally flushed and flushed by the
// synchronous replicas, see SyncTracker); Run commits offered positions
// through Durability one at a time, each covering every write offered
// before it (group commit across concurrent writers: while one advance is
// in flight the next one accumulates). A write is acknowledged, and its
// commit made visible, only when Wait returned nil.
//
// The first error from Durability is terminal: every waiter and every
// later Wait gets it (after ErrFenced the holder must never acknowledge
// again). Safe for concurrent use; Run is its one goroutine.
type Gate struct {
	d Durability

	mu             sync.Mutex
	durable        Position
	visible        uint64
	offered        Position
	offeredVisible uint64
	err            error
	changed        chan struct{} // closed and replaced on every change
	kick           chan struct{}
}

// NewGate returns a gate whose committed position is durable with visible
// commit id visible (the domain's watermark when the holder starts, or
// Zero).
func NewGate(d Durability, durable Position, visible uint64) *Gate {
	return &Gate{d: d, durable: durable, visible: visible, offered: durable, offeredVisible: visible,
		changed: make(chan struct{}), kick: make(chan struct{}, 1)}
}

// Offer makes p (with the highest commit id visible at it) eligible for
// the watermark. Offers at or below an earlier offer are ignored.
func (g *Gate) Offer(p Position, visible uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if p.LSN <= g.offered.LSN || g.err != nil {
		return
	}
	g.offered, g.offeredVisible = p, visible
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

// Run commits offered positions until ctx ends or Durability fails; it
// returns why it stopped (the terminal error).
func (g *Gate) Run(ctx context.Context) error {
	for {
		g.mu.Lock()
		if g.err != nil {
			err := g.err
			g.mu.Unlock()
			return err
		}
		pos, vis, pending := g.offered, g.offeredVisible, g.offered.LSN > g.durable.LSN
		g.mu.Unlock()
		if !pending {
			select {
			case <-ctx.Done():
				g.Stop(ErrGateStopped)
				return ErrGateStopped
			case <-g.kick:
				continue
			}
		}
		if err := g.d.WaitDurable(ctx, pos.LSN, pos.Hash, vis); err != nil {
			if ctx.Err() != nil {
				err = ErrGateStopped
			}
			g.Stop(err)
			return err
		}
		g.mu.Lock()
		if pos.LSN > g.durable.LSN {
			g.durable, g.visible = pos, max(g.visible, vis)
			g.broadcast()
		}
		g.mu.Unlock()
	}
}

// Stop fails every waiter, and every later Wait, with err (the first
// call wins).
func (g *Gate) Stop(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err == nil {
		g.err = err
		g.broadcast()
	}
}

func (g *Gate) broadcast() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// Wait returns nil once a committed watermark covers lsn: the write may be
// acknowledged and its commit is visible. Otherwise it returns the gate's
// terminal error, or ctx's error (the write may still become durable).
func (g *Gate) Wait(ctx context.Context, lsn uint64) error {
	for {
		g.mu.Lock()
		durable, err, ch := g.durable.LSN, g.err, g.changed
		g.mu.Unlock()
		if durable >= lsn {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Durable is the highest committed position and the visible commit id
// (the read bound) at it.
func (g *Gate) Durable() (Position, uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.durable, g.visible
}

// Visible is the read bound: the highest commit id a committed watermark
// covers.
func (g *Gate) Visible() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.visible
}

// Err is the gate's terminal error (nil while it runs).
func (g *Gate) Err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// WaitWatermark is Wait: every acknowledged position of a Gate is
// covered by a committed watermark (the node's ack path interface).
func (g *Gate) WaitWatermark(ctx context.Context, lsn uint64) error { return g.Wait(ctx, lsn) }
