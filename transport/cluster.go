package transport

import (
	"context"
	"fmt"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/cluster"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/promotion"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
)

type clusterAPI struct {
	pb.UnimplementedClusterServer
	*Server
}

func (c *clusterAPI) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	r := c.node.Raft()
	h, err := c.node.FSM().StateHash()
	if err != nil {
		return nil, c.fail(err)
	}
	return &pb.StatusResponse{Header: c.header(), NodeId: c.node.ID(), RaftState: r.State().String(),
		CommitIndex: r.CommitIndex(), LastIndex: r.LastIndex(), StateHash: hexHash(h), Ready: c.svc.Ready(),
		Domains: uint64(len(c.node.FSM().DomainNames()))}, nil
}

func (c *clusterAPI) Members(ctx context.Context, _ *pb.MembersRequest) (*pb.MembersResponse, error) {
	f := c.node.Raft().GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, c.fail(err)
	}
	leaderID, _ := c.node.Leader()
	resp := &pb.MembersResponse{Header: c.header()}
	for _, s := range f.Configuration().Servers {
		resp.Servers = append(resp.Servers, &pb.ServerInfo{Id: string(s.ID), RaftAddress: string(s.Address),
			GrpcAddress: c.addrOf(string(s.ID)), Suffrage: s.Suffrage.String(), Leader: string(s.ID) == leaderID})
	}
	return resp, nil
}

func (c *clusterAPI) TransferLeadership(ctx context.Context, req *pb.TransferLeadershipRequest) (*pb.TransferLeadershipResponse, error) {
	if resp, ok, err := forward(ctx, c.Server, func(ctx context.Context, conn *grpc.ClientConn) (*pb.TransferLeadershipResponse, error) {
		return pb.NewClusterClient(conn).TransferLeadership(ctx, req)
	}); ok {
		return resp, err
	}
	r := c.node.Raft()
	var f raft.Future
	if req.GetTo() == "" {
		f = r.LeadershipTransfer()
	} else {
		addr, ok := c.raftAddress(req.GetTo())
		if !ok {
			return nil, invalid("no server %q in the raft configuration", req.GetTo())
		}
		f = r.LeadershipTransferToServer(raft.ServerID(req.GetTo()), addr)
	}
	if err := f.Error(); err != nil {
		return nil, c.fail(fmt.Errorf("leadership transfer: %w", cluster.TranslateError(err)))
	}
	id, _ := c.node.Leader()
	return &pb.TransferLeadershipResponse{Header: c.header(), NewLeaderId: id}, nil
}

func (c *clusterAPI) raftAddress(id string) (raft.ServerAddress, bool) {
	f := c.node.Raft().GetConfiguration()
	if f.Error() != nil {
		return "", false
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == id {
			return s.Address, true
		}
	}
	return "", false
}

func (c *clusterAPI) Snapshot(ctx context.Context, _ *pb.SnapshotRequest) (*pb.SnapshotResponse, error) {
	f := c.node.Raft().Snapshot()
	if err := f.Error(); err != nil {
		return nil, c.fail(err)
	}
	meta, rc, err := f.Open()
	if err != nil {
		return nil, c.fail(err)
	}
	rc.Close()
	return &pb.SnapshotResponse{Header: c.header(), Index: meta.Index}, nil
}

// AddServer adds a voter to the raft configuration and records its gRPC
// address in the replicated server directory. Adding a server that is
// already a voter at the same address is a no-op (a restarted joiner).
func (c *clusterAPI) AddServer(ctx context.Context, req *pb.AddServerRequest) (*pb.AddServerResponse, error) {
	var v check
	v.name("id", req.GetId())
	v.maxLen("raft_address", req.GetRaftAddress(), MaxAddressBytes)
	v.maxLen("grpc_address", req.GetGrpcAddress(), MaxAddressBytes)
	if req.GetRaftAddress() == "" || req.GetGrpcAddress() == "" {
		v.errs = append(v.errs, errorf(fsm.ErrInvalid, "raft_address and grpc_address are required"))
	}
	if err := v.err(); err != nil {
		return nil, err
	}
	if resp, ok, err := forward(ctx, c.Server, func(ctx context.Context, conn *grpc.ClientConn) (*pb.AddServerResponse, error) {
		return pb.NewClusterClient(conn).AddServer(ctx, req)
	}); ok {
		return resp, err
	}
	if !c.svc.Ready() {
		return nil, c.fail(promotion.ErrNotLeader)
	}
	f := c.node.Raft().AddVoter(raft.ServerID(req.GetId()), raft.ServerAddress(req.GetRaftAddress()), 0, timeoutOf(ctx))
	if err := f.Error(); err != nil {
		return nil, c.fail(fmt.Errorf("add voter %s: %w", req.GetId(), cluster.TranslateError(err)))
	}
	if err := c.svc.RegisterServer(ctx, req.GetId(), req.GetGrpcAddress()); err != nil {
		return nil, c.fail(err)
	}
	members, err := c.Members(ctx, &pb.MembersRequest{})
	if err != nil {
		return nil, err
	}
	return &pb.AddServerResponse{Header: c.header(), Servers: members.Servers}, nil
}

func timeoutOf(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl), time.Millisecond)
	}
	return 10 * time.Second
}
