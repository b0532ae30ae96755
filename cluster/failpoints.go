package cluster

import (
	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/failpoint"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
)

// failpointLogStore wraps raft's log store with the raftlog/before-store
// and raftlog/after-store points, evaluated only for writes that carry a
// promotion attempt (so a test can crash a node exactly while the
// authority-changing entry is being made durable), and
// raftlog/before-store-intent, evaluated for writes that carry a
// promotion intent (the request made durable before validation). Without
// the failpoints build tag it only forwards.
type failpointLogStore struct{ raft.LogStore }

func (s failpointLogStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

func (s failpointLogStore) StoreLogs(logs []*raft.Log) error {
	if failpoint.Enabled && containsIntent(logs) {
		if err := failpoint.Eval(failpoint.RaftLogBeforeStoreIntent); err != nil {
			return err
		}
	}
	promo := failpoint.Enabled && containsPromotion(logs)
	if promo {
		if err := failpoint.Eval(failpoint.RaftLogBeforeStore); err != nil {
			return err
		}
	}
	if err := s.LogStore.StoreLogs(logs); err != nil {
		return err
	}
	if promo {
		return failpoint.Eval(failpoint.RaftLogAfterStore)
	}
	return nil
}

func containsPromotion(logs []*raft.Log) bool {
	for _, l := range logs {
		if isPromotion(l) {
			return true
		}
	}
	return false
}

// containsIntent: the batch carries a PromotionIntent (failpoint builds
// only: it costs a decode per entry).
func containsIntent(logs []*raft.Log) bool {
	for _, l := range logs {
		if l.Type != raft.LogCommand {
			continue
		}
		var cmd pb.Command
		if proto.Unmarshal(l.Data, &cmd) == nil {
			if _, ok := cmd.Body.(*pb.Command_PromotionIntent); ok {
				return true
			}
		}
	}
	return false
}

// isPromotion decodes a command entry to see whether it is a promotion
// attempt (failpoint builds only: it costs a decode per entry).
func isPromotion(l *raft.Log) bool {
	if l.Type != raft.LogCommand {
		return false
	}
	var cmd pb.Command
	if proto.Unmarshal(l.Data, &cmd) != nil {
		return false
	}
	_, ok := cmd.Body.(*pb.Command_PromotionAttempt)
	return ok
}
