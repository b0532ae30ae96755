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

// reasonOf maps an internal error to its gRPC code and wire reason. The
// error → reason mapping lives here; the code is pb.ReasonCodes' (the one
// reason ↔ code table the client shares), except a call its caller canceled.
func reasonOf(err error) (codes.Code, string) {
	reason := errorReason(err)
	if reason == pb.ReasonInternal && errors.Is(err, context.Canceled) {
		return codes.Canceled, pb.ReasonOutcomeUnknown
	}
	return reasonCode(reason), reason
}

// reasonCode is the gRPC code of a reason, from pb.ReasonCodes.
func reasonCode(reason string) codes.Code {
	if c, ok := pb.ReasonCode(reason); ok {
		return codes.Code(c)
	}
	return codes.Internal
}

// errorReason maps an internal error to its wire reason.
func errorReason(err error) string {
	switch {
	case errors.Is(err, fsm.ErrCompacted):
		return pb.ReasonCompacted
	case errors.Is(err, fsm.ErrEpochStale):
		return pb.ReasonEpochStale
	case errors.Is(err, fsm.ErrFenced), errors.Is(err, promotion.ErrFenced):
		return pb.ReasonFenced
	case errors.Is(err, promotion.ErrLeaseExpired):
		return pb.ReasonLeaseExpired
	case errors.Is(err, promotion.ErrNoLease):
		return pb.ReasonNoLease
	case errors.Is(err, promotion.ErrKindNotAllowed):
		return pb.ReasonPermissionDenied
	case errors.Is(err, fsm.ErrNotFound):
		return pb.ReasonNotFound
	case errors.Is(err, fsm.ErrExists):
		return pb.ReasonAlreadyExists
	case errors.Is(err, fsm.ErrInvalid):
		return pb.ReasonInvalidArgument
	case errors.Is(err, fsm.ErrConflict):
		return pb.ReasonConflict
	case errors.Is(err, fsm.ErrPrecondition):
		return pb.ReasonFailedPrecondition
	case errors.Is(err, promotion.ErrGloballyDisabled):
		return pb.ReasonPromotionDisabled
	case errors.Is(err, promotion.ErrNotLeader), errors.Is(err, promotion.ErrNotReady):
		return pb.ReasonNotLeader
	case errors.Is(err, promotion.ErrIndeterminate), errors.Is(err, context.DeadlineExceeded):
		return pb.ReasonOutcomeUnknown
	}
	return pb.ReasonInternal
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
