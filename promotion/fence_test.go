package promotion

import (
	"context"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/validator"
)

// newQuorumRig is newRig's domain in replica-quorum durability with K = 1:
// n1 holds epoch 1, S = {n2, n3}, so both must report fenced.
func newQuorumRig(t *testing.T, fenceWait time.Duration) *rig {
	t.Helper()
	r := newRig(t, false)
	r.svc.fenceWait = fenceWait
	d, _ := r.svc.fsm.Domain("db1")
	p := d.GetPolicy()
	p.Durability, p.MinSyncReplicas = pb.Durability_DURABILITY_REPLICA_QUORUM, 1
	r.ok(r.svc.UpdatePolicy(r.ctx, "db1", p))
	return r
}

func (r *rig) fencedReport(member string, flushed uint64, hash []byte, chain ...*pb.ChainPoint) {
	r.t.Helper()
	_, err := r.svc.ReportProgress("db1", &pb.ProgressReport{MemberId: member, Epoch: 1, FlushedEpoch: 1, FlushedLsn: flushed, FlushedHash: hash,
		WatermarkLsn: 100, HashAtWatermark: h100, AppliedCommitId: 50, ReadSafe: true, State: pb.ReplicaState_REPLICA_STATE_STREAMING,
		FencedEpoch: 2, Chain: chain})
	if err != nil {
		r.t.Fatal(err)
	}
}

type promoteResult struct {
	out *Outcome
	err error
}

func (r *rig) promoteAsync(q *pb.PromotionRequest) <-chan promoteResult {
	done := make(chan promoteResult, 1)
	go func() {
		out, err := r.svc.Promote(context.Background(), q)
		done <- promoteResult{out, err}
	}()
	return done
}

// awaitApplied returns once an entry with the given body type applied.
func (r *rig) awaitApplied(is func(*pb.Command) bool) {
	r.t.Helper()
	for cmd := range r.log.applied {
		if is(cmd) {
			return
		}
	}
}

func isPrepare(c *pb.Command) bool { return c.GetPreparePromotion() != nil }

// A replica-quorum promotion commits the prepare first, tells reporting
// replicas the fence and the lsns to hash, waits for N - K + 1 fenced
// reports and the candidate's chain, then decides on them: the entry
// carries the fenced reports and the fence.
func TestPromoteReplicaQuorumWaitsForFencedReports(t *testing.T) {
	r := newQuorumRig(t, time.Hour) // the reports, not the bound, end the wait
	r.report("n2", 1, 120, []byte{0x12}, 50)
	r.report("n3", 1, 110, []byte{0x11}, 50) // the dry run allows: the fence is prepared
	r.clock.Advance(testTTL)
	r.log.applied = make(chan *pb.Command, 16)
	done := r.promoteAsync(req("q1", "n2", 1))
	r.awaitApplied(isPrepare)

	fc, lsns := r.svc.FenceFor("db1")
	if fc.GetEpoch() != 2 || len(fc.GetSyncSet()) != 2 || validator.FenceQuorum(fc) != 2 || len(lsns) != 0 {
		t.Fatalf("fence told to replicas = %v, chain lsns %v", fc, lsns)
	}
	r.fencedReport("n3", 110, []byte{0x11})
	if _, lsns = r.svc.FenceFor("db1"); len(lsns) != 1 || lsns[0] != 110 {
		t.Fatalf("chain lsns after n3's report = %v, want [110]", lsns)
	}
	select {
	case res := <-done:
		t.Fatalf("decided before the candidate's fenced report: %v", res.err)
	default:
	}
	r.fencedReport("n2", 120, []byte{0x12}, &pb.ChainPoint{Lsn: 110, Hash: []byte{0x11}})
	res := <-done
	if res.err != nil {
		t.Fatalf("promote: %v", res.err)
	}
	rec := res.out.Record
	if rec.EpochAfter != 2 || rec.HolderAfter != "n2" || len(rec.FenceReports) != 2 || rec.GetFence().GetEpoch() != 2 {
		t.Fatalf("record = %v", rec)
	}
	if d, _ := r.svc.fsm.Domain("db1"); d.GetFence() != nil {
		t.Fatalf("fence left after the grant: %v", d.GetFence())
	}
}

// When too few replicas report within the bound the attempt is denied with
// the numbers; the fence stays (the holder can acknowledge nothing), and
// the next attempt reuses it rather than preparing again.
func TestPromoteReplicaQuorumDeniedKeepsFence(t *testing.T) {
	r := newQuorumRig(t, 20*time.Millisecond)
	r.report("n2", 1, 120, []byte{0x12}, 50)
	r.report("n3", 1, 100, h100, 50) // reporting, so the dry run allows; it never reports fenced
	r.clock.Advance(testTTL)
	r.fencedReport("n2", 120, []byte{0x12}) // fenced early (a replica may)
	_, err := r.svc.Promote(r.ctx, req("q1", "n2", 1))
	wantDenied(t, err, validator.ReasonQuorumNotFenced)
	d, _ := r.svc.fsm.Domain("db1")
	if d.GetFence().GetEpoch() != 2 || d.Epoch != 1 {
		t.Fatalf("after the denial: epoch %d fence %v", d.Epoch, d.GetFence())
	}
	r.fencedReport("n3", 100, h100)
	r.fencedReport("n2", 120, []byte{0x12}, &pb.ChainPoint{Lsn: 100, Hash: h100})
	before := r.log.count()
	out, err := r.svc.Promote(r.ctx, req("q2", "n2", 1))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.log.count() - before; got != 2 || out.Record.EpochAfter != 2 { // intent + attempt, no second prepare
		t.Fatalf("second attempt wrote %d entries, epoch after %d", got, out.Record.EpochAfter)
	}
}

// A dry run fences nothing: it shows the fence a prepare would record, with
// the replicas' current positions as if final.
func TestDryRunReplicaQuorumFencesNothing(t *testing.T) {
	r := newQuorumRig(t, time.Hour)
	r.report("n2", 1, 120, []byte{0x12}, 50)
	r.report("n3", 1, 130, []byte{0x13}, 50)
	r.clock.Advance(testTTL)
	before := r.log.count()
	q := req("dry", "n2", 1)
	q.DryRun = true
	out, err := r.svc.Promote(r.ctx, q)
	wantDenied(t, err, validator.ReasonCandidateBehindQuorum)
	if r.log.count() != before || out.Committed {
		t.Fatalf("dry run wrote %d entries", r.log.count()-before)
	}
	if d, _ := r.svc.fsm.Domain("db1"); d.GetFence() != nil {
		t.Fatalf("dry run left a fence: %v", d.GetFence())
	}
	if fc := out.Record.GetFence(); fc.GetEpoch() != 2 || len(out.Record.FenceReports) != 2 {
		t.Fatalf("dry run record fence %v, reports %d", fc, len(out.Record.FenceReports))
	}
}

// A promotion its dry run denies fences nothing: a premature attempt (the
// holder's lease still valid) must not stop a healthy primary.
func TestPrematurePromotionFencesNothing(t *testing.T) {
	r := newQuorumRig(t, 50*time.Millisecond)
	r.report("n2", 1, 120, []byte{0x12}, 50)
	r.report("n3", 1, 110, []byte{0x11}, 50)
	_, err := r.svc.Promote(r.ctx, req("early", "n2", 1)) // n1's lease is valid
	wantDenied(t, err, validator.ReasonPrimaryStillActive)
	if d, _ := r.svc.fsm.Domain("db1"); d.GetFence() != nil {
		t.Fatalf("a denied premature attempt fenced the replicas: %v", d.GetFence())
	}
}
