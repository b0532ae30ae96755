package crashmatrix_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/failpoint"
	"github.com/aerodb/authority/internal/testcluster"
	"github.com/aerodb/authority/promotion"
	"github.com/aerodb/authority/validator"
	"google.golang.org/protobuf/proto"
)

// The crash-matrix additions (docs/CRASH-MATRIX.md, "Additions"): the
// paths the per-role matrix never takes. Every cell there starts from a
// released holder, kills, and promotes without waivers; these cells crash
// while the intent entry is written, while a new leader records an abort,
// on the lease-expiry path (the holder never released: only the leader's
// lease observation makes the promotion possible), on a waived promotion,
// and use the `error` action instead of a kill. One 3-process cluster,
// cells one after another (each on its own domain), in parallel with the
// rest of the package.
//
// Invariants: P6-A2 / P6-F2 (AU-2: not committed ⇒ nothing changed,
// committed ⇒ stands), P6-D2 (AU-10: recovery never decides, never infers
// intent), P6-A3 (AU-3: expiry is a precondition observed by the leader
// that proposes, never inherited), AU-13 (a waiver is recorded in the
// entry and survives the crash), P6-F3 (AU-8: nothing retries a forgotten
// attempt; only the caller's retry decides it).

type addition struct {
	name  string
	point string
	run   func(r *rig, t *testing.T, dom, point string)
}

// additions names every cell and the failpoint it uses; TestAdditionsCover
// checks that every point of failpoint.Recovery has one.
var additions = []addition{
	{"intent-store/leader", failpoint.RaftLogBeforeStoreIntent, (*rig).cellIntentStoreLeader},
	{"intent-store/follower", failpoint.RaftLogBeforeStoreIntent, (*rig).cellIntentStoreFollower},
	{"abort/before", failpoint.PromoteBeforeAbort, (*rig).cellAbortCrash},
	{"abort/after", failpoint.PromoteAfterAbort, (*rig).cellAbortCrash},
	{"lease-expiry/before-commit", failpoint.PromoteBeforePropose, (*rig).cellLeaseExpiry},
	{"lease-expiry/after-commit", failpoint.FSMAfterApplyPromote, (*rig).cellLeaseExpiry},
	{"waived/before-commit", failpoint.PromoteBeforePropose, (*rig).cellWaived},
	{"waived/after-commit", failpoint.FSMBeforeApplyPromote, (*rig).cellWaived},
	{"error/promote.before-propose", failpoint.PromoteBeforePropose, (*rig).cellErrorLeaderAlive},
	{"error/raftlog.before-store", failpoint.RaftLogBeforeStore, (*rig).cellErrorStepDown},
	{"pipelined/leader", failpoint.PromoteQueued, (*rig).cellQueued},
}

// TestCrashMatrixAdditions runs the cells of additions. Readiness: P6-A2,
// P6-F2, AU-2, P6-D2, AU-10, P6-A3, AU-3, AU-13, P6-F3 (see above).
func TestCrashMatrixAdditions(t *testing.T) {
	t.Parallel()
	r := newRig(t, "additions")
	start := time.Now()
	for i, c := range additions {
		t.Run(c.name, func(t *testing.T) {
			cs := time.Now()
			r.heal(t)
			c.run(r, t, "x"+string(rune('a'+i))+"."+cellName(c.name), c.point)
			r.checkEvents(t)
			r.checkEpochsGrew(t)
			t.Logf("cell %s took %v", c.name, time.Since(cs).Round(time.Millisecond))
		})
	}
	t.Run("restarts", func(t *testing.T) {
		r.heal(t)
		r.restartAll(t, 1)
		r.checkEvents(t)
	})
	t.Run("replay", func(t *testing.T) { r.stopAndReplay(t) })
	t.Logf("additions: %d cells, restarts and replay took %v", len(additions), time.Since(start).Round(time.Millisecond))
}

