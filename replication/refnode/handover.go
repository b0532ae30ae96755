package refnode

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/grpc/codes"
)

// Planned switchover, the holder's side. When the authority asks this
// primary (on a lease renewal) to hand over to a candidate, it:
//
//  1. stops accepting new writes (they fail UNAVAILABLE / NOT_PRIMARY,
//     naming the candidate and its address: retry there);
//  2. waits until the committed watermark covers its last record (the
//     ack gate advances it) and the candidate has flushed that record,
//     and until every write it had accepted was answered;
//  3. releases the lease, and becomes a replica following the candidate.
//
// If step 2 does not finish well before the request lapses (the operator's
// timeout), it resumes accepting writes and keeps the lease: the operator's
// switchover times out with nothing promoted. Resuming is safe because
// nothing was released: the lease stayed held and renewed throughout.

// handoverMargin: the holder releases only this long before the request
// lapses, so that the release does not land after the operator gave up.
const handoverMargin = 300 * time.Millisecond

// errHandoverLapsed: the drain did not finish in time.
var errHandoverLapsed = errors.New("the handover request lapses before the drain finished")

// handingOverError answers a write refused while draining.
func (ps *primaryState) handingOverError(self string) error {
	return statusError(codes.Unavailable, ReasonNotPrimary,
		fmt.Sprintf("%s is handing over to %s (planned switchover): retry on the new primary", self, ps.handoverTo),
		map[string]string{"holder": ps.handoverTo, "address": ps.handoverAddr})
}

// handOver drains and releases (nil), or resumes writes and returns why not.
func (n *Node) handOver(ctx context.Context, d *pb.Domain, ps *primaryState) error {
	cand := ps.lease.HandoverCandidate()
	by := ps.lease.HandoverDeadline().Add(-handoverMargin)
	addr := memberOf(d, cand).GetAddress()
	if addr == "" || cand == n.cfg.ID {
		return fmt.Errorf("candidate %q is not another member with an address", cand)
	}
	n.mu.Lock()
	ps.draining, ps.handoverTo, ps.handoverAddr = true, cand, addr
	final := n.wal.Last().LSN
	n.mu.Unlock()
	n.log.Info("handover requested: draining", "candidate", cand, "final_lsn", final, "until", time.Until(by).Round(time.Millisecond))

	err := n.drain(ctx, ps, addr, final, by)
	if err == nil && !time.Now().Before(by) {
		err = errHandoverLapsed
	}
	if err == nil && n.hooks.handoverNoRelease {
		err = errors.New("failpoint: handover release skipped")
	}
	if err == nil {
		// Not under ctx: it derives from the lease's context, which the
		// release itself ends.
		rctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), by)
		err = ps.lease.Release(rctx)
		cancel()
		if err == nil {
			n.log.Info("released for the handover", "candidate", cand, "final_lsn", final)
			return nil
		}
		// The release may or may not have committed: if it did, the domain
		// shows released and the watch steps down; writes stay refused
		// until then only if the lease is gone (leaseOK).
	}
	n.mu.Lock()
	ps.draining, ps.idle = false, nil
	n.mu.Unlock()
	return err
}

// answered ends one accepted write.
func (n *Node) answered(ps *primaryState) {
	n.mu.Lock()
	defer n.mu.Unlock()
	ps.inflight--
	if ps.inflight == 0 && ps.idle != nil {
		close(ps.idle)
		ps.idle = nil
	}
}

// drain waits until the committed watermark covers final, the candidate at
// addr flushed it, and every accepted write was answered, or by passes.
func (n *Node) drain(ctx context.Context, ps *primaryState, addr string, final uint64, by time.Time) error {
	dctx, cancel := context.WithDeadline(ctx, by)
	defer cancel()
	if final > 0 {
		if err := ps.gate.WaitWatermark(dctx, final); err != nil {
			return fmt.Errorf("watermark to lsn %d: %w", final, err)
		}
		if err := ps.acks.wait(dctx, addr, final); err != nil {
			return fmt.Errorf("candidate at %s flushing lsn %d: %w", addr, final, err)
		}
	}
	n.mu.Lock()
	if ps.inflight == 0 {
		n.mu.Unlock()
		return nil
	}
	ps.idle = make(chan struct{})
	done := ps.idle
	n.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-dctx.Done():
		return fmt.Errorf("writes in flight: %w", dctx.Err())
	}
}

// ackWatch keeps each replica's highest flushed lsn, for waiting on one.
type ackWatch struct {
	mu      sync.Mutex
	flushed map[string]uint64
	changed chan struct{}
}

func newAckWatch() ackWatch {
	return ackWatch{flushed: map[string]uint64{}, changed: make(chan struct{})}
}

func (a *ackWatch) note(addr string, lsn uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if lsn > a.flushed[addr] {
		a.flushed[addr] = lsn
		close(a.changed)
		a.changed = make(chan struct{})
	}
}

func (a *ackWatch) wait(ctx context.Context, addr string, lsn uint64) error {
	for {
		a.mu.Lock()
		got, ch := a.flushed[addr], a.changed
		a.mu.Unlock()
		if got >= lsn {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("at lsn %d: %w", got, ctx.Err())
		}
	}
}
