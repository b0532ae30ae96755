package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/validator"
	"google.golang.org/protobuf/proto"
)

// Unit tests, one group per command applier. Every rejected command is
// applied through harness.fails, which asserts errors.Is on the sentinel and
// that the state hash is unchanged: bad input changes nothing but the
// applied log index, which the harness moves first so that the comparison
// isolates the command's own effect.

// Chain hashes used by the fixtures: distinct bytes per lsn.
var (
	h90   = bytes.Repeat([]byte{0x90}, 8)
	h100  = bytes.Repeat([]byte{0xa1}, 8)
	h120  = bytes.Repeat([]byte{0xb2}, 8)
	hFork = bytes.Repeat([]byte{0xee}, 8)
)

// harness applies commands at increasing log indexes (term 1).
type harness struct {
	t     testing.TB
	f     *FSM
	index uint64
}

func newHarness(t testing.TB) *harness { return &harness{t: t, f: New()} }

func (h *harness) apply(cmd *pb.Command) *Result {
	h.index++
	return h.f.ApplyCommand(h.index, 1, cmd)
}

// ok applies a command that must take effect.
func (h *harness) ok(cmd *pb.Command) *Result {
	h.t.Helper()
	res := h.apply(cmd)
	if res.Err != nil {
		h.t.Fatalf("index %d: %v", h.index, res.Err)
	}
	for _, w := range res.Watermarks {
		if w.Err != nil {
			h.t.Fatalf("index %d: watermark of %s: %v", h.index, w.Domain, w.Err)
		}
	}
	return res
}

// fails applies a command that must be rejected with want and change
// nothing.
func (h *harness) fails(cmd *pb.Command, want error) *Result {
	h.t.Helper()
	h.index++
	h.f.advance(h.index)
	before := mustHash(h.t, h.f)
	res := h.f.ApplyCommand(h.index, 1, cmd)
	if !errors.Is(res.Err, want) {
		h.t.Fatalf("index %d: err = %v, want errors.Is %v", h.index, res.Err, want)
	}
	if after := mustHash(h.t, h.f); after != before {
		h.t.Fatalf("index %d: rejected command (%v) changed the state", h.index, res.Err)
	}
	return res
}

// unchanged applies a command whose result is not an error but that must
// not change the state (a duplicate request, a batch whose items all fail).
func (h *harness) unchanged(cmd *pb.Command) *Result {
	h.t.Helper()
	h.index++
	h.f.advance(h.index)
	before := mustHash(h.t, h.f)
	res := h.f.ApplyCommand(h.index, 1, cmd)
	if after := mustHash(h.t, h.f); after != before {
		h.t.Fatalf("index %d: command changed the state (err=%v)", h.index, res.Err)
	}
	return res
}

func (h *harness) domain(name string) *pb.Domain {
	h.t.Helper()
	d, ok := h.f.Domain(name)
	if !ok {
		h.t.Fatalf("domain %q does not exist", name)
	}
	return d
}

func mustHash(t testing.TB, f *FSM) [32]byte {
	t.Helper()
	sum, err := f.StateHash()
	if err != nil {
		t.Fatalf("StateHash: %v", err)
	}
	return sum
}

func u64p(v uint64) *uint64 { return &v }

// Command builders.

func manualPolicy() *pb.Policy {
	return &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL, LeaseTtlMs: 10_000, ReportMaxAgeMs: 30_000}
}

func createCmd(name string, kind pb.DomainKind, p *pb.Policy) *pb.Command {
	return &pb.Command{Body: &pb.Command_CreateDomain{CreateDomain: &pb.CreateDomain{Name: name, Kind: kind, Policy: p}}}
}

func createDB(name string) *pb.Command {
	return createCmd(name, pb.DomainKind_DOMAIN_KIND_AERODB, manualPolicy())
}

func createLock(name string) *pb.Command {
	return createCmd(name, pb.DomainKind_DOMAIN_KIND_LOCK, manualPolicy())
}

func updatePolicyCmd(name string, p *pb.Policy) *pb.Command {
	return &pb.Command{Body: &pb.Command_UpdateDomainPolicy{UpdateDomainPolicy: &pb.UpdateDomainPolicy{Name: name, Policy: p}}}
}

func registerCmd(domain, id string) *pb.Command {
	return &pb.Command{Body: &pb.Command_RegisterMember{RegisterMember: &pb.RegisterMember{Domain: domain, MemberId: id}}}
}

func assignCmd(domain, holder string) *pb.Command {
	return &pb.Command{Body: &pb.Command_AssignInitial{AssignInitial: &pb.AssignInitial{Domain: domain, Holder: holder}}}
}

func acquireCmd(domain, holder string, obs *pb.LeaseObservation, expected *uint64) *pb.Command {
	return &pb.Command{Body: &pb.Command_Acquire{Acquire: &pb.Acquire{Domain: domain, Holder: holder, Lease: obs, ExpectedEpoch: expected}}}
}

func releaseCmd(domain, holder string, epoch uint64) *pb.Command {
	return &pb.Command{Body: &pb.Command_Release{Release: &pb.Release{Domain: domain, Holder: holder, Epoch: epoch}}}
}

func advanceCmd(advs ...*pb.WatermarkAdvance) *pb.Command {
	return &pb.Command{Body: &pb.Command_AdvanceWatermark{AdvanceWatermark: &pb.AdvanceWatermark{Advances: advs}}}
}

func wmAdv(domain, holder string, epoch, lsn uint64, hash []byte, visible uint64) *pb.WatermarkAdvance {
	return &pb.WatermarkAdvance{Domain: domain, Holder: holder, Epoch: epoch, Lsn: lsn, Hash: hash, VisibleCommitId: visible}
}

