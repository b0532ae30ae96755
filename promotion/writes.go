package promotion

import (
	"context"
	"errors"
	"fmt"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"google.golang.org/protobuf/proto"
)

// Policy defaults applied by the leader before a policy enters the log (the
// FSM only validates).
const (
	DefaultLeaseTTL     = 10 * time.Second
	DefaultReportMaxAge = 30 * time.Second
)

// WithDefaults fills a policy's zero fields: manual promotion (AU-3), a 10 s
// lease, a 30 s report freshness bound, one synchronous replica. The
// durability is filled by CreateDefaults and UpdateDefaults.
func WithDefaults(p *pb.Policy) *pb.Policy {
	out := &pb.Policy{}
	if p != nil {
		out = proto.Clone(p).(*pb.Policy)
	}
	if out.Mode == pb.PromotionMode_PROMOTION_MODE_UNSPECIFIED {
		out.Mode = pb.PromotionMode_PROMOTION_MODE_MANUAL
	}
	if out.LeaseTtlMs == 0 {
		out.LeaseTtlMs = uint64(DefaultLeaseTTL.Milliseconds())
	}
	if out.ReportMaxAgeMs == 0 {
		out.ReportMaxAgeMs = uint64(DefaultReportMaxAge.Milliseconds())
	}
	if out.MinSyncReplicas == 0 {
		out.MinSyncReplicas = 1
	}
	return out
}

