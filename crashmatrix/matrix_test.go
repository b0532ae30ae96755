package crashmatrix_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/failpoint"
	"github.com/aerodb/authority/internal/testcluster"
	"github.com/aerodb/authority/promotion"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// The crash matrix: every failpoint × {leader, follower} × {allowed,
// denied}. Each role runs its 18 cells one after another on one 3-process
// cluster (each cell on its own domain, killed servers restarted from their
// data dirs before the next cell); the two roles run in parallel. After the
// cells, every server is killed at once and restarted twice (every cell's
// authority must still stand), then the cluster is stopped and every
// node's log is replayed from empty (acceptance 3).
//
// docs/CRASH-MATRIX.md is the table of these cells.

func TestCrashMatrixLeader(t *testing.T)   { runMatrix(t, roleLeader) }
func TestCrashMatrixFollower(t *testing.T) { runMatrix(t, roleFollower) }

const (
	roleLeader   = "leader"
	roleFollower = "follower"
)

// plan says, for a point and a role, which server is armed and killed, which
// server the promotion is sent to, and whether the attempt is committed
// when the armed server dies.
type plan struct {
	killLeader  bool // the armed server is the leader (else a follower)
	viaFollower bool // the request enters through a follower, which forwards it
	committed   bool // the PromotionAttempt is committed when the server dies
	snapshot    bool // snapshot/before-persist: the kill comes from a forced snapshot
}

func planFor(point, role string) plan {
	leaderOnly := strings.HasPrefix(point, "promote/") // evaluated by the leader's promotion service only
	p := plan{killLeader: role == roleLeader || leaderOnly, viaFollower: role == roleFollower && leaderOnly}
	switch point {
	case failpoint.PromoteReceived, failpoint.PromoteValidating, failpoint.PromoteBeforePropose:
		p.committed = false // only the intent is in the log
	case failpoint.RaftLogBeforeStore, failpoint.RaftLogAfterStore:
		// On the leader the entry is at most on the leader's own disk: raft
		// stores locally before it tells the replicators (dispatchLogs), so
		// no follower has it and it can never commit. On a follower, the
		// leader and the other follower commit it without the dead one.
		p.committed = role == roleFollower
	case failpoint.FSMBeforeApplyPromote, failpoint.FSMAfterApplyPromote, failpoint.PromoteAfterCommit:
		p.committed = true // apply only ever follows commit
	case failpoint.SnapshotBeforePersist:
		p.committed, p.snapshot = true, true
	default:
		panic("crash matrix: no plan for failpoint " + point)
	}
	return p
}

func cellName(point string) string { return strings.ReplaceAll(point, "/", ".") }

func runMatrix(t *testing.T, role string) {
	t.Parallel()
	r := newRig(t, role)
	for _, point := range failpoint.All {
		t.Run(cellName(point), func(t *testing.T) {
			for _, outcome := range []string{"allowed", "denied"} {
				t.Run(outcome, func(t *testing.T) {
					start := time.Now()
					r.cell(t, point, role, outcome)
					t.Logf("cell %s/%s/%s took %v", role, point, outcome, time.Since(start).Round(time.Millisecond))
				})
			}
		})
	}
	t.Run("restarts", func(t *testing.T) {
		r.heal(t)
		r.restartAll(t, 2)
		r.checkEvents(t)
	})
	t.Run("replay", func(t *testing.T) { r.stopAndReplay(t) })
}

// request is the cell's promotion: n2 replaces the released n1 at epoch 1.
func request(dom string) *pb.PromotionRequest {
	one := uint64(1)
	return &pb.PromotionRequest{RequestId: dom + "-req", Domain: dom, Candidate: "n2", ExpectedEpoch: &one, Reason: "crash matrix"}
}

