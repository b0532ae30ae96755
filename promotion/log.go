package promotion

import (
	"context"
	"errors"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
)

// Log is the replicated log as the leader-side service needs it.
// cluster.Node implements it over hashicorp/raft; tests may use a fake.
type Log interface {
	// Propose replicates a command and returns its apply result on this node.
	// ErrNotLeader: nothing was proposed. ErrIndeterminate: it may or may
	// not have committed.
	Propose(ctx context.Context, cmd *pb.Command) (*fsm.Result, error)
	// Barrier returns once every earlier committed entry is applied here.
	Barrier(ctx context.Context) error
	// VerifyLeader confirms leadership with a quorum.
	VerifyLeader(ctx context.Context) error
	// Term is the current raft term; ID this server's id.
	Term() uint64
	ID() string
}

// Pipeliner is a Log that can queue a command without waiting for its
// commit (cluster.Node). Commands queued one after the other by one
// goroutine enter the log in that order, so a later one commits only
// after every earlier one did. wait returns the apply result on this node,
// with Propose's errors. A Log without it has every promotion wait for its
// intent's commit before proposing the attempt.
type Pipeliner interface {
	ProposeAsync(ctx context.Context, cmd *pb.Command) (wait func(context.Context) (*fsm.Result, error), err error)
}

var (
	// ErrIndeterminate: the entry may or may not have committed (leadership
	// was lost or the wait timed out after proposing). Resolve by retrying
	// with the same request id, or by reading the record.
	ErrIndeterminate = errors.New("promotion: outcome unknown: the entry may or may not have committed")
	// ErrNotReady: this node is leader but has not yet applied every entry of
	// earlier terms (its barrier), so it serves nothing yet.
	ErrNotReady = errors.New("promotion: new leader not ready: barrier pending")
	// ErrGloballyDisabled: promotion is disabled on this server (AU-14).
	ErrGloballyDisabled = errors.New("promotion: disabled on this server")
)
