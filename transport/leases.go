package transport

import (
	"context"
	"errors"
	"io"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/authz"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/promotion"
	"google.golang.org/grpc"
)

type leases struct {
	pbgrpc.UnimplementedLeasesServer
	*Server
}

func (l *leases) Acquire(ctx context.Context, req *pb.AcquireRequest) (*pb.LeaseResponse, error) {
	if err := validateHolder(req.GetDomain(), req.GetHolder()); err != nil {
		return nil, err
	}
	if resp, ok, err := forward(ctx, l.Server, func(ctx context.Context, c *grpc.ClientConn) (*pb.LeaseResponse, error) {
		return pbgrpc.NewLeasesClient(c).Acquire(ctx, req)
	}); ok {
		return resp, err
	}
	// A follower forwards a waiting Acquire with the caller's context, so
	// the caller's deadline bounds the wait on the leader too.
	acquire := l.svc.Acquire
	if req.GetWait() {
		acquire = l.svc.AcquireWait
	}
	res, err := acquire(ctx, req.GetDomain(), req.GetHolder(), req.ExpectedEpoch)
	if err != nil {
		return nil, l.fail(err)
	}
	a, _ := l.node.FSM().AuthorityOf(req.GetDomain())
	return &pb.LeaseResponse{Header: l.header(), Domain: req.GetDomain(), Epoch: res.Epoch, Holder: res.Holder,
		TtlMs: a.TTLms, LogIndex: res.Index}, nil
}

func (l *leases) Release(ctx context.Context, req *pb.ReleaseRequest) (*pb.AuthorityResponse, error) {
	if err := validateFenced(req.GetDomain(), req.GetHolder(), req.GetEpoch()); err != nil {
		return nil, err
	}
	if resp, ok, err := forward(ctx, l.Server, func(ctx context.Context, c *grpc.ClientConn) (*pb.AuthorityResponse, error) {
		return pbgrpc.NewLeasesClient(c).Release(ctx, req)
	}); ok {
		return resp, err
	}
	res, err := l.svc.Release(ctx, req.GetDomain(), req.GetHolder(), req.GetEpoch())
	if err != nil {
		return nil, l.fail(err)
	}
	return &pb.AuthorityResponse{Header: l.header(), Domain: req.GetDomain(), Epoch: res.Epoch, Holder: res.Holder, LogIndex: res.Index}, nil
}

// DeployStep moves a deploy lock's deployment (docs/DEPLOY.md): fenced by
// the holder's epoch, one committed entry per step.
func (l *leases) DeployStep(ctx context.Context, req *pb.DeployStepRequest) (*pb.DeployStepResponse, error) {
	st := req.GetStep()
	if err := validateFenced(st.GetDomain(), st.GetHolder(), st.GetEpoch()); err != nil {
		return nil, err
	}
	if err := fsm.ValidateDeployStep(st); err != nil {
		return nil, l.fail(err)
	}
	if resp, ok, err := forward(ctx, l.Server, func(ctx context.Context, c *grpc.ClientConn) (*pb.DeployStepResponse, error) {
		return pbgrpc.NewLeasesClient(c).DeployStep(ctx, req)
	}); ok {
		return resp, err
	}
	res, err := l.svc.DeployStep(ctx, st)
	if err != nil {
		return nil, l.fail(err)
	}
	d, _ := l.node.FSM().Domain(st.GetDomain())
	return &pb.DeployStepResponse{Header: l.header(), Deployment: d.GetDeployment(), Epoch: res.Epoch, LogIndex: res.Index}, nil
}

// ReleaseTransition decides one release transition (docs/RELEASES.md).
func (l *leases) ReleaseTransition(ctx context.Context, req *pb.ReleaseTransitionRequest) (*pb.ReleaseTransitionResponse, error) {
	tr := req.GetTransition()
	if err := validateFenced(tr.GetDomain(), tr.GetHolder(), tr.GetEpoch()); err != nil {
		return nil, err
	}
	if err := fsm.ValidateReleaseTransition(tr); err != nil {
		return nil, l.fail(err)
	}
	if resp, ok, err := forward(ctx, l.Server, func(ctx context.Context, c *grpc.ClientConn) (*pb.ReleaseTransitionResponse, error) {
		return pbgrpc.NewLeasesClient(c).ReleaseTransition(ctx, req)
	}); ok {
		return resp, err
	}
	res, err := l.svc.ReleaseTransition(ctx, tr)
	if err != nil {
		return nil, l.fail(err)
	}
	d, _ := l.node.FSM().Domain(tr.GetDomain())
	return &pb.ReleaseTransitionResponse{Header: l.header(), Decision: res.Release, Release: d.GetRelease(), Epoch: res.Epoch,
		LogIndex: res.Index}, nil
}

