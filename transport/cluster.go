package transport

import (
	"context"
	"fmt"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/cluster"
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
			GrpcAddress: c.peers[string(s.ID)], Suffrage: s.Suffrage.String(), Leader: string(s.ID) == leaderID})
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
