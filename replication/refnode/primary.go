package refnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	rpb "github.com/aerodb/authority/api/refnode/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/replication"
	"google.golang.org/grpc/codes"
)

// maxShipBatch bounds the records of one ship message.
const maxShipBatch = 512

// errSteppedDown fails writes still waiting when the primary role ends.
var errSteppedDown = errors.New("refnode: primary stepped down")

// primaryState is the node's state while it is the holder at one epoch.
type primaryState struct {
	epoch   uint64
	lease   *client.Lease
	gate    *replication.Gate
	tracker *replication.SyncTracker
	acks    ackWatch

	// Planned switchover (see handover.go), guarded by Node.mu: while
	// draining no new write is accepted; inflight counts writes accepted
	// and not yet answered.
	draining     bool
	handoverTo   string
	handoverAddr string
	inflight     int
	idle         chan struct{} // closed when inflight drops to zero, if set
}

// runPrimary acts as the holder at d's epoch until the lease is lost, the
// gate is fenced, the domain moves on, or ctx ends.
func (n *Node) runPrimary(ctx context.Context, d *pb.Domain) error {
	epoch := d.GetEpoch()
	lease, err := n.ac.KeepLease(ctx, n.cfg.Domain, n.cfg.ID, epoch, 0)
	if errors.Is(err, client.ErrLeaseExpired) || errors.Is(err, client.ErrNoLease) {
		// Our own lease expired (e.g. we restarted late): re-take it through
		// the log, only if the epoch is still ours (compare-and-set).
		lease, err = n.ac.Acquire(ctx, n.cfg.Domain, n.cfg.ID, client.WithExpectedEpoch(epoch))
	}
	if err != nil {
		n.log.Warn("cannot hold the lease", "epoch", epoch, "error", err)
		return sleepCtx(ctx, n.cfg.PollInterval)
	}
	wm := d.GetWatermark()
	durable := replication.Zero
	if wm.GetLsn() > 0 {
		h, ok := n.wal.HashAt(wm.GetLsn())
		if !ok || !bytes.Equal(h, wm.GetHash()) {
			return fmt.Errorf("%w: watermark lsn %d, local wal at %s", ErrLostWatermark, wm.GetLsn(), n.wal.Flushed())
		}
		durable = replication.Position{Epoch: wm.GetEpoch(), LSN: wm.GetLsn(), Hash: wm.GetHash()}
	}
	pctx, cancel := context.WithCancel(lease.Context())
	defer cancel()
	ag := client.NewAckGate(n.ac, n.cfg.Domain, n.cfg.ID, epoch, client.WithLease(lease))
	defer ag.Close()
	ps := &primaryState{epoch: epoch, lease: lease, gate: replication.NewGate(ag, durable, wm.GetVisibleCommitId()),
		tracker: replication.NewSyncTracker(int(d.GetPolicy().GetMinSyncReplicas())), acks: newAckWatch()}
	ps.tracker.Local(n.wal.Flushed().LSN)

	n.mu.Lock()
	n.applyHeldLocked()
	n.role, n.primary = RolePrimary, ps
	if n.inbound != nil {
		n.inbound.cancel()
	}
	n.mu.Unlock()
	n.log.Info("primary", "epoch", epoch, "last", n.wal.Flushed().String(), "watermark", durable.String(),
		"next_commit_id", n.store.Applied()+1)

	var wg sync.WaitGroup
	gateDone := make(chan error, 1)
	wg.Add(1)
	go func() { defer wg.Done(); gateDone <- ps.gate.Run(pctx) }()
	for _, addr := range n.shipTargets(d) {
		wg.Add(1)
		go func() { defer wg.Done(); n.shipLoop(pctx, ps, addr) }()
	}
	n.offer(ps) // replicas may already hold more than the watermark

	why := n.watchWhilePrimary(pctx, d, ps, gateDone)
	n.log.Warn("stepping down", "epoch", epoch, "why", why)
	n.mu.Lock()
	n.role, n.primary = RoleSteppingDown, nil
	n.mu.Unlock()
	ps.gate.Stop(fmt.Errorf("%w: %v", errSteppedDown, why))
	cancel()
	wg.Wait()
	return nil
}