func attemptCmd(a *pb.PromotionAttempt) *pb.Command {
	return &pb.Command{StampedUnixMs: 1_700_000_000_000, Body: &pb.Command_PromotionAttempt{PromotionAttempt: a}}
}

func completeCmd(domain, holder string, epoch uint64, workID string) *pb.Command {
	return &pb.Command{Body: &pb.Command_Complete{Complete: &pb.Complete{Domain: domain, Holder: holder, Epoch: epoch, WorkId: workID, Detail: "done"}}}
}

func abortCmd(domain, holder string, epoch uint64, workID string) *pb.Command {
	return &pb.Command{Body: &pb.Command_Abort{Abort: &pb.Abort{Domain: domain, Holder: holder, Epoch: epoch, WorkId: workID, Detail: "stopped"}}}
}

func leaseObs(holder string, epoch uint64, state pb.LeaseState) *pb.LeaseObservation {
	return &pb.LeaseObservation{Holder: holder, Epoch: epoch, State: state, LeaderTerm: 1, LeaderId: "s1"}
}

// readyToPromote builds aerodb domain db1 with members n1 n2 n3, n1 holding
// epoch 1 and a watermark (epoch 1, lsn 100, H100, visible 50). It returns an
// attempt (request req-1) for n2 that passes every check: n1's lease expired
// at epoch 1 and n2 reported exactly the watermark.
func readyToPromote(t testing.TB) (*harness, *pb.PromotionAttempt) {
	t.Helper()
	h := newHarness(t)
	h.ok(createDB("db1"))
	for _, m := range []string{"n1", "n2", "n3"} {
		h.ok(registerCmd("db1", m))
	}
	h.ok(assignCmd("db1", "n1"))
	h.ok(advanceCmd(wmAdv("db1", "n1", 1, 100, h100, 50)))
	return h, &pb.PromotionAttempt{
		Request: &pb.PromotionRequest{RequestId: "req-1", Domain: "db1", Candidate: "n2", Reason: "n1 lost",
			InitiatedBy: pb.Initiator_INITIATOR_OPERATOR},
		Lease:           leaseObs("n1", 1, pb.LeaseState_LEASE_STATE_EXPIRED),
		CandidateReport: report("n2", 1),
		ReportAgeMs:     200,
	}
}

// report is a candidate that holds exactly the fixture's watermark.
func report(member string, epoch uint64) *pb.ProgressReport {
	return &pb.ProgressReport{MemberId: member, Epoch: epoch, FlushedLsn: 100, FlushedHash: h100,
		WatermarkLsn: 100, HashAtWatermark: h100, AppliedCommitId: 50, ReadSafe: true,
		State: pb.ReplicaState_REPLICA_STATE_STREAMING}
}

func cloneAttempt(a *pb.PromotionAttempt) *pb.PromotionAttempt {
	return proto.Clone(a).(*pb.PromotionAttempt)
}

func TestCreateDomain(t *testing.T) {
	long := strings.Repeat("a", MaxNameLen+1)
	cases := []struct {
		name string
		cmd  *pb.Command
		want error
	}{
		{"empty name", createDB(""), ErrInvalid},
		{"name starts with punctuation", createDB("-db"), ErrInvalid},
		{"name with space", createDB("db 1"), ErrInvalid},
		{"name with slash", createDB("db/1"), ErrInvalid},
		{"name too long", createDB(long), ErrInvalid},
		{"kind unspecified", createCmd("db2", pb.DomainKind_DOMAIN_KIND_UNSPECIFIED, manualPolicy()), ErrInvalid},
		{"kind unknown", createCmd("db2", pb.DomainKind(99), manualPolicy()), ErrInvalid},
		{"policy missing", createCmd("db2", pb.DomainKind_DOMAIN_KIND_AERODB, nil), ErrInvalid},
		{"policy mode unspecified", createCmd("db2", pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: 1000}), ErrInvalid},
		{"policy ttl too short", createCmd("db2", pb.DomainKind_DOMAIN_KIND_AERODB,
			&pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL, LeaseTtlMs: MinLeaseTTLms - 1}), ErrInvalid},
		{"policy ttl too long", createCmd("db2", pb.DomainKind_DOMAIN_KIND_AERODB,
			&pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_AUTOMATIC, LeaseTtlMs: MaxLeaseTTLms + 1}), ErrInvalid},
		{"duplicate", createDB("db1"), ErrExists},
		{"duplicate of another kind", createLock("db1"), ErrExists},
	}
	h := newHarness(t)
	h.ok(createDB("db1"))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			h.fails(tc.cmd, tc.want)
		})
	}
	h.t = t

	t.Run("policy errors are all reported", func(t *testing.T) {
		err := ValidatePolicy(&pb.Policy{Mode: pb.PromotionMode(7), LeaseTtlMs: 1})
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "policy.mode") || !strings.Contains(err.Error(), "policy.lease_ttl_ms") {
			t.Fatalf("ValidatePolicy = %v, want both violations", err)
		}
	})

	t.Run("valid kinds", func(t *testing.T) {
		p := manualPolicy()
		cmd := createCmd("lock1", pb.DomainKind_DOMAIN_KIND_LOCK, p)
		res := h.ok(cmd)
		if res.Epoch != 0 || res.Holder != "" {
			t.Fatalf("new domain: epoch %d holder %q", res.Epoch, res.Holder)
		}
		p.LeaseTtlMs = 1 // the state owns its copy of the policy
		lock := h.domain("lock1")
		if lock.GetPolicy().GetLeaseTtlMs() != 10_000 {
			t.Fatalf("policy aliased to the command: ttl %d", lock.GetPolicy().GetLeaseTtlMs())
		}
		if lock.GetWork().GetStatus() != pb.LockStatus_LOCK_STATUS_FREE || lock.CreatedIndex != h.index || lock.UpdatedIndex != h.index {
			t.Fatalf("lock domain: %v", lock)
		}
		h.ok(createCmd("rel1", pb.DomainKind_DOMAIN_KIND_RELEASE, manualPolicy()))
		if h.domain("rel1").GetWork().GetStatus() != pb.LockStatus_LOCK_STATUS_FREE {
			t.Fatal("release domain has no free work state")
		}
		if db := h.domain("db1"); db.Work != nil || db.Epoch != 0 || db.Watermark != nil {
			t.Fatalf("aerodb domain: %v", db)
		}
		if got := h.f.DomainNames(); strings.Join(got, ",") != "db1,lock1,rel1" {
			t.Fatalf("DomainNames = %v", got)
		}
	})
}

