package fsm

import (
	"bytes"
	"errors"
	"regexp"
	"slices"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/validator"
)

// A deliberately naive twin of the FSM (STYLE habit 7): it tracks only
// authority (epoch, holder, released), membership, the watermark and the
// work status, with its own plain rules, and predicts for every command
// whether it takes effect. For promotions it takes the validator's verdict
// from the FSM's record, but checks on its own that an allowed promotion
// respected the compare-and-set and moved the epoch by exactly one.

type modelDomain struct {
	kind      pb.DomainKind
	epoch     uint64
	holder    string
	released  bool
	members   map[string]bool
	hasWM     bool
	wmEpoch   uint64
	wmLsn     uint64
	wmHash    []byte
	wmVisible uint64
	workHeld  bool
	// The promotion that granted the current epoch waived these floors.
	lsnWaived, visWaived bool
	// Decommissioned for good.
	decommissioned map[string]bool
	// Recorded request per id, to predict duplicates and conflicts.
	recorded      map[string]*pb.PromotionRequest
	holderOfEpoch map[uint64]string
	requests      map[string]bool // every request id ever recorded
	// Replica-quorum durability and its K.
	quorum bool
	k      uint32
	// A PreparePromotion fenced the replicas for epoch + 1.
	fenced bool
}

type model map[string]*modelDomain