// apply proposes a single-domain command under the domain's shared lock and
// unwraps the FSM's result error. A command for a domain that does not
// exist is refused before it reaches the log (the FSM would refuse it too).
func (s *Service) apply(ctx context.Context, domain string, cmd *pb.Command) (*fsm.Result, error) {
	if err := s.checkReady(); err != nil {
		return nil, err
	}
	if _, create := cmd.Body.(*pb.Command_CreateDomain); !create {
		if _, ok := s.fsm.AuthorityOf(domain); !ok {
			return nil, fmt.Errorf("%w: domain %q", fsm.ErrNotFound, domain)
		}
	}
	unlock := s.locks.shared(domain)
	defer unlock()
	res, err := s.propose(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return res, res.Err
}

// DefaultDurability is the durability a new aerodb domain gets when its
// creation leaves it unspecified (docs/DURABILITY.md).
const DefaultDurability = pb.Durability_DURABILITY_REPLICA_QUORUM

// CreateDefaults is the policy a CreateDomain entry carries: WithDefaults,
// and for an aerodb domain whose request leaves durability unspecified,
// DefaultDurability written out explicitly. The default is the leader's,
// applied before the entry enters the log: the FSM reads an unspecified
// durability as authority-gated, so a policy logged or snapshotted before
// the default changed keeps its meaning on replay. Lock and release
// domains keep an unspecified durability (replica-quorum is for aerodb).
func CreateDefaults(kind pb.DomainKind, p *pb.Policy) *pb.Policy {
	out := WithDefaults(p)
	if kind == pb.DomainKind_DOMAIN_KIND_AERODB && out.Durability == pb.Durability_DURABILITY_UNSPECIFIED {
		out.Durability = DefaultDurability
	}
	if kind == pb.DomainKind_DOMAIN_KIND_AERODB && out.WaiverMode == pb.WaiverMode_WAIVER_MODE_UNSPECIFIED {
		out.WaiverMode = DefaultWaiverMode
	}
	return out
}

// DefaultWaiverMode is what the leader writes into a new aerodb domain
// whose request names no waiver mode: strict (Phase 6 readiness §4). The
// state machine reads an unspecified mode as it always did (waivers
// permitted), so domains created before strict mode keep their behaviour.
const DefaultWaiverMode = pb.WaiverMode_WAIVER_MODE_STRICT

// UpdateDefaults is the policy an UpdateDomainPolicy entry carries:
// WithDefaults, and an unspecified durability replaced by the domain's
// current one (as applied here), so that an update that does not name a
// durability never changes it: neither a gated domain into the create
// default nor a replica-quorum domain back into gated. cur is nil for a
// domain this node does not know (the FSM then refuses the entry). Like
// `authorityctl domain update`, this reads before it writes: an update
// naming no durability, concurrent with one naming it, may write back the
// durability it read (the API has no compare-and-set on policies; the FSM's
// durabilityChange rules hold either way).
func UpdateDefaults(cur *pb.Domain, p *pb.Policy) *pb.Policy {
	out := WithDefaults(p)
	if out.Durability == pb.Durability_DURABILITY_UNSPECIFIED {
		out.Durability = cur.GetPolicy().GetDurability()
	}
	// Likewise the waiver mode and its reason: an update that names none
	// never turns a strict domain into a legacy (permitting) one.
	if out.WaiverMode == pb.WaiverMode_WAIVER_MODE_UNSPECIFIED && out.WaiverReason == "" {
		out.WaiverMode = cur.GetPolicy().GetWaiverMode()
		out.WaiverReason = cur.GetPolicy().GetWaiverReason()
	}
	return out
}

// CreateDomain creates a domain (policy defaults filled in: CreateDefaults).
func (s *Service) CreateDomain(ctx context.Context, name string, kind pb.DomainKind, p *pb.Policy) (*fsm.Result, error) {
	return s.apply(ctx, name, &pb.Command{Body: &pb.Command_CreateDomain{CreateDomain: &pb.CreateDomain{
		Name: name, Kind: kind, Policy: CreateDefaults(kind, p)}}})
}

// UpdatePolicy replaces a domain's policy (defaults filled in:
// UpdateDefaults; an unspecified durability keeps the domain's).
func (s *Service) UpdatePolicy(ctx context.Context, name string, p *pb.Policy) (*fsm.Result, error) {
	cur, _ := s.fsm.Domain(name)
	res, err := s.apply(ctx, name, &pb.Command{Body: &pb.Command_UpdateDomainPolicy{UpdateDomainPolicy: &pb.UpdateDomainPolicy{
		Name: name, Policy: UpdateDefaults(cur, p)}}})
	s.policy.Load().refresh(name) // the mode may have changed (whatever the outcome)
	return res, err
}

// RegisterMember adds or updates a member of a domain.
func (s *Service) RegisterMember(ctx context.Context, m *pb.RegisterMember) (*fsm.Result, error) {
	return s.apply(ctx, m.GetDomain(), &pb.Command{Body: &pb.Command_RegisterMember{RegisterMember: m}})
}

// AssignInitial names a domain's first holder and starts its lease.
func (s *Service) AssignInitial(ctx context.Context, domain, holder string) (*fsm.Result, error) {
	res, err := s.apply(ctx, domain, &pb.Command{Body: &pb.Command_AssignInitial{AssignInitial: &pb.AssignInitial{
		Domain: domain, Holder: holder}}})
	if err == nil {
		s.granted(domain, res.Holder, res.Epoch, true)
	}
	return res, err
}

// Acquire takes a free or expired lock (or re-acquires an aerodb holder's
// own expired lease). The leader's lease observation goes into the entry.
//
// A refusal the leader can make alone costs no entry: while its lease table
// holds the current holder's lease as valid, an acquire by anyone else (of
// a lock or release domain: by anyone) is refused before proposing, with
// the error the FSM would give at apply. This only ever refuses; whatever
// is proposed is validated again by the FSM (safety does not depend on the
// shortcut).
func (s *Service) Acquire(ctx context.Context, domain, holder string, expectedEpoch *uint64) (*fsm.Result, error) {
	if err := s.checkReady(); err != nil {
		return nil, err
	}
	before, obs, held, _, err := s.checkAcquire(domain, holder, expectedEpoch)
	if err != nil {
		return nil, err
	}
	if held != nil {
		return nil, held
	}
	return s.proposeAcquire(ctx, before, obs, holder, expectedEpoch)
}

// checkAcquire reads the domain as applied here, brings the lease table in
// line with it and observes the lease; held is the refusal the leader can
// make alone (heldRefusal).
func (s *Service) checkAcquire(domain, holder string, expectedEpoch *uint64) (before fsm.Authority, obs Observation, held error, waitable bool, err error) {
	before, ok := s.fsm.AuthorityOf(domain)
	if !ok {
		return before, obs, nil, false, fmt.Errorf("%w: domain %q", fsm.ErrNotFound, domain)
	}
	s.syncLease(before)
	if obs, err = s.leases.Observe(domain); err != nil {
		return before, obs, nil, false, err
	}
	held, waitable = heldRefusal(before, holder, expectedEpoch, obs)
	return before, obs, held, waitable, nil
}

// proposeAcquire proposes an acquire carrying the leader's observation and
// starts the lease of a committed grant.
func (s *Service) proposeAcquire(ctx context.Context, before fsm.Authority, obs Observation, holder string, expectedEpoch *uint64) (*fsm.Result, error) {
	domain := before.Domain
	res, err := s.apply(ctx, domain, &pb.Command{Body: &pb.Command_Acquire{Acquire: &pb.Acquire{
		Domain: domain, Holder: holder, ExpectedEpoch: expectedEpoch,
		Lease: &pb.LeaseObservation{Holder: obs.Holder, Epoch: obs.Epoch, State: leaseState(obs.Status),
			RemainingMs: uint64(obs.Remaining.Milliseconds()), LeaderTerm: s.log.Term(), LeaderId: s.log.ID(),
			ExpiredForMs: uint64(obs.ExpiredFor.Milliseconds())},
	}}})
	if err == nil {
		s.granted(domain, res.Holder, res.Epoch, res.Epoch != before.Epoch)
	}
	return res, err
}

// Release gives up authority at (holder, epoch); fenced if either is stale.
func (s *Service) Release(ctx context.Context, domain, holder string, epoch uint64) (*fsm.Result, error) {
	res, err := s.apply(ctx, domain, &pb.Command{Body: &pb.Command_Release{Release: &pb.Release{
		Domain: domain, Holder: holder, Epoch: epoch}}})
	if err == nil {
		s.leases.Release(domain, epoch)
	}
	// Waiters re-check whatever the outcome (an unknown one may have
	// committed); they find the release in the applied state.
	s.waits.Load().signal(domain)
	s.fencedIf(err, domain, "release")
	return res, err
}

// DeployStep moves the deployment a deploy lock records (docs/DEPLOY.md),
// fenced by the holder's epoch.
func (s *Service) DeployStep(ctx context.Context, c *pb.DeployStep) (*fsm.Result, error) {
	res, err := s.apply(ctx, c.GetDomain(), &pb.Command{Body: &pb.Command_DeployStep{DeployStep: c}})
	s.fencedIf(err, c.GetDomain(), "deploy")
	return res, err
}

// ReleaseTransition decides and records one release transition. Promote,
// abort and rollback grant the next epoch to the same controller: its lease
// follows to that epoch here.
func (s *Service) ReleaseTransition(ctx context.Context, c *pb.ReleaseTransition) (*fsm.Result, error) {
	res, err := s.apply(ctx, c.GetDomain(), &pb.Command{Body: &pb.Command_ReleaseTransition{ReleaseTransition: c}})
	s.fencedIf(err, c.GetDomain(), "release")
	if err == nil && res.Epoch != c.GetEpoch() {
		s.granted(c.GetDomain(), res.Holder, res.Epoch, true)
	}
	return res, err
}

// LabelReleaseAbort records an operator's verdict on a release abort: one
// committed fact on the abort's decision (no epoch, no lease).
func (s *Service) LabelReleaseAbort(ctx context.Context, c *pb.LabelReleaseAbort) (*fsm.Result, error) {
	return s.apply(ctx, c.GetDomain(), &pb.Command{Body: &pb.Command_LabelReleaseAbort{LabelReleaseAbort: c}})
}

// Complete and Abort finish a lock or release domain's work at an epoch.
func (s *Service) Complete(ctx context.Context, c *pb.Complete) (*fsm.Result, error) {
	res, err := s.apply(ctx, c.GetDomain(), &pb.Command{Body: &pb.Command_Complete{Complete: c}})
	s.fencedIf(err, c.GetDomain(), "complete")
	return res, err
}

func (s *Service) Abort(ctx context.Context, a *pb.Abort) (*fsm.Result, error) {
	res, err := s.apply(ctx, a.GetDomain(), &pb.Command{Body: &pb.Command_Abort{Abort: a}})
	s.fencedIf(err, a.GetDomain(), "abort")
	return res, err
}

func (s *Service) fencedIf(err error, domain, kind string) {
	if errors.Is(err, fsm.ErrFenced) {
		s.fenced(domain, kind)
	}
}

// granted starts the lease of a holder after a committed grant.
func (s *Service) granted(domain, holder string, epoch uint64, newEpoch bool) {
	a, ok := s.fsm.AuthorityOf(domain)
	if !ok || a.Epoch != epoch || a.Holder != holder {
		return // a later entry already moved the domain on
	}
	if newEpoch {
		s.obs.EpochChanged(domain)
	}
	if err := s.leases.Grant(Grant{Domain: domain, Holder: holder, Epoch: epoch, TTL: ms(a.TTLms)}); err != nil {
		s.logger.Warn("lease grant after commit", "domain", domain, "epoch", epoch, "error", err)
	}
	if a.Kind == pb.DomainKind_DOMAIN_KIND_AERODB {
		s.policy.Load().refresh(domain) // an automatic domain's timer follows the new lease
	}
}

// Renew extends a holder's lease on the leader (not logged). Fenced when the
// replicated epoch or holder moved, expired when the lease ran out here.
func (s *Service) Renew(domain, holder string, epoch uint64) (time.Duration, error) {
	if err := s.checkReady(); err != nil {
		return 0, err
	}
	a, ok := s.fsm.AuthorityOf(domain)
	if !ok {
		return 0, fmt.Errorf("%w: domain %q", fsm.ErrNotFound, domain)
	}
	if a.Epoch != epoch || a.Holder != holder || a.Released {
		s.fenced(domain, "renewal")
		s.obs.Renewed("fenced")
		return 0, fmt.Errorf("%w: domain %q is at epoch %d held by %q; renewal from %q at epoch %d",
			ErrFenced, domain, a.Epoch, a.Holder, holder, epoch)
	}
	s.syncLease(a)
	d, err := s.leases.Renew(domain, holder, epoch)
	s.obs.Renewed(renewResult(err))
	if errors.Is(err, ErrFenced) {
		s.fenced(domain, "renewal")
	}
	return d, err
}

// RenewResult is the outcome of one lease of a RenewBatch.
type RenewResult struct {
	// Remaining is the TTL granted from now; zero when Err is set.
	Remaining time.Duration
	// Err is why the renewal failed (ErrFenced, ErrLeaseExpired,
	// ErrNoLease, fsm.ErrNotFound, ErrNotLeader); nil when renewed.
	Err error
	// Handover is the standing handover request of a renewed lease, when
	// HasHandover.
	Handover    Handover
	HasHandover bool
}

// RenewBatch renews many leases of one holder on the leader (not logged):
// domains[i] at epochs[i], each exactly as Renew would, its result in
// out[i]. A lease that fails (fenced, expired, unknown, or of a kind the
// caller may not act on: mayAct false, ErrKindNotAllowed; nil mayAct allows
// every kind) does not fail the others. The returned error (ErrNotLeader, ErrNotReady) fails the whole
// batch, and out is then left as it was. domains, epochs and out must have
// the same length. Renewing a lease allocates nothing; a failure allocates
// its error.
func (s *Service) RenewBatch(holder string, domains []string, epochs []uint64, mayAct func(pb.DomainKind) bool, out []RenewResult) error {
	if len(epochs) != len(domains) || len(out) != len(domains) {
		return fmt.Errorf("%w: renew batch of %d domains, %d epochs, %d results", fsm.ErrInvalid, len(domains), len(epochs), len(out))
	}
	if err := s.checkReady(); err != nil {
		return err
	}
	var counts [renewResults]int
	for i, domain := range domains {
		r := &out[i]
		*r = RenewResult{}
		epoch := epochs[i]
		a, ok := s.fsm.AuthorityOf(domain)
		switch {
		case !ok:
			r.Err = fmt.Errorf("%w: domain %q", fsm.ErrNotFound, domain)
		case mayAct != nil && !mayAct(a.Kind):
			r.Err = fmt.Errorf("%w: %s domain %q", ErrKindNotAllowed, a.Kind, domain)
			continue // refused before judging the lease: not a renewal
		case a.Epoch != epoch || a.Holder != holder || a.Released:
			r.Err = fmt.Errorf("%w: domain %q is at epoch %d held by %q; renewal from %q at epoch %d",
				ErrFenced, domain, a.Epoch, a.Holder, holder, epoch)
		default:
			r.Remaining, r.Handover, r.HasHandover, r.Err = s.leases.SyncRenew(
				Grant{Domain: a.Domain, Holder: a.Holder, Epoch: a.Epoch, TTL: ms(a.TTLms)}, a.Released, holder, epoch)
		}
		if !ok {
			// Renew reports an unknown domain as an error without
			// counting it as a renewal; so does a batch.
			continue
		}
		res := renewResultOf(r.Err)
		counts[res]++
		if res == renewFenced {
			s.fenced(domain, "renewal")
		}
	}
	for res, n := range counts {
		s.renewedN(renewResultNames[res], n)
	}
	return nil
}

// Renewal results as counted by Observer.Renewed.
const (
	renewOK = iota
	renewFenced
	renewExpired
	renewNoLease
	renewNotLeader
	renewResults
)

var renewResultNames = [renewResults]string{"ok", "fenced", "expired", "no_lease", "not_leader"}

func renewResultOf(err error) int {
	switch {
	case err == nil:
		return renewOK
	case errors.Is(err, ErrFenced):
		return renewFenced
	case errors.Is(err, ErrLeaseExpired):
		return renewExpired
	case errors.Is(err, ErrNoLease):
		return renewNoLease
	}
	return renewNotLeader
}

// RenewCounter is an Observer that can also count n renewals with one
// result at once (a batch); without it, Renewed is called n times.
type RenewCounter interface {
	RenewedN(result string, n int)
}

func (s *Service) renewedN(result string, n int) {
	if n == 0 {
		return
	}
	if c, ok := s.obs.(RenewCounter); ok {
		c.RenewedN(result, n)
		return
	}
	for range n {
		s.obs.Renewed(result)
	}
}

func renewResult(err error) string { return renewResultNames[renewResultOf(err)] }

// AdvanceWatermark commits a batch of watermark advances in one entry (group
// commit). It returns one error per advance (nil when committed). Advances
// from a stale epoch or holder, or whose lease expired on the leader, are
// rejected as fenced before proposing; the FSM fences again at apply.
func (s *Service) AdvanceWatermark(ctx context.Context, batch []*pb.WatermarkAdvance) ([]error, error) {
	errs, _, err := s.AdvanceWatermarkAt(ctx, batch)
	return errs, err
}

// AdvanceWatermarkAt is AdvanceWatermark that also returns the log index of
// the entry (0 when every advance was refused before proposing).
func (s *Service) AdvanceWatermarkAt(ctx context.Context, batch []*pb.WatermarkAdvance) ([]error, uint64, error) {
	if err := s.checkReady(); err != nil {
		return nil, 0, err
	}
	if len(batch) == 0 || len(batch) > fsm.MaxWatermarkBatch {
		return nil, 0, fmt.Errorf("%w: watermark batch of %d advances (want 1..%d)", fsm.ErrInvalid, len(batch), fsm.MaxWatermarkBatch)
	}
	errs := make([]error, len(batch))
	var send []*pb.WatermarkAdvance
	var pos []int
	domains := make([]string, 0, len(batch))
	for i, adv := range batch {
		if errs[i] = s.holdsLease(adv); errs[i] == nil {
			send, pos = append(send, adv), append(pos, i)
			domains = append(domains, adv.Domain)
		}
	}
	if len(send) == 0 {
		return errs, 0, nil
	}
	unlock := s.locks.shared(domains...)
	defer unlock()
	results, index, err := s.proposeAdvances(ctx, send)
	if err != nil {
		return nil, 0, err
	}
	s.obs.WatermarkBatch(len(send))
	for j, w := range results {
		errs[pos[j]] = w.Err
		if errors.Is(w.Err, fsm.ErrFenced) {
			s.fenced(w.Domain, "watermark")
		}
	}
	return errs, index, nil
}

// proposeAdvances commits advances: merged with concurrent calls' into one
// entry (wmbatch.go), or in an entry of their own when the service was
// configured with WatermarkEntryPerCall.
func (s *Service) proposeAdvances(ctx context.Context, send []*pb.WatermarkAdvance) ([]fsm.WatermarkResult, uint64, error) {
	if !s.wmEntryPerCall {
		return s.commitWatermarks(ctx, send)
	}
	res, err := s.propose(ctx, &pb.Command{Body: &pb.Command_AdvanceWatermark{AdvanceWatermark: &pb.AdvanceWatermark{Advances: send}}})
	if err != nil {
		return nil, 0, err
	}
	if res.Err != nil && len(res.Watermarks) == 0 {
		return nil, 0, res.Err
	}
	return res.Watermarks, res.Index, nil
}

// holdsLease checks an advance against the replicated authority and the
// leader's lease: a holder whose lease expired must stop acknowledging.
func (s *Service) holdsLease(adv *pb.WatermarkAdvance) error {
	a, ok := s.fsm.AuthorityOf(adv.GetDomain())
	if !ok {
		return fmt.Errorf("%w: domain %q", fsm.ErrNotFound, adv.GetDomain())
	}
	if a.Epoch != adv.Epoch || a.Holder != adv.Holder || a.Released {
		s.fenced(a.Domain, "watermark")
		return fmt.Errorf("%w: domain %q is at epoch %d held by %q; advance from %q at epoch %d",
			fsm.ErrFenced, a.Domain, a.Epoch, a.Holder, adv.Holder, adv.Epoch)
	}
	s.syncLease(a)
	obs, err := s.leases.Observe(adv.Domain)
	if err != nil {
		return err
	}
	if obs.Status != LeaseHeld || obs.Epoch != adv.Epoch {
		return fmt.Errorf("%w: lease of %q at epoch %d is %v on the leader", ErrLeaseExpired, adv.Domain, adv.Epoch, obs.Status)
	}
	return nil
}

// ReportProgress records a replica's progress report (soft state) and
// returns the domain's current watermark, so the replica's next report
// carries its own hash at exactly that lsn (DESIGN §6).
func (s *Service) ReportProgress(domain string, r *pb.ProgressReport) (*pb.Watermark, error) {
	if err := s.checkReady(); err != nil {
		return nil, err
	}
	wm, ok := s.fsm.Watermark(domain)
	if !ok {
		return nil, fmt.Errorf("%w: domain %q", fsm.ErrNotFound, domain)
	}
	if err := fsm.ValidateName("member id", r.GetMemberId()); err != nil {
		return nil, err
	}
	s.reports.put(domain, r, s.clock.Now())
	s.policy.Load().reported(domain) // new facts for an automatic domain (AU-8)
	return wm, nil
}

// RegisterServer records a raft server's gRPC address in the replicated
// server directory (servers that joined after bootstrap).
func (s *Service) RegisterServer(ctx context.Context, id, grpcAddress string) error {
	if err := s.checkReady(); err != nil {
		return err
	}
	res, err := s.propose(ctx, &pb.Command{Body: &pb.Command_RegisterServer{RegisterServer: &pb.RegisterServer{Id: id, GrpcAddress: grpcAddress}}})
	if err != nil {
		return err
	}
	return res.Err
}

// syncLease makes the leader's lease table follow the replicated state
// before it is consulted: a grant committed without its proposer learning
// of it (a cancelled request) is adopted with a lease from now (longer than
// necessary, never shorter: safe), and a committed release is applied.
// Without this, an unseen grant would leave the table at the older epoch
// and the domain could never be observed free again.
func (s *Service) syncLease(a fsm.Authority) {
	if a.Holder == "" || a.Epoch == 0 {
		return
	}
	if a.Released {
		s.leases.Release(a.Domain, a.Epoch)
		return
	}
	s.leases.Adopt(Grant{Domain: a.Domain, Holder: a.Holder, Epoch: a.Epoch, TTL: ms(a.TTLms)})
}
