package refnode

import (
	"context"
	"errors"
	"fmt"
	"io"

	rpb "github.com/aerodb/authority/api/refnode/v1"
	"google.golang.org/grpc/codes"
)

// service is the gRPC face of a Node.
type service struct {
	rpb.UnimplementedRefNodeServer
	n *Node
}

func (s *service) Put(ctx context.Context, req *rpb.PutRequest) (*rpb.PutResponse, error) {
	if len(req.GetKey()) == 0 {
		return nil, statusError(codes.InvalidArgument, "INVALID_ARGUMENT", "empty key", nil)
	}
	return s.n.put(ctx, req.GetKey(), req.GetValue())
}

func (s *service) Get(ctx context.Context, req *rpb.GetRequest) (*rpb.GetResponse, error) {
	n := s.n
	n.mu.Lock()
	var bound, epoch uint64
	role := n.role
	switch role {
	case RolePrimary:
		ps := n.primary
		if err := ps.leaseOK(); err != nil {
			n.mu.Unlock()
			return nil, statusError(codes.Unavailable, ReasonFenced, err.Error(), nil)
		}
		bound, epoch = ps.gate.Visible(), ps.epoch
	case RoleReplica:
		bound, epoch = min(n.store.Applied(), n.knownVisible), n.fence.Highest()
	default:
		defer n.mu.Unlock()
		return nil, statusError(codes.Unavailable, ReasonUnavailable, fmt.Sprintf("%s is %s", n.cfg.ID, role), nil)
	}
	n.mu.Unlock()
	if rb := req.GetReadBound(); rb > 0 {
		bound = min(bound, rb)
	}
	v, cid, ok := n.store.Get(req.GetKey(), bound)
	return &rpb.GetResponse{Found: ok, Value: v, CommitId: cid, ReadBound: bound, Epoch: epoch, Role: role}, nil
}

func (s *service) Status(context.Context, *rpb.StatusRequest) (*rpb.StatusResponse, error) {
	return s.n.status(), nil
}

func (s *service) HashAt(_ context.Context, req *rpb.HashAtRequest) (*rpb.HashAtResponse, error) {
	n := s.n
	if err := n.refuseIfDiverged(); err != nil {
		return nil, err
	}
	h, ok := n.wal.HashAt(req.GetLsn())
	return &rpb.HashAtResponse{Present: ok, Hash: h, Last: posProto(n.wal.Flushed()), Epoch: n.fence.Highest()}, nil
}

func (s *service) ReadWal(req *rpb.ReadWalRequest, st rpb.RefNode_ReadWalServer) error {
	n := s.n
	if err := n.refuseIfDiverged(); err != nil {
		return err
	}
	end := n.wal.Flushed().LSN
	for next := max(req.GetFromLsn(), 1); next <= end; {
		frames := n.wal.Frames(next, min(1024, int(end-next+1)))
		if len(frames) == 0 {
			break
		}
		if err := st.Send(&rpb.ReadWalResponse{Frames: frames, Epoch: n.fence.Highest()}); err != nil {
			return err
		}
		next += uint64(len(frames))
	}
	return nil
}

func (n *Node) refuseIfDiverged() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.role == RoleDiverged {
		return statusError(codes.FailedPrecondition, ReasonDiverged, n.divergedReason, nil)
	}
	return nil
}

func (s *service) Ship(st rpb.RefNode_ShipServer) error {
	n := s.n
	msg, err := st.Recv()
	if err != nil {
		return err
	}
	hello := msg.GetHello()
	if hello == nil {
		return statusError(codes.InvalidArgument, "INVALID_ARGUMENT", "a ship stream starts with a hello", nil)
	}
	in, pos, err := n.acceptStream(st.Context(), hello)
	if err != nil {
		return err
	}
	defer n.endStream(in)
	if err := st.Send(pos); err != nil {
		return err
	}
	for {
		msg, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch b := msg.GetBody().(type) {
		case *rpb.ShipRequest_Diverged:
			n.checkDivergedNotice(b.Diverged)
			return statusError(codes.FailedPrecondition, ReasonDiverged, "diverged from the primary's history", nil)
		case *rpb.ShipRequest_Batch:
			resp, err := n.applyBatch(in, b.Batch.GetFrames())
			if err != nil {
				return err
			}
			if err := st.Send(resp); err != nil {
				return err
			}
		default:
			return statusError(codes.InvalidArgument, "INVALID_ARGUMENT", "unexpected ship message", nil)
		}
	}
}
