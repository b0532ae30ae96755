package transport

import (
	"context"
	"fmt"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/cluster"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/promotion"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
)

type clusterAPI struct {
	pbgrpc.UnimplementedClusterServer
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
		Domains: uint64(len(c.node.FSM().DomainNames())), ClusterId: c.node.ClusterID(), Insecure: !c.node.Secure(),
		AppliedIndex: c.node.FSM().LastIndex()}, nil
}

func (c *clusterAPI) Members(ctx context.Context, _ *pb.MembersRequest) (*pb.MembersResponse, error) {
	f := c.node.Raft().GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, c.fail(err)
	}
	leaderID, _ := c.node.Leader()
	resp := &pb.MembersResponse{Header: c.header(), ClusterId: c.node.ClusterID()}
	for _, s := range f.Configuration().Servers {
		resp.Servers = append(resp.Servers, &pb.ServerInfo{Id: string(s.ID), RaftAddress: string(s.Address),
			GrpcAddress: c.addrOf(string(s.ID)), Suffrage: s.Suffrage.String(), Leader: string(s.ID) == leaderID})
	}
	return resp, nil
}

func (c *clusterAPI) TransferLeadership(ctx context.Context, req *pb.TransferLeadershipRequest) (*pb.TransferLeadershipResponse, error) {
	var v check
	v.optName("to", req.GetTo())
	if err := v.err(); err != nil {
		return nil, err
	}
	if resp, ok, err := forward(ctx, c.Server, func(ctx context.Context, conn *grpc.ClientConn) (*pb.TransferLeadershipResponse, error) {
		return pbgrpc.NewClusterClient(conn).TransferLeadership(ctx, req)
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

// AddServer adds a server safely, the way etcd's learners and Consul's
// autopilot do: the new server must answer on its gRPC address (a dead
// address is refused and nothing changes); it joins as a non-voter, which
// cannot affect quorum; once its applied index reaches the leader's commit
// index at the time it was added, and a quorum of the enlarged voter set is
// reachable, it is promoted to voter. When it does not catch up in time it
// is removed again. Adding a voter already present at the same address is a
// no-op (a restarted joiner).
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
		return pbgrpc.NewClusterClient(conn).AddServer(ctx, req)
	}); ok {
		return resp, err
	}
	if !c.svc.Ready() {
		return nil, c.fail(promotion.ErrNotLeader)
	}
	id, raftAddr := raft.ServerID(req.GetId()), raft.ServerAddress(req.GetRaftAddress())
	servers, err := c.configuration()
	if err != nil {
		return nil, c.fail(err)
	}
	for _, s := range servers {
		if s.ID == id && s.Address != raftAddr {
			return nil, c.fail(fmt.Errorf("%w: server %s is already in the configuration at %s; remove it first", fsm.ErrPrecondition, id, s.Address))
		}
		if s.ID == id && s.Suffrage == raft.Voter {
			return c.addServerResponse(ctx)
		}
		if s.ID != id && s.Address == raftAddr {
			return nil, c.fail(fmt.Errorf("%w: raft address %s already belongs to server %s", fsm.ErrPrecondition, clip(string(raftAddr)), s.ID))
		}
	}
	if _, err := c.probe(ctx, req.GetGrpcAddress()); err != nil {
		return nil, c.fail(fmt.Errorf("%w: server %s does not answer at %s (nothing changed): %v", fsm.ErrPrecondition, id, clip(req.GetGrpcAddress()), err))
	}
	if err := c.node.Raft().AddNonvoter(id, raftAddr, 0, timeoutOf(ctx)).Error(); err != nil {
		return nil, c.fail(fmt.Errorf("add non-voter %s: %w", id, cluster.TranslateError(err)))
	}
	if err := c.svc.RegisterServer(ctx, req.GetId(), req.GetGrpcAddress()); err != nil {
		return nil, c.fail(err)
	}
	if err := c.promoteWhenCaughtUp(ctx, id, raftAddr, req.GetGrpcAddress()); err != nil {
		if rerr := c.node.Raft().RemoveServer(id, 0, 5*time.Second).Error(); rerr != nil {
			c.logger.Warn("removing a server that did not catch up", "server", id, "error", rerr)
		}
		return nil, c.fail(err)
	}
	c.logger.Info("server added as voter", "server", id, "raft", raftAddr, "grpc", req.GetGrpcAddress())
	return c.addServerResponse(ctx)
}

func (c *clusterAPI) addServerResponse(ctx context.Context) (*pb.AddServerResponse, error) {
	members, err := c.Members(ctx, &pb.MembersRequest{})
	if err != nil {
		return nil, err
	}
	return &pb.AddServerResponse{Header: c.header(), Servers: members.Servers}, nil
}

// catchUpTimeout bounds a new server's catch-up when the caller gave no
// earlier deadline.
const catchUpTimeout = 30 * time.Second

