package crashmatrix_test

import (
	"errors"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/failpoint"
	"github.com/aerodb/authority/promotion"
)

// TestCrashBetweenPrepareAndDecision: the leader of a replica-quorum
// promotion is killed (SIGKILL, failpoint promote/after-prepare) after the
// fence committed and before the decision was proposed. The fence survives
// on every node (the replicas stay fenced), the next leader records the
// undecided request's abort (aborted_on_crash), and a retry of the same
// request id completes under the same fence: no second prepare, one
// committed decision (docs/DURABILITY.md).
func TestCrashBetweenPrepareAndDecision(t *testing.T) {
	t.Parallel()
	r := newRig(t, "quorum")
	const dom = "q.after-prepare"
	ctx, cancel := ctxT(30 * time.Second)
	defer cancel()
	policy := &pb.Policy{LeaseTtlMs: 60_000, Durability: pb.Durability_DURABILITY_REPLICA_QUORUM, MinSyncReplicas: 1}
	if _, err := r.cli.CreateDomain(ctx, dom, pb.DomainKind_DOMAIN_KIND_AERODB, policy); err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		if _, err := r.cli.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: dom, MemberId: m}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.cli.AssignInitial(ctx, dom, "n1"); err != nil {
		t.Fatal(err)
	}
	errs, err := r.node("n1").AdvanceWatermark(ctx, []*pb.WatermarkAdvance{{Domain: dom, Epoch: 1, Holder: "n1", Lsn: 100, Hash: walHash, VisibleCommitId: 7}})
	if err := errors.Join(append(errs, err)...); err != nil {
		t.Fatal(err)
	}
	r.release(t, dom, "n1", 1) // the lease check passes; S is then {n1, n2, n3}
	req := request(dom)

	leader := r.ready(t)
	for _, m := range members { // reporting: the dry run allows, so the leader fences
		r.report(t, dom, m, 1, 100)
	}
	off := logSize(leader)
	r.arm(t, leader, failpoint.PromoteAfterPrepare+"=kill")
	t.Cleanup(func() { r.disarm(leader, failpoint.PromoteAfterPrepare) })
	resp, err := r.promoteRaw(leader, req)
	if err == nil {
		t.Fatalf("the dying leader answered: %v", resp)
	}
	r.awaitKilledAt(t, leader, failpoint.PromoteAfterPrepare, off)

	next := r.ready(t)
	ev := awaitEvent(t, next, dom, "replication.promotion.aborted_on_crash", req.RequestId)
	if field(ev, "last_known_state") != promotion.LastKnownRequested {
		t.Fatalf("aborted_on_crash: %+v", ev)
	}
	r.restart(t, leader)
	r.ready(t)
	r.converge(t)
	for _, s := range r.cl.Servers {
		d := r.nodeDomain(t, s, dom)
		if fc := d.GetFence(); fc.GetEpoch() != 2 || fc.GetRequestId() != req.RequestId || d.Epoch != 1 {
			t.Fatalf("%s after the crash: epoch %d fence %v, want the fence for epoch 2 kept", s.ID, d.Epoch, fc)
		}
	}

	// The replicas report fenced (the new leader has no reports: soft
	// state) and the caller retries the same request id.
	for _, m := range members {
		rctx, rcancel := ctxT(20 * time.Second)
		_, err := r.node(m).ReportProgress(rctx, dom, &pb.ProgressReport{MemberId: m, Epoch: 1, FlushedEpoch: 1, FlushedLsn: 100,
			FlushedHash: walHash, WatermarkLsn: 100, HashAtWatermark: walHash, AppliedCommitId: 7, ReadSafe: true,
			State: pb.ReplicaState_REPLICA_STATE_STREAMING, FencedEpoch: 2})
		rcancel()
		if err != nil {
			t.Fatalf("fenced report of %s: %v", m, err)
		}
	}
	retry, err := r.cli.Promote(ctx, req)
	if err != nil || !retry.Committed || retry.Duplicate || retry.Record.GetEpochAfter() != 2 || len(retry.Record.GetFenceReports()) != 3 {
		t.Fatalf("retry after the crash: %+v, %v", retry, err)
	}
	r.converge(t)
	r.setExpect(dom, authority{Epoch: 2, Holder: "n2"})
	r.checkAuthority(t, dom, authority{Epoch: 2, Holder: "n2"})
	logs := r.checkEvents(t)
	for _, s := range r.cl.Servers {
		if n := countEvents(logs, s.ID, dom, "authority.fence.prepared", req.RequestId); n != 1 {
			t.Fatalf("%s: %d fence.prepared events, want 1 (the retry reused the fence)", s.ID, n)
		}
	}
}