func TestUpdateDomainPolicy(t *testing.T) {
	h := newHarness(t)
	h.ok(createDB("db1"))
	h.fails(updatePolicyCmd("nope", manualPolicy()), ErrNotFound)
	h.fails(updatePolicyCmd("db1", nil), ErrInvalid)
	h.fails(updatePolicyCmd("db1", &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL, LeaseTtlMs: 5}), ErrInvalid)

	p := &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_AUTOMATIC, LeaseTtlMs: 3000, PromotionDisabled: true, ReportMaxAgeMs: 900, MinSyncReplicas: 2}
	h.ok(updatePolicyCmd("db1", p))
	d := h.domain("db1")
	if !proto.Equal(d.Policy, p) || d.UpdatedIndex != h.index {
		t.Fatalf("policy %v updated_index %d, want %v at %d", d.Policy, d.UpdatedIndex, p, h.index)
	}
	if a, _ := h.f.AuthorityOf("db1"); a.TTLms != 3000 {
		t.Fatalf("AuthorityOf TTL = %d", a.TTLms)
	}
}

func TestRegisterMember(t *testing.T) {
	h := newHarness(t)
	h.ok(createDB("db1"))
	h.fails(registerCmd("nope", "n1"), ErrNotFound)
	h.fails(registerCmd("db1", ""), ErrInvalid)
	h.fails(registerCmd("db1", "n 1"), ErrInvalid)

	for _, id := range []string{"n3", "n1", "n2"} {
		h.ok(registerCmd("db1", id))
	}
	d := h.domain("db1")
	var ids []string
	for _, m := range d.Members {
		ids = append(ids, m.Id)
		if m.State != pb.MemberState_MEMBER_STATE_ACTIVE {
			t.Errorf("member %s state %v, want ACTIVE by default", m.Id, m.State)
		}
		if m.RegisteredEpoch != 0 {
			t.Errorf("member %s registered_epoch %d", m.Id, m.RegisteredEpoch)
		}
	}
	if strings.Join(ids, ",") != "n1,n2,n3" {
		t.Fatalf("members %v, want sorted n1,n2,n3", ids)
	}
	n1Index := d.Members[0].RegisteredIndex

	// Update in place: address, priority and state change; registration stays.
	h.ok(assignCmd("db1", "n1"))
	h.ok(&pb.Command{Body: &pb.Command_RegisterMember{RegisterMember: &pb.RegisterMember{
		Domain: "db1", MemberId: "n1", Address: "10.0.0.1:7000", Priority: 7, State: pb.MemberState_MEMBER_STATE_DECOMMISSIONED}}})
	d = h.domain("db1")
	if len(d.Members) != 3 {
		t.Fatalf("update in place added a member: %v", d.Members)
	}
	m := d.Members[0]
	if m.Id != "n1" || m.Address != "10.0.0.1:7000" || m.Priority != 7 || m.State != pb.MemberState_MEMBER_STATE_DECOMMISSIONED ||
		m.RegisteredIndex != n1Index || m.RegisteredEpoch != 0 {
		t.Fatalf("updated member %v", m)
	}
	// A new member records the epoch it joined at.
	h.ok(registerCmd("db1", "n0"))
	d = h.domain("db1")
	if d.Members[0].Id != "n0" || d.Members[0].RegisteredEpoch != 1 || d.Members[0].RegisteredIndex != h.index {
		t.Fatalf("n0: %v", d.Members[0])
	}
}

func TestAssignInitial(t *testing.T) {
	h := newHarness(t)
	h.ok(createDB("db1"))
	h.ok(createLock("lock1"))
	h.fails(assignCmd("nope", "n1"), ErrNotFound)
	h.fails(assignCmd("db1", ""), ErrInvalid)
	h.fails(assignCmd("db1", "n1"), ErrPrecondition) // aerodb: not a registered member
	h.ok(registerCmd("db1", "n1"))
	res := h.ok(assignCmd("db1", "n1"))
	if res.Epoch != 1 || res.Holder != "n1" {
		t.Fatalf("assign: epoch %d holder %q", res.Epoch, res.Holder)
	}
	if d := h.domain("db1"); d.EpochIndex != h.index || d.Released {
		t.Fatalf("assign: %v", d)
	}
	h.ok(registerCmd("db1", "n2"))
	h.fails(assignCmd("db1", "n2"), ErrPrecondition) // only at epoch 0
	h.fails(assignCmd("db1", "n1"), ErrPrecondition)

	// A lock needs no members; the work state follows the epoch.
	h.ok(assignCmd("lock1", "runner-a"))
	if w := h.domain("lock1").Work; w.Status != pb.LockStatus_LOCK_STATUS_HELD || w.Epoch != 1 {
		t.Fatalf("lock work %v", w)
	}
	// Even released, an assigned domain is past epoch 0.
	h.ok(releaseCmd("lock1", "runner-a", 1))
	h.fails(assignCmd("lock1", "runner-b"), ErrPrecondition)
}