// KeepAlive renews leases on the leader; renewals never touch the log. It
// is served only by the leader: a follower answers NOT_LEADER (with the
// leader's address) and ends the stream, and the client reconnects there.
// A failed renewal is reported in the response, not by ending the stream,
// so one fenced lease does not cut a connection shared by others.
//
// A message renews one lease, or a batch of one holder's leases (domains,
// epochs; at most MaxRenewalsPerMessage) answered by one response with each
// lease's result in order. The stream's result buffer is reused from
// message to message, so renewing a batch allocates per message, not per
// lease (beyond what protobuf decoding allocates for each domain name).
func (l *leases) KeepAlive(stream grpc.BidiStreamingServer[pb.KeepAliveRequest, pb.KeepAliveResponse]) error {
	var results []promotion.RenewResult // reused by every batch of the stream
	// A batch's leases are authorized by holder in the interceptor and by
	// domain kind here, per lease (authz.Subject.KindByHandler).
	var mayAct func(pb.DomainKind) bool
	if id, ok := authz.IdentityFrom(stream.Context()); ok {
		mayAct = func(k pb.DomainKind) bool { return authz.MayActOn(id.Role, k) }
	}
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if !l.svc.Ready() {
			return l.fail(errNotLeader())
		}
		var resp *pb.KeepAliveResponse
		if len(req.GetDomains()) > 0 || len(req.GetEpochs()) > 0 {
			resp, results = l.renewBatch(req, mayAct, results)
		} else {
			resp = l.renewOne(req)
		}
		resp.Header = l.header()
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// renewOne answers a single-lease KeepAlive message.
func (l *leases) renewOne(req *pb.KeepAliveRequest) *pb.KeepAliveResponse {
	resp := &pb.KeepAliveResponse{Domain: req.GetDomain(), Epoch: req.GetEpoch(), Seq: req.GetSeq()}
	remaining, err := time.Duration(0), validateFenced(req.GetDomain(), req.GetHolder(), req.GetEpoch())
	if err == nil {
		remaining, err = l.svc.Renew(req.GetDomain(), req.GetHolder(), req.GetEpoch())
	}
	if err != nil {
		resp.ErrorReason = reasonFromError(err)
		resp.ErrorMessage = err.Error()
	} else {
		resp.RemainingMs = uint64(remaining.Milliseconds())
		resp.Handover = l.handoverFor(req.GetDomain(), req.GetEpoch())
	}
	return resp
}

// renewBatch answers a batched KeepAlive message: a malformed batch is
// refused whole (error_reason, one bounded message); otherwise every lease
// gets its result at its index. buf is the stream's result buffer, returned
// grown for the next batch.
func (l *leases) renewBatch(req *pb.KeepAliveRequest, mayAct func(pb.DomainKind) bool, buf []promotion.RenewResult) (*pb.KeepAliveResponse, []promotion.RenewResult) {
	resp := &pb.KeepAliveResponse{Seq: req.GetSeq()}
	fail := func(err error) (*pb.KeepAliveResponse, []promotion.RenewResult) {
		resp.ErrorReason = reasonFromError(err)
		resp.ErrorMessage = err.Error()
		return resp, buf
	}
	if err := validateRenewBatch(req); err != nil {
		return fail(err)
	}
	n := len(req.GetDomains())
	if cap(buf) < n {
		buf = make([]promotion.RenewResult, n, MaxRenewalsPerMessage)
	}
	out := buf[:n]
	if err := l.svc.RenewBatch(req.GetHolder(), req.GetDomains(), req.GetEpochs(), mayAct, out); err != nil {
		return fail(err)
	}
	resp.BatchRemainingMs = make([]uint64, n)
	for i := range out {
		r := &out[i]
		if r.Err != nil {
			resp.Failures = append(resp.Failures, &pb.RenewalFailure{Index: uint32(i), ErrorReason: reasonFromError(r.Err), ErrorMessage: r.Err.Error()})
			continue
		}
		resp.BatchRemainingMs[i] = uint64(r.Remaining.Milliseconds())
		if r.HasHandover {
			resp.Handovers = append(resp.Handovers, &pb.RenewalHandover{Index: uint32(i),
				Handover: &pb.HandoverRequest{Candidate: r.Handover.Candidate, RemainingMs: uint64(r.Handover.Remaining.Milliseconds())}})
		}
	}
	return resp, buf
}