// watchWhilePrimary returns why the primary role must end.
func (n *Node) watchWhilePrimary(ctx context.Context, d *pb.Domain, ps *primaryState, gateDone <-chan error) error {
	t := time.NewTicker(n.cfg.PollInterval)
	defer t.Stop()
	handover := ps.lease.HandoverRequested()
	for {
		select {
		case <-handover:
			handover = nil // one attempt per lease: a failed drain resumes and keeps the lease
			if err := n.handOver(ctx, d, ps); err != nil {
				n.log.Warn("handover abandoned; still the primary", "epoch", ps.epoch, "error", err)
				continue
			}
			return fmt.Errorf("handed over to %s", ps.handoverTo)
		case <-ctx.Done():
			if err := context.Cause(ctx); err != nil {
				return err
			}
			return ctx.Err()
		case err := <-gateDone:
			return err
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		d2, err := n.ac.GetDomain(rctx, n.cfg.Domain)
		cancel()
		if err != nil {
			continue
		}
		n.observeDomain(d2)
		if d2.GetEpoch() != d.GetEpoch() || d2.GetHolder() != n.cfg.ID || d2.GetReleased() {
			return fmt.Errorf("domain moved to epoch %d holder %q", d2.GetEpoch(), d2.GetHolder())
		}
	}
}

// shipTargets are the peers and every other member's registered address.
func (n *Node) shipTargets(d *pb.Domain) []string {
	seen := map[string]bool{n.cfg.Advertise: true, n.cfg.Listen: true}
	var out []string
	add := func(a string) {
		if a != "" && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	for _, p := range n.cfg.Peers {
		add(p)
	}
	for _, m := range d.GetMembers() {
		if m.GetId() != n.cfg.ID {
			add(m.GetAddress())
		}
	}
	return out
}

// put is the primary's write path: append (chained, next commit id) →
// group fsync → ship (the shippers wake) → wait for a committed watermark
// covering it → acknowledge. The commit becomes visible to reads at the
// same moment (the gate's visible commit id).
func (n *Node) put(ctx context.Context, key, value []byte) (*rpb.PutResponse, error) {
	n.mu.Lock()
	ps := n.primary
	if ps == nil {
		defer n.mu.Unlock()
		return nil, n.notPrimaryLocked()
	}
	if err := ps.leaseOK(); err != nil {
		n.mu.Unlock()
		return nil, statusError(codes.Unavailable, ReasonFenced, err.Error(), nil)
	}
	if ps.draining {
		n.mu.Unlock()
		return nil, ps.handingOverError(n.cfg.ID)
	}
	ps.inflight++
	defer n.answered(ps)
	commit := max(n.lastCommit, n.store.Applied()) + 1
	rec := NewRecord(n.wal.Last(), ps.epoch, commit, key, value)
	if err := n.wal.Append(rec); err != nil {
		n.mu.Unlock()
		return nil, statusError(codes.Internal, ReasonCorrupt, err.Error(), nil)
	}
	n.lastCommit = commit
	n.store.Apply(commit, key, value) // invisible until the gate's bound passes it
	n.mu.Unlock()

	if err := n.wal.SyncTo(rec.Lsn); err != nil {
		n.log.Error("wal fsync failed; stopping writes", "error", err)
		ps.gate.Stop(err)
		return nil, statusError(codes.Internal, ReasonUnavailable, "wal fsync: "+err.Error(), nil)
	}
	ps.tracker.Local(rec.Lsn)
	n.notifyFlushed()
	n.offer(ps)
	if err := ps.gate.Wait(ctx, rec.Lsn); err != nil {
		if ctx.Err() != nil {
			return nil, statusError(codes.DeadlineExceeded, ReasonUnavailable, "not acknowledged: "+err.Error(), nil)
		}
		return nil, statusError(codes.Unavailable, ReasonFenced, "not acknowledged: "+err.Error(), nil)
	}
	return &rpb.PutResponse{Epoch: ps.epoch, Lsn: rec.Lsn, CommitId: commit}, nil
}

// leaseOK: the lease is held and its local deadline has not passed (the
// deadline check covers a process that was paused past it before the
// lease's own timer could fire).
func (ps *primaryState) leaseOK() error {
	if err := ps.lease.Err(); err != nil {
		return err
	}
	if dl := ps.lease.Deadline(); !dl.IsZero() && !time.Now().Before(dl) {
		return client.ErrLeaseLost
	}
	if err := ps.gate.Err(); err != nil {
		return err
	}
	return nil
}

func (n *Node) notPrimaryLocked() error {
	return statusError(codes.FailedPrecondition, ReasonNotPrimary, fmt.Sprintf("%s is %s, not the primary (holder %q at %s)",
		n.cfg.ID, n.role, n.holder, n.holderAddr), map[string]string{"holder": n.holder, "address": n.holderAddr})
}

// offer passes the highest position the watermark may cover to the gate.
func (n *Node) offer(ps *primaryState) {
	lsn := ps.tracker.Eligible()
	if lsn == 0 {
		return
	}
	if r := n.wal.Record(lsn); r != nil {
		ps.gate.Offer(PositionOf(r), r.CommitId)
	}
}

// shipLoop keeps one replica's stream going until ctx ends.
func (n *Node) shipLoop(ctx context.Context, ps *primaryState, addr string) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		err := n.shipOnce(ctx, ps, addr)
		if ctx.Err() != nil {
			return
		}
		switch ReasonOf(err) {
		case ReasonFenced:
			n.log.Warn("replica has seen a newer epoch: we are deposed", "replica", addr, "error", err)
		case ReasonDiverged:
			backoff = time.Second
		}
		n.log.Debug("ship stream ended", "replica", addr, "error", err)
		if sleepCtx(ctx, backoff) != nil {
			return
		}
		backoff = min(2*backoff, time.Second)
	}
}