func TestAcquireLock(t *testing.T) {
	h := newHarness(t)
	h.ok(createLock("lock1"))
	expired := pb.LeaseState_LEASE_STATE_EXPIRED

	h.fails(acquireCmd("nope", "a", nil, nil), ErrNotFound)
	h.fails(acquireCmd("lock1", "", nil, nil), ErrInvalid)
	h.fails(acquireCmd("lock1", "a", nil, u64p(3)), ErrFenced)

	res := h.ok(acquireCmd("lock1", "a", nil, u64p(0))) // free → epoch 1
	if res.Epoch != 1 || res.Holder != "a" {
		t.Fatalf("acquire free: epoch %d holder %q", res.Epoch, res.Holder)
	}
	h.fails(acquireCmd("lock1", "b", leaseObs("a", 1, pb.LeaseState_LEASE_STATE_HELD), nil), ErrPrecondition)
	h.fails(acquireCmd("lock1", "b", nil, nil), ErrPrecondition)
	h.fails(acquireCmd("lock1", "a", nil, nil), ErrPrecondition)                       // held, even by itself
	h.fails(acquireCmd("lock1", "b", leaseObs("z", 1, expired), nil), ErrPrecondition) // someone else's lease
	h.fails(acquireCmd("lock1", "b", leaseObs("a", 1, expired), u64p(0)), ErrFenced)

	res = h.ok(acquireCmd("lock1", "b", leaseObs("a", 1, expired), u64p(1))) // expired for (a, 1)
	if res.Epoch != 2 || res.Holder != "b" {
		t.Fatalf("acquire expired: epoch %d holder %q", res.Epoch, res.Holder)
	}
	if w := h.domain("lock1").Work; w.Status != pb.LockStatus_LOCK_STATUS_HELD || w.Epoch != 2 {
		t.Fatalf("work after acquire: %v", w)
	}
	// The observation that freed epoch 1 is stale now.
	h.fails(acquireCmd("lock1", "c", leaseObs("a", 1, expired), nil), ErrPrecondition)
	h.fails(acquireCmd("lock1", "c", leaseObs("b", 1, expired), nil), ErrPrecondition)

	h.ok(releaseCmd("lock1", "b", 2))
	res = h.ok(acquireCmd("lock1", "c", nil, u64p(2))) // released → free
	if res.Epoch != 3 || res.Holder != "c" {
		t.Fatalf("acquire released: epoch %d holder %q", res.Epoch, res.Holder)
	}
	if d := h.domain("lock1"); d.Released || d.EpochIndex != h.index {
		t.Fatalf("after acquire: %v", d)
	}
}

func TestAcquireAerodb(t *testing.T) {
	h := newHarness(t)
	h.ok(createDB("db1"))
	h.ok(registerCmd("db1", "n1"))
	h.ok(registerCmd("db1", "n2"))
	h.fails(acquireCmd("db1", "n1", nil, nil), ErrPrecondition) // epoch 0: authority starts by assignment
	h.ok(assignCmd("db1", "n1"))
	expired := leaseObs("n1", 1, pb.LeaseState_LEASE_STATE_EXPIRED)
	h.fails(acquireCmd("db1", "n2", expired, nil), ErrPrecondition) // moves only by promotion
	h.fails(acquireCmd("db1", "n1", expired, u64p(2)), ErrFenced)

	res := h.ok(acquireCmd("db1", "n1", expired, u64p(1)))
	if res.Epoch != 1 || res.Holder != "n1" {
		t.Fatalf("re-acquire: epoch %d holder %q", res.Epoch, res.Holder)
	}
	if d := h.domain("db1"); d.UpdatedIndex != h.index || d.EpochIndex == h.index {
		t.Fatalf("re-acquire: updated %d epoch_index %d at %d", d.UpdatedIndex, d.EpochIndex, h.index)
	}
	h.ok(releaseCmd("db1", "n1", 1))
	h.fails(acquireCmd("db1", "n1", nil, nil), ErrPrecondition) // released: promotion only
}

func TestRelease(t *testing.T) {
	h := newHarness(t)
	h.ok(createLock("lock1"))
	h.fails(releaseCmd("nope", "a", 1), ErrNotFound)
	h.fails(releaseCmd("lock1", "", 0), ErrFenced) // never held
	h.ok(acquireCmd("lock1", "a", nil, nil))
	h.fails(releaseCmd("lock1", "a", 0), ErrFenced)
	h.fails(releaseCmd("lock1", "a", 2), ErrFenced)
	h.fails(releaseCmd("lock1", "b", 1), ErrFenced)
	res := h.ok(releaseCmd("lock1", "a", 1))
	if res.Epoch != 1 || res.Holder != "a" {
		t.Fatalf("release result: epoch %d holder %q", res.Epoch, res.Holder)
	}
	d := h.domain("lock1")
	if !d.Released || d.Work.Status != pb.LockStatus_LOCK_STATUS_FREE || d.UpdatedIndex != h.index {
		t.Fatalf("released lock: %v", d)
	}
	if a, _ := h.f.AuthorityOf("lock1"); !a.Released || a.Epoch != 1 {
		t.Fatalf("AuthorityOf: %+v", a)
	}
	h.fails(releaseCmd("lock1", "a", 1), ErrFenced) // twice
}

