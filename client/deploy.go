package client

import (
	"context"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"google.golang.org/grpc"
)

// DeployStep moves the deployment a deploy lock records (docs/DEPLOY.md):
// claim, verify, succeed, fail or hand off, as the lock's holder at the
// lease's epoch. It returns the deployment after the step.
//
// Outcome: a step the deployment has already taken at this epoch is a
// no-op, so the call is retried across leader changes and transport
// failures. A step refused because the lease's epoch is no longer current
// fails with ErrFenced (another runner took the lock): stop at once.
func (c *Client) DeployStep(ctx context.Context, step *pb.DeployStep) (*pb.Deployment, error) {
	req := &pb.DeployStepRequest{Step: step}
	resp, _, err := unary(ctx, c, retryIdempotent, false, func(ctx context.Context, conn *grpc.ClientConn) (*pb.DeployStepResponse, error) {
		return pbgrpc.NewLeasesClient(conn).DeployStep(ctx, req)
	})
	return resp.GetDeployment(), err
}

// LabelReleaseAbort records an operator's verdict on a release abort
// (docs/RELEASES.md); not retried after sending (a repeat is refused as
// already judged).
func (c *Client) LabelReleaseAbort(ctx context.Context, l *pb.LabelReleaseAbort) (*pb.LabelReleaseAbortResponse, error) {
	req := &pb.LabelReleaseAbortRequest{Label: l}
	resp, _, err := unary(ctx, c, retryNotLeader, false, func(ctx context.Context, conn *grpc.ClientConn) (*pb.LabelReleaseAbortResponse, error) {
		return pbgrpc.NewDomainsClient(conn).LabelReleaseAbort(ctx, req)
	})
	return resp, err
}

// ReleaseTransition submits one release transition with its evidence as
// the release domain's controller (docs/RELEASES.md) and returns the
// recorded decision, allowed or denied.
//
// Outcome: a transition is not idempotent (a repeated promote is fenced by
// the epoch it moved), so only NOT_LEADER (nothing proposed) is retried; a
// transport failure after sending returns ErrOutcomeUnknown: read the
// domain's release record to learn whether it was decided.
func (c *Client) ReleaseTransition(ctx context.Context, tr *pb.ReleaseTransition) (*pb.ReleaseTransitionResponse, error) {
	req := &pb.ReleaseTransitionRequest{Transition: tr}
	resp, _, err := unary(ctx, c, retryNotLeader, false, func(ctx context.Context, conn *grpc.ClientConn) (*pb.ReleaseTransitionResponse, error) {
		return pbgrpc.NewLeasesClient(conn).ReleaseTransition(ctx, req)
	})
	return resp, err
}