var errReplicaDiverged = errors.New("replica history is not a prefix of ours")

// shipOnce runs one ship stream: hello, check the replica's position
// against our history, then batches as the WAL grows, each acknowledged
// with the replica's flushed position, which feeds the sync tracker.
func (n *Node) shipOnce(ctx context.Context, ps *primaryState, addr string) error {
	conn, err := n.peerConn(addr)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := rpb.NewRefNodeClient(conn).Ship(sctx)
	if err != nil {
		return err
	}
	if err := st.Send(&rpb.ShipRequest{Body: &rpb.ShipRequest_Hello{Hello: &rpb.ShipHello{PrimaryId: n.cfg.ID, Epoch: ps.epoch, Domain: n.cfg.Domain}}}); err != nil {
		_, rerr := st.Recv()
		return errors.Join(err, rerr)
	}
	resp, err := st.Recv()
	if err != nil {
		return err
	}
	pos := posOf(resp.GetFlushed())
	if !n.onOurHistory(pos) {
		last := n.wal.Flushed()
		h, _ := n.wal.HashAt(pos.LSN)
		n.log.Warn("replica diverged from our history", "replica", addr, "replica_last", pos.String(), "our_last", last.String())
		_ = st.Send(&rpb.ShipRequest{Body: &rpb.ShipRequest_Diverged{Diverged: &rpb.DivergedNotice{PrimaryLast: posProto(last), PrimaryHashAtReplicaLsn: h}}})
		_, _ = st.Recv()
		return statusError(codes.FailedPrecondition, ReasonDiverged, errReplicaDiverged.Error(), nil)
	}
	ps.tracker.Ack(addr, pos.LSN)
	ps.acks.note(addr, pos.LSN)
	n.offer(ps)
	next := pos.LSN + 1
	for {
		if err := n.waitFlushed(sctx, next); err != nil {
			return err
		}
		frames := n.wal.Frames(next, maxShipBatch)
		if len(frames) == 0 {
			continue
		}
		if err := st.Send(&rpb.ShipRequest{Body: &rpb.ShipRequest_Batch{Batch: &rpb.ShipBatch{Frames: frames}}}); err != nil {
			_, rerr := st.Recv()
			return errors.Join(err, rerr)
		}
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		got := posOf(resp.GetFlushed())
		if want := next + uint64(len(frames)) - 1; got.LSN != want || !n.onOurHistory(got) {
			return fmt.Errorf("replica %s acknowledged %s, want lsn %d on our history", addr, got, want)
		}
		ps.tracker.Ack(addr, got.LSN)
		ps.acks.note(addr, got.LSN)
		n.offer(ps)
		next = got.LSN + 1
	}
}

// onOurHistory: our flushed WAL has the same record at p.
func (n *Node) onOurHistory(p replication.Position) bool {
	h, ok := n.wal.HashAt(p.LSN)
	return ok && bytes.Equal(h, p.Hash)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
