package fsm

import (
	"errors"
	"fmt"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// Sentinel errors carried in Result.Err. Callers branch with errors.Is; the
// transport maps each to a gRPC code and a machine-readable reason.
var (
	// ErrNotFound: the domain (or member) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists: the domain already exists.
	ErrExists = errors.New("already exists")
	// ErrInvalid: the command is malformed; nothing changed.
	ErrInvalid = errors.New("invalid argument")
	// ErrFenced: the caller's epoch (or holder) is not the current one (AU-12).
	ErrFenced = errors.New("fenced: stale epoch or holder")
	// ErrEpochStale: a compare-and-set on the epoch failed (the caller's
	// expected epoch is not the current one). It is a kind of ErrFenced.
	ErrEpochStale = fmt.Errorf("%w: expected epoch is stale", ErrFenced)
	// ErrPrecondition: the command is well formed but not legal in the
	// domain's current state (e.g. assign on an assigned domain, acquire of a
	// held lock).
	ErrPrecondition = errors.New("failed precondition")
	// ErrConflict: the command contradicts recorded state (e.g. a watermark at
	// a known lsn with another hash, or a watermark going backwards).
	ErrConflict = errors.New("conflict with recorded state")
)

// Result is the one typed value Apply returns for every entry (raft hands it
// back through ApplyFuture.Response; cluster.Node unwraps it in one place).
type Result struct {
	// Index is the log index of the entry.
	Index uint64
	// Err is nil when the command took effect. A denied promotion is not an
	// error: it is a recorded decision (Attempt.Decision.Allowed == false).
	Err error
	// Epoch and Holder of the domain after the entry.
	Epoch  uint64
	Holder string
	// Attempt is the record of a promotion attempt (new or, when Duplicate,
	// the one recorded earlier under the same request id).
	Attempt   *pb.AttemptRecord
	Duplicate bool
	// Release is the decision of a release transition (allowed or denied).
	Release *pb.ReleaseDecision
	// Watermarks holds one outcome per advance of an AdvanceWatermark batch,
	// in the batch's order.
	Watermarks []WatermarkResult
}

// WatermarkResult is the outcome of one advance in a batch.
type WatermarkResult struct {
	Domain string
	Err    error
}

func failed(index uint64, err error) *Result { return &Result{Index: index, Err: err} }
