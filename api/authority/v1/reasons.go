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
)

// ErrorInfo metadata keys.
const (
	// MetaLeaderID / MetaLeaderAddr accompany NOT_LEADER: where to go.
	MetaLeaderID   = "leader_id"
	MetaLeaderAddr = "leader_grpc_address"
)
