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

// ackPath is how a primary acknowledges writes: a replication.Gate
// (authority-gated: a committed watermark covers the write) or a
// replication.QuorumGate (replica-quorum: flushed locally and by K
// synchronous replicas of the epoch; the watermark follows lazily).
type ackPath interface {
	Offer(p replication.Position, visible uint64)
	Run(ctx context.Context) error
	Stop(err error)
	Wait(ctx context.Context, lsn uint64) error
	WaitWatermark(ctx context.Context, lsn uint64) error
	Durable() (replication.Position, uint64)
	Visible() uint64
	Err() error
}

// holderLease is what the primary uses of its lease (*client.Lease).
type holderLease interface {
	Err() error
	Deadline() time.Time
	Context() context.Context
	HandoverRequested() <-chan struct{}
	HandoverCandidate() string
	HandoverDeadline() time.Time
	Release(ctx context.Context) error
}

// primaryState is the node's state while it is the holder at one epoch.
type primaryState struct {
	epoch   uint64
	lease   holderLease
	gate    ackPath
	tracker *replication.SyncTracker
	acks    ackWatch
	// mode is the domain's durability when the role started (unspecified
	// reads as authority-gated).
	mode pb.Durability
	// syncAddrs (replica-quorum) are the addresses of the synchronous set,
	// the domain's active members other than the holder: only their
	// acknowledgements count towards K. Nil: every ship target counts.
	syncAddrs map[string]bool

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
	ps := n.newPrimaryState(d, lease, ag, durable, wm.GetVisibleCommitId())
	gateDone, wg := n.startPrimary(pctx, ps, n.shipTargets(d))
	n.log.Info("primary", "epoch", epoch, "durability", ps.mode.String(), "min_sync_replicas", d.GetPolicy().GetMinSyncReplicas(),
		"last", n.wal.Flushed().String(), "watermark", durable.String(), "next_commit_id", n.store.Applied()+1)

	why := n.watchWhilePrimary(pctx, d, ps, gateDone)
	n.stopPrimary(ps, why)
	cancel()
	wg.Wait()
	return nil
}

// newPrimaryState prepares the holder's state at d's epoch: the ack path
// of the domain's durability mode over dur (the authority's watermark),
// starting from the committed watermark durable (visible commit id
// visible).
func (n *Node) newPrimaryState(d *pb.Domain, lease holderLease, dur replication.Durability, durable replication.Position,
	visible uint64) *primaryState {
	pol := d.GetPolicy()
	k := int(pol.GetMinSyncReplicas())
	if mutant == "ack-k-minus-1" {
		k-- // negative control only (mutant_on.go)
	}
	ps := &primaryState{epoch: d.GetEpoch(), lease: lease, mode: pol.GetDurability(),
		tracker: replication.NewSyncTracker(k), acks: newAckWatch()}
	if ps.mode == pb.Durability_DURABILITY_UNSPECIFIED {
		ps.mode = pb.Durability_DURABILITY_AUTHORITY_GATED
	}
	interval := time.Duration(pol.GetWatermarkIntervalMs()) * time.Millisecond
	switch {
	case n.hooks.benchNoAuthorityWait:
		// The benchmark's no-authority baseline (failpoints builds only):
		// acknowledged once K replicas flushed, no watermark at all.
		n.log.Warn("TEST HOOK: acknowledging without the authority (no watermark): benchmark baseline only")
		ps.gate = replication.NewQuorumGate(nil, durable, visible, interval)
	case ps.mode == pb.Durability_DURABILITY_REPLICA_QUORUM:
		ps.gate = replication.NewQuorumGate(dur, durable, visible, interval)
		ps.syncAddrs = map[string]bool{}
		for _, m := range d.GetMembers() {
			if m.GetId() != n.cfg.ID && m.GetState() == pb.MemberState_MEMBER_STATE_ACTIVE && m.GetAddress() != "" {
				ps.syncAddrs[m.GetAddress()] = true
			}
		}
		if k := max(int(pol.GetMinSyncReplicas()), 1); k > len(ps.syncAddrs) {
			n.log.Error("replica-quorum: fewer synchronous replicas than min_sync_replicas: nothing can be acknowledged",
				"sync_set", len(ps.syncAddrs), "min_sync_replicas", k)
		}
	default:
		ps.gate = replication.NewGate(dur, durable, visible)
	}
	ps.tracker.Local(n.wal.Flushed().LSN)
	return ps
}

// startPrimary makes ps the node's role and starts its goroutines under
// ctx: the ack path's Run (its result goes to gateDone) and one shipper per
// target; wg waits for them (cancel ctx first).
func (n *Node) startPrimary(ctx context.Context, ps *primaryState, targets []string) (<-chan error, *sync.WaitGroup) {
	n.mu.Lock()
	n.applyHeldLocked()
	n.role, n.primary = RolePrimary, ps
	if n.inbound != nil {
		n.inbound.cancel()
	}
	n.mu.Unlock()
	var wg sync.WaitGroup
	gateDone := make(chan error, 1)
	wg.Add(1)
	go func() { defer wg.Done(); gateDone <- ps.gate.Run(ctx) }()
	for _, addr := range targets {
		wg.Add(1)
		go func() { defer wg.Done(); n.shipLoop(ctx, ps, addr) }()
	}
	n.offer(ps) // replicas may already hold more than the watermark
	return gateDone, &wg
}

// stopPrimary ends the primary role: nothing is acknowledged after it.
func (n *Node) stopPrimary(ps *primaryState, why error) {
	n.log.Warn("stepping down", "epoch", ps.epoch, "why", why)
	n.mu.Lock()
	n.role, n.primary = RoleSteppingDown, nil
	n.mu.Unlock()
	ps.gate.Stop(fmt.Errorf("%w: %v", errSteppedDown, why))
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
		if f := d2.GetFence(); f.GetEpoch() > ps.epoch {
			// A replica-quorum promotion was prepared: the replicas stop
			// accepting our WAL, so nothing more could be acknowledged.
			if err := n.raiseFence(f); err != nil {
				n.log.Error("fence", "error", err)
			}
			return fmt.Errorf("a promotion to %q was prepared: fenced at epoch %d", f.GetCandidate(), f.GetEpoch())
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
// group fsync → ship (the shippers wake) → wait on the ack path → acknowledge.
// Authority-gated: a committed watermark covers it. Replica-quorum: K
// synchronous replicas of our epoch flushed it (and the lease still
// holds); the watermark follows lazily. The commit becomes visible to
// reads at the same moment (the ack path's visible commit id).
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
	if ps.mode == pb.Durability_DURABILITY_REPLICA_QUORUM {
		// The authority was not asked: acknowledge only while the lease
		// holds (a primary paused past it stops here; the replicas'
		// fence is what makes this safe, the lease keeps reads fresh).
		if err := ps.leaseOK(); err != nil {
			return nil, statusError(codes.Unavailable, ReasonFenced, "not acknowledged: "+err.Error(), nil)
		}
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
	ps.ack(addr, pos.LSN)
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
		ps.ack(addr, got.LSN)
		n.offer(ps)
		next = got.LSN + 1
	}
}

// ack records that the replica at addr flushed lsn (verified on our
// history): it counts towards K when it is in the synchronous set.
func (ps *primaryState) ack(addr string, lsn uint64) {
	if ps.syncAddrs == nil || ps.syncAddrs[addr] {
		ps.tracker.Ack(addr, lsn)
	}
	ps.acks.note(addr, lsn)
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
