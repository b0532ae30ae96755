package transport

import (
	"context"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/authz"
	"github.com/aerodb/authority/fsm"
	"google.golang.org/grpc"
)

type domains struct {
	pbgrpc.UnimplementedDomainsServer
	*Server
}

func (d *domains) CreateDomain(ctx context.Context, req *pb.CreateDomainRequest) (*pb.DomainResponse, error) {
	if err := validateCreate(req); err != nil {
		return nil, err
	}
	if err := d.leaseTTLFloor(req.GetPolicy()); err != nil {
		return nil, err
	}
	if resp, ok, err := forward(ctx, d.Server, func(ctx context.Context, c *grpc.ClientConn) (*pb.DomainResponse, error) {
		return pbgrpc.NewDomainsClient(c).CreateDomain(ctx, req)
	}); ok {
		return resp, err
	}
	if _, err := d.svc.CreateDomain(ctx, req.GetName(), req.GetKind(), req.GetPolicy()); err != nil {
		return nil, d.fail(err)
	}
	return d.domainResponse(req.GetName())
}

func (d *domains) UpdatePolicy(ctx context.Context, req *pb.UpdatePolicyRequest) (*pb.DomainResponse, error) {
	if err := validateUpdate(req); err != nil {
		return nil, err
	}
	if err := d.leaseTTLFloor(req.GetPolicy()); err != nil {
		return nil, err
	}
	if resp, ok, err := forward(ctx, d.Server, func(ctx context.Context, c *grpc.ClientConn) (*pb.DomainResponse, error) {
		return pbgrpc.NewDomainsClient(c).UpdatePolicy(ctx, req)
	}); ok {
		return resp, err
	}
	if _, err := d.svc.UpdatePolicy(ctx, req.GetName(), req.GetPolicy()); err != nil {
		return nil, d.fail(err)
	}
	return d.domainResponse(req.GetName())
}

func (d *domains) RegisterMember(ctx context.Context, req *pb.RegisterMemberRequest) (*pb.DomainResponse, error) {
	if err := validateRegister(req); err != nil {
		return nil, err
	}
	if err := memberLimit(d.node.FSM(), req); err != nil {
		return nil, err
	}
	if resp, ok, err := forward(ctx, d.Server, func(ctx context.Context, c *grpc.ClientConn) (*pb.DomainResponse, error) {
		return pbgrpc.NewDomainsClient(c).RegisterMember(ctx, req)
	}); ok {
		return resp, err
	}
	_, err := d.svc.RegisterMember(ctx, &pb.RegisterMember{Domain: req.GetDomain(), MemberId: req.GetMemberId(),
		Address: req.GetAddress(), Priority: req.GetPriority(), State: req.GetState()})
	if err != nil {
		return nil, d.fail(err)
	}
	return d.domainResponse(req.GetDomain())
}

func (d *domains) AssignInitial(ctx context.Context, req *pb.AssignInitialRequest) (*pb.AuthorityResponse, error) {
	if err := validateHolder(req.GetDomain(), req.GetHolder()); err != nil {
		return nil, err
	}
	if resp, ok, err := forward(ctx, d.Server, func(ctx context.Context, c *grpc.ClientConn) (*pb.AuthorityResponse, error) {
		return pbgrpc.NewDomainsClient(c).AssignInitial(ctx, req)
	}); ok {
		return resp, err
	}
	res, err := d.svc.AssignInitial(ctx, req.GetDomain(), req.GetHolder())
	if err != nil {
		return nil, d.fail(err)
	}
	return &pb.AuthorityResponse{Header: d.header(), Domain: req.GetDomain(), Epoch: res.Epoch, Holder: res.Holder, LogIndex: res.Index}, nil
}