func TestAdvanceWatermark(t *testing.T) {
	h, attempt := readyToPromote(t)
	h.ok(createLock("lock1"))
	h.ok(createDB("db2"))
	h.ok(registerCmd("db2", "m1"))
	h.ok(assignCmd("db2", "m1"))

	want := func(domain string, epoch, lsn uint64, hash []byte, visible uint64) {
		t.Helper()
		wm, ok := h.f.Watermark(domain)
		if !ok || wm == nil || wm.Epoch != epoch || wm.Lsn != lsn || !bytes.Equal(wm.Hash, hash) || wm.VisibleCommitId != visible {
			t.Fatalf("watermark of %s = %v, want epoch %d lsn %d hash %x visible %d", domain, wm, epoch, lsn, hash, visible)
		}
	}
	want("db1", 1, 100, h100, 50)
	if wm, ok := h.f.Watermark("db2"); !ok || wm != nil {
		t.Fatalf("db2 watermark before any advance = %v, %t; want unknown", wm, ok)
	}

	h.fails(advanceCmd(), ErrInvalid)
	h.fails(advanceCmd(make([]*pb.WatermarkAdvance, MaxWatermarkBatch+1)...), ErrInvalid)
	h.fails(advanceCmd(wmAdv("nope", "n1", 1, 120, h120, 60)), ErrNotFound)
	h.fails(advanceCmd(wmAdv("lock1", "a", 0, 1, h120, 1)), ErrInvalid)
	h.fails(advanceCmd(wmAdv("db1", "n1", 2, 120, h120, 60)), ErrFenced)
	h.fails(advanceCmd(wmAdv("db1", "n2", 1, 120, h120, 60)), ErrFenced)
	h.fails(advanceCmd(wmAdv("db1", "n1", 1, 120, nil, 60)), ErrInvalid)
	h.fails(advanceCmd(wmAdv("db1", "n1", 1, 99, h90, 50)), ErrConflict)    // lsn regresses
	h.fails(advanceCmd(wmAdv("db1", "n1", 1, 100, hFork, 50)), ErrConflict) // same lsn, other hash
	h.fails(advanceCmd(wmAdv("db1", "n1", 1, 120, h120, 49)), ErrConflict)  // visible regresses
	h.fails(advanceCmd(wmAdv("db1", "n1", 1, 100, h100, 49)), ErrConflict)

	// Idempotent re-send and visibility growing at the same lsn.
	h.ok(advanceCmd(wmAdv("db1", "n1", 1, 100, h100, 50)))
	h.ok(advanceCmd(wmAdv("db1", "n1", 1, 100, h100, 55)))
	want("db1", 1, 100, h100, 55)
	// lsn 0 carries no hash.
	h.ok(advanceCmd(wmAdv("db2", "m1", 1, 0, nil, 0)))
	want("db2", 1, 0, nil, 0)

	t.Run("batch results are per item", func(t *testing.T) {
		h.t = t
		defer func() { h.t = t }()
		res := h.apply(advanceCmd(
			wmAdv("db1", "n9", 1, 130, h120, 60), // fenced
			wmAdv("db2", "m1", 1, 10, h90, 3),    // ok
			wmAdv("nope", "x", 1, 1, h90, 1),     // not found
		))
		if res.Err != nil {
			t.Fatalf("batch err = %v, want per-item results only", res.Err)
		}
		if len(res.Watermarks) != 3 || res.Watermarks[0].Domain != "db1" || res.Watermarks[1].Domain != "db2" || res.Watermarks[2].Domain != "nope" {
			t.Fatalf("batch results %+v", res.Watermarks)
		}
		if !errors.Is(res.Watermarks[0].Err, ErrFenced) || res.Watermarks[1].Err != nil || !errors.Is(res.Watermarks[2].Err, ErrNotFound) {
			t.Fatalf("batch results %+v", res.Watermarks)
		}
		want("db1", 1, 100, h100, 55)
		want("db2", 1, 10, h90, 3)
		// A batch whose items all fail changes nothing.
		res = h.unchanged(advanceCmd(wmAdv("db1", "n1", 0, 130, h120, 60), wmAdv("db2", "m1", 1, 9, h90, 3)))
		if !errors.Is(res.Watermarks[0].Err, ErrFenced) || !errors.Is(res.Watermarks[1].Err, ErrConflict) {
			t.Fatalf("batch results %+v", res.Watermarks)
		}
	})

	// After a promotion the old holder is fenced (AU-12) and the new epoch
	// continues the old history: without a waiver it can never go below the
	// acknowledged watermark (AU-4) nor re-hash a known lsn (AU-5), nor hide
	// visible commits (AU-6).
	attempt.CandidateReport.AppliedCommitId = 55
	if res := h.ok(attemptCmd(attempt)); !res.Attempt.Decision.Allowed {
		t.Fatalf("promotion denied: %s", DescribeAttempt(res.Attempt))
	}
	h.fails(advanceCmd(wmAdv("db1", "n1", 1, 130, h120, 60)), ErrFenced)
	h.fails(advanceCmd(wmAdv("db1", "n2", 2, 90, h90, 55)), ErrConflict)
	h.fails(advanceCmd(wmAdv("db1", "n2", 2, 100, h90, 55)), ErrConflict)
	h.fails(advanceCmd(wmAdv("db1", "n2", 2, 130, h120, 54)), ErrConflict)
	h.ok(advanceCmd(wmAdv("db1", "n2", 2, 130, h120, 60)))
	want("db1", 2, 130, h120, 60)
	h.fails(advanceCmd(wmAdv("db1", "n2", 2, 129, h90, 60)), ErrConflict)
	h.fails(advanceCmd(wmAdv("db1", "n2", 1, 135, h90, 60)), ErrFenced)
	if d := h.domain("db1"); d.UpdatedIndex != h.index-2 {
		t.Fatalf("updated_index %d, want %d", d.UpdatedIndex, h.index-2)
	}
}