// cell runs one cell of the matrix; see docs/CRASH-MATRIX.md.
func (r *rig) cell(t *testing.T, point, role, outcome string) {
	pl := planFor(point, role)
	allowed := outcome == "allowed"
	dom := fmt.Sprintf("%s.%s.%s", role[:1], cellName(point), outcome)
	flushed := uint64(100) // allowed: the candidate holds the watermark
	if !allowed {
		flushed = 50 // denied: ReplicaBehindWal (AU-4 [P6-S1]), no timing involved
	}
	req := request(dom)
	r.heal(t)
	r.setupDomain(t, dom, time.Minute, true)
	before := authority{Epoch: 1, Holder: "n1", Released: true}
	after := before
	if allowed {
		after = authority{Epoch: 2, Holder: "n2"}
	}
	r.checkEpochsGrew(t)

	var (
		target, entry *testcluster.Server
		resp          *pb.PromoteResponse
		err           error
		off           int64
	)
	if pl.snapshot {
		leader := r.ready(t)
		target = leader
		if !pl.killLeader {
			target = r.followers(leader)[0]
		}
		// A good snapshot first: the restart restores it and replays the rest.
		r.snapshotOn(t, target)
		r.report(t, dom, "n2", 1, flushed)
		resp, err = r.promoteRaw(leader, req)
		if err != nil {
			t.Fatalf("promotion before the snapshot crash: %v", err)
		}
		r.converge(t)
		off = logSize(target)
		r.arm(t, target, point+"=kill")
		t.Cleanup(func() { r.disarm(target, point) })
		ctx, cancel := ctxT(rpcTimeout)
		_, serr := r.cli.Snapshot(ctx, target.GRPCAddr)
		cancel()
		if serr == nil {
			t.Fatalf("%s took a snapshot although %s=kill was armed", target.ID, point)
		}
	} else {
		for try := 0; ; try++ {
			leader := r.ready(t)
			r.report(t, dom, "n2", 1, flushed)
			target, entry = leader, leader
			if !pl.killLeader {
				target = r.followers(leader)[0]
			}
			if pl.viaFollower {
				entry = r.followers(leader)[0]
			}
			off = logSize(target)
			r.arm(t, target, point+"=kill")
			t.Cleanup(func() { r.disarm(target, point) })
			resp, err = r.promoteRaw(entry, req)
			if reasonOf(err) == pb.ReasonNotLeader && target.Running() && try < 3 {
				// Leadership moved before the request arrived: nothing was
				// proposed. Disarm and start over with the new leader.
				r.disarm(target, point)
				t.Logf("leadership moved before the promotion (%v); retrying the cell", err)
				continue
			}
			break
		}
	}
	r.awaitKilledAt(t, target, point, off)
	t.Logf("%s (%s) killed at %s; promotion sent to %s answered %v", target.ID, role, point, nameOf(entry), errOrOK(resp, err))

	// What the caller was told. An acknowledgement (a committed record in a
	// reply) is only allowed where the attempt committed.
	if !pl.snapshot {
		switch {
		case pl.killLeader && pl.viaFollower:
			if reasonOf(err) != pb.ReasonOutcomeUnknown {
				t.Fatalf("through the follower: got %v, want OUTCOME_UNKNOWN (the leader died mid-request)", errOrOK(resp, err))
			}
		case pl.killLeader:
			if err == nil {
				t.Fatalf("the dying leader acknowledged the promotion: %v", resp)
			}
		default: // a follower died; the leader and the other follower decided
			if err != nil || !resp.Committed || resp.Record.GetDecision().GetAllowed() != allowed {
				t.Fatalf("leader's answer with a follower dying at %s: %v", point, errOrOK(resp, err))
			}
		}
	}
	if err == nil && resp.GetCommitted() && !pl.committed {
		t.Fatalf("acknowledged a promotion that cannot have committed: %v", resp)
	}

	// Recovery: the survivors elect (if the leader died); the dead server
	// restarts from its data dir.
	if pl.killLeader && !pl.committed {
		// The attempt was received (its intent committed) but never decided:
		// the next leader records aborted_on_crash for it.
		next := r.ready(t)
		ev := awaitEvent(t, next, dom, "replication.promotion.aborted_on_crash", req.RequestId)
		if field(ev, "last_known_state") != promotion.LastKnownRequested || field(ev, "requested_replica_id") != "n2" {
			t.Fatalf("aborted_on_crash on %s: %+v", next.ID, ev)
		}
	}
	r.restart(t, target)
	r.ready(t)
	r.converge(t)

	// The outcome on every node before any retry.
	want := before
	if pl.committed {
		want = after
	}
	r.checkAuthority(t, dom, want)
	var recorded *pb.AttemptRecord
	for _, s := range r.cl.Servers {
		rec, xerr := r.nodeExplain(s, dom, req.RequestId)
		switch {
		case !pl.committed && reasonOf(xerr) != pb.ReasonNotFound:
			t.Fatalf("%s: the uncommitted attempt is recorded (%v, %v): it must be forgotten", s.ID, rec, xerr)
		case pl.committed && xerr != nil:
			t.Fatalf("%s: the committed attempt is missing: %v", s.ID, xerr)
		case pl.committed && rec.GetDecision().GetAllowed() != allowed:
			t.Fatalf("%s: recorded decision %v, want allowed=%t", s.ID, rec.GetDecision(), allowed)
		case pl.committed && recorded != nil && !proto.Equal(rec, recorded):
			t.Fatalf("%s: the record differs between nodes", s.ID)
		}
		if recorded == nil {
			recorded = rec
		}
	}
	if err == nil && resp.GetRecord() != nil && pl.committed && !proto.Equal(resp.Record, recorded) {
		t.Fatalf("the acknowledged record differs from the stored one")
	}
	logs := r.checkEvents(t)
	for _, s := range r.cl.Servers {
		n := countEvents(logs, s.ID, dom, "replication.promotion.aborted_on_crash", req.RequestId)
		if pl.killLeader && !pl.committed && n == 0 {
			t.Fatalf("%s: no aborted_on_crash for the forgotten attempt", s.ID)
		}
		if pl.committed && n != 0 {
			t.Fatalf("%s: aborted_on_crash for an attempt that committed", s.ID)
		}
	}
	r.checkEpochsGrew(t)

	// Retry the same request id, as a caller that lost the reply would: the
	// recorded outcome if it committed, a fresh decision if it did not.
	r.report(t, dom, "n2", 1, flushed) // reports are soft state: a new leader has none
	ctx, cancel := ctxT(30 * time.Second)
	defer cancel()
	retry, rerr := r.cli.Promote(ctx, req)
	var denied *client.DeniedError
	switch {
	case rerr != nil && !errors.As(rerr, &denied):
		t.Fatalf("retry of %s: %v", req.RequestId, rerr)
	case allowed != (rerr == nil):
		t.Fatalf("retry of %s: %v, want allowed=%t", req.RequestId, rerr, allowed)
	case !allowed && denied.Reason() != "ReplicaBehindWal":
		t.Fatalf("retry of %s denied for %s, want ReplicaBehindWal", req.RequestId, denied.Reason())
	case pl.committed && (!retry.Duplicate || !proto.Equal(retry.Record, recorded)):
		t.Fatalf("retry of a committed attempt: duplicate=%t record equal=%t, want the recorded outcome", retry.Duplicate,
			proto.Equal(retry.Record, recorded))
	case !pl.committed && (retry.Duplicate || !retry.Committed):
		t.Fatalf("retry of a forgotten attempt: duplicate=%t committed=%t, want a fresh committed decision", retry.Duplicate, retry.Committed)
	}
	r.converge(t)
	r.checkAuthority(t, dom, after)
	r.setExpect(dom, after)

	if allowed {
		// A caller that never learnt the outcome tries again under a new
		// request id with its old expected epoch, after the new holder has
		// released: only the compare-and-set on the epoch stops it.
		r.release(t, dom, "n2", 2)
		r.report(t, dom, "n3", 2, 100)
		stale := proto.Clone(req).(*pb.PromotionRequest)
		stale.RequestId, stale.Candidate = dom+"-stale", "n3"
		resp, err := r.cli.Promote(ctx, stale)
		if !errors.As(err, &denied) || denied.Reason() != "EpochStale" {
			t.Fatalf("stale compare-and-set promotion (expected epoch 1 at epoch 2): %v, want EpochStale", errOrOK(resp, err))
		}
		after = authority{Epoch: 2, Holder: "n2", Released: true}
		r.converge(t)
		r.checkAuthority(t, dom, after)
		r.setExpect(dom, after)
	}
	r.checkEvents(t)
	r.checkEpochsGrew(t)
}