func (c *clusterAPI) promoteWhenCaughtUp(ctx context.Context, id raft.ServerID, addr raft.ServerAddress, grpcAddr string) error {
	ctx, cancel := context.WithTimeout(ctx, catchUpTimeout)
	defer cancel()
	target := c.node.Raft().CommitIndex()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		applied, err := c.probe(ctx, grpcAddr)
		if err == nil && applied >= target {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: server %s did not catch up to index %d in time (last error: %v); removed again", fsm.ErrPrecondition, id, target, err)
		case <-tick.C:
		}
	}
	voters, err := c.voters()
	if err != nil {
		return err
	}
	if err := c.quorumReachable(ctx, append(voters, id), id); err != nil {
		return err
	}
	if err := c.node.Raft().AddVoter(id, addr, 0, timeoutOf(ctx)).Error(); err != nil {
		return fmt.Errorf("promote %s to voter: %w", id, cluster.TranslateError(err))
	}
	return nil
}

// RemoveServer removes a server from the configuration. Removing a voter
// is refused when the voters left could not reach a quorum among
// themselves (counting this leader and every voter that answers now), and
// removing the last voter is always refused.
func (c *clusterAPI) RemoveServer(ctx context.Context, req *pb.RemoveServerRequest) (*pb.RemoveServerResponse, error) {
	var v check
	v.name("id", req.GetId())
	if err := v.err(); err != nil {
		return nil, err
	}
	if resp, ok, err := forward(ctx, c.Server, func(ctx context.Context, conn *grpc.ClientConn) (*pb.RemoveServerResponse, error) {
		return pbgrpc.NewClusterClient(conn).RemoveServer(ctx, req)
	}); ok {
		return resp, err
	}
	if !c.svc.Ready() {
		return nil, c.fail(promotion.ErrNotLeader)
	}
	servers, err := c.configuration()
	if err != nil {
		return nil, c.fail(err)
	}
	id := raft.ServerID(req.GetId())
	var target *raft.Server
	var rest []raft.ServerID
	for i, s := range servers {
		if s.ID == id {
			target = &servers[i]
		} else if s.Suffrage == raft.Voter {
			rest = append(rest, s.ID)
		}
	}
	if target == nil {
		return nil, c.fail(fmt.Errorf("%w: no server %q in the raft configuration", fsm.ErrNotFound, req.GetId()))
	}
	if target.Suffrage == raft.Voter {
		if len(rest) == 0 {
			return nil, c.fail(fmt.Errorf("%w: %s is the last voter", fsm.ErrPrecondition, id))
		}
		if err := c.quorumReachable(ctx, rest, ""); err != nil {
			return nil, c.fail(err)
		}
	}
	if err := c.node.Raft().RemoveServer(id, 0, timeoutOf(ctx)).Error(); err != nil {
		return nil, c.fail(fmt.Errorf("remove %s: %w", id, cluster.TranslateError(err)))
	}
	c.logger.Info("server removed", "server", id)
	members, err := c.Members(ctx, &pb.MembersRequest{})
	if err != nil {
		return nil, err
	}
	return &pb.RemoveServerResponse{Header: c.header(), Servers: members.Servers}, nil
}

func (c *clusterAPI) configuration() ([]raft.Server, error) {
	f := c.node.Raft().GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	return f.Configuration().Servers, nil
}

func (c *clusterAPI) voters() ([]raft.ServerID, error) {
	servers, err := c.configuration()
	if err != nil {
		return nil, err
	}
	var out []raft.ServerID
	for _, s := range servers {
		if s.Suffrage == raft.Voter {
			out = append(out, s.ID)
		}
	}
	return out, nil
}

// quorumReachable checks that a majority of voters answers now: this
// leader, known (the server just verified), and every other voter whose
// gRPC Status call succeeds within a short timeout.
func (c *clusterAPI) quorumReachable(ctx context.Context, voters []raft.ServerID, known raft.ServerID) error {
	reachable, unreachable := 0, []string{}
	for _, v := range voters {
		if string(v) == c.node.ID() || v == known {
			reachable++
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := c.probe(pctx, c.addrOf(string(v)))
		cancel()
		if err != nil {
			unreachable = append(unreachable, string(v))
			continue
		}
		reachable++
	}
	if need := len(voters)/2 + 1; reachable < need {
		return fmt.Errorf("%w: the change would leave %d voters of which %d answer (unreachable: %v); a quorum needs %d; nothing changed",
			fsm.ErrPrecondition, len(voters), reachable, unreachable, need)
	}
	return nil
}

// probe asks a server's gRPC API for its status (with this server's own
// certificate) and returns its applied index.
func (c *clusterAPI) probe(ctx context.Context, grpcAddr string) (uint64, error) {
	if grpcAddr == "" {
		return 0, fmt.Errorf("no gRPC address known")
	}
	conn, err := grpc.NewClient(grpcAddr, c.dialOp...)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := pbgrpc.NewClusterClient(conn).Status(pctx, &pb.StatusRequest{})
	if err != nil {
		return 0, err
	}
	return st.GetAppliedIndex(), nil
}

func timeoutOf(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return max(time.Until(dl), time.Millisecond)
	}
	return 10 * time.Second
}
