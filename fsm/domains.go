package fsm

import (
	"fmt"
	"slices"
	"strings"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/validator"
	"google.golang.org/protobuf/proto"
)

func done(d *pb.Domain) *Result { return &Result{Epoch: d.Epoch, Holder: d.Holder} }

func applyCreateDomain(f *FSM, e entry) *Result {
	c := e.cmd.GetCreateDomain()
	if err := ValidateName("domain", c.Name); err != nil {
		return failed(e.index, err)
	}
	if !validKind(c.Kind) {
		return failed(e.index, fmt.Errorf("%w: domain kind %v", ErrInvalid, c.Kind))
	}
	if err := ValidatePolicy(c.Policy); err != nil {
		return failed(e.index, err)
	}
	if ReplicaQuorum(c.Policy) && c.Kind != pb.DomainKind_DOMAIN_KIND_AERODB {
		return failed(e.index, fmt.Errorf("%w: replica-quorum durability is for aerodb domains, not %v", ErrInvalid, c.Kind))
	}
	if err := waiverModeKind(c.Kind, c.Policy); err != nil {
		return failed(e.index, err)
	}
	if f.exists(c.Name) {
		return failed(e.index, fmt.Errorf("%w: domain %q", ErrExists, c.Name))
	}
	d := &pb.Domain{
		Name:         c.Name,
		Kind:         c.Kind,
		Policy:       proto.Clone(c.Policy).(*pb.Policy),
		CreatedIndex: e.index,
		UpdatedIndex: e.index,
	}
	if c.Kind != pb.DomainKind_DOMAIN_KIND_AERODB {
		d.Work = &pb.WorkState{Status: pb.LockStatus_LOCK_STATUS_FREE}
	}
	f.create(d)
	f.emit(e, EventDomainCreated, d, append([]string{"kind", kindName(d.Kind), "mode", modeName(d.Policy.Mode),
		"lease_ttl_ms", u(d.Policy.LeaseTtlMs), "promotion_disabled", fmt.Sprint(d.Policy.PromotionDisabled)}, waiverFields(d)...)...)
	return done(d)
}

func applyUpdatePolicy(f *FSM, e entry) *Result {
	c := e.cmd.GetUpdateDomainPolicy()
	d, err := f.lookup(c.Name)
	if err != nil {
		return failed(e.index, err)
	}
	if err := ValidatePolicy(c.Policy); err != nil {
		return failed(e.index, err)
	}
	if err := durabilityChange(d, c.Policy); err != nil {
		return failed(e.index, err)
	}
	if err := waiverModeKind(d.Kind, c.Policy); err != nil {
		return failed(e.index, err)
	}
	d.Policy = proto.Clone(c.Policy).(*pb.Policy)
	d.UpdatedIndex = e.index
	f.emit(e, EventDomainUpdated, d, append([]string{"mode", modeName(d.Policy.Mode), "lease_ttl_ms", u(d.Policy.LeaseTtlMs),
		"promotion_disabled", fmt.Sprint(d.Policy.PromotionDisabled), "report_max_age_ms", u(d.Policy.ReportMaxAgeMs)}, waiverFields(d)...)...)
	return done(d)
}

// waiverModeKind: waivers are an aerodb promotion's; another kind of
// domain names no waiver mode.
func waiverModeKind(kind pb.DomainKind, p *pb.Policy) error {
	if kind != pb.DomainKind_DOMAIN_KIND_AERODB && p.GetWaiverMode() != pb.WaiverMode_WAIVER_MODE_UNSPECIFIED {
		return fmt.Errorf("%w: policy.waiver_mode is for aerodb domains, not %v", ErrInvalid, kind)
	}
	return nil
}

// waiverFields name an aerodb domain's waiver mode in its created/updated
// events (and, for a permitted deviation, the operator's reason).
func waiverFields(d *pb.Domain) []string {
	if d.GetKind() != pb.DomainKind_DOMAIN_KIND_AERODB {
		return nil
	}
	out := []string{"waivers", validator.WaiverModeName(d.GetPolicy())}
	if r := d.GetPolicy().GetWaiverReason(); r != "" {
		out = append(out, "waiver_reason", r)
	}
	return out
}

