package cluster

import (
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
)

// bodyIs decides as Unmarshal does: by the body field, the last oneof
// member in the encoding winning.
func TestBodyIs(t *testing.T) {
	mk := func(c *pb.Command) *raft.Log {
		b, err := proto.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return &raft.Log{Type: raft.LogCommand, Data: b}
	}
	attempt := mk(&pb.Command{Term: 3, Proposer: "x", Body: &pb.Command_PromotionAttempt{PromotionAttempt: &pb.PromotionAttempt{}}})
	intent := mk(&pb.Command{Term: 3, Body: &pb.Command_PromotionIntent{PromotionIntent: &pb.PromotionIntent{}}})
	create := mk(&pb.Command{Term: 3, Body: &pb.Command_CreateDomain{CreateDomain: &pb.CreateDomain{}}})
	if !isPromotion(attempt) || isPromotion(intent) || isPromotion(create) {
		t.Error("isPromotion: only the attempt is one")
	}
	if !containsIntent([]*raft.Log{create, intent}) || containsIntent([]*raft.Log{attempt, create}) {
		t.Error("containsIntent: only a batch with the intent has one")
	}
	if both := (&raft.Log{Type: raft.LogCommand, Data: append(append([]byte{}, attempt.Data...), create.Data...)}); isPromotion(both) {
		t.Error("an attempt followed by another body is not a promotion (the last oneof member wins)")
	}
	if noop := (&raft.Log{Type: raft.LogNoop, Data: attempt.Data}); isPromotion(noop) {
		t.Error("only command entries count")
	}
}
