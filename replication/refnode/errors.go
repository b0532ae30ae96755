package refnode

import (
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the ErrorInfo domain of refnode errors.
const ErrorDomain = "refnode.aerodb"

// Wire reasons (google.rpc.ErrorInfo.Reason) of refnode errors.
const (
	// ReasonNotPrimary: writes go to the primary; metadata "holder" and
	// "address" name it when known.
	ReasonNotPrimary = "NOT_PRIMARY"
	// ReasonFenced: the epoch moved or the lease was lost; the write was not
	// acknowledged.
	ReasonFenced = "FENCED"
	// ReasonDiverged: the node's history is not a prefix of the holder's;
	// it serves nothing until rebuilt.
	ReasonDiverged = "DIVERGED"
	// ReasonCorrupt: a shipped record failed its checksum, order or chain.
	ReasonCorrupt = "CORRUPT"
	// ReasonNotReplica: the node is not replicating (it is the primary, or
	// starting).
	ReasonNotReplica = "NOT_REPLICA"
	// ReasonSuperseded: a newer ship stream replaced this one.
	ReasonSuperseded = "SUPERSEDED"
	// ReasonUnavailable: the node cannot serve right now (starting,
	// stepping down).
	ReasonUnavailable = "UNAVAILABLE"
)

// Sentinels of the node.
var (
	// ErrDiverged: the node's WAL is not a prefix of the holder's history.
	ErrDiverged = errors.New("refnode: diverged from the domain's history")
	// ErrLostWatermark: the holder's WAL does not contain the committed
	// watermark (its data was lost); it refuses to act as primary.
	ErrLostWatermark = errors.New("refnode: holder does not contain the committed watermark")
)

// statusError builds a gRPC error with an ErrorInfo reason.
func statusError(code codes.Code, reason, msg string, meta map[string]string) error {
	st := status.New(code, msg)
	if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain, Metadata: meta}); err == nil {
		st = withInfo
	}
	return st.Err()
}

// ReasonOf returns the ErrorInfo reason of a refnode error ("" if none).
func ReasonOf(err error) string {
	info := InfoOf(err)
	if info == nil {
		return ""
	}
	return info.GetReason()
}

// InfoOf returns the ErrorInfo of a refnode error, or nil.
func InfoOf(err error) *errdetails.ErrorInfo {
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			return info
		}
	}
	return nil
}