// Every recovery point has a cell (a point added to failpoint.Recovery
// without one fails here).
func TestAdditionsCover(t *testing.T) {
	for _, p := range failpoint.Recovery {
		if !slices.ContainsFunc(additions, func(c addition) bool { return c.point == p }) {
			t.Errorf("failpoint %s has no cell in crashmatrix/additions_test.go", p)
		}
	}
}

// ---- cells ----

// cellIntentStoreLeader: the leader dies while writing the intent entry to
// its own log store (before any follower has it). Nothing was decided and
// nothing is inferred: no record, no pending intent, no aborted_on_crash
// (no intent ever committed), authority unchanged; the retry decides.
func (r *rig) cellIntentStoreLeader(t *testing.T, dom, point string) {
	r.setupDomain(t, dom, time.Minute, true)
	req := request(dom)
	leader := r.ready(t)
	r.report(t, dom, "n2", 1, 100)
	off := logSize(leader)
	r.arm(t, leader, point+"=kill")
	t.Cleanup(func() { r.disarm(leader, point) })
	resp, err := r.promoteRaw(leader, req)
	r.awaitKilledAt(t, leader, point, off)
	if err == nil {
		t.Fatalf("the leader dying while writing the intent acknowledged: %v", errOrOK(resp, err))
	}
	r.restart(t, leader)
	r.ready(t)
	r.converge(t)
	r.checkAuthority(t, dom, authority{Epoch: 1, Holder: "n1", Released: true})
	r.checkForgotten(t, dom, req.RequestId)
	r.checkAborts(t, dom, req.RequestId, 0)
	r.retryFresh(t, req, 100, true, "")
	r.checkAuthority(t, dom, authority{Epoch: 2, Holder: "n2"})
	r.setExpect(dom, authority{Epoch: 2, Holder: "n2"})
}

// cellIntentStoreFollower: a follower dies while writing the intent; the
// leader and the other follower commit it and the attempt; the restarted
// follower catches up to the same record.
func (r *rig) cellIntentStoreFollower(t *testing.T, dom, point string) {
	r.setupDomain(t, dom, time.Minute, true)
	req := request(dom)
	leader := r.ready(t)
	r.report(t, dom, "n2", 1, 100)
	f := r.followers(leader)[0]
	off := logSize(f)
	r.arm(t, f, point+"=kill")
	t.Cleanup(func() { r.disarm(f, point) })
	resp, err := r.promoteRaw(leader, req)
	r.awaitKilledAt(t, f, point, off)
	if err != nil || !resp.Committed || !resp.Record.GetDecision().GetAllowed() {
		t.Fatalf("leader's answer with a follower dying while writing the intent: %v", errOrOK(resp, err))
	}
	r.restart(t, f)
	r.ready(t)
	r.converge(t)
	rec := r.checkRecorded(t, dom, req.RequestId, true)
	if !proto.Equal(rec, resp.Record) {
		t.Fatalf("the acknowledged record differs from the stored one")
	}
	r.checkAborts(t, dom, req.RequestId, 0)
	r.checkAuthority(t, dom, authority{Epoch: 2, Holder: "n2"})
	r.retryDuplicate(t, req, rec)
	r.setExpect(dom, authority{Epoch: 2, Holder: "n2"})
}

