package transport

import (
	"context"
	"errors"
	"fmt"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/promotion"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// reasonOf maps an internal error to its gRPC code and wire reason. This is
// the one place the mapping lives; the client maps back by reason.
func reasonOf(err error) (codes.Code, string) {
	switch {
	case errors.Is(err, fsm.ErrCompacted):
		return codes.OutOfRange, pb.ReasonCompacted
	case errors.Is(err, fsm.ErrEpochStale):
		return codes.FailedPrecondition, pb.ReasonEpochStale
	case errors.Is(err, fsm.ErrFenced), errors.Is(err, promotion.ErrFenced):
		return codes.FailedPrecondition, pb.ReasonFenced
	case errors.Is(err, promotion.ErrLeaseExpired):
		return codes.FailedPrecondition, pb.ReasonLeaseExpired
	case errors.Is(err, promotion.ErrNoLease):
		return codes.NotFound, pb.ReasonNoLease
	case errors.Is(err, fsm.ErrNotFound):
		return codes.NotFound, pb.ReasonNotFound
	case errors.Is(err, fsm.ErrExists):
		return codes.AlreadyExists, pb.ReasonAlreadyExists
	case errors.Is(err, fsm.ErrInvalid):
		return codes.InvalidArgument, pb.ReasonInvalidArgument
	case errors.Is(err, fsm.ErrConflict):
		return codes.FailedPrecondition, pb.ReasonConflict
	case errors.Is(err, fsm.ErrPrecondition):
		return codes.FailedPrecondition, pb.ReasonFailedPrecondition
	case errors.Is(err, promotion.ErrGloballyDisabled):
		return codes.FailedPrecondition, pb.ReasonPromotionDisabled
	case errors.Is(err, promotion.ErrNotLeader), errors.Is(err, promotion.ErrNotReady):
		return codes.Unavailable, pb.ReasonNotLeader
	case errors.Is(err, promotion.ErrIndeterminate), errors.Is(err, context.DeadlineExceeded):
		return codes.Unavailable, pb.ReasonOutcomeUnknown
	case errors.Is(err, context.Canceled):
		return codes.Canceled, pb.ReasonOutcomeUnknown
	}
	return codes.Internal, pb.ReasonInternal
}

// toStatus converts an error to a gRPC status carrying an ErrorInfo.
// meta adds ErrorInfo metadata (e.g. the leader's address for NOT_LEADER).
func toStatus(err error, meta map[string]string) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err // already a status (from validation or a forwarded call)
	}
	code, reason := reasonOf(err)
	st := status.New(code, err.Error())
	if withInfo, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: pb.ErrorDomain, Metadata: meta}); derr == nil {
		st = withInfo
	}
	return st.Err()
}

func invalid(format string, a ...any) error {
	return toStatus(errorf(fsm.ErrInvalid, format, a...), nil)
}

func errorf(sentinel error, format string, a ...any) error {
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, a...))
}

// reasonFromError gives the wire reason of an error that may already be a
// gRPC status (from validation) or one of ours.
func reasonFromError(err error) string {
	if st, ok := status.FromError(err); ok {
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok {
				return info.Reason
			}
		}
	}
	_, reason := reasonOf(err)
	return reason
}
