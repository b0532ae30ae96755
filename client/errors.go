package client

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinels for the conditions callers act on. Errors returned by the client
// wrap one of them (branch with errors.Is, never on messages); a server error
// is an *Error that also keeps the server's message and gRPC code.
var (
	// ErrNotLeader: the server is not the (ready) leader; nothing was
	// proposed. The client retries these itself; callers see it only when
	// their context ended while no leader answered.
	ErrNotLeader = errors.New("authority: not the leader")
	// ErrOutcomeUnknown: a write may or may not have committed (the
	// connection broke or the deadline passed after it was sent). Each
	// writing method documents how to resolve it.
	ErrOutcomeUnknown = errors.New("authority: outcome unknown: the write may or may not have committed")
	// ErrFenced: the caller's (holder, epoch) is no longer the domain's
	// authority (AU-12). Stop acting as the holder.
	ErrFenced = errors.New("authority: fenced: stale epoch or holder")
	// ErrEpochStale: an expected epoch (compare-and-set) did not match. It
	// is a kind of fencing: errors.Is(ErrEpochStale, ErrFenced) is true.
	ErrEpochStale = fmt.Errorf("%w: expected epoch is stale", ErrFenced)
	// ErrLeaseExpired: the lease expired on the leader; it is never renewed
	// again, the holder must acquire again through the log.
	ErrLeaseExpired = errors.New("authority: lease expired on the leader")
	// ErrNoLease: the leader has no lease for the domain.
	ErrNoLease = errors.New("authority: no lease for this domain")
	// ErrNotFound: the domain, member or attempt does not exist.
	ErrNotFound = errors.New("authority: not found")
	// ErrAlreadyExists: the domain already exists.
	ErrAlreadyExists = errors.New("authority: already exists")
	// ErrInvalidArgument: the request is malformed; nothing changed.
	ErrInvalidArgument = errors.New("authority: invalid argument")
	// ErrFailedPrecondition: the domain's state does not allow the request.
	ErrFailedPrecondition = errors.New("authority: failed precondition")
	// ErrConflict: the request contradicts recorded state (e.g. a watermark
	// below the recorded one, or another hash at a recorded lsn).
	ErrConflict = errors.New("authority: conflict with recorded state")
	// ErrPromotionDisabled: promotion is disabled for the domain or the
	// server (AU-14).
	ErrPromotionDisabled = errors.New("authority: promotion disabled")
	// ErrCompacted: a watch asked for events the server no longer has.
	ErrCompacted = errors.New("authority: events compacted")
	// ErrLeaseLost: the lease's local deadline (send time of the last
	// successful renewal + TTL − margin) passed without a newer successful
	// renewal. The holder must stop acting; the service may still count it
	// as the holder for up to the margin.
	ErrLeaseLost = errors.New("authority: lease lost: local deadline passed without a successful renewal")
	// ErrReleased: the lease ended because its holder released it.
	ErrReleased = errors.New("authority: lease released")
	// ErrPermissionDenied: the client's certificate identity may not make
	// this call (authz table); nothing changed. Final: never retried.
	ErrPermissionDenied = errors.New("authority: permission denied")
	// ErrRateLimited: a rate or stream limit of the server refused the
	// call (RESOURCE_EXHAUSTED with reason RATE_LIMITED); nothing was
	// proposed. The client retries it itself after the server's delay, so
	// callers see it only when that delay would outlast their deadline.
	ErrRateLimited = errors.New("authority: rate limited")
	// ErrInternal: the server failed in a way it did not classify.
	ErrInternal = errors.New("authority: internal server error")
	// ErrClosed: the Client (or the AckGate, Watcher, ProgressReporter) was
	// closed.
	ErrClosed = errors.New("authority: closed")
)

// reasonSentinels maps each wire reason to its sentinel: the one place the
// client interprets reasons.
var reasonSentinels = map[string]error{
	pb.ReasonNotLeader:          ErrNotLeader,
	pb.ReasonOutcomeUnknown:     ErrOutcomeUnknown,
	pb.ReasonFenced:             ErrFenced,
	pb.ReasonEpochStale:         ErrEpochStale,
	pb.ReasonLeaseExpired:       ErrLeaseExpired,
	pb.ReasonNoLease:            ErrNoLease,
	pb.ReasonNotFound:           ErrNotFound,
	pb.ReasonAlreadyExists:      ErrAlreadyExists,
	pb.ReasonInvalidArgument:    ErrInvalidArgument,
	pb.ReasonFailedPrecondition: ErrFailedPrecondition,
	pb.ReasonConflict:           ErrConflict,
	pb.ReasonPromotionDisabled:  ErrPromotionDisabled,
	pb.ReasonCompacted:          ErrCompacted,
	pb.ReasonInternal:           ErrInternal,
	pb.ReasonPermissionDenied:   ErrPermissionDenied,
	reasonRateLimited:           ErrRateLimited,
}

