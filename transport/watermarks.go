package transport

import (
	"context"
	"errors"
	"io"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/promotion"
	"google.golang.org/grpc"
)

type watermarks struct {
	pbgrpc.UnimplementedWatermarksServer
	*Server
}

func errNotLeader() error { return promotion.ErrNotLeader }

// Advance commits a batch of watermark advances in one log entry and
// reports one result per advance.
func (w *watermarks) Advance(ctx context.Context, req *pb.AdvanceRequest) (*pb.AdvanceResponse, error) {
	if err := validateAdvance(req); err != nil {
		return nil, err
	}
	if resp, ok, err := forward(ctx, w.Server, func(ctx context.Context, c *grpc.ClientConn) (*pb.AdvanceResponse, error) {
		return pbgrpc.NewWatermarksClient(c).Advance(ctx, req)
	}); ok {
		return resp, err
	}
	errs, index, err := w.svc.AdvanceWatermarkAt(ctx, req.GetAdvances())
	if err != nil {
		return nil, w.fail(err)
	}
	resp := &pb.AdvanceResponse{Results: make([]*pb.AdvanceResult, len(errs))}
	for i, e := range errs {
		r := &pb.AdvanceResult{Domain: req.Advances[i].GetDomain(), Ok: e == nil}
		if e != nil {
			_, r.ErrorReason = reasonOf(e)
			r.ErrorMessage = e.Error()
		}
		resp.Results[i] = r
	}
	resp.Header, resp.LogIndex = w.header(), index
	return resp, nil
}

// ReportProgress records replicas' progress reports on the leader (soft
// state) and answers each with the domain's current watermark.
func (w *watermarks) ReportProgress(stream grpc.BidiStreamingServer[pb.ProgressReportRequest, pb.ProgressReportResponse]) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if !w.svc.Ready() {
			return w.fail(errNotLeader())
		}
		resp := &pb.ProgressReportResponse{Domain: req.GetDomain()}
		var wm *pb.Watermark
		err = validateReport(req)
		if err == nil {
			wm, err = w.svc.ReportProgress(req.GetDomain(), req.GetReport())
		}
		if err != nil {
			resp.ErrorReason = reasonFromError(err)
			resp.ErrorMessage = err.Error()
		}
		resp.Watermark, resp.Header = wm, w.header()
		if err == nil {
			resp.Fence, resp.ChainLsns = w.svc.FenceFor(req.GetDomain())
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}
