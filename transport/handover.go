package transport

import (
	"context"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// maxHandoverTimeout bounds how long a handover request may stand.
const maxHandoverTimeout = 10 * time.Minute

// RequestHandover records, on the leader, that the holder should hand over
// to a candidate (planned switchover). The holder learns it on its next
// KeepAlive response. Nothing is logged.
func (p *promotionAPI) RequestHandover(ctx context.Context, req *pb.RequestHandoverRequest) (*pb.RequestHandoverResponse, error) {
	if err := validateNames("domain", req.GetDomain()); err != nil {
		return nil, err
	}
	if req.GetTimeoutMs() > uint64(maxHandoverTimeout.Milliseconds()) {
		return nil, status.Errorf(codes.InvalidArgument, "timeout_ms: at most %d (%v)", maxHandoverTimeout.Milliseconds(), maxHandoverTimeout)
	}
	d := time.Duration(req.GetTimeoutMs()) * time.Millisecond
	if d > 0 || req.GetCandidate() != "" {
		if err := validateNames("candidate", req.GetCandidate()); err != nil {
			return nil, err
		}
	}
	if d > 0 {
		if req.GetEpoch() == 0 {
			return nil, status.Error(codes.InvalidArgument, "epoch: required")
		}
	}
	if resp, ok, err := forward(ctx, p.Server, func(ctx context.Context, c *grpc.ClientConn) (*pb.RequestHandoverResponse, error) {
		return pbgrpc.NewPromotionClient(c).RequestHandover(ctx, req)
	}); ok {
		return resp, err
	}
	obs, err := p.svc.RequestHandover(req.GetDomain(), req.GetEpoch(), req.GetCandidate(), d)
	if err != nil {
		return nil, p.fail(err)
	}
	return &pb.RequestHandoverResponse{Header: p.header(), Holder: obs.Holder, Epoch: obs.Epoch}, nil
}

// handoverFor is the standing handover request for a renewed lease, if any.
func (s *Server) handoverFor(domain string, epoch uint64) *pb.HandoverRequest {
	h, ok := s.svc.Handover(domain, epoch)
	if !ok {
		return nil
	}
	return &pb.HandoverRequest{Candidate: h.Candidate, RemainingMs: uint64(h.Remaining.Milliseconds())}
}
