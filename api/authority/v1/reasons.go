package authorityv1

// ErrorDomain is the google.rpc.ErrorInfo domain of every error the
// authority.v1 API returns.
const ErrorDomain = "authority.aerodb.v1"

// Machine-readable error reasons (google.rpc.ErrorInfo.reason). Clients
// branch on these, never on messages.
const (
	ReasonNotLeader          = "NOT_LEADER"
	ReasonOutcomeUnknown     = "OUTCOME_UNKNOWN"
	ReasonFenced             = "FENCED"
	ReasonEpochStale         = "EPOCH_STALE"
	ReasonLeaseExpired       = "LEASE_EXPIRED"
	ReasonNoLease            = "NO_LEASE"
	ReasonNotFound           = "NOT_FOUND"
	ReasonAlreadyExists      = "ALREADY_EXISTS"
	ReasonInvalidArgument    = "INVALID_ARGUMENT"
	ReasonFailedPrecondition = "FAILED_PRECONDITION"
	ReasonConflict           = "CONFLICT"
	ReasonPromotionDisabled  = "PROMOTION_DISABLED"
	ReasonCompacted          = "COMPACTED"
	ReasonInternal           = "INTERNAL"
	// ReasonPermissionDenied: the caller's identity may not make this call
	// (gRPC PermissionDenied); nothing changed.
	ReasonPermissionDenied = "PERMISSION_DENIED"
	// ReasonRateLimited: a rate or stream limit of the server refused the
	// call (gRPC ResourceExhausted); nothing was proposed.
	ReasonRateLimited = "RATE_LIMITED"
)

// gRPC status code numbers (google.golang.org/grpc/codes), spelled here as
// numbers so this messages package links no grpc. reasons_test.go checks
// them against codes.Code.
const (
	CodeCanceled           uint32 = 1
	CodeInvalidArgument    uint32 = 3
	CodeNotFound           uint32 = 5
	CodeAlreadyExists      uint32 = 6
	CodePermissionDenied   uint32 = 7
	CodeResourceExhausted  uint32 = 8
	CodeFailedPrecondition uint32 = 9
	CodeOutOfRange         uint32 = 11
	CodeInternal           uint32 = 13
	CodeUnavailable        uint32 = 14
)

// ReasonCodes is THE reason ↔ gRPC code table: the code the server sends
// with each reason (transport) and the code the client reports for a reason
// carried in a message body (client). One code per reason; the only
// exception is a call the caller itself canceled, which the server answers
// with Canceled and OUTCOME_UNKNOWN.
var ReasonCodes = map[string]uint32{
	ReasonNotLeader:          CodeUnavailable,
	ReasonOutcomeUnknown:     CodeUnavailable,
	ReasonFenced:             CodeFailedPrecondition,
	ReasonEpochStale:         CodeFailedPrecondition,
	ReasonLeaseExpired:       CodeFailedPrecondition,
	ReasonNoLease:            CodeNotFound,
	ReasonNotFound:           CodeNotFound,
	ReasonAlreadyExists:      CodeAlreadyExists,
	ReasonInvalidArgument:    CodeInvalidArgument,
	ReasonFailedPrecondition: CodeFailedPrecondition,
	ReasonConflict:           CodeFailedPrecondition,
	ReasonPromotionDisabled:  CodeFailedPrecondition,
	ReasonCompacted:          CodeOutOfRange,
	ReasonInternal:           CodeInternal,
	ReasonPermissionDenied:   CodePermissionDenied,
	ReasonRateLimited:        CodeResourceExhausted,
}

// Reasons lists every reason in a fixed order (the keys of ReasonCodes).
var Reasons = []string{
	ReasonNotLeader, ReasonOutcomeUnknown, ReasonFenced, ReasonEpochStale, ReasonLeaseExpired,
	ReasonNoLease, ReasonNotFound, ReasonAlreadyExists, ReasonInvalidArgument, ReasonFailedPrecondition,
	ReasonConflict, ReasonPromotionDisabled, ReasonCompacted, ReasonInternal, ReasonPermissionDenied,
	ReasonRateLimited,
}

// ReasonCode returns the gRPC code number of reason; ok is false for a
// reason this API does not define.
func ReasonCode(reason string) (code uint32, ok bool) {
	code, ok = ReasonCodes[reason]
	return code, ok
}

// ErrorInfo metadata keys.
const (
	// MetaLeaderID / MetaLeaderAddr accompany NOT_LEADER: where to go.
	MetaLeaderID   = "leader_id"
	MetaLeaderAddr = "leader_grpc_address"
)