func TestPromotionAllowed(t *testing.T) {
	h, attempt := readyToPromote(t)
	attempt.Request.ExpectedEpoch = u64p(1)
	res := h.ok(attemptCmd(attempt))
	rec := res.Attempt
	if rec == nil || !rec.Decision.Allowed || res.Duplicate {
		t.Fatalf("attempt: %v duplicate=%t", rec, res.Duplicate)
	}
	if res.Epoch != 2 || res.Holder != "n2" {
		t.Fatalf("result epoch %d holder %q, want 2 n2", res.Epoch, res.Holder)
	}
	if rec.EpochBefore != 1 || rec.EpochAfter != 2 || rec.HolderBefore != "n1" || rec.HolderAfter != "n2" ||
		rec.LogIndex != h.index || rec.Term != 1 || rec.StampedUnixMs != 1_700_000_000_000 || rec.ReportAgeMs != 200 {
		t.Fatalf("record: %v", rec)
	}
	if !proto.Equal(rec.Request, attempt.Request) || !proto.Equal(rec.Lease, attempt.Lease) || !proto.Equal(rec.CandidateReport, attempt.CandidateReport) {
		t.Fatalf("record evidence differs from the entry: %v", rec)
	}
	if len(rec.Decision.Checks) != 10 {
		t.Fatalf("decision lists %d checks, want all 10", len(rec.Decision.Checks))
	}
	d := h.domain("db1")
	allowed, denied := attemptsOf(h.f, "db1")
	if d.Epoch != 2 || d.Holder != "n2" || d.Released || d.EpochIndex != h.index || len(allowed) != 1 || len(denied) != 0 ||
		d.AllowedCount != 1 || d.DeniedCount != 0 {
		t.Fatalf("domain after promotion: %s", DescribeDomain(d))
	}
	if !proto.Equal(allowed[0], rec) {
		t.Fatalf("stored record differs from the result")
	}
	if got, ok := h.f.Attempt("db1", "req-1"); !ok || !proto.Equal(got, rec) {
		t.Fatalf("Attempt lookup = %v, %t", got, ok)
	}
	// The state owns the record: mutating the entry or the result changes nothing.
	before := mustHash(t, h.f)
	attempt.Request.Candidate = "n3"
	attempt.CandidateReport.FlushedLsn = 1
	attempt.Lease.Epoch = 9
	res.Attempt.Decision.Allowed = false
	if mustHash(t, h.f) != before {
		t.Fatal("the recorded attempt aliases the command or the result")
	}
	if allowed, _ := attemptsOf(h.f, "db1"); !strings.Contains(DescribeAttempt(allowed[0]), "ALLOWED") {
		t.Fatalf("explanation:\n%s", DescribeAttempt(allowed[0]))
	}
}

func TestPromotionDenied(t *testing.T) {
	h, attempt := readyToPromote(t)
	attempt.Lease.State = pb.LeaseState_LEASE_STATE_HELD
	attempt.Lease.RemainingMs = 4000
	before := h.domain("db1")
	res := h.ok(attemptCmd(attempt))
	rec := res.Attempt
	if rec.Decision.Allowed || rec.Decision.DenialReason != validator.ReasonPrimaryStillActive {
		t.Fatalf("decision %v", rec.Decision)
	}
	if res.Epoch != 1 || res.Holder != "n1" || rec.EpochBefore != 1 || rec.EpochAfter != 1 || rec.HolderAfter != "n1" {
		t.Fatalf("denied attempt moved authority: %v", rec)
	}
	d := h.domain("db1")
	allowed, denied := attemptsOf(h.f, "db1")
	if d.Epoch != before.Epoch || d.Holder != before.Holder || d.EpochIndex != before.EpochIndex ||
		len(allowed) != 0 || len(denied) != 1 || d.UpdatedIndex != h.index || d.DeniedCount != 1 {
		t.Fatalf("domain after denial: %s", DescribeDomain(d))
	}
	if !strings.Contains(DescribeAttempt(denied[0]), "DENIED PrimaryStillActive") {
		t.Fatalf("explanation:\n%s", DescribeAttempt(denied[0]))
	}
}

func TestPromotionDuplicateRequest(t *testing.T) {
	h, attempt := readyToPromote(t)
	first := h.ok(attemptCmd(attempt))

	// Same id, same request: the recorded outcome comes back, nothing changes.
	res := h.unchanged(attemptCmd(cloneAttempt(attempt)))
	if res.Err != nil || !res.Duplicate || !proto.Equal(res.Attempt, first.Attempt) || res.Epoch != 2 || res.Holder != "n2" {
		t.Fatalf("duplicate: err=%v dup=%t epoch=%d holder=%q record=%v", res.Err, res.Duplicate, res.Epoch, res.Holder, res.Attempt)
	}
	// Same id, another candidate: a conflict, not a retry; nothing changes.
	retry := cloneAttempt(attempt)
	retry.Request.Candidate = "n3"
	retry.CandidateReport = report("n3", 2)
	if res := h.unchanged(attemptCmd(retry)); !errors.Is(res.Err, ErrConflict) {
		t.Fatalf("reused id: %v, want ErrConflict", res.Err)
	}
	// Also for a denied one.
	denied := cloneAttempt(attempt)
	denied.Request.RequestId = "req-2"
	denied.Request.Candidate = "n3"
	firstDenied := h.ok(attemptCmd(denied))
	if firstDenied.Attempt.Decision.Allowed {
		t.Fatal("stale attempt allowed")
	}
	res = h.unchanged(attemptCmd(denied))
	if !res.Duplicate || !proto.Equal(res.Attempt, firstDenied.Attempt) {
		t.Fatalf("denied duplicate: %v", res)
	}
	// Request ids are scoped to the domain.
	h.ok(createDB("db2"))
	other := cloneAttempt(attempt)
	other.Request.Domain = "db2"
	if res := h.ok(attemptCmd(other)); res.Duplicate {
		t.Fatal("request id of db1 counted as a duplicate in db2")
	}
}

