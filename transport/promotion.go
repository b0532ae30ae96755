package transport

import (
	"context"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/promotion"
	"google.golang.org/grpc"
)

type promotionAPI struct {
	pbgrpc.UnimplementedPromotionServer
	*Server
}

// Promote runs a promotion attempt on the leader. A denial is a result, not
// an error: the response carries the record with Decision.Allowed false.
func (p *promotionAPI) Promote(ctx context.Context, req *pb.PromoteRequest) (*pb.PromoteResponse, error) {
	if err := validatePromote(req); err != nil {
		return nil, err
	}
	if resp, ok, err := forward(ctx, p.Server, func(ctx context.Context, c *grpc.ClientConn) (*pb.PromoteResponse, error) {
		return pbgrpc.NewPromotionClient(c).Promote(ctx, req)
	}); ok {
		return resp, err
	}
	out, err := p.svc.Promote(ctx, req.GetRequest())
	if err != nil && !promotion.IsDenied(err) {
		return nil, p.fail(err)
	}
	resp := &pb.PromoteResponse{Header: p.header(), Record: out.Record, Committed: out.Committed, Duplicate: out.Duplicate}
	for _, s := range out.Lifecycle {
		resp.Lifecycle = append(resp.Lifecycle, s.String())
	}
	return resp, nil
}

func (p *promotionAPI) Explain(ctx context.Context, req *pb.ExplainRequest) (*pb.ExplainResponse, error) {
	if err := validateNames("domain", req.GetDomain(), "request_id", req.GetRequestId()); err != nil {
		return nil, err
	}
	if !req.GetRead().GetStale() && !staleReads {
		if resp, ok, err := forwardRead(ctx, p.Server, func(ctx context.Context, c *grpc.ClientConn) (*pb.ExplainResponse, error) {
			return pbgrpc.NewPromotionClient(c).Explain(ctx, req)
		}); ok {
			return resp, err
		}
		if err := p.linearizable(ctx); err != nil {
			return nil, err
		}
	}
	rec, ok := p.node.FSM().Attempt(req.GetDomain(), req.GetRequestId())
	if !ok {
		return nil, p.fail(errorf(fsm.ErrNotFound, "no attempt %q recorded for domain %q", req.GetRequestId(), req.GetDomain()))
	}
	return &pb.ExplainResponse{Header: p.header(), Record: rec}, nil
}

func (p *promotionAPI) History(ctx context.Context, req *pb.HistoryRequest) (*pb.HistoryResponse, error) {
	if err := validateNames("domain", req.GetDomain()); err != nil {
		return nil, err
	}
	if req.GetLimit() > fsm.MaxHistoryPage {
		return nil, invalid("history page of %d records: at most %d (page with after_index)", req.GetLimit(), fsm.MaxHistoryPage)
	}
	if !req.GetRead().GetStale() && !staleReads {
		if resp, ok, err := forwardRead(ctx, p.Server, func(ctx context.Context, c *grpc.ClientConn) (*pb.HistoryResponse, error) {
			return pbgrpc.NewPromotionClient(c).History(ctx, req)
		}); ok {
			return resp, err
		}
		if err := p.linearizable(ctx); err != nil {
			return nil, err
		}
	}
	page, ok := p.node.FSM().History(req.GetDomain(), req.GetAfterIndex(), int(req.GetLimit()), req.GetIncludeDenied())
	if !ok {
		return nil, p.fail(errorf(fsm.ErrNotFound, "domain %q", req.GetDomain()))
	}
	return &pb.HistoryResponse{Header: p.header(), Records: page.Records, More: page.More, NextAfterIndex: page.Next}, nil
}
