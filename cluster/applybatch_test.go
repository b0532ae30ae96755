package cluster

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
)

// batchLogs: a domain created, assigned, its watermark advanced, a
// configuration entry in between (not the FSM's) and a failing command.
func batchLogs(t *testing.T) []*raft.Log {
	t.Helper()
	cmds := []*pb.Command{
		{Body: &pb.Command_CreateDomain{CreateDomain: &pb.CreateDomain{Name: "db", Kind: pb.DomainKind_DOMAIN_KIND_AERODB,
			Policy: &pb.Policy{LeaseTtlMs: 10_000, ReportMaxAgeMs: 30_000, Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL}}}},
		{Body: &pb.Command_RegisterMember{RegisterMember: &pb.RegisterMember{Domain: "db", MemberId: "m1"}}},
		nil, // a configuration entry
		{Body: &pb.Command_AssignInitial{AssignInitial: &pb.AssignInitial{Domain: "db", Holder: "m1"}}},
		{Body: &pb.Command_AdvanceWatermark{AdvanceWatermark: &pb.AdvanceWatermark{Advances: []*pb.WatermarkAdvance{
			{Domain: "db", Epoch: 1, Holder: "m1", Lsn: 5, Hash: []byte{5}, VisibleCommitId: 5},
			{Domain: "nope", Epoch: 1, Holder: "m1", Lsn: 5, Hash: []byte{5}}}}}},
		{Body: &pb.Command_AdvanceWatermark{AdvanceWatermark: &pb.AdvanceWatermark{Advances: []*pb.WatermarkAdvance{
			{Domain: "db", Epoch: 1, Holder: "m1", Lsn: 4, Hash: []byte{4}, VisibleCommitId: 4}}}}},
	}
	var logs []*raft.Log
	for i, c := range cmds {
		l := &raft.Log{Index: uint64(10 + i), Term: 3, Type: raft.LogCommand}
		if c == nil {
			l.Type, l.Data = raft.LogConfiguration, []byte("config")
		} else {
			c.Term = 3
			b, err := proto.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			l.Data = b
		}
		l.Extensions = seal(l)
		logs = append(logs, l)
	}
	return logs
}

// ApplyBatch gives the same results and the same state as applying the
// entries one by one.
func TestApplyBatchMatchesApply(t *testing.T) {
	logs := batchLogs(t)
	one, batch := fsm.New(), fsm.New()
	a1 := &raftFSM{f: one, hooks: noHooks{}}
	var single []any
	for _, l := range logs {
		single = append(single, a1.Apply(l))
	}
	ab := &raftFSM{f: batch, hooks: noHooks{}}
	batched := ab.ApplyBatch(logs)
	if len(batched) != len(logs) {
		t.Fatalf("%d responses for %d entries", len(batched), len(logs))
	}
	for i := range logs {
		if fmt.Sprint(single[i]) != fmt.Sprint(batched[i]) {
			t.Fatalf("entry %d: Apply gave %v, ApplyBatch %v", logs[i].Index, single[i], batched[i])
		}
	}
	if batched[2] != nil {
		t.Fatalf("configuration entry answered %v", batched[2])
	}
	r := batched[4].(*fsm.Result)
	if len(r.Watermarks) != 2 || r.Watermarks[0].Err != nil || !errors.Is(r.Watermarks[1].Err, fsm.ErrNotFound) {
		t.Fatalf("watermark batch results %+v", r.Watermarks)
	}
	if r := batched[5].(*fsm.Result); !errors.Is(r.Err, fsm.ErrConflict) {
		t.Fatalf("lower watermark: %v, want a conflict", r.Err)
	}
	h1, err1 := one.StateHash()
	h2, err2 := batch.StateHash()
	if err1 != nil || err2 != nil || h1 != h2 || one.LastIndex() != batch.LastIndex() {
		t.Fatalf("state differs: %x@%d vs %x@%d (%v %v)", h1, one.LastIndex(), h2, batch.LastIndex(), err1, err2)
	}
}

// ApplyBatch verifies every entry's checksum right before applying it: a
// damaged entry in the middle of a batch is never applied, nor is any entry
// after it; the entries before it are.
func TestApplyBatchRefusesDamagedEntry(t *testing.T) {
	logs := batchLogs(t)
	logs[3].Data = append([]byte{}, logs[3].Data...)
	logs[3].Data[len(logs[3].Data)-1] ^= 0x01
	f := fsm.New()
	var reported error
	a := &raftFSM{f: f, hooks: noHooks{}, path: "/data/raft.db", onCorrupt: func(err error) { reported = err }}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("a damaged entry was applied")
			}
		}()
		a.ApplyBatch(logs)
	}()
	if !errors.Is(reported, ErrDamaged) || !strings.Contains(reported.Error(), "log entry 13") {
		t.Fatalf("reported %v", reported)
	}
	if f.LastIndex() != 11 {
		t.Fatalf("fsm at %d, want 11 (the entries before the damaged one)", f.LastIndex())
	}
}

// The adapter raft gets is a BatchingFSM unless ApplyOneByOne.
func TestApplyOneByOneHidesApplyBatch(t *testing.T) {
	var batching raft.FSM = &raftFSM{}
	if _, ok := batching.(raft.BatchingFSM); !ok {
		t.Fatal("raftFSM is not a raft.BatchingFSM")
	}
	var single raft.FSM = oneByOne{&raftFSM{}}
	if _, ok := single.(raft.BatchingFSM); ok {
		t.Fatal("oneByOne exposes ApplyBatch")
	}
}
