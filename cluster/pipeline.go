package cluster

import (
	"context"
	"fmt"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/promotion"
	"google.golang.org/protobuf/proto"
)

// ProposeAsync hands a command to raft and returns once raft has queued it,
// without waiting for its commit; the function it returns waits for its apply result
// here, as Propose would. Commands queued one after the other by one
// goroutine enter the log in that order (raft's apply channel is a FIFO
// read only by its leader loop), so a later one can only commit after an
// earlier one did. Errors come from wait (a command raft refuses, e.g.
// not leader, is refused there).
func (n *Node) ProposeAsync(ctx context.Context, cmd *pb.Command) (func(context.Context) (*fsm.Result, error), error) {
	data, err := proto.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("cluster: encode command: %w", err)
	}
	f := n.raft.Apply(data, timeoutOf(ctx, n.cfg.ApplyTimeout))
	return func(ctx context.Context) (*fsm.Result, error) {
		if err := wait(ctx, f); err != nil {
			return nil, err
		}
		res, ok := f.Response().(*fsm.Result)
		if !ok {
			return nil, fmt.Errorf("cluster: unexpected apply response %T", f.Response())
		}
		return res, nil
	}, nil
}

var _ promotion.Pipeliner = (*Node)(nil)