// durabilityChange refuses the policy changes that would let a promotion
// miss a write the holder already acknowledged under replica-quorum: while
// a holder holds, leaving replica-quorum (the gated checks read only the
// watermark, which lags acknowledgements) or raising K (writes acknowledged
// by fewer replicas would escape an N - K + 1 fence) waits for a new epoch
// or a release. Lowering K only makes the fence larger; entering
// replica-quorum is safe (every gated acknowledgement is under the
// watermark).
func durabilityChange(d *pb.Domain, next *pb.Policy) error {
	cur := d.GetPolicy()
	if d.GetKind() != pb.DomainKind_DOMAIN_KIND_AERODB && ReplicaQuorum(next) {
		return fmt.Errorf("%w: replica-quorum durability is for aerodb domains, not %v", ErrInvalid, d.GetKind())
	}
	if !ReplicaQuorum(cur) || d.GetHolder() == "" || d.GetReleased() {
		return nil
	}
	switch {
	case !ReplicaQuorum(next):
		return fmt.Errorf("%w: domain %q leaves replica-quorum durability while %q holds epoch %d; release or promote first",
			ErrPrecondition, d.GetName(), d.GetHolder(), d.GetEpoch())
	case next.GetMinSyncReplicas() > cur.GetMinSyncReplicas():
		return fmt.Errorf("%w: domain %q raises min_sync_replicas from %d to %d while %q holds epoch %d; release or promote first",
			ErrPrecondition, d.GetName(), cur.GetMinSyncReplicas(), next.GetMinSyncReplicas(), d.GetHolder(), d.GetEpoch())
	}
	return nil
}

// MaxMembersPerDomain bounds the members of one domain. The API edge
// refuses a registration past it on its applied state; this check at apply
// holds the bound against registrations that were in flight together.
const MaxMembersPerDomain = 256

// applyRegisterMember adds a member or updates its address, priority and
// state. Members are never removed: a decommissioned member stays on record.
func applyRegisterMember(f *FSM, e entry) *Result {
	c := e.cmd.GetRegisterMember()
	d, err := f.lookup(c.Domain)
	if err != nil {
		return failed(e.index, err)
	}
	if err := ValidateName("member id", c.MemberId); err != nil {
		return failed(e.index, err)
	}
	state := c.State
	if state == pb.MemberState_MEMBER_STATE_UNSPECIFIED {
		state = pb.MemberState_MEMBER_STATE_ACTIVE
	}
	i, found := slices.BinarySearchFunc(d.Members, c.MemberId, func(m *pb.Member, id string) int {
		return strings.Compare(m.Id, id)
	})
	if found {
		m := d.Members[i]
		if m.State == pb.MemberState_MEMBER_STATE_DECOMMISSIONED && state != m.State {
			return failed(e.index, fmt.Errorf("%w: member %q of %q is decommissioned for good; register it under a new id", ErrPrecondition, m.Id, d.Name))
		}
		m.Address, m.Priority, m.State = c.Address, c.Priority, state
	} else {
		if len(d.Members) >= MaxMembersPerDomain {
			return failed(e.index, fmt.Errorf("%w: domain %q has %d members, the members per domain limit is %d", ErrInvalid, d.Name, len(d.Members), MaxMembersPerDomain))
		}
		m := &pb.Member{Id: c.MemberId, Address: c.Address, Priority: c.Priority, State: state,
			RegisteredEpoch: d.Epoch, RegisteredIndex: e.index}
		d.Members = slices.Insert(d.Members, i, m)
	}
	d.UpdatedIndex = e.index
	f.emit(e, EventMemberRegistered, d, "member_id", c.MemberId, "state", memberStateName(state), "priority", fmt.Sprint(c.Priority))
	return done(d)
}

func member(d *pb.Domain, id string) *pb.Member {
	i, found := slices.BinarySearchFunc(d.Members, id, func(m *pb.Member, id string) int {
		return strings.Compare(m.Id, id)
	})
	if !found {
		return nil
	}
	return d.Members[i]
}
