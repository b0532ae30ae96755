package refnode

import (
	"context"
	"errors"
	"fmt"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
)

// DomainPolicy is the policy of a refnode domain: the lease TTL and report
// max age given, at least one synchronous replica (the primary
// acknowledges only what a replica flushed).
func DomainPolicy(leaseTTL, reportMaxAge time.Duration) *pb.Policy {
	return &pb.Policy{LeaseTtlMs: uint64(leaseTTL.Milliseconds()), ReportMaxAgeMs: uint64(reportMaxAge.Milliseconds()), MinSyncReplicas: 1}
}

// SetReplicaQuorum puts policy in DURABILITY_REPLICA_QUORUM with k
// synchronous replicas (0: 1) and the watermark interval (0: the
// authority's default).
func SetReplicaQuorum(policy *pb.Policy, k uint32, interval time.Duration) {
	policy.Durability = pb.Durability_DURABILITY_REPLICA_QUORUM
	policy.MinSyncReplicas = max(k, 1)
	policy.WatermarkIntervalMs = uint64(interval.Milliseconds())
}

// SetDurability puts policy in durability d: replica-quorum with k
// synchronous replicas (0: 1) and the watermark interval, authority-gated,
// or — DURABILITY_UNSPECIFIED — whatever the authority's leader fills in
// for a new aerodb domain (replica-quorum since issue 20; k and the
// interval are set for it). An unknown d is left for the authority to
// refuse.
func SetDurability(policy *pb.Policy, d pb.Durability, k uint32, interval time.Duration) {
	SetReplicaQuorum(policy, k, interval)
	policy.Durability = d
}

// Member is a node to register: its member id and the address its
// refnode listens on (Config.Advertise).
type Member struct {
	ID, Address string
}

// Setup is what an operator prepares before refnodes start over mutual
// TLS: a node (node:<id>) may act as its own holder but may not create
// domains, register members or assign a holder.
type Setup struct {
	Domain string
	// LeaseTTL and ReportMaxAge of the domain (defaults 10 s and 30 s,
	// as for Config).
	LeaseTTL, ReportMaxAge time.Duration
	// Members to register, each with its address.
	Members []Member
	// InitialPrimary, when set, is assigned as the first holder if the
	// domain has none yet.
	InitialPrimary string
	// Automatic creates the domain in PROMOTION_MODE_AUTOMATIC: the
	// authority's leader promotes the best replica when the primary's
	// lease expires.
	Automatic bool
	// Durability of the created domain (docs/DURABILITY.md). Replica-quorum
	// — also what DURABILITY_UNSPECIFIED gets, the authority's default for
	// a new aerodb domain — has the primary acknowledge once K
	// (MinSyncReplicas, default 1) synchronous replicas of its epoch
	// flushed a write, and advance the watermark lazily, at most once per
	// WatermarkInterval (0: the authority's default, 1 s).
	// DURABILITY_AUTHORITY_GATED acknowledges once the authority committed
	// a watermark covering the write. An existing domain keeps its own.
	Durability        pb.Durability
	MinSyncReplicas   uint32
	WatermarkInterval time.Duration
}

// Provision creates the domain (when it does not exist), registers every
// member at its address and assigns the initial primary (at epoch 0
// only). It is idempotent: a second run changes nothing. ac must be an
// operator's client (or any client of an --insecure authority).
func Provision(ctx context.Context, ac *client.Client, s Setup) error {
	if s.LeaseTTL == 0 {
		s.LeaseTTL = 10 * time.Second
	}
	if s.ReportMaxAge == 0 {
		s.ReportMaxAge = 30 * time.Second
	}
	policy := DomainPolicy(s.LeaseTTL, s.ReportMaxAge)
	if s.Automatic {
		policy.Mode = pb.PromotionMode_PROMOTION_MODE_AUTOMATIC
	}
	SetDurability(policy, s.Durability, s.MinSyncReplicas, s.WatermarkInterval)
	if _, err := ac.CreateDomain(ctx, s.Domain, pb.DomainKind_DOMAIN_KIND_AERODB, policy); err != nil &&
		!errors.Is(err, client.ErrAlreadyExists) {
		return fmt.Errorf("create domain %q: %w", s.Domain, err)
	}
	d, err := ac.GetDomain(ctx, s.Domain)
	if err != nil {
		return err
	}
	for _, m := range s.Members {
		if cur := memberOf(d, m.ID); cur != nil && cur.GetAddress() == m.Address {
			continue
		}
		d, err = ac.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: s.Domain, MemberId: m.ID, Address: m.Address,
			State: pb.MemberState_MEMBER_STATE_ACTIVE})
		if err != nil {
			return fmt.Errorf("register member %q of %q: %w", m.ID, s.Domain, err)
		}
	}
	if s.InitialPrimary == "" {
		return nil
	}
	if d.GetEpoch() == 0 {
		if _, err := ac.AssignInitial(ctx, s.Domain, s.InitialPrimary); err != nil && !errors.Is(err, client.ErrFailedPrecondition) {
			return fmt.Errorf("assign %q as the first holder of %q: %w", s.InitialPrimary, s.Domain, err)
		}
	}
	return nil
}
