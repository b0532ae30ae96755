package client

import (
	"context"
	"errors"
	"fmt"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"google.golang.org/grpc"
)

// CreateDomain creates a domain of the given kind. A nil policy takes the
// server's defaults (manual promotion, 10 s lease TTL, 30 s report age, one
// synchronous replica); a given policy must set lease_ttl_ms (a zero TTL is
// refused as INVALID_ARGUMENT) and its other zero fields take the defaults.
//
// Outcome: the call is retried across leader changes. If an attempt's
// outcome was unknown and a later attempt finds the domain already exists,
// the domain is read back: when its kind and every non-zero policy field
// asked for match, that is our create and the call succeeds; otherwise the
// error wraps both ErrOutcomeUnknown and ErrAlreadyExists (someone else's
// domain, or ours changed since). An error wrapping ErrOutcomeUnknown (the
// context ended after a send) means the domain may or may not exist: resolve
// with GetDomain.
func (c *Client) CreateDomain(ctx context.Context, name string, kind pb.DomainKind, policy *pb.Policy) (*pb.Domain, error) {
	req := &pb.CreateDomainRequest{Name: name, Kind: kind, Policy: policy}
	resp, unknown, err := unary(ctx, c, retryIdempotent, false, func(ctx context.Context, conn *grpc.ClientConn) (*pb.DomainResponse, error) {
		return pbgrpc.NewDomainsClient(conn).CreateDomain(ctx, req)
	})
	if err == nil {
		return resp.GetDomain(), nil
	}
	if !unknown || !errors.Is(err, ErrAlreadyExists) {
		return nil, err
	}
	d, gerr := c.GetDomain(ctx, name)
	if gerr != nil {
		return nil, fmt.Errorf("%w: %w (reading it back: %v)", ErrOutcomeUnknown, err, gerr)
	}
	if !sameAsAsked(d, kind, policy) {
		return nil, fmt.Errorf("%w: %w: domain %q differs from the one asked for", ErrOutcomeUnknown, err, name)
	}
	return d, nil
}

// sameAsAsked reports whether d has the kind and every non-zero policy field
// of a create request.
func sameAsAsked(d *pb.Domain, kind pb.DomainKind, p *pb.Policy) bool {
	if d.GetKind() != kind {
		return false
	}
	got := d.GetPolicy()
	switch {
	case p.GetMode() != 0 && p.GetMode() != got.GetMode(),
		p.GetLeaseTtlMs() != 0 && p.GetLeaseTtlMs() != got.GetLeaseTtlMs(),
		p.GetPromotionDisabled() != got.GetPromotionDisabled(),
		p.GetReportMaxAgeMs() != 0 && p.GetReportMaxAgeMs() != got.GetReportMaxAgeMs(),
		p.GetMinSyncReplicas() != 0 && p.GetMinSyncReplicas() != got.GetMinSyncReplicas():
		return false
	}
	return true
}

// GetDomain reads a domain's full state (linearizable unless Stale()).
func (c *Client) GetDomain(ctx context.Context, name string, opts ...ReadOption) (*pb.Domain, error) {
	o := readOpts(opts)
	req := &pb.GetDomainRequest{Name: name, Read: o.proto()}
	resp, _, err := unary(ctx, c, retryRead, o.stale, func(ctx context.Context, conn *grpc.ClientConn) (*pb.DomainResponse, error) {
		return pbgrpc.NewDomainsClient(conn).GetDomain(ctx, req)
	})
	return resp.GetDomain(), err
}

// ListDomains lists every domain's summary, sorted by name, following the
// server's pages. Pages are read one at a time: a linearizable listing is
// linearizable per page, not as a whole.
func (c *Client) ListDomains(ctx context.Context, opts ...ReadOption) ([]*pb.DomainSummary, error) {
	o := readOpts(opts)
	var out []*pb.DomainSummary
	after := ""
	for {
		req := &pb.ListDomainsRequest{Read: o.proto(), After: after}
		resp, _, err := unary(ctx, c, retryRead, o.stale, func(ctx context.Context, conn *grpc.ClientConn) (*pb.ListDomainsResponse, error) {
			return pbgrpc.NewDomainsClient(conn).ListDomains(ctx, req)
		})
		if err != nil {
			return nil, err
		}
		out = append(out, resp.GetDomains()...)
		if resp.GetNextAfter() == "" || resp.GetNextAfter() == after {
			return out, nil
		}
		after = resp.GetNextAfter()
	}
}

// UpdatePolicy replaces a domain's policy. It must set lease_ttl_ms; its
// other zero fields take the server's defaults.
//
// Outcome: replacing a policy with the same value is idempotent, so the call
// is retried across leader changes and transport failures. An error wrapping
// ErrOutcomeUnknown (the context ended after a send) means the policy may or
// may not have been replaced: read it with GetDomain, or call again.
func (c *Client) UpdatePolicy(ctx context.Context, name string, policy *pb.Policy) (*pb.Domain, error) {
	req := &pb.UpdatePolicyRequest{Name: name, Policy: policy}
	resp, _, err := unary(ctx, c, retryIdempotent, false, func(ctx context.Context, conn *grpc.ClientConn) (*pb.DomainResponse, error) {
		return pbgrpc.NewDomainsClient(conn).UpdatePolicy(ctx, req)
	})
	return resp.GetDomain(), err
}

// RegisterMember adds or updates a member of a domain.
//
// Outcome: registration is idempotent (the same request leaves the same
// member), so the call is retried across leader changes and transport
// failures. An error wrapping ErrOutcomeUnknown (the context ended after a
// send) means the member may or may not be registered: call again.
func (c *Client) RegisterMember(ctx context.Context, req *pb.RegisterMemberRequest) (*pb.Domain, error) {
	resp, _, err := unary(ctx, c, retryIdempotent, false, func(ctx context.Context, conn *grpc.ClientConn) (*pb.DomainResponse, error) {
		return pbgrpc.NewDomainsClient(conn).RegisterMember(ctx, req)
	})
	return resp.GetDomain(), err
}

// AssignInitial names a domain's first holder (epoch 0 → 1) and starts its
// lease on the leader; keep it with KeepLease.
//
// Outcome: the call is retried across leader changes. If an attempt's
// outcome was unknown and a later attempt fails (the domain already has an
// epoch), the domain is read back: epoch 1 held by holder means our
// assignment committed and the call succeeds (LogIndex is the domain's
// epoch_index). An error wrapping ErrOutcomeUnknown (the context ended after
// a send) means the assignment may or may not have committed: resolve with
// GetDomain (epoch 1 and this holder: it did).
func (c *Client) AssignInitial(ctx context.Context, domain, holder string) (*pb.AuthorityResponse, error) {
	req := &pb.AssignInitialRequest{Domain: domain, Holder: holder}
	resp, unknown, err := unary(ctx, c, retryIdempotent, false, func(ctx context.Context, conn *grpc.ClientConn) (*pb.AuthorityResponse, error) {
		return pbgrpc.NewDomainsClient(conn).AssignInitial(ctx, req)
	})
	if err == nil || !unknown || errors.Is(err, ErrOutcomeUnknown) {
		return resp, err
	}
	d, gerr := c.GetDomain(ctx, domain)
	if gerr != nil {
		return nil, fmt.Errorf("%w: %w (reading it back: %v)", ErrOutcomeUnknown, err, gerr)
	}
	if d.GetEpoch() == 1 && d.GetHolder() == holder {
		return &pb.AuthorityResponse{Domain: domain, Epoch: 1, Holder: holder, LogIndex: d.GetEpochIndex()}, nil
	}
	return nil, err
}