// cellAbortCrash: the leader dies at promote/received (intent committed,
// undecided); the next leader dies while recording the abort
// (promote/before-abort: not proposed; promote/after-abort: committed, not
// yet serving). The third leader records the abort if it is missing and
// never twice: exactly one aborted_on_crash per node, the attempt
// forgotten, authority unchanged, the retry decides afresh.
func (r *rig) cellAbortCrash(t *testing.T, dom, point string) {
	r.setupDomain(t, dom, time.Minute, true)
	req := request(dom)
	leader := r.ready(t)
	r.report(t, dom, "n2", 1, 100)
	fs := r.followers(leader)
	offs := map[string]int64{}
	for _, f := range fs {
		offs[f.ID] = logSize(f)
		r.arm(t, f, point+"=kill")
		t.Cleanup(func() { r.disarm(f, point) })
	}
	off := logSize(leader)
	r.arm(t, leader, failpoint.PromoteReceived+"=kill")
	t.Cleanup(func() { r.disarm(leader, failpoint.PromoteReceived) })
	resp, err := r.promoteRaw(leader, req)
	r.awaitKilledAt(t, leader, failpoint.PromoteReceived, off)
	if err == nil {
		t.Fatalf("the dying leader acknowledged: %v", errOrOK(resp, err))
	}
	// One of the two followers wins the election and dies recording the
	// abort; the other, alone, can elect no one until the restarts.
	var second, survivor *testcluster.Server
	deadline := time.Now().Add(readyTimeout + deathTimeout)
	for second == nil {
		for i, f := range fs {
			if !f.Running() {
				second, survivor = f, fs[1-i]
			}
		}
		if second == nil && time.Now().After(deadline) {
			t.Fatalf("no new leader died at %s within %v", point, readyTimeout+deathTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.awaitKilledAt(t, second, point, offs[second.ID])
	r.disarm(survivor, point)
	r.restart(t, leader)
	r.restart(t, second)
	r.ready(t)
	r.converge(t)
	r.checkAuthority(t, dom, authority{Epoch: 1, Holder: "n1", Released: true})
	r.checkForgotten(t, dom, req.RequestId)
	r.checkAborts(t, dom, req.RequestId, 1)
	r.retryFresh(t, req, 100, true, "")
	r.checkAuthority(t, dom, authority{Epoch: 2, Holder: "n2"})
	r.setExpect(dom, authority{Epoch: 2, Holder: "n2"})
}

// cellQueued: the leader dies with the intent and the attempt queued
// (pipelined) and neither waited for. Any prefix of the two may have
// committed, and every node must agree on which: both (the decision stands
// everywhere, no abort, the retry is a duplicate), or the intent alone (one
// aborted_on_crash everywhere) or nothing (none anywhere), the attempt then
// forgotten, authority unchanged, and the retry decides afresh.
func (r *rig) cellQueued(t *testing.T, dom, point string) {
	r.setupDomain(t, dom, time.Minute, true)
	req := request(dom)
	leader := r.ready(t)
	r.report(t, dom, "n2", 1, 100)
	off := logSize(leader)
	r.arm(t, leader, point+"=kill")
	t.Cleanup(func() { r.disarm(leader, point) })
	resp, err := r.promoteRaw(leader, req)
	r.awaitKilledAt(t, leader, point, off)
	if err == nil {
		t.Fatalf("the leader dying with its entries queued acknowledged: %v", errOrOK(resp, err))
	}
	r.restart(t, leader)
	r.ready(t)
	r.converge(t)
	if _, err := r.nodeExplain(r.cl.Servers[0], dom, req.RequestId); err == nil {
		rec := r.checkRecorded(t, dom, req.RequestId, true)
		r.checkAborts(t, dom, req.RequestId, 0)
		r.checkAuthority(t, dom, authority{Epoch: 2, Holder: "n2"})
		r.retryDuplicate(t, req, rec)
		t.Logf("outcome: intent and attempt committed")
	} else {
		r.checkForgotten(t, dom, req.RequestId)
		logs := r.checkEvents(t)
		aborts := countEvents(logs, r.cl.Servers[0].ID, dom, "replication.promotion.aborted_on_crash", req.RequestId)
		if aborts > 1 {
			t.Fatalf("%d aborted_on_crash for %s", aborts, req.RequestId)
		}
		r.checkAborts(t, dom, req.RequestId, aborts) // the same on every node
		r.checkAuthority(t, dom, authority{Epoch: 1, Holder: "n1", Released: true})
		r.retryFresh(t, req, 100, true, "")
		t.Logf("outcome: %d committed intent(s) aborted, no attempt", aborts)
	}
	r.checkAuthority(t, dom, authority{Epoch: 2, Holder: "n2"})
	r.setExpect(dom, authority{Epoch: 2, Holder: "n2"})
}

// cellLeaseExpiry: n1 holds epoch 1 and never renews and never releases;
// the promotion is possible only once the leader observes the lease
// expired (AU-3: a precondition, never a trigger: nothing happens until
// the request). The leader dies before commit (the next leader starts n1's
// lease afresh: a leader change never shortens a lease, and the dead
// leader's observation is not inherited; the retry is decided on the new
// leader's own observation) or after commit (the recorded observation
// stands). Afterwards n1, fenced by epoch, cannot advance its watermark.
func (r *rig) cellLeaseExpiry(t *testing.T, dom, point string) {
	const ttl = 2 * time.Second
	committed := point == failpoint.FSMAfterApplyPromote
	r.setupDomain(t, dom, ttl, false)
	req := request(dom)
	r.report(t, dom, "n2", 1, 100)
	r.awaitLeaseExpired(t, req, ttl)
	leader := r.ready(t)
	r.report(t, dom, "n2", 1, 100) // the same leader unless it moved
	armed := time.Now()
	off := logSize(leader)
	r.arm(t, leader, point+"=kill")
	t.Cleanup(func() { r.disarm(leader, point) })
	resp, err := r.promoteRaw(leader, req)
	r.awaitKilledAt(t, leader, point, off)
	if err == nil {
		t.Fatalf("the dying leader acknowledged: %v", errOrOK(resp, err))
	}
	next := r.ready(t)
	if !committed {
		r.report(t, dom, "n2", 1, 100)
		dry := proto.Clone(req).(*pb.PromotionRequest)
		dry.DryRun = true
		ctx, cancel := ctxT(rpcTimeout)
		dresp, derr := r.cli.Promote(ctx, dry)
		cancel()
		var denied *client.DeniedError
		switch since := time.Since(armed); {
		case since >= ttl:
			t.Logf("dry run on the new leader %v after arming (≥ TTL %v): the fresh lease may have run out, not checked", since, ttl)
		case !errors.As(derr, &denied) || denied.Reason() != validator.ReasonPrimaryStillActive:
			t.Fatalf("new leader %s, %v after arming (< TTL %v): dry run %v, want %s (a new leader starts the lease afresh)",
				next.ID, since, ttl, errOrOK(dresp, derr), validator.ReasonPrimaryStillActive)
		}
	}
	r.restart(t, leader)
	r.ready(t)
	r.converge(t)
	if committed {
		rec := r.checkRecorded(t, dom, req.RequestId, true)
		if l := rec.GetLease(); l.GetState() != pb.LeaseState_LEASE_STATE_EXPIRED || l.GetLeaderId() != leader.ID {
			t.Fatalf("recorded lease observation %v, want EXPIRED as seen by the dead leader %s", l, leader.ID)
		}
		r.checkAborts(t, dom, req.RequestId, 0)
		r.checkAuthority(t, dom, authority{Epoch: 2, Holder: "n2"})
		r.retryDuplicate(t, req, rec)
	} else {
		r.checkAuthority(t, dom, authority{Epoch: 1, Holder: "n1"})
		r.checkForgotten(t, dom, req.RequestId)
		r.checkAborts(t, dom, req.RequestId, 1)
		r.report(t, dom, "n2", 1, 100)
		r.awaitLeaseExpired(t, req, ttl)
		l := r.ready(t)
		r.report(t, dom, "n2", 1, 100)
		rec := r.retryFresh(t, req, 100, true, "")
		if lo := rec.GetLease(); lo.GetState() != pb.LeaseState_LEASE_STATE_EXPIRED || lo.GetLeaderId() != l.ID || lo.GetLeaderId() == leader.ID {
			t.Fatalf("retry decided on lease observation %v, want EXPIRED as seen by the current leader %s", lo, l.ID)
		}
	}
	r.checkAuthority(t, dom, authority{Epoch: 2, Holder: "n2"})
	r.setExpect(dom, authority{Epoch: 2, Holder: "n2"})
	// The old holder is fenced by epoch (AU-12), not by belief it is dead.
	ctx, cancel := ctxT(20 * time.Second)
	defer cancel()
	errs, err := r.node("n1").AdvanceWatermark(ctx, []*pb.WatermarkAdvance{{Domain: dom, Epoch: 1, Holder: "n1", Lsn: 101, Hash: walHash, VisibleCommitId: 8}})
	if errors.Join(append(errs, err)...) == nil {
		t.Fatalf("the old holder n1 advanced its watermark at epoch 1 after the promotion")
	}
}

// cellWaived: the candidate is behind the watermark (ReplicaBehindWal) and
// the request waives it (allow-data-loss, AU-13). Before commit the waived
// attempt is forgotten and the retry applies the waiver afresh; after
// commit the waiver is in the committed record on every node.
func (r *rig) cellWaived(t *testing.T, dom, point string) {
	committed := point == failpoint.FSMBeforeApplyPromote
	// A new aerodb domain is strict (no waiver possible): this one carries
	// the operator's recorded deviation that permits them.
	r.setupDomainWith(t, dom, time.Minute, true, func(p *pb.Policy) {
		p.WaiverMode = pb.WaiverMode_WAIVER_MODE_PERMITTED
		p.WaiverReason = "crash matrix: waived promotions"
	})
	req := request(dom)
	req.Waivers = []string{validator.WaiverAllowDataLoss}
	req.Reason = "crash matrix: waived"
	leader := r.ready(t)
	r.report(t, dom, "n2", 1, 50)
	off := logSize(leader)
	r.arm(t, leader, point+"=kill")
	t.Cleanup(func() { r.disarm(leader, point) })
	resp, err := r.promoteRaw(leader, req)
	r.awaitKilledAt(t, leader, point, off)
	if err == nil {
		t.Fatalf("the dying leader acknowledged: %v", errOrOK(resp, err))
	}
	r.ready(t)
	r.restart(t, leader)
	r.ready(t)
	r.converge(t)
	var rec *pb.AttemptRecord
	if committed {
		rec = r.checkRecorded(t, dom, req.RequestId, true)
		r.checkAborts(t, dom, req.RequestId, 0)
		r.retryDuplicate(t, req, rec)
	} else {
		r.checkAuthority(t, dom, authority{Epoch: 1, Holder: "n1", Released: true})
		r.checkForgotten(t, dom, req.RequestId)
		r.checkAborts(t, dom, req.RequestId, 1)
		rec = r.retryFresh(t, req, 50, true, "")
	}
	if w := rec.GetDecision().GetWaiversApplied(); !slices.Equal(w, []string{validator.WaiverAllowDataLoss}) {
		t.Fatalf("waivers applied %v, want [%s]", w, validator.WaiverAllowDataLoss)
	}
	waived := false
	for _, c := range rec.GetDecision().GetChecks() {
		if c.GetName() == validator.CheckCandidateContainsWatermark {
			waived = c.GetWaivedBy() == validator.WaiverAllowDataLoss
		}
	}
	if !waived {
		t.Fatalf("%s not marked waived by %s in the record", validator.CheckCandidateContainsWatermark, validator.WaiverAllowDataLoss)
	}
	r.checkAuthority(t, dom, authority{Epoch: 2, Holder: "n2"})
	r.setExpect(dom, authority{Epoch: 2, Holder: "n2"})
}

// cellErrorLeaderAlive: promote/before-propose=error. The leader lives on
// and answers an error; the intent stays committed and undecided (pending
// on every node), nothing is recorded, no abort is written (no leader
// change) and nothing retries it (P6-F3); the caller's retry of the same
// id decides it and clears the intent.
func (r *rig) cellErrorLeaderAlive(t *testing.T, dom, point string) {
	r.setupDomain(t, dom, time.Minute, true)
	req := request(dom)
	leader := r.ready(t)
	r.report(t, dom, "n2", 1, 100)
	r.arm(t, leader, point+"=error")
	resp, err := r.promoteRaw(leader, req)
	r.disarm(leader, point)
	if err == nil || !leader.Running() {
		t.Fatalf("with %s=error: %v (leader running %t), want an error from a live leader", point, errOrOK(resp, err), leader.Running())
	}
	r.converge(t)
	for _, s := range r.cl.Servers {
		d := r.nodeDomain(t, s, dom)
		if d.Epoch != 1 || d.Holder != "n1" || !d.Released || len(d.Pending) != 1 || d.Pending[0].GetRequestId() != req.RequestId {
			t.Fatalf("%s after the injected error: epoch %d holder %s released %t pending %v, want unchanged with the intent pending",
				s.ID, d.Epoch, d.Holder, d.Released, d.Pending)
		}
	}
	r.checkForgotten(t, dom, req.RequestId)
	r.checkAborts(t, dom, req.RequestId, 0)
	r.retryFresh(t, req, 100, true, "")
	r.checkAuthority(t, dom, authority{Epoch: 2, Holder: "n2"}) // also: no intent left pending
	r.setExpect(dom, authority{Epoch: 2, Holder: "n2"})
}

// cellErrorStepDown: raftlog/before-store=error on the leader. Raft cannot
// store the attempt entry, fails it and steps down; the caller gets an
// error; the next leader (perhaps the same server, in a new term) records
// the abort of the undecided intent; the retry decides afresh.
func (r *rig) cellErrorStepDown(t *testing.T, dom, point string) {
	r.setupDomain(t, dom, time.Minute, true)
	req := request(dom)
	leader := r.ready(t)
	r.report(t, dom, "n2", 1, 100)
	r.arm(t, leader, point+"=error")
	resp, err := r.promoteRaw(leader, req)
	r.disarm(leader, point)
	if err == nil || resp.GetCommitted() {
		t.Fatalf("with %s=error on the leader: %v, want an error", point, errOrOK(resp, err))
	}
	next := r.ready(t)
	awaitEvent(t, next, dom, "replication.promotion.aborted_on_crash", req.RequestId)
	r.converge(t)
	if !leader.Running() {
		t.Fatalf("%s exited on an injected store error (exit %d)", leader.ID, leader.ExitCode())
	}
	r.checkAuthority(t, dom, authority{Epoch: 1, Holder: "n1", Released: true})
	r.checkForgotten(t, dom, req.RequestId)
	r.checkAborts(t, dom, req.RequestId, 1)
	r.retryFresh(t, req, 100, true, "")
	r.checkAuthority(t, dom, authority{Epoch: 2, Holder: "n2"})
	r.setExpect(dom, authority{Epoch: 2, Holder: "n2"})
}

// ---- helpers ----

// awaitLeaseExpired polls a dry run of req (bounded) until the leader
// allows it; every denial meanwhile must be PrimaryStillActive.
func (r *rig) awaitLeaseExpired(t *testing.T, req *pb.PromotionRequest, ttl time.Duration) {
	t.Helper()
	dry := proto.Clone(req).(*pb.PromotionRequest)
	dry.DryRun = true
	deadline := time.Now().Add(ttl + readyTimeout)
	for {
		ctx, cancel := ctxT(rpcTimeout)
		resp, err := r.cli.Promote(ctx, dry)
		cancel()
		var denied *client.DeniedError
		switch {
		case err == nil:
			return
		case !errors.As(err, &denied) || denied.Reason() != validator.ReasonPrimaryStillActive:
			t.Fatalf("dry run while waiting for the lease to expire: %v", errOrOK(resp, err))
		case time.Now().After(deadline):
			t.Fatalf("the leader did not observe %s's lease expired within %v", req.Domain, ttl+readyTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkForgotten: no node has a record of the request id.
func (r *rig) checkForgotten(t *testing.T, dom, id string) {
	t.Helper()
	for _, s := range r.cl.Servers {
		if rec, err := r.nodeExplain(s, dom, id); reasonOf(err) != pb.ReasonNotFound {
			t.Fatalf("%s: attempt %s is recorded (%v, %v): it must be forgotten", s.ID, id, rec, err)
		}
	}
}

// checkRecorded: every node has the same record of the request id, with
// the given decision; it is returned.
func (r *rig) checkRecorded(t *testing.T, dom, id string, allowed bool) *pb.AttemptRecord {
	t.Helper()
	var first *pb.AttemptRecord
	for _, s := range r.cl.Servers {
		rec, err := r.nodeExplain(s, dom, id)
		switch {
		case err != nil:
			t.Fatalf("%s: the committed attempt %s is missing: %v", s.ID, id, err)
		case rec.GetDecision().GetAllowed() != allowed:
			t.Fatalf("%s: recorded decision %v, want allowed=%t", s.ID, rec.GetDecision(), allowed)
		case first != nil && !proto.Equal(first, rec):
			t.Fatalf("%s: the record of %s differs between nodes", s.ID, id)
		}
		if first == nil {
			first = rec
		}
	}
	return first
}

// checkAborts: every node's event log holds exactly want distinct
// aborted_on_crash events for the request id.
func (r *rig) checkAborts(t *testing.T, dom, id string, want int) {
	t.Helper()
	logs := r.checkEvents(t)
	for _, s := range r.cl.Servers {
		if n := countEvents(logs, s.ID, dom, "replication.promotion.aborted_on_crash", id); n != want {
			t.Fatalf("%s: %d aborted_on_crash for %s, want %d", s.ID, n, id, want)
		}
	}
	if want > 0 {
		for _, ev := range logs[r.cl.Servers[0].ID] {
			if ev.Domain == dom && ev.Type == "replication.promotion.aborted_on_crash" && field(ev, "request_id") == id &&
				(!undecidedState(field(ev, "last_known_state")) || field(ev, "requested_replica_id") != "n2") {
				t.Fatalf("aborted_on_crash fields: %+v", ev)
			}
		}
	}
}

// undecidedState: the last state an abort may name. PromotionRequested is
// all the log proves when the attempt's leader crashed; a leader that led
// the attempt itself and leads again (the error cell: raft steps down and the
// same server may win the next term) names the last state it saw, which is
// never a decided one.
func undecidedState(name string) bool {
	switch name {
	case promotion.LastKnownRequested, promotion.PromotionValidating.String(),
		promotion.PromotionApproved.String(), promotion.AuthorityTransitioning.String():
		return true
	}
	return false
}

// retryFresh retries req (client library, same id) after a fresh report
// of n2 at flushed (reports are leader-local soft state) and requires a
// fresh committed decision (allowed, or denied for reason).
func (r *rig) retryFresh(t *testing.T, req *pb.PromotionRequest, flushed uint64, allowed bool, reason string) *pb.AttemptRecord {
	t.Helper()
	r.report(t, req.Domain, "n2", 1, flushed)
	ctx, cancel := ctxT(30 * time.Second)
	defer cancel()
	resp, err := r.cli.Promote(ctx, req)
	var denied *client.DeniedError
	switch {
	case err != nil && !errors.As(err, &denied):
		t.Fatalf("retry of %s: %v", req.RequestId, err)
	case allowed != (err == nil):
		t.Fatalf("retry of %s: %v, want allowed=%t", req.RequestId, err, allowed)
	case !allowed && denied.Reason() != reason:
		t.Fatalf("retry of %s denied for %s, want %s", req.RequestId, denied.Reason(), reason)
	case resp.Duplicate || !resp.Committed:
		t.Fatalf("retry of a forgotten attempt: duplicate=%t committed=%t, want a fresh committed decision", resp.Duplicate, resp.Committed)
	}
	r.converge(t)
	return resp.Record
}

// retryDuplicate retries req and requires the recorded outcome.
func (r *rig) retryDuplicate(t *testing.T, req *pb.PromotionRequest, rec *pb.AttemptRecord) {
	t.Helper()
	ctx, cancel := ctxT(30 * time.Second)
	defer cancel()
	resp, err := r.cli.Promote(ctx, req)
	var denied *client.DeniedError
	if err != nil && !errors.As(err, &denied) {
		t.Fatalf("retry of %s: %v", req.RequestId, err)
	}
	if !resp.GetDuplicate() || !proto.Equal(resp.GetRecord(), rec) {
		t.Fatalf("retry of a committed attempt: duplicate=%t record equal=%t, want the recorded outcome", resp.GetDuplicate(),
			proto.Equal(resp.GetRecord(), rec))
	}
}
