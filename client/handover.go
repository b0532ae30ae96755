package client

import (
	"context"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"google.golang.org/grpc"
)

// HandoverRequested is closed when the leader asks this holder, on a
// renewal, to hand its authority over (a planned switchover): stop taking
// new side effects, finish the ones under way, advance the final
// watermark, and Release. HandoverCandidate names who takes over. The
// request expires on the leader at the operator's timeout; a holder that
// does not release by then simply keeps its lease (nothing is promoted
// while it holds it). The channel is never closed for any other reason.
func (l *Lease) HandoverRequested() <-chan struct{} { return l.handover }

// HandoverCandidate is the candidate named by the handover request, or ""
// before one arrived.
func (l *Lease) HandoverCandidate() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.candidate
}

// HandoverDeadline is when the handover request lapses, on this process's
// clock, measured from the send time of the renewal that carried it (so
// no later than on the leader, given clock rates within the lease
// margin): a holder must not release for the handover after it,
// because the operator has given up. Zero before a request arrived.
func (l *Lease) HandoverDeadline() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.handoverBy
}

// RequestHandover asks the holder of domain at epoch to hand over to
// candidate, standing for timeout (operator only). The holder learns it on
// its next renewal. A zero timeout clears a standing request. It is
// leader-local: a leader change drops it, so callers waiting for the
// holder repeat it. Returns the lease's holder and epoch as the leader sees
// them.
func (c *Client) RequestHandover(ctx context.Context, domain string, epoch uint64, candidate string, timeout time.Duration) (*pb.RequestHandoverResponse, error) {
	req := &pb.RequestHandoverRequest{Domain: domain, Epoch: epoch, Candidate: candidate, TimeoutMs: uint64(timeout.Milliseconds())}
	resp, _, err := unary(ctx, c, retryIdempotent, false, func(ctx context.Context, conn *grpc.ClientConn) (*pb.RequestHandoverResponse, error) {
		return pbgrpc.NewPromotionClient(conn).RequestHandover(ctx, req)
	})
	return resp, err
}
