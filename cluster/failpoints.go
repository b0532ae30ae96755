package cluster

import (
	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/failpoint"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protowire"
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

// IsMonotonic forwards raft.MonotonicLogStore (see checksumLogStore).
func (s failpointLogStore) IsMonotonic() bool {
	m, ok := s.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

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
// only; see bodyIs).
func containsIntent(logs []*raft.Log) bool {
	for _, l := range logs {
		if bodyIs(l, promotionIntentField) {
			return true
		}
	}
	return false
}

// isPromotion reports whether a command entry is a promotion attempt
// (failpoint builds only). It walks the entry's top-level fields without
// decoding them and decodes the whole command only when its body is a
// promotion attempt: every test and benchmark binary carries this on
// every apply, and a full decode per entry cost about a sixth of a
// restarted follower's replay.
func isPromotion(l *raft.Log) bool { return bodyIs(l, promotionAttemptField) }

// bodyIs reports whether a command entry's body is the given field of
// Command's oneof. It walks the entry's top-level fields without decoding
// them and decodes the whole command only when the last body field seen
// is the one asked for, to decide exactly as Unmarshal would.
func bodyIs(l *raft.Log, field protowire.Number) bool {
	if l.Type != raft.LogCommand {
		return false
	}
	var last protowire.Number
	for b := l.Data; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return false
		}
		b = b[m:]
		if commandBody.Fields().ByNumber(num) != nil {
			last = num // the last member of a oneof wins, as in Unmarshal
		}
	}
	if last != field {
		return false
	}
	var cmd pb.Command
	if proto.Unmarshal(l.Data, &cmd) != nil {
		return false
	}
	fd := cmd.ProtoReflect().WhichOneof(commandBody)
	return fd != nil && fd.Number() == field
}

var (
	commandBody           = (&pb.Command{}).ProtoReflect().Descriptor().Oneofs().ByName("body")
	promotionAttemptField = (&pb.Command{}).ProtoReflect().Descriptor().Fields().ByName("promotion_attempt").Number()
	promotionIntentField  = (&pb.Command{}).ProtoReflect().Descriptor().Fields().ByName("promotion_intent").Number()
)