var modelName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`)

func modelPolicyOK(p *pb.Policy) bool {
	return p != nil && (p.Mode == pb.PromotionMode_PROMOTION_MODE_MANUAL || p.Mode == pb.PromotionMode_PROMOTION_MODE_AUTOMATIC) &&
		p.LeaseTtlMs >= 100 && p.LeaseTtlMs <= 3_600_000 && p.ReportMaxAgeMs >= 1 && p.ReportMaxAgeMs <= 3_600_000 &&
		p.Durability >= 0 && p.Durability <= 2 && (p.Durability != 2 || p.MinSyncReplicas >= 1) && p.WatermarkIntervalMs <= 60_000
}

// modelPolicyChangeOK: replica-quorum is for aerodb domains; while a holder
// holds, a replica-quorum domain may neither leave it nor raise K.
func (d *modelDomain) modelPolicyChangeOK(p *pb.Policy) bool {
	quorum := p.Durability == 2
	if quorum && d.kind != pb.DomainKind_DOMAIN_KIND_AERODB {
		return false
	}
	if !d.quorum || d.epoch == 0 || d.released {
		return true
	}
	return quorum && p.MinSyncReplicas <= d.k
}

func (d *modelDomain) stampOK(holder string, epoch uint64) bool {
	return d.epoch > 0 && !d.released && holder == d.holder && epoch == d.epoch
}

func (d *modelDomain) grant(holder string) {
	d.epoch++
	d.holder, d.released, d.workHeld = holder, false, d.kind != pb.DomainKind_DOMAIN_KIND_AERODB
	d.fenced = false
}

// step applies cmd to the model given the FSM's result and returns a
// description of the first disagreement, or "".
func (m model) step(cmd *pb.Command, res *Result) string {
	took := res.Err == nil
	predict := func(ok bool) string {
		if ok != took {
			return "model predicted ok=" + boolWord(ok) + ", FSM says err=" + errWord(res.Err)
		}
		return ""
	}
	switch b := cmd.GetBody().(type) {
	case *pb.Command_CreateDomain:
		c := b.CreateDomain
		ok := modelName.MatchString(c.Name) && c.Kind >= 1 && c.Kind <= 3 && modelPolicyOK(c.Policy) && m[c.Name] == nil &&
			(c.Policy.Durability != 2 || c.Kind == pb.DomainKind_DOMAIN_KIND_AERODB)
		if ok {
			m[c.Name] = &modelDomain{kind: c.Kind, members: map[string]bool{}, holderOfEpoch: map[uint64]string{}, requests: map[string]bool{},
				quorum: c.Policy.Durability == 2, k: c.Policy.MinSyncReplicas}
		}
		return predict(ok)
	case *pb.Command_UpdateDomainPolicy:
		d, p := m[b.UpdateDomainPolicy.Name], b.UpdateDomainPolicy.Policy
		ok := d != nil && modelPolicyOK(p) && d.modelPolicyChangeOK(p)
		if ok {
			d.quorum, d.k = p.Durability == 2, p.MinSyncReplicas
		}
		return predict(ok)
	case *pb.Command_PreparePromotion:
		d, c := m[b.PreparePromotion.Domain], b.PreparePromotion
		ok := d != nil && modelName.MatchString(c.RequestId) && d.kind == pb.DomainKind_DOMAIN_KIND_AERODB && d.quorum &&
			c.ExpectedEpoch == d.epoch && d.members[c.Candidate]
		if ok {
			d.fenced = true
		}
		return predict(ok)
	case *pb.Command_RegisterMember:
		d, c := m[b.RegisterMember.Domain], b.RegisterMember
		decommission := c.State == pb.MemberState_MEMBER_STATE_DECOMMISSIONED
		ok := d != nil && modelName.MatchString(c.MemberId) && (!d.decommissioned[c.MemberId] || decommission)
		if ok {
			d.members[c.MemberId] = true
			if decommission {
				if d.decommissioned == nil {
					d.decommissioned = map[string]bool{}
				}
				d.decommissioned[c.MemberId] = true
			}
		}
		return predict(ok)
	case *pb.Command_AssignInitial:
		d, c := m[b.AssignInitial.Domain], b.AssignInitial
		ok := d != nil && modelName.MatchString(c.Holder) && d.epoch == 0 &&
			(d.kind != pb.DomainKind_DOMAIN_KIND_AERODB || d.members[c.Holder] && !d.decommissioned[c.Holder])
		if ok {
			d.grant(c.Holder)
		}
		return predict(ok)
	case *pb.Command_Acquire:
		d, c := m[b.Acquire.Domain], b.Acquire
		if d == nil || !modelName.MatchString(c.Holder) || c.ExpectedEpoch != nil && *c.ExpectedEpoch != d.epoch {
			return predict(false)
		}
		if d.kind == pb.DomainKind_DOMAIN_KIND_AERODB {
			return predict(d.epoch > 0 && !d.released && d.holder == c.Holder)
		}
		o := c.Lease
		ok := d.epoch == 0 || d.released ||
			o != nil && o.State == pb.LeaseState_LEASE_STATE_EXPIRED && o.Holder == d.holder && o.Epoch == d.epoch
		if ok {
			d.grant(c.Holder)
		}
		return predict(ok)
	case *pb.Command_Release:
		d, c := m[b.Release.Domain], b.Release
		ok := d != nil && d.stampOK(c.Holder, c.Epoch)
		if ok {
			d.released, d.workHeld = true, false
		}
		return predict(ok)
	case *pb.Command_Complete:
		return m.finish(b.Complete.Domain, b.Complete.Holder, b.Complete.Epoch, predict)
	case *pb.Command_Abort:
		return m.finish(b.Abort.Domain, b.Abort.Holder, b.Abort.Epoch, predict)
	case *pb.Command_AdvanceWatermark:
		advs := b.AdvanceWatermark.Advances
		if len(advs) == 0 {
			return predict(false)
		}
		if len(res.Watermarks) != len(advs) {
			return "watermark results do not match the batch"
		}
		for i, a := range advs {
			if ok := m.advance(a); ok != (res.Watermarks[i].Err == nil) {
				return "advance " + a.Domain + ": model predicted ok=" + boolWord(ok) + ", FSM says err=" + errWord(res.Watermarks[i].Err)
			}
		}
		return ""
	case *pb.Command_PromotionAttempt:
		return m.promote(b.PromotionAttempt, res)
	}
	return predict(false) // no body
}

func (m model) finish(name, holder string, epoch uint64, predict func(bool) string) string {
	d := m[name]
	ok := d != nil && d.kind != pb.DomainKind_DOMAIN_KIND_AERODB && d.stampOK(holder, epoch) && d.workHeld
	if ok {
		d.workHeld = false
	}
	return predict(ok)
}

func (m model) advance(a *pb.WatermarkAdvance) bool {
	d := m[a.Domain]
	if d == nil || d.kind != pb.DomainKind_DOMAIN_KIND_AERODB || !d.stampOK(a.Holder, a.Epoch) || a.Lsn > 0 && len(a.Hash) == 0 {
		return false
	}
	// Floors hold within an epoch and carry over to the next one unless the
	// granting promotion waived them.
	lsnFloor := d.wmEpoch == a.Epoch || !d.lsnWaived
	visFloor := d.wmEpoch == a.Epoch || !d.visWaived
	if d.hasWM && (lsnFloor && (a.Lsn < d.wmLsn || a.Lsn == d.wmLsn && !bytes.Equal(a.Hash, d.wmHash)) ||
		visFloor && a.VisibleCommitId < d.wmVisible) {
		return false
	}
	d.hasWM, d.wmEpoch, d.wmLsn, d.wmHash, d.wmVisible = true, a.Epoch, a.Lsn, a.Hash, a.VisibleCommitId
	return true
}

func (m model) promote(a *pb.PromotionAttempt, res *Result) string {
	req := a.Request
	d := m[req.GetDomain()]
	if req == nil || req.DryRun || !modelName.MatchString(req.RequestId) || d == nil {
		if res.Err == nil {
			return "malformed attempt was not rejected"
		}
		return ""
	}
	switch {
	case errors.Is(res.Err, ErrConflict):
		if prev := d.recorded[req.RequestId]; prev == nil || SameRequest(prev, req) {
			return "conflict reported for a request id not recorded with other parameters"
		}
		return ""
	case res.Err != nil || res.Attempt == nil:
		return "well-formed attempt rejected: " + errWord(res.Err)
	case res.Duplicate:
		if !d.requests[req.RequestId] {
			return "duplicate of a request id never recorded"
		}
		if !SameRequest(d.recorded[req.RequestId], req) {
			return "a reused request id with other parameters was answered as a duplicate"
		}
		return ""
	}
	if d.recorded == nil {
		d.recorded = map[string]*pb.PromotionRequest{}
	}
	d.requests[req.RequestId] = true
	d.recorded[req.RequestId] = req
	if !res.Attempt.Decision.Allowed {
		return ""
	}
	switch {
	case d.kind != pb.DomainKind_DOMAIN_KIND_AERODB:
		return "promotion allowed on a non-aerodb domain"
	case req.ExpectedEpoch != nil && *req.ExpectedEpoch != d.epoch:
		return "promotion allowed against a stale expected epoch"
	case req.Candidate == d.holder && !d.released && !d.fenced:
		// (With a fence pending the holder can acknowledge nothing and may
		// be promoted again.)
		return "promotion allowed to the current holder"
	case !d.members[req.Candidate]:
		return "promotion allowed to an unregistered candidate"
	case d.epoch > 0 && !d.released &&
		(a.Lease.GetState() != pb.LeaseState_LEASE_STATE_EXPIRED || a.Lease.GetHolder() != d.holder || a.Lease.GetEpoch() != d.epoch):
		return "promotion allowed while the holder's lease was not observed expired"
	case !d.hasWM:
		return "promotion allowed with an unknown watermark"
	}
	d.grant(req.Candidate)
	d.lsnWaived = slices.Contains(res.Attempt.Decision.WaiversApplied, "allow-data-loss")
	d.visWaived = slices.Contains(res.Attempt.Decision.WaiversApplied, validator.WaiverAllowVisibilityRegression)
	return ""
}

func boolWord(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func errWord(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

// check compares every domain of f with the model.
func (m model) check(f *FSM, prev map[string]uint64) string {
	names := f.DomainNames()
	if len(names) != len(m) {
		return "domain count differs from the model"
	}
	for _, name := range names {
		d := m[name]
		if d == nil {
			return "FSM has a domain the model does not: " + name
		}
		a, _ := f.AuthorityOf(name)
		if a.Kind != d.kind || a.Epoch != d.epoch || a.Holder != d.holder || a.Released != d.released {
			return "authority of " + name + " differs: " + DescribeDomain(f.dom(name))
		}
		if a.Epoch < prev[name] {
			return "epoch of " + name + " went backwards"
		}
		prev[name] = a.Epoch
		if a.Epoch > 0 {
			if h, ok := d.holderOfEpoch[a.Epoch]; ok && h != a.Holder {
				return "epoch of " + name + " has two holders: " + h + " and " + a.Holder
			}
			d.holderOfEpoch[a.Epoch] = a.Holder
		}
		wm, _ := f.Watermark(name)
		if (wm != nil) != d.hasWM || wm != nil && (wm.Epoch != d.wmEpoch || wm.Lsn != d.wmLsn) {
			return "watermark of " + name + " differs: " + DescribeWatermark(wm)
		}
	}
	return ""
}

func TestModelAgrees(t *testing.T) {
	for _, seed := range propertySeeds() {
		steps, _ := newGen(seed, New()).stream(streamLen)
		f, m, prev := New(), model{}, map[string]uint64{}
		for i, s := range steps {
			res := f.Apply(s.index, s.term, s.data)
			if s.cmd == nil {
				if res.Err == nil {
					t.Fatalf("seed=%d command %d: undecodable entry applied", seed, i)
				}
				continue
			}
			if msg := m.step(s.cmd, res); msg != "" {
				logStream(t, seed, steps, i)
				t.Fatalf("seed=%d command %d (%s): %s", seed, i, describeStep(s), msg)
			}
			if msg := m.check(f, prev); msg != "" {
				logStream(t, seed, steps, i)
				t.Fatalf("seed=%d after command %d (%s): %s", seed, i, describeStep(s), msg)
			}
		}
	}
}
