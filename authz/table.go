// Package authz decides which identity (identity package: a role and a
// name from the client certificate) may call which authority.v1 RPC. The
// whole policy is one table, Table, keyed by gRPC full method name; one
// interceptor (Interceptor) applies it to every unary call and to every
// message of every stream; TestEveryRPCEveryRole walks every RPC of the
// API against every role.
//
// Roles:
//
//	server     another authorityd: reads, and AddServer for itself (join)
//	operator   domains, policies, members, promotions, membership, leader
//	           transfer, snapshots, and every read
//	node:<id>  acquire, renew, release, advance watermarks and report
//	           progress, only as holder/member <id>, on aerodb and lock
//	           domains; every read
//	deployer:<runner group>   the same as holder <runner group>, on lock
//	           domains only; every read
//	releaser:<controller>     the same as holder <controller>, on release
//	           domains only; every read
//	reader     reads, watch, explain, history
//
// Operators deliberately cannot act as a holder: renewing a dead primary's
// lease or releasing another holder's lock is not an administrative act,
// and an operator who must move authority promotes, which is validated and
// explained.
package authz

import (
	"iter"
	"slices"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/identity"
)

// Access is the kind of permission an RPC needs.
type Access int

const (
	// Read: any authenticated identity.
	Read Access = iota + 1
	// Admin: operator only.
	Admin
	// ActAsHolder: a node, deployer or releaser acting as itself (every
	// subject of the request names it as holder/member), on a domain kind
	// its role may use.
	ActAsHolder
	// Membership: operator; a server only for itself (joining).
	Membership
)

func (a Access) String() string {
	switch a {
	case Read:
		return "read"
	case Admin:
		return "admin"
	case ActAsHolder:
		return "act-as-holder"
	case Membership:
		return "membership"
	}
	return "unknown"
}

// Subject is who a request acts as, in which domain.
type Subject struct {
	Domain string
	Holder string
	// KindByHandler: the handler checks that the caller's role may act on
	// this domain's kind (MayActOn), per subject, and refuses that subject
	// alone; Decide checks only the holder. A batched renewal does so, so
	// one lease of a forbidden kind fails alone, not the stream it shares
	// with the holder's other leases.
	KindByHandler bool
}

// Rule is one RPC's permission. Subjects lists what an ActAsHolder or
// Membership request acts on in one request message (without allocating
// per subject: a batched KeepAlive names up to 1,024 leases).
type Rule struct {
	Access   Access
	Subjects func(req any) iter.Seq[Subject]
}

// MaxSubjects bounds the subjects of one request message: a request naming
// more is refused (InvalidArgument) after looking at MaxSubjects+1 of them,
// before any other per-subject work. It is the largest batch of any RPC
// (pb.MaxRenewalsPerKeepAlive; transport.MaxAdvancesPerRequest is lower).
const MaxSubjects = pb.MaxRenewalsPerKeepAlive

// one is the subjects of a request acting on one (domain, holder).
func one(domain, holder string) iter.Seq[Subject] {
	return func(yield func(Subject) bool) { yield(Subject{Domain: domain, Holder: holder}) }
}

const (
	svcDomains    = "/authority.v1.Domains/"
	svcLeases     = "/authority.v1.Leases/"
	svcWatermarks = "/authority.v1.Watermarks/"
	svcPromotion  = "/authority.v1.Promotion/"
	svcWatch      = "/authority.v1.Watch/"
	svcCluster    = "/authority.v1.Cluster/"
)

