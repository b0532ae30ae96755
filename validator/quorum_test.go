package validator

import (
	"fmt"
	"math/rand"
	"slices"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// quorumWorld is one epoch of a replica-quorum domain: the holder wrote
// lsns 1..written, replica i flushed the prefix 1..flushed[i], and a write
// is acknowledged once K replicas flushed it.
type quorumWorld struct {
	n, k, written int
	flushed       []int
}

func randomWorld(r *rand.Rand) quorumWorld {
	n := 1 + r.Intn(6)
	w := quorumWorld{n: n, k: 1 + r.Intn(n), written: 1 + r.Intn(40)}
	for range n {
		w.flushed = append(w.flushed, r.Intn(w.written+1))
	}
	return w
}

// lastAcked is the highest lsn K replicas flushed (0: none).
func (w quorumWorld) lastAcked() int {
	s := slices.Clone(w.flushed)
	slices.Sort(s)
	slices.Reverse(s)
	return s[w.k-1]
}

func chainHash(lsn int) []byte { return []byte(fmt.Sprintf("h%06d", lsn)) }

func replicaID(i int) string { return fmt.Sprintf("r%d", i) }

// input builds the domain with a fence for epoch 8 and an attempt carrying
// the reports of the replicas in fenced; the candidate is the fenced
// replica with the highest flushed lsn, reporting its chain at every other
// fenced position.
func (w quorumWorld) input(fenced []int) (Input, int) {
	in := allowedInput()
	d := in.Domain
	d.Policy.Durability, d.Policy.MinSyncReplicas = pb.Durability_DURABILITY_REPLICA_QUORUM, uint32(w.k)
	d.Members = []*pb.Member{{Id: "p1", State: pb.MemberState_MEMBER_STATE_ACTIVE}}
	var set []string
	for i := range w.n {
		d.Members = append(d.Members, &pb.Member{Id: replicaID(i), State: pb.MemberState_MEMBER_STATE_ACTIVE})
		set = append(set, replicaID(i))
	}
	d.Fence = &pb.Fence{Epoch: 8, SyncSet: set, QuorumAcks: uint32(w.k)}
	d.Watermark = &pb.Watermark{Epoch: 7, Lsn: 0}
	best := fenced[0]
	for _, i := range fenced {
		if w.flushed[i] > w.flushed[best] {
			best = i
		}
	}
	var reports []*pb.ProgressReport
	for _, i := range fenced {
		r := &pb.ProgressReport{MemberId: replicaID(i), Epoch: 7, FencedEpoch: 8, FlushedEpoch: 7,
			FlushedLsn: uint64(w.flushed[i]), FlushedHash: chainHash(w.flushed[i]),
			ReadSafe: true, AppliedCommitId: 60, State: pb.ReplicaState_REPLICA_STATE_STREAMING}
		if i == best {
			for _, j := range fenced {
				r.Chain = append(r.Chain, &pb.ChainPoint{Lsn: uint64(w.flushed[j]), Hash: chainHash(w.flushed[j])})
			}
			in.Attempt.CandidateReport = r
		}
		reports = append(reports, r)
	}
	in.Attempt.FenceReports = reports
	in.Attempt.Request.Candidate = replicaID(best)
	return in, best
}

// TestFenceQuorumHoldsEveryAcknowledgedWrite: in 5,000 random worlds (seed
// printed), whichever N - K + 1 replicas report fenced, the validator
// allows the most advanced of them, and it holds every acknowledged write.
// It also denies with one report fewer (QuorumNotFenced).
func TestFenceQuorumHoldsEveryAcknowledgedWrite(t *testing.T) {
	const seed = 20261204
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewSource(seed))
	for range 5000 {
		w := randomWorld(r)
		need := FenceQuorum(&pb.Fence{SyncSet: make([]string, w.n), QuorumAcks: uint32(w.k)})
		fenced := r.Perm(w.n)[:need]
		in, best := w.input(fenced)
		d := Evaluate(in)
		if !d.GetAllowed() {
			t.Fatalf("world %+v fenced %v: denied %s\n%s", w, fenced, d.GetDenialReason(), Describe(d))
		}
		if w.flushed[best] < w.lastAcked() {
			t.Fatalf("world %+v fenced %v: candidate %d flushed %d, below the acknowledged lsn %d", w, fenced, best, w.flushed[best], w.lastAcked())
		}
		if need > 1 {
			fewer, _ := w.input(fenced[:need-1])
			if d := Evaluate(fewer); d.GetAllowed() || d.GetDenialReason() != ReasonQuorumNotFenced {
				t.Fatalf("world %+v: %d of %d fenced reports allowed (%s)", w, need-1, need, d.GetDenialReason())
			}
		}
	}
}

// TestFenceQuorumIsTight: with N - K fenced reports (one fewer than the
// rule), some world loses an acknowledged write — the number is not
// conservative by accident.
func TestFenceQuorumIsTight(t *testing.T) {
	const seed = 4242
	r := rand.New(rand.NewSource(seed))
	for range 5000 {
		w := randomWorld(r)
		short := w.n - w.k
		if short < 1 {
			continue
		}
		fenced := r.Perm(w.n)[:short]
		_, best := w.input(fenced)
		if w.flushed[best] < w.lastAcked() {
			t.Logf("seed %d: world %+v, fenced %v: the most advanced of N - K flushed %d, an acknowledged write is at %d",
				seed, w, fenced, w.flushed[best], w.lastAcked())
			return
		}
	}
	t.Fatalf("seed %d: N - K fenced reports never missed an acknowledged write", seed)
}