// promoteRaw sends one Promote to one server, with no retry.
func (r *rig) promoteRaw(s *testcluster.Server, req *pb.PromotionRequest) (*pb.PromoteResponse, error) {
	ctx, cancel := ctxT(15 * time.Second)
	defer cancel()
	return pbgrpc.NewPromotionClient(r.conns[s.ID]).Promote(ctx, &pb.PromoteRequest{Request: req})
}

// snapshotOn makes s take a snapshot now.
func (r *rig) snapshotOn(t testing.TB, s *testcluster.Server) uint64 {
	t.Helper()
	ctx, cancel := ctxT(rpcTimeout)
	defer cancel()
	resp, err := r.cli.Snapshot(ctx, s.GRPCAddr)
	if err != nil {
		t.Fatalf("snapshot on %s: %v", s.ID, err)
	}
	return resp.Index
}

func nameOf(s *testcluster.Server) string {
	if s == nil {
		return "-"
	}
	return s.ID
}

func errOrOK(resp *pb.PromoteResponse, err error) string {
	if err != nil {
		st, _ := status.FromError(err)
		return fmt.Sprintf("error %s/%s: %s", st.Code(), reasonOf(err), st.Message())
	}
	if resp == nil {
		return "no response"
	}
	d := resp.GetRecord().GetDecision()
	return fmt.Sprintf("committed=%t duplicate=%t allowed=%t reason=%q", resp.Committed, resp.Duplicate, d.GetAllowed(), d.GetDenialReason())
}

// The matrix covers every named point.
func TestMatrixCoversEveryFailpoint(t *testing.T) {
	for _, p := range failpoint.All {
		for _, role := range []string{roleLeader, roleFollower} {
			_ = planFor(p, role) // panics for a point without a plan
		}
	}
	// docs/CRASH-MATRIX.md's table is the matrix the code runs (doc_test.go).
	doc, err := readMatrixDoc()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range checkMatrixDoc(doc) {
		t.Error(p)
	}
}