func (d *domains) GetDomain(ctx context.Context, req *pb.GetDomainRequest) (*pb.DomainResponse, error) {
	if err := validateNames("domain", req.GetName()); err != nil {
		return nil, err
	}
	if !req.GetRead().GetStale() && !staleReads {
		if resp, ok, err := forwardRead(ctx, d.Server, func(ctx context.Context, c *grpc.ClientConn) (*pb.DomainResponse, error) {
			return pbgrpc.NewDomainsClient(c).GetDomain(ctx, req)
		}); ok {
			return resp, err
		}
		if err := d.linearizable(ctx); err != nil {
			return nil, err
		}
	}
	return d.domainResponse(req.GetName())
}

func (d *domains) domainResponse(name string) (*pb.DomainResponse, error) {
	dom, ok := d.node.FSM().Domain(name)
	if !ok {
		return nil, d.fail(errorf(fsm.ErrNotFound, "domain %q", name))
	}
	return &pb.DomainResponse{Header: d.header(), Domain: dom}, nil
}

// maxListLimit bounds one ListDomains page.
const maxListLimit = 10_000

func (d *domains) ListDomains(ctx context.Context, req *pb.ListDomainsRequest) (*pb.ListDomainsResponse, error) {
	if err := validateList(req); err != nil {
		return nil, err
	}
	if !req.GetRead().GetStale() && !staleReads {
		if resp, ok, err := forwardRead(ctx, d.Server, func(ctx context.Context, c *grpc.ClientConn) (*pb.ListDomainsResponse, error) {
			return pbgrpc.NewDomainsClient(c).ListDomains(ctx, req)
		}); ok {
			return resp, err
		}
		if err := d.linearizable(ctx); err != nil {
			return nil, err
		}
	}
	limit := int(req.GetLimit())
	if limit == 0 {
		limit = 1000
	}
	summaries, more := d.node.FSM().Summaries(req.GetAfter(), limit)
	resp := &pb.ListDomainsResponse{Header: d.header(), Domains: summaries}
	if more && len(summaries) > 0 {
		resp.NextAfter = summaries[len(summaries)-1].Name
	}
	return resp, nil
}

// leaseTTLFloor refuses a lease TTL shorter than this server's minimum: a
// lease that short cannot survive a raft leader change (client.MinLeaseTTL).
// A policy without one gets the default TTL, which is longer.
func (s *Server) leaseTTLFloor(p *pb.Policy) error {
	ttl := time.Duration(p.GetLeaseTtlMs()) * time.Millisecond
	if s.minTTL <= 0 || p == nil || ttl >= s.minTTL {
		return nil
	}
	return invalid("policy.lease_ttl_ms %d is below this cluster's minimum lease TTL of %v: a shorter lease cannot survive a raft leader change (%s; %s)",
		p.GetLeaseTtlMs(), s.minTTL, s.ttlWhy, FlagMinLeaseTTL)
}

// FlagMinLeaseTTL is authorityd's flag for Config.MinLeaseTTL.
const FlagMinLeaseTTL = "--min-lease-ttl"

// LabelReleaseAbort records an operator's verdict on an abort of a release
// domain (docs/RELEASES.md). The operator named in the record is the
// caller's identity, never the request's.
func (d *domains) LabelReleaseAbort(ctx context.Context, req *pb.LabelReleaseAbortRequest) (*pb.LabelReleaseAbortResponse, error) {
	l := req.GetLabel()
	if l == nil {
		return nil, invalid("label is required")
	}
	l.Operator = ""
	if id, ok := authz.IdentityFrom(ctx); ok {
		l.Operator = id.String()
	}
	if err := fsm.ValidateLabelReleaseAbort(l); err != nil {
		return nil, d.fail(err)
	}
	if resp, ok, err := forward(ctx, d.Server, func(ctx context.Context, c *grpc.ClientConn) (*pb.LabelReleaseAbortResponse, error) {
		return pbgrpc.NewDomainsClient(c).LabelReleaseAbort(ctx, req)
	}); ok {
		return resp, err
	}
	res, err := d.svc.LabelReleaseAbort(ctx, l)
	if err != nil {
		return nil, d.fail(err)
	}
	return &pb.LabelReleaseAbortResponse{Header: d.header(), Decision: res.Release, LogIndex: res.Index}, nil
}
