package fsm

import (
	"fmt"
	"slices"
	"strings"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/validator"
	"google.golang.org/protobuf/proto"
)

// applyPreparePromotion records, for a replica-quorum domain, the fence its
// synchronous replicas must obey before a promotion can be decided
// (docs/DURABILITY.md). It grants nothing: the holder keeps its epoch and
// its lease, but once K of its replicas are fenced it can acknowledge
// nothing more. The fence is for epoch + 1 and lists the synchronous set
// (the active members but the holder) and K as they are now; the decision
// needs fenced reports from N - K + 1 of them.
//
// Idempotent: a fence already pending for epoch + 1 stays as it is (the
// first prepare's request id and set), whoever asks again.
func applyPreparePromotion(f *FSM, e entry) *Result {
	c := e.cmd.GetPreparePromotion()
	if err := ValidateName("request id", c.GetRequestId()); err != nil {
		return failed(e.index, err)
	}
	d, err := f.lookup(c.GetDomain())
	if err != nil {
		return failed(e.index, err)
	}
	switch {
	case d.Kind != pb.DomainKind_DOMAIN_KIND_AERODB || !ReplicaQuorum(d.Policy):
		return failed(e.index, fmt.Errorf("%w: domain %q is not an aerodb domain in replica-quorum durability", ErrPrecondition, d.Name))
	case c.GetExpectedEpoch() != d.Epoch:
		return failed(e.index, fmt.Errorf("%w: prepare expects epoch %d but domain %q is at epoch %d", ErrPrecondition, c.GetExpectedEpoch(), d.Name, d.Epoch))
	case findMember(d, c.GetCandidate()) == nil:
		return failed(e.index, fmt.Errorf("%w: candidate %q is not a member of domain %q", ErrPrecondition, c.GetCandidate(), d.Name))
	}
	if d.Fence != nil && d.Fence.Epoch == d.Epoch+1 {
		return done(d)
	}
	d.Fence = &pb.Fence{
		Epoch:         d.Epoch + 1,
		RequestId:     c.GetRequestId(),
		Candidate:     c.GetCandidate(),
		Index:         e.index,
		StampedUnixMs: e.cmd.GetStampedUnixMs(),
		SyncSet:       SyncSet(d),
		QuorumAcks:    d.Policy.GetMinSyncReplicas(),
	}
	d.UpdatedIndex = e.index
	f.emit(e, EventFencePrepared, d, "fence_epoch", u(d.Fence.Epoch), "candidate", d.Fence.Candidate,
		"sync_set", strings.Join(d.Fence.SyncSet, ","), "quorum_acks", u(uint64(d.Fence.QuorumAcks)),
		"fenced_reports_needed", u(uint64(validator.FenceQuorum(d.Fence))), "request_id", d.Fence.RequestId)
	return done(d)
}

// PendingFence returns a copy of the domain's fence when one is pending
// for its next epoch (nil otherwise). It copies only the fence: every
// progress report of a replica-quorum domain asks for it.
func (f *FSM) PendingFence(name string) *pb.Fence {
	f.mu.RLock()
	rec, ok := f.recs[name]
	f.mu.RUnlock()
	if !ok {
		return nil
	}
	raw, ok := recField(rec.raw, 18) // Domain.fence
	if !ok {
		return nil
	}
	fc := &pb.Fence{}
	if err := proto.Unmarshal(raw, fc); err != nil {
		panic(fmt.Sprintf("fsm: the fence of domain %q does not decode: %v", name, err))
	}
	if fc.Epoch != rec.epoch+1 {
		return nil
	}
	return fc
}

// SyncSet is a replica-quorum domain's synchronous set at its current epoch:
// the active members other than the holder, sorted by id.
func SyncSet(d *pb.Domain) []string {
	var out []string
	for _, m := range d.GetMembers() {
		if m.GetState() == pb.MemberState_MEMBER_STATE_ACTIVE && (m.GetId() != d.GetHolder() || d.GetReleased()) {
			out = append(out, m.GetId())
		}
	}
	slices.Sort(out)
	return out
}

func findMember(d *pb.Domain, id string) *pb.Member {
	for _, m := range d.GetMembers() {
		if m.GetId() == id {
			return m
		}
	}
	return nil
}