// reasonRateLimited is the reason of a rate or stream limit's refusal.
const reasonRateLimited = pb.ReasonRateLimited

// reasonCode gives the gRPC code the server uses for a reason, for errors
// that arrive in a message body (keep-alive, per-advance and progress
// results) rather than as a status: pb.ReasonCodes, the table transport
// uses too.
func reasonCode(reason string) codes.Code {
	if c, ok := pb.ReasonCode(reason); ok {
		return codes.Code(c)
	}
	return codes.Unknown
}

// Error is an error reported by an authority server: its machine-readable
// reason, gRPC code and message. errors.Is(err, ErrFenced) and friends work
// through Unwrap; status.FromError(err) recovers the gRPC status.
type Error struct {
	// Reason is the google.rpc.ErrorInfo reason (one of pb.Reason*).
	Reason string
	// Code is the gRPC status code.
	Code codes.Code
	// Message is the server's message.
	Message string
	// Metadata is the ErrorInfo metadata (e.g. the leader hint of
	// NOT_LEADER); nil when there is none.
	Metadata map[string]string

	sentinel error
	st       *status.Status
}

// Error returns the server's message.
func (e *Error) Error() string { return e.Message }

// Unwrap returns the sentinel of the reason (nil for an unknown reason).
func (e *Error) Unwrap() error { return e.sentinel }

// GRPCStatus returns the gRPC status the error came from.
func (e *Error) GRPCStatus() *status.Status {
	if e.st != nil {
		return e.st
	}
	return status.New(e.Code, e.Message)
}

// reasonError builds an *Error for a reason carried in a message body.
func reasonError(reason, message string) error {
	if reason == "" {
		return nil
	}
	if message == "" {
		message = reason
	}
	return &Error{Reason: reason, Code: reasonCode(reason), Message: message, sentinel: reasonSentinels[reason]}
}

// errorInfo returns the authority ErrorInfo of a gRPC status error, if any.
func errorInfo(err error) (*status.Status, *errdetails.ErrorInfo) {
	st, ok := status.FromError(err)
	if !ok || st == nil {
		return nil, nil
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == pb.ErrorDomain {
			return st, info
		}
	}
	return st, nil
}

// mapError turns a gRPC error into an *Error when it carries an authority
// ErrorInfo; other errors (transport failures, context errors) are returned
// unchanged.
func mapError(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	st, info := errorInfo(err)
	if info == nil {
		return err
	}
	return &Error{Reason: info.GetReason(), Code: st.Code(), Message: st.Message(), Metadata: info.GetMetadata(),
		sentinel: reasonSentinels[info.GetReason()], st: st}
}

// errClass says what the retry loop may do after an error.
type errClass int

const (
	// classFinal: a definite answer from the service; return it.
	classFinal errClass = iota
	// classNotLeader: nothing was proposed; go to the leader and retry.
	classNotLeader
	// classNotSent: the call never reached a server (no connection could
	// be made); like classNotLeader, nothing was proposed: try another.
	classNotSent
	// classTransient: the attempt failed in transit (connection refused or
	// broken, attempt deadline, OUTCOME_UNKNOWN): a write may or may not
	// have been applied.
	classTransient
	// classRetryAfter: RESOURCE_EXHAUSTED with a retry delay (a rate
	// limit): nothing was applied; retry after the delay.
	classRetryAfter
)

// retryDelay is the google.rpc.RetryInfo delay of a status error, or 0.
func retryDelay(err error) time.Duration {
	st, ok := status.FromError(err)
	if !ok || st == nil {
		return 0
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return max(ri.GetRetryDelay().AsDuration(), 0)
		}
	}
	return 0
}

// classify is the package classify, without the hint when the client is
// pinned to its endpoints (a hinted address may be unreachable).
func (c *Client) classify(err error) (errClass, string) {
	class, hint := classify(err)
	if c.cfg.PinEndpoints {
		hint = ""
	}
	return class, hint
}