// Table is the authorization policy: every RPC of authority.v1, and
// nothing else (an RPC not listed is refused).
var Table = map[string]Rule{
	svcDomains + "CreateDomain":   {Access: Admin},
	svcDomains + "GetDomain":      {Access: Read},
	svcDomains + "ListDomains":    {Access: Read},
	svcDomains + "UpdatePolicy":   {Access: Admin},
	svcDomains + "RegisterMember": {Access: Admin},
	svcDomains + "AssignInitial":  {Access: Admin},
	// An operator's verdict on a release abort (canary_abort_verdict_total).
	svcDomains + "LabelReleaseAbort": {Access: Admin},

	svcLeases + "Acquire":   {Access: ActAsHolder, Subjects: acquireSubjects},
	svcLeases + "KeepAlive": {Access: ActAsHolder, Subjects: keepAliveSubjects},
	svcLeases + "Release":   {Access: ActAsHolder, Subjects: releaseSubjects},
	// A deploy step acts as the lock's holder (a deployer on its lock).
	svcLeases + "DeployStep": {Access: ActAsHolder, Subjects: deployStepSubjects},
	// A release transition acts as the release domain's controller.
	svcLeases + "ReleaseTransition": {Access: ActAsHolder, Subjects: releaseTransitionSubjects},

	svcWatermarks + "Advance":        {Access: ActAsHolder, Subjects: advanceSubjects},
	svcWatermarks + "ReportProgress": {Access: ActAsHolder, Subjects: progressSubjects},

	svcPromotion + "Promote": {Access: Admin},
	svcPromotion + "Explain": {Access: Read},
	svcPromotion + "History": {Access: Read},
	// RequestHandover is an operator's planned switchover: operator only.
	svcPromotion + "RequestHandover": {Access: Admin},

	svcWatch + "Watch": {Access: Read},

	svcCluster + "AddServer":          {Access: Membership, Subjects: addServerSubjects},
	svcCluster + "RemoveServer":       {Access: Admin},
	svcCluster + "Status":             {Access: Read},
	svcCluster + "Members":            {Access: Read},
	svcCluster + "TransferLeadership": {Access: Admin},
	svcCluster + "Snapshot":           {Access: Admin},
	// A backup holds every domain's state: operator only.
	svcCluster + "SaveSnapshot": {Access: Admin},
}

func acquireSubjects(req any) iter.Seq[Subject] {
	r, _ := req.(*pb.AcquireRequest)
	return one(r.GetDomain(), r.GetHolder())
}

// keepAliveSubjects: a single-lease message acts on its (domain, holder); a
// batch on each of its domains as its one holder. A message with both acts
// on all of them (the server refuses it; authorization is decided first).
func keepAliveSubjects(req any) iter.Seq[Subject] {
	r, _ := req.(*pb.KeepAliveRequest)
	return func(yield func(Subject) bool) {
		if r.GetDomain() != "" || len(r.GetDomains()) == 0 {
			if !yield(Subject{Domain: r.GetDomain(), Holder: r.GetHolder()}) {
				return
			}
		}
		for _, d := range r.GetDomains() {
			if !yield(Subject{Domain: d, Holder: r.GetHolder(), KindByHandler: true}) {
				return
			}
		}
	}
}

func releaseSubjects(req any) iter.Seq[Subject] {
	r, _ := req.(*pb.ReleaseRequest)
	return one(r.GetDomain(), r.GetHolder())
}

func deployStepSubjects(req any) iter.Seq[Subject] {
	r, _ := req.(*pb.DeployStepRequest)
	return one(r.GetStep().GetDomain(), r.GetStep().GetHolder())
}

func releaseTransitionSubjects(req any) iter.Seq[Subject] {
	r, _ := req.(*pb.ReleaseTransitionRequest)
	return one(r.GetTransition().GetDomain(), r.GetTransition().GetHolder())
}

func advanceSubjects(req any) iter.Seq[Subject] {
	r, _ := req.(*pb.AdvanceRequest)
	return func(yield func(Subject) bool) {
		for _, a := range r.GetAdvances() {
			if !yield(Subject{Domain: a.GetDomain(), Holder: a.GetHolder()}) {
				return
			}
		}
	}
}

func progressSubjects(req any) iter.Seq[Subject] {
	r, _ := req.(*pb.ProgressReportRequest)
	return one(r.GetDomain(), r.GetReport().GetMemberId())
}

func addServerSubjects(req any) iter.Seq[Subject] {
	r, _ := req.(*pb.AddServerRequest)
	return one("", r.GetId())
}

// MayActOn reports whether a holder role may act on a domain of kind k
// (false for roles that are not holder roles).
func MayActOn(role identity.Role, k pb.DomainKind) bool {
	return slices.Contains(kindsFor[role], k)
}

// kindsFor is which domain kinds a holder role may act on.
var kindsFor = map[identity.Role][]pb.DomainKind{
	identity.Node:     {pb.DomainKind_DOMAIN_KIND_AERODB, pb.DomainKind_DOMAIN_KIND_LOCK},
	identity.Deployer: {pb.DomainKind_DOMAIN_KIND_LOCK},
	identity.Releaser: {pb.DomainKind_DOMAIN_KIND_RELEASE},
}
