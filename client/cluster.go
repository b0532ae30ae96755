package client

import (
	"context"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"google.golang.org/grpc"
)

// onServer runs one attempt on the server at endpoint ("" = the current
// best endpoint, with the usual retries).
func onServer[Resp headered](ctx context.Context, c *Client, endpoint string,
	call func(context.Context, *grpc.ClientConn) (Resp, error)) (Resp, error) {
	if endpoint == "" {
		resp, _, err := unary(ctx, c, retryRead, false, call)
		return resp, err
	}
	var zero Resp
	conn, err := c.conn(endpoint)
	if err != nil {
		return zero, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	resp, err := call(ctx, conn)
	if err != nil {
		return zero, mapError(err)
	}
	return resp, nil
}

// Status returns the status of the server at endpoint (one attempt), or of
// the current best endpoint when endpoint is "" (retried across servers).
func (c *Client) Status(ctx context.Context, endpoint string) (*pb.StatusResponse, error) {
	return onServer(ctx, c, endpoint, func(ctx context.Context, conn *grpc.ClientConn) (*pb.StatusResponse, error) {
		return pbgrpc.NewClusterClient(conn).Status(ctx, &pb.StatusRequest{})
	})
}

// Members returns the raft configuration with each server's gRPC address
// and the leader, as seen by the server that answers; the client also
// learns the addresses from it.
func (c *Client) Members(ctx context.Context) (*pb.MembersResponse, error) {
	resp, _, err := unary(ctx, c, retryRead, false, func(ctx context.Context, conn *grpc.ClientConn) (*pb.MembersResponse, error) {
		return pbgrpc.NewClusterClient(conn).Members(ctx, &pb.MembersRequest{})
	})
	if err == nil {
		c.learnMembers(resp)
	}
	return resp, err
}

// TransferLeadership asks the leader to hand leadership to server id to
// ("" lets raft pick).
//
// Outcome: retried only on NOT_LEADER (nothing happened). Any transport
// failure returns an error wrapping ErrOutcomeUnknown: leadership may or may
// not have moved; check with Members.
func (c *Client) TransferLeadership(ctx context.Context, to string) (*pb.TransferLeadershipResponse, error) {
	req := &pb.TransferLeadershipRequest{To: to}
	resp, _, err := unary(ctx, c, retryNotLeader, false, func(ctx context.Context, conn *grpc.ClientConn) (*pb.TransferLeadershipResponse, error) {
		return pbgrpc.NewClusterClient(conn).TransferLeadership(ctx, req)
	})
	if err == nil {
		c.mu.Lock()
		c.leader = c.idAddr[resp.GetNewLeaderId()]
		c.mu.Unlock()
	}
	return resp, err
}

// Snapshot makes the server at endpoint ("" = the current best endpoint)
// take a raft snapshot now and returns its index. One attempt when an
// endpoint is named; a snapshot changes no replicated state.
func (c *Client) Snapshot(ctx context.Context, endpoint string) (*pb.SnapshotResponse, error) {
	return onServer(ctx, c, endpoint, func(ctx context.Context, conn *grpc.ClientConn) (*pb.SnapshotResponse, error) {
		return pbgrpc.NewClusterClient(conn).Snapshot(ctx, &pb.SnapshotRequest{})
	})
}

// AddServer asks the cluster to add a voter (what `authorityd --join` does).
// Adding a server that is already a voter at the same address is a no-op,
// so the call is safe to retry after an unknown outcome.
func (c *Client) AddServer(ctx context.Context, id, raftAddress, grpcAddress string) (*pb.AddServerResponse, error) {
	resp, _, err := unary(ctx, c, retryIdempotent, false, func(ctx context.Context, conn *grpc.ClientConn) (*pb.AddServerResponse, error) {
		return pbgrpc.NewClusterClient(conn).AddServer(ctx, &pb.AddServerRequest{Id: id, RaftAddress: raftAddress, GrpcAddress: grpcAddress})
	})
	return resp, err
}

// RemoveServer removes a server from the raft configuration (operator
// role). The server refuses when the voters left could not reach a quorum.
// On ErrOutcomeUnknown, check with Members: removal of an absent server is
// NOT_FOUND.
func (c *Client) RemoveServer(ctx context.Context, id string) (*pb.RemoveServerResponse, error) {
	resp, _, err := unary(ctx, c, retryIdempotent, false, func(ctx context.Context, conn *grpc.ClientConn) (*pb.RemoveServerResponse, error) {
		return pbgrpc.NewClusterClient(conn).RemoveServer(ctx, &pb.RemoveServerRequest{Id: id})
	})
	return resp, err
}
