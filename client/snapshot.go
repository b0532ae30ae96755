package client

import (
	"context"
	"errors"
	"fmt"
	"io"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
)

// SaveSnapshot streams a backup of the whole state from the leader into w
// (the fsm snapshot format) and returns what the server said about it: the
// first message's info (index, term, state hash) and the last one's size
// and SHA-256. The leader is found from Members and NOT_LEADER hints; once
// data has started, an error ends the call (w holds a partial copy: the
// caller discards it). chunk is the message size asked for (0: the
// server's default).
func (c *Client) SaveSnapshot(ctx context.Context, w io.Writer, chunk uint32) (*pb.SavedSnapshotInfo, *pb.SaveSnapshotResponse, error) {
	var tried []string
	var lastErr error
	candidates := []string{}
	if m, err := c.Members(ctx); err == nil {
		for _, s := range m.GetServers() {
			if s.GetLeader() && s.GetGrpcAddress() != "" {
				candidates = append(candidates, s.GetGrpcAddress())
			}
		}
	} else {
		lastErr = err
	}
	candidates = append(candidates, c.snapshotEndpoints()...)
	seen := map[string]bool{}
	for len(candidates) > 0 && len(tried) < 8 {
		addr := candidates[0]
		candidates = candidates[1:]
		if seen[addr] {
			continue
		}
		seen[addr] = true
		tried = append(tried, addr)
		info, done, started, err := c.saveFrom(ctx, addr, w, chunk)
		if err == nil {
			return info, done, nil
		}
		if started || ctx.Err() != nil {
			return nil, nil, err
		}
		lastErr = err
		if _, ei := errorInfo(err); ei != nil && ei.GetReason() == pb.ReasonNotLeader {
			if hint := ei.GetMetadata()[pb.MetaLeaderAddr]; hint != "" {
				candidates = append([]string{hint}, candidates...)
			}
		}
	}
	if lastErr == nil {
		lastErr = errors.New("no endpoint")
	}
	return nil, nil, fmt.Errorf("snapshot save: no leader served it (tried %v): %w", tried, mapError(lastErr))
}

// saveFrom reads one SaveSnapshot stream from addr; started reports
// whether any data reached w.
func (c *Client) saveFrom(ctx context.Context, addr string, w io.Writer, chunk uint32) (info *pb.SavedSnapshotInfo, done *pb.SaveSnapshotResponse, started bool, err error) {
	conn, err := c.conn(addr)
	if err != nil {
		return nil, nil, false, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := pbgrpc.NewClusterClient(conn).SaveSnapshot(ctx, &pb.SaveSnapshotRequest{ChunkBytes: chunk})
	if err != nil {
		return nil, nil, false, err
	}
	first, err := s.Recv()
	if err != nil {
		return nil, nil, false, err
	}
	if info = first.GetInfo(); info == nil {
		return nil, nil, false, errors.New("snapshot save: the server sent no snapshot info")
	}
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil, nil, true, errors.New("snapshot save: the stream ended before the snapshot was complete")
		}
		if err != nil {
			return nil, nil, true, mapError(err)
		}
		if len(m.GetData()) > 0 {
			if _, err := w.Write(m.GetData()); err != nil {
				return nil, nil, true, err
			}
		}
		if m.GetDone() {
			return info, m, true, nil
		}
	}
}
