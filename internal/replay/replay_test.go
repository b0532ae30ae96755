package replay_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/cluster"
	"github.com/aerodb/authority/internal/replay"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
)

// node runs one bootstrapped raft node (in-memory transport, raft-boltdb in
// dir) and proposes commands straight to its log.
func node(t *testing.T, dir string, trailing uint64) *cluster.Node {
	t.Helper()
	_, tr := raft.NewInmemTransport("n1")
	n, err := cluster.Open(cluster.Config{NodeID: "n1", DataDir: dir, Transport: tr,
		HeartbeatTimeout: 50 * time.Millisecond, ElectionTimeout: 50 * time.Millisecond,
		LeaderLeaseTimeout: 50 * time.Millisecond, CommitTimeout: 5 * time.Millisecond, TrailingLogs: trailing})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Bootstrap([]cluster.Peer{{ID: "n1", Address: "n1"}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !n.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("single node never led")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return n
}

func propose(t *testing.T, n *cluster.Node, cmd *pb.Command) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := n.Propose(ctx, cmd); err != nil {
		t.Fatal(err)
	}
}

var hash = []byte{0xca, 0xfe}

// workload writes a domain with members, a holder, a watermark, one denied
// and one allowed promotion (the allowed one with a released holder).
func workload(t *testing.T, n *cluster.Node, name string) {
	t.Helper()
	propose(t, n, &pb.Command{Body: &pb.Command_CreateDomain{CreateDomain: &pb.CreateDomain{Name: name,
		Kind: pb.DomainKind_DOMAIN_KIND_AERODB, Policy: &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL,
			LeaseTtlMs: 60000, ReportMaxAgeMs: 30000, MinSyncReplicas: 1}}}})
	for _, m := range []string{"m1", "m2"} {
		propose(t, n, &pb.Command{Body: &pb.Command_RegisterMember{RegisterMember: &pb.RegisterMember{Domain: name, MemberId: m}}})
	}
	propose(t, n, &pb.Command{Body: &pb.Command_AssignInitial{AssignInitial: &pb.AssignInitial{Domain: name, Holder: "m1"}}})
	propose(t, n, &pb.Command{Body: &pb.Command_AdvanceWatermark{AdvanceWatermark: &pb.AdvanceWatermark{Advances: []*pb.WatermarkAdvance{
		{Domain: name, Epoch: 1, Holder: "m1", Lsn: 100, Hash: hash, VisibleCommitId: 7}}}}})
	propose(t, n, &pb.Command{Body: &pb.Command_Release{Release: &pb.Release{Domain: name, Holder: "m1", Epoch: 1}}})
	one := uint64(1)
	for i, flushed := range []uint64{50, 100} {
		propose(t, n, &pb.Command{StampedUnixMs: 1_700_000_000_000 + int64(i), Body: &pb.Command_PromotionAttempt{PromotionAttempt: &pb.PromotionAttempt{
			Request: &pb.PromotionRequest{RequestId: fmt.Sprintf("%s-%d", name, i), Domain: name, Candidate: "m2", ExpectedEpoch: &one},
			Lease:   &pb.LeaseObservation{Holder: "m1", Epoch: 1, State: pb.LeaseState_LEASE_STATE_RELEASED},
			CandidateReport: &pb.ProgressReport{MemberId: "m2", Epoch: 1, FlushedLsn: flushed, FlushedHash: hash, WatermarkLsn: 100,
				HashAtWatermark: hash, AppliedCommitId: 7, ReadSafe: true, State: pb.ReplicaState_REPLICA_STATE_STREAMING}}}})
	}
}

func check(t *testing.T, n *cluster.Node, dir string, wantSnapshot bool) {
	t.Helper()
	want, err := n.FSM().StateHash()
	if err != nil {
		t.Fatal(err)
	}
	wantRecords := replay.Records(n.FSM())
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	res, err := replay.Dir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if res.StateHash != want {
		t.Fatalf("replayed hash %x, node had %x", res.StateHash, want)
	}
	if res.FromSnapshot() != wantSnapshot {
		t.Fatalf("from snapshot %t (first index %d), want %t", res.FromSnapshot(), res.FirstIndex, wantSnapshot)
	}
	if len(res.Records) != len(wantRecords) || len(res.Records) == 0 {
		t.Fatalf("%d records replayed, node had %d", len(res.Records), len(wantRecords))
	}
	for i := range wantRecords {
		a, _ := proto.MarshalOptions{Deterministic: true}.Marshal(wantRecords[i])
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(res.Records[i])
		if !bytes.Equal(a, b) {
			t.Fatalf("record %d differs after replay", i)
		}
	}
}

func TestReplayFullLog(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "n1")
	n := node(t, dir, 0)
	workload(t, n, "d1")
	workload(t, n, "d2")
	check(t, n, dir, false)
}

// With one trailing log entry a snapshot compacts the log, so the replay
// must restore the snapshot first and say so.
func TestReplayCompactedLog(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "n1")
	n := node(t, dir, 1)
	workload(t, n, "d1")
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	workload(t, n, "d2")
	check(t, n, dir, true)
}

func TestReplayRefusesMissingDir(t *testing.T) {
	if _, err := replay.Dir(t.TempDir()); err == nil {
		t.Fatal("replayed a directory without raft.db")
	}
}