func TestPromotionDeniedRingBounded(t *testing.T) {
	h, attempt := readyToPromote(t)
	deny := func(i int) *pb.Command {
		a := cloneAttempt(attempt)
		a.Request.RequestId = fmt.Sprintf("deny-%03d", i)
		a.Lease = nil // PrimaryStillActive
		return attemptCmd(a)
	}
	for i := range DeniedHistory + 3 {
		if res := h.ok(deny(i)); res.Attempt.Decision.Allowed || res.Duplicate {
			t.Fatalf("attempt %d: %v", i, res.Attempt.Decision)
		}
	}
	_, denied := attemptsOf(h.f, "db1")
	if len(denied) != DeniedHistory || h.domain("db1").DeniedCount != DeniedHistory+3 {
		t.Fatalf("denied ring holds %d, want %d", len(denied), DeniedHistory)
	}
	if got := denied[0].Request.RequestId; got != "deny-003" {
		t.Fatalf("oldest kept %q, want deny-003", got)
	}
	for i := range 3 {
		if _, ok := h.f.Attempt("db1", fmt.Sprintf("deny-%03d", i)); ok {
			t.Fatalf("evicted deny-%03d is still indexed", i)
		}
	}
	if _, ok := h.f.Attempt("db1", "deny-003"); !ok {
		t.Fatal("deny-003 is not indexed")
	}
	// An evicted id is evaluated afresh; a kept one is a duplicate.
	if res := h.ok(deny(0)); res.Duplicate || res.Attempt.LogIndex != h.index {
		t.Fatalf("evicted id: duplicate=%t", res.Duplicate)
	}
	if res := h.unchanged(deny(10)); !res.Duplicate {
		t.Fatal("kept id is not a duplicate")
	}
	// Allowed records are never evicted.
	h.ok(attemptCmd(attempt))
	for i := range DeniedHistory + 1 {
		h.ok(deny(100 + i))
	}
	if allowed, denied := attemptsOf(h.f, "db1"); len(allowed) != 1 || len(denied) != DeniedHistory {
		t.Fatalf("allowed %d denied %d", len(allowed), len(denied))
	}
	if res := h.unchanged(attemptCmd(attempt)); !res.Duplicate || !res.Attempt.Decision.Allowed {
		t.Fatal("allowed request forgotten")
	}
}

func TestPromotionMalformed(t *testing.T) {
	h, attempt := readyToPromote(t)
	dry := cloneAttempt(attempt)
	dry.Request.DryRun = true
	h.fails(attemptCmd(dry), ErrInvalid)
	h.fails(attemptCmd(&pb.PromotionAttempt{}), ErrInvalid)
	noID := cloneAttempt(attempt)
	noID.Request.RequestId = ""
	h.fails(attemptCmd(noID), ErrInvalid)
	badID := cloneAttempt(attempt)
	badID.Request.RequestId = "req 1"
	h.fails(attemptCmd(badID), ErrInvalid)
	unknown := cloneAttempt(attempt)
	unknown.Request.Domain = "nope"
	h.fails(attemptCmd(unknown), ErrNotFound)
	// The dry run left no record: the same id still decides afresh.
	if res := h.ok(attemptCmd(attempt)); res.Duplicate || !res.Attempt.Decision.Allowed {
		t.Fatalf("after a rejected dry run: %v", res.Attempt.Decision)
	}
}

// TestPromotionSplitBrain: two operators (or an operator and the automatic
// policy) race to promote different candidates on the same evidence. The
// entries are ordered by the log; the second must see the first's epoch.
// Readiness: P6-A1 (AU-1); docs/READINESS.md.
func TestPromotionSplitBrain(t *testing.T) {
	for _, cas := range []bool{true, false} {
		t.Run(fmt.Sprintf("expected_epoch=%t", cas), func(t *testing.T) {
			h, a2 := readyToPromote(t)
			a3 := cloneAttempt(a2)
			a3.Request.RequestId = "req-2"
			a3.Request.Candidate = "n3"
			a3.CandidateReport = report("n3", 1)
			if cas {
				a2.Request.ExpectedEpoch = u64p(1)
				a3.Request.ExpectedEpoch = u64p(1)
			}
			r2 := h.ok(attemptCmd(a2))
			r3 := h.ok(attemptCmd(a3))
			if !r2.Attempt.Decision.Allowed || r3.Attempt.Decision.Allowed {
				t.Fatalf("allowed: first %t second %t, want exactly the first", r2.Attempt.Decision.Allowed, r3.Attempt.Decision.Allowed)
			}
			d := h.domain("db1")
			if allowed, denied := attemptsOf(h.f, "db1"); d.Epoch != 2 || d.Holder != "n2" || len(allowed) != 1 || len(denied) != 1 {
				t.Fatalf("after the race: %s", DescribeDomain(d))
			}
			dec := r3.Attempt.Decision
			if cas {
				if dec.DenialReason != validator.ReasonEpochStale {
					t.Fatalf("second attempt denied %s, want EpochStale", dec.DenialReason)
				}
				return
			}
			if dec.DenialReason != validator.ReasonPrimaryStillActive {
				t.Fatalf("second attempt denied %s, want PrimaryStillActive", dec.DenialReason)
			}
			if c := checkNamed(dec, validator.CheckCandidateReport); c.Satisfied || c.Reason != validator.ReasonStaleReport {
				t.Fatalf("candidate_report check %v, want StaleReport", c)
			}
		})
	}
}