// classify sorts an error for the retry loop and returns the NOT_LEADER
// hint (the leader's gRPC address) when there is one.
func classify(err error) (errClass, string) {
	var e *Error
	if errors.As(err, &e) && e.st == nil { // a reason from a message body
		switch e.Reason {
		case pb.ReasonNotLeader:
			return classNotLeader, e.Metadata[pb.MetaLeaderAddr]
		case pb.ReasonOutcomeUnknown:
			return classTransient, ""
		}
		return classFinal, ""
	}
	st, info := errorInfo(err)
	if st != nil && st.Code() == codes.ResourceExhausted {
		// A rate limit says when to come back; anything else exhausted
		// (a message over a size limit) fails the same way again: final.
		if retryDelay(err) > 0 {
			return classRetryAfter, ""
		}
		return classFinal, ""
	}
	if info != nil {
		switch info.GetReason() {
		case pb.ReasonNotLeader:
			return classNotLeader, info.GetMetadata()[pb.MetaLeaderAddr]
		case pb.ReasonOutcomeUnknown:
			return classTransient, ""
		}
		return classFinal, ""
	}
	if st == nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return classTransient, ""
		}
		return classFinal, ""
	}
	if st.Code() == codes.Unavailable && neverConnected(st.Message()) {
		return classNotSent, ""
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Aborted:
		return classTransient, ""
	}
	return classFinal, ""
}

// neverConnected reports a call that gRPC failed before it reached any
// server: the channel had no connection and dialing it failed (grpc-go
// fails such a call in its picker with the dial error, "transport: Error
// while dialing …", e.g. connection refused by a server that is down). No
// byte of the request left this process, so even a write that must not be
// re-sent may go to another server.
func neverConnected(msg string) bool {
	return strings.Contains(msg, "transport: Error while dialing")
}

// lostReason reports whether a reason ends a lease for good.
func lostReason(err error) bool {
	return errors.Is(err, ErrFenced) || errors.Is(err, ErrLeaseExpired) || errors.Is(err, ErrNoLease) ||
		errors.Is(err, ErrNotFound) || errors.Is(err, ErrPermissionDenied)
}

// DeniedError is returned (with the response) when a promotion attempt is
// denied. The denial is a committed, replicated record (unless it was a dry
// run); Record is its explanation. Branch with errors.As.
//
// It unwraps to ErrEpochStale for an EpochStale denial and to
// ErrPromotionDisabled for a PromotionDisabled denial, so those can also be
// matched with errors.Is.
type DeniedError struct {
	// Record is the attempt record with its decision and every check.
	Record *pb.AttemptRecord
}

// Denial reasons (validator names) that have a sentinel.
const (
	denialEpochStale        = "EpochStale"
	denialPromotionDisabled = "PromotionDisabled"
)

// Reason is the first failed check's denial reason (e.g. "PrimaryStillActive").
func (e *DeniedError) Reason() string { return e.Record.GetDecision().GetDenialReason() }

// Invariant is the first failed check's invariant id (e.g. "[P6-A1]").
func (e *DeniedError) Invariant() string { return e.Record.GetDecision().GetFailedInvariant() }

// Error returns "promotion denied: <reason> (<invariant>)".
func (e *DeniedError) Error() string {
	return fmt.Sprintf("promotion denied: %s (%s)", e.Reason(), e.Invariant())
}

// Unwrap maps the denial reasons that have a sentinel.
func (e *DeniedError) Unwrap() error {
	switch e.Reason() {
	case denialEpochStale:
		return ErrEpochStale
	case denialPromotionDisabled:
		return ErrPromotionDisabled
	}
	return nil
}

// giveUp builds the error returned when the caller's context ended during
// retries: it wraps the context error and the last attempt's error, and
// ErrOutcomeUnknown when a write may have been applied.
func giveUp(ctx context.Context, unknown bool, last error) error {
	cause := ctx.Err()
	if cause == nil {
		cause = context.Canceled
	}
	switch {
	case unknown && last != nil:
		return fmt.Errorf("%w: %w (last attempt: %w)", ErrOutcomeUnknown, cause, last)
	case unknown:
		return fmt.Errorf("%w: %w", ErrOutcomeUnknown, cause)
	case last != nil:
		return fmt.Errorf("%w (last attempt: %w)", cause, last)
	}
	return cause
}
