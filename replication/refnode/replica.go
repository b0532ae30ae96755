package refnode

import (
	"bytes"
	"context"
	"fmt"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	rpb "github.com/aerodb/authority/api/refnode/v1"
	"github.com/aerodb/authority/replication"
	"google.golang.org/grpc/codes"
)

// inboundStream is the ship stream a replica currently accepts.
type inboundStream struct {
	primary string
	epoch   uint64
	ctx     context.Context
	cancel  context.CancelFunc
}

// runReplica follows d's holder until the domain moves (epoch, holder) or
// the node diverges: it reports progress, checks once that its history is
// a prefix of the holder's, and accepts the holder's ship stream.
func (n *Node) runReplica(ctx context.Context, d *pb.Domain) error {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rep := replication.NewReporter(n.ac, n.cfg.Domain, n.cfg.ReportInterval, n.progress, n.wal.HashAt)
	rep.NoteWatermark(d.GetWatermark())
	rep.OnFence(n.raiseFence) // a leader's reply names a prepared fence: raise it, then report
	n.mu.Lock()
	n.role, n.reporter = RoleReplica, rep
	n.mu.Unlock()
	rep.Start(rctx)
	defer func() {
		n.mu.Lock()
		n.reporter = nil
		n.mu.Unlock()
		rep.Close()
	}()
	n.log.Info("replica", "epoch", d.GetEpoch(), "holder", d.GetHolder(), "last", n.wal.Flushed().String())
	go n.verifyAgainstHolder(rctx, d)

	poll := n.cfg.PollInterval
	if d.GetReleased() {
		// The holder released (a planned switchover): a promotion is
		// imminent, and the candidate should notice it at once.
		poll = min(poll, 10*time.Millisecond)
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	var reportedWM, fencedReported uint64
	for {
		select {
		case <-rctx.Done():
			return nil
		case <-n.diverged:
			n.mu.Lock()
			reason := n.divergedReason
			n.mu.Unlock()
			rep.Report() // best effort: the leader learns we are DIVERGED
			return fmt.Errorf("%w: %s", ErrDiverged, reason)
		case <-t.C:
		}
		rd, cancelRead := context.WithTimeout(rctx, 2*time.Second)
		d2, err := n.ac.GetDomain(rd, n.cfg.Domain)
		cancelRead()
		if err != nil {
			continue
		}
		n.observeDomain(d2)
		rep.NoteWatermark(d2.GetWatermark())
		if f := d2.GetFence(); f.GetEpoch() > fencedReported {
			// The domain record shows a prepared promotion: fence first,
			// then report the final position at once.
			if err := n.raiseFence(f); err != nil {
				n.log.Error("fence", "error", err)
			} else {
				fencedReported = f.GetEpoch()
				rep.Report()
			}
		}
		// A new watermark is reported at once rather than at the next
		// interval: the first report fetches it (the leader's reply),
		// the next names our hash at it — what a promotion (a planned
		// switchover's, right after the holder's final advance) needs.
		if wm := d2.GetWatermark().GetLsn(); wm > reportedWM {
			if rep.Watermark().GetLsn() >= wm {
				reportedWM = wm
			}
			rep.Report()
		}
		if d2.GetEpoch() != d.GetEpoch() || d2.GetHolder() != d.GetHolder() || d2.GetReleased() != d.GetReleased() {
			return nil
		}
	}
}

// verifyAgainstHolder asks the holder for its hash at our last lsn: a
// node whose last record is not on the holder's history (a former
// primary's unreplicated tail) is diverged and refuses to continue.
func (n *Node) verifyAgainstHolder(ctx context.Context, d *pb.Domain) {
	addr := memberOf(d, d.GetHolder()).GetAddress()
	if addr == "" || d.GetHolder() == n.cfg.ID {
		return
	}
	for ctx.Err() == nil {
		last := n.wal.Flushed()
		resp, err := n.hashAtPeer(ctx, addr, last.LSN)
		if err == nil {
			if resp.GetEpoch() < d.GetEpoch() {
				// Not yet the holder at this epoch (e.g. still starting);
				// its answer is not the new history yet.
				err = fmt.Errorf("holder at %s still at epoch %d", addr, resp.GetEpoch())
			} else {
				if !resp.GetPresent() || !bytes.Equal(resp.GetHash(), last.Hash) {
					n.markDiverged(fmt.Sprintf("local wal ends at %s, which is not on the history of holder %s at epoch %d (its last is %s)",
						last, d.GetHolder(), d.GetEpoch(), posOf(resp.GetLast())))
				}
				return
			}
		}
		n.log.Debug("divergence check pending", "holder", addr, "error", err)
		if sleepCtx(ctx, 250*time.Millisecond) != nil {
			return
		}
	}
}

func (n *Node) hashAtPeer(ctx context.Context, addr string, lsn uint64) (*rpb.HashAtResponse, error) {
	conn, err := n.peerConn(addr)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return rpb.NewRefNodeClient(conn).HashAt(cctx, &rpb.HashAtRequest{Lsn: lsn})
}

// progress is the reporter's source.
func (n *Node) progress() replication.ReplicaProgress {
	n.mu.Lock()
	defer n.mu.Unlock()
	flushed := n.wal.Flushed()
	applied := n.store.Applied()
	state := pb.ReplicaState_REPLICA_STATE_CATCHING_UP
	if n.inbound != nil {
		state = pb.ReplicaState_REPLICA_STATE_STREAMING
	}
	if n.role == RoleDiverged {
		state = pb.ReplicaState_REPLICA_STATE_DIVERGED
	}
	// Epoch is that of the WAL we follow (the domain's, or a newer
	// primary's stream); the fence may be above it once a promotion was
	// prepared (replica-quorum), and the report says so in FencedEpoch.
	epoch := n.domainEpoch
	if n.inbound != nil {
		epoch = max(epoch, n.inbound.epoch)
	}
	if epoch == 0 {
		epoch = n.fence.Highest()
	}
	return replication.ReplicaProgress{Member: n.cfg.ID, Epoch: epoch, Flushed: flushed,
		AppliedCommitID: applied, ReadSafe: n.appliedLSN >= flushed.LSN && n.role == RoleReplica, State: state,
		FencedEpoch: n.fence.Highest()}
}

// raiseFence obeys a replica-quorum fence (a committed PreparePromotion):
// it durably raises the fence guard to f's epoch (persisted and fsynced
// before it takes effect), under the node's lock so no shipped batch is
// half applied, and ends a ship stream of a lower epoch. From its return
// on, the node accepts no WAL below the fence: its flushed position is
// final for the older epochs, and the old primary can collect no
// acknowledgement from it. Idempotent.
func (n *Node) raiseFence(f *pb.Fence) error {
	e := f.GetEpoch()
	if e == 0 {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	raised, err := n.fence.Observe(e)
	if err != nil {
		return err
	}
	if in := n.inbound; in != nil && in.epoch < e {
		in.cancel()
	}
	if raised {
		n.log.Warn("fenced by a prepared promotion: refusing wal below the fence", "fence_epoch", e,
			"candidate", f.GetCandidate(), "final", n.wal.Flushed().String())
	}
	return nil
}

// acceptStream admits a primary's hello: the fence (epoch ≥ the highest
// seen, which it raises), the role, and supersedes an older stream.
func (n *Node) acceptStream(ctx context.Context, h *rpb.ShipHello) (*inboundStream, *rpb.ShipResponse, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case h.GetDomain() != n.cfg.Domain:
		return nil, nil, statusError(codes.InvalidArgument, ReasonNotReplica, fmt.Sprintf("domain %q, this node is in %q", h.GetDomain(), n.cfg.Domain), nil)
	case n.role == RoleDiverged:
		return nil, nil, statusError(codes.FailedPrecondition, ReasonDiverged, n.divergedReason, nil)
	}
	if err := n.fence.Admit(h.GetEpoch()); err != nil && mutant != "accept-fenced-wal" {
		n.fencedRejects++
		n.log.Warn("rejected a ship stream from an older epoch", "primary", h.GetPrimaryId(), "epoch", h.GetEpoch(), "fence", n.fence.Highest())
		return nil, nil, statusError(codes.FailedPrecondition, ReasonFenced, fmt.Sprintf("%s is fenced at epoch %d: refusing a ship stream of epoch %d from %s (%v)",
			n.cfg.ID, n.fence.Highest(), h.GetEpoch(), h.GetPrimaryId(), err), nil)
	}
	if n.role != RoleReplica {
		return nil, nil, statusError(codes.FailedPrecondition, ReasonNotReplica, fmt.Sprintf("%s is %s", n.cfg.ID, n.role), nil)
	}
	if n.inbound != nil {
		n.inbound.cancel()
	}
	sctx, cancel := context.WithCancel(ctx)
	in := &inboundStream{primary: h.GetPrimaryId(), epoch: h.GetEpoch(), ctx: sctx, cancel: cancel}
	n.inbound = in
	return in, n.positionLocked(), nil
}

func (n *Node) endStream(in *inboundStream) {
	n.mu.Lock()
	defer n.mu.Unlock()
	in.cancel()
	if n.inbound == in {
		n.inbound = nil
	}
}

func (n *Node) positionLocked() *rpb.ShipResponse {
	return &rpb.ShipResponse{Flushed: posProto(n.wal.Flushed()), AppliedCommitId: n.store.Applied(), EpochSeen: n.fence.Highest()}
}

// applyBatch validates a shipped batch completely (fence, checksum, order,
// chain, epochs) before appending anything, then appends, fsyncs and
// applies it.
func (n *Node) applyBatch(in *inboundStream, frames [][]byte) (*rpb.ShipResponse, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	// The fence first: a stream a fence ended is refused as fenced.
	if err := n.fence.Check(in.epoch); err != nil && mutant != "accept-fenced-wal" {
		n.fencedRejects++
		n.log.Warn("rejected wal from an older epoch", "primary", in.primary, "epoch", in.epoch, "fence", n.fence.Highest())
		return nil, statusError(codes.FailedPrecondition, ReasonFenced, fmt.Sprintf("%s is fenced at epoch %d: refusing wal of epoch %d from %s (%v)",
			n.cfg.ID, n.fence.Highest(), in.epoch, in.primary, err), nil)
	}
	if n.inbound != in || in.ctx.Err() != nil {
		return nil, statusError(codes.Aborted, ReasonSuperseded, "a newer ship stream replaced this one", nil)
	}
	if n.role != RoleReplica {
		return nil, statusError(codes.FailedPrecondition, ReasonNotReplica, fmt.Sprintf("%s is %s", n.cfg.ID, n.role), nil)
	}
	prev := n.wal.Flushed()
	recs := make([]*rpb.WalRecord, 0, len(frames))
	for _, f := range frames {
		rec, err := DecodeFrame(f)
		if err == nil {
			err = VerifyRecord(prev, rec)
		}
		if err == nil && rec.Epoch > in.epoch {
			err = fmt.Errorf("record at lsn %d carries epoch %d, above its primary's %d", rec.Lsn, rec.Epoch, in.epoch)
		}
		if err != nil {
			return nil, statusError(codes.DataLoss, ReasonCorrupt, fmt.Sprintf("rejected batch after %s: %v", prev, err), nil)
		}
		recs = append(recs, rec)
		prev = PositionOf(rec)
	}
	if err := n.wal.Append(recs...); err != nil {
		return nil, statusError(codes.DataLoss, ReasonCorrupt, err.Error(), nil)
	}
	if err := n.wal.SyncTo(prev.LSN); err != nil {
		n.log.Error("wal fsync failed", "error", err)
		return nil, statusError(codes.Internal, ReasonUnavailable, "wal fsync: "+err.Error(), nil)
	}
	n.lastCommit = max(n.lastCommit, recs[len(recs)-1].CommitId)
	if !n.hooks.holdApply {
		n.applyHeldLocked()
	}
	if n.reporter != nil {
		n.reporter.Report()
	}
	return n.positionLocked(), nil
}

// applyHeldLocked applies every flushed record not yet applied.
func (n *Node) applyHeldLocked() {
	for _, r := range n.wal.Records(n.appliedLSN+1, int(n.wal.Flushed().LSN-n.appliedLSN)) {
		n.store.Apply(r.CommitId, r.Key, r.Value)
		n.appliedLSN = r.Lsn
	}
}

// checkDivergedNotice verifies a primary's claim that we diverged against
// our own WAL before acting on it.
func (n *Node) checkDivergedNotice(notice *rpb.DivergedNotice) {
	last := n.wal.Flushed()
	primaryLast := posOf(notice.GetPrimaryLast())
	if last.LSN > primaryLast.LSN || !bytes.Equal(notice.GetPrimaryHashAtReplicaLsn(), last.Hash) {
		n.markDiverged(fmt.Sprintf("local wal ends at %s, not on the history of the primary (its last is %s)", last, primaryLast))
	}
}