func checkNamed(d *pb.Decision, name string) *pb.Check {
	for _, c := range d.GetChecks() {
		if c.GetName() == name {
			return c
		}
	}
	return nil
}

func TestPromotionAfterRelease(t *testing.T) {
	h, attempt := readyToPromote(t)
	h.ok(releaseCmd("db1", "n1", 1))
	attempt.Lease = nil // a released holder needs no lease observation
	res := h.ok(attemptCmd(attempt))
	if !res.Attempt.Decision.Allowed || res.Epoch != 2 || res.Holder != "n2" {
		t.Fatalf("after release: %v", res.Attempt.Decision)
	}
	if d := h.domain("db1"); d.Released {
		t.Fatal("new holder is marked released")
	}
}

func TestPromotionNonAerodbDenied(t *testing.T) {
	h := newHarness(t)
	h.ok(createLock("lock1"))
	h.ok(acquireCmd("lock1", "a", nil, nil))
	res := h.ok(attemptCmd(&pb.PromotionAttempt{
		Request: &pb.PromotionRequest{RequestId: "r1", Domain: "lock1", Candidate: "b"},
		Lease:   leaseObs("a", 1, pb.LeaseState_LEASE_STATE_EXPIRED),
	}))
	if res.Attempt.Decision.Allowed || res.Attempt.Decision.DenialReason != validator.ReasonInvalidRequest || res.Epoch != 1 {
		t.Fatalf("lock promotion: %v", res.Attempt.Decision)
	}
}

func TestCompleteAbort(t *testing.T) {
	h := newHarness(t)
	h.ok(createDB("db1"))
	h.ok(registerCmd("db1", "n1"))
	h.ok(assignCmd("db1", "n1"))
	h.ok(createLock("lock1"))
	h.ok(createCmd("rel1", pb.DomainKind_DOMAIN_KIND_RELEASE, manualPolicy()))

	h.fails(completeCmd("nope", "a", 1, "w"), ErrNotFound)
	h.fails(completeCmd("db1", "n1", 1, "w"), ErrInvalid)
	h.fails(abortCmd("db1", "n1", 1, "w"), ErrInvalid)
	h.fails(completeCmd("lock1", "", 0, "w"), ErrFenced) // never held

	h.ok(acquireCmd("lock1", "a", nil, nil))
	h.fails(completeCmd("lock1", "a", 0, "w"), ErrFenced)
	h.fails(completeCmd("lock1", "b", 1, "w"), ErrFenced)
	h.fails(abortCmd("lock1", "a", 2, "w"), ErrFenced)
	h.ok(completeCmd("lock1", "a", 1, "deploy-42"))
	w := h.domain("lock1").Work
	if w.Status != pb.LockStatus_LOCK_STATUS_COMPLETED || w.WorkId != "deploy-42" || w.Detail != "done" || w.Epoch != 1 {
		t.Fatalf("completed work %v", w)
	}
	h.fails(completeCmd("lock1", "a", 1, "deploy-42"), ErrPrecondition)
	h.fails(abortCmd("lock1", "a", 1, "deploy-42"), ErrPrecondition)

	// The lock stays held until released; release keeps the finished status.
	if a, _ := h.f.AuthorityOf("lock1"); a.Released || a.Holder != "a" {
		t.Fatalf("after complete: %+v", a)
	}
	h.ok(releaseCmd("lock1", "a", 1))
	if w := h.domain("lock1").Work; w.Status != pb.LockStatus_LOCK_STATUS_COMPLETED {
		t.Fatalf("release rewrote finished work: %v", w)
	}
	h.fails(abortCmd("lock1", "a", 1, "w"), ErrFenced) // released

	// A new epoch starts a new piece of work, which can be aborted.
	h.ok(acquireCmd("lock1", "b", nil, nil))
	if w := h.domain("lock1").Work; w.Status != pb.LockStatus_LOCK_STATUS_HELD || w.Epoch != 2 || w.WorkId != "" {
		t.Fatalf("work at the new epoch: %v", w)
	}
	h.fails(abortCmd("lock1", "a", 1, "w"), ErrFenced) // the old holder
	h.ok(abortCmd("lock1", "b", 2, "deploy-43"))
	if w := h.domain("lock1").Work; w.Status != pb.LockStatus_LOCK_STATUS_ABORTED || w.WorkId != "deploy-43" || w.Detail != "stopped" {
		t.Fatalf("aborted work %v", w)
	}

	// Release domains share the rules.
	h.ok(assignCmd("rel1", "ctl"))
	h.ok(abortCmd("rel1", "ctl", 1, "canary-7"))
	if w := h.domain("rel1").Work; w.Status != pb.LockStatus_LOCK_STATUS_ABORTED || w.Epoch != 1 {
		t.Fatalf("release work %v", w)
	}
}

func TestLastIndexAdvancesOnEveryEntry(t *testing.T) {
	f := New()
	f.Apply(3, 1, []byte{0xff})                                       // undecodable
	f.ApplyCommand(5, 1, &pb.Command{})                               // no body
	f.ApplyCommand(7, 1, createDB(""))                                // rejected
	if res := f.ApplyCommand(9, 1, createDB("db1")); res.Index != 9 { // applied
		t.Fatalf("result index %d", res.Index)
	}
	if f.LastIndex() != 9 {
		t.Fatalf("LastIndex = %d, want 9", f.LastIndex())
	}
	f.ApplyCommand(4, 1, createDB("db2")) // an older index never moves it back
	if f.LastIndex() != 9 {
		t.Fatalf("LastIndex = %d after an older index, want 9", f.LastIndex())
	}
}
