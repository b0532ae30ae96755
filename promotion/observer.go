package promotion

import (
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// Observer receives what the leader-side service decides, after it decided.
// Implementations must not block for long and cannot change anything: the
// service ignores them (observability is passive, AU-11). Metrics and logs
// implement it; the zero Config uses a no-op.
type Observer interface {
	// Decided: one attempt decided (committed, or a dry run), with the time
	// the leader's validation took.
	Decided(rec *pb.AttemptRecord, committed bool, validation time.Duration)
	// Renewed: one lease renewal and its result ("ok", or a wire reason
	// such as FENCED or LEASE_EXPIRED).
	Renewed(result string)
	// LeaseExpired: the leader found a lease expired (once per lease).
	LeaseExpired(domain string)
	// Fenced: a request from a stale (holder, epoch) refused on the leader;
	// kind is "renewal", "watermark", "release", "complete" or "abort".
	Fenced(kind string)
	// WatermarkBatch: one AdvanceWatermark entry proposed with n advances.
	WatermarkBatch(n int)
	// Requested: a promotion request entered the lifecycle (its intent is
	// in the log).
	Requested(domain string)
	// CrashAborted: this new leader recorded the abort of an attempt that
	// an earlier leader received but never decided.
	CrashAborted(domain, requestID string)
	// EpochChanged: a committed grant moved a domain to a new epoch.
	EpochChanged(domain string)
	// Refused: a promotion request refused before the lifecycle, by reason
	// (one of RefusalReasons) and whether it was a dry run.
	Refused(reason string, dryRun bool)
	// DryRun: one dry run evaluated (committing nothing), its outcome and
	// denial reason ("" when allowed).
	DryRun(allowed bool, reason string)
	// PolicyAttempt: one evaluation of the automatic policy on an expired
	// lease, by result (allowed, denied, skipped, error) and reason (a
	// denial reason, a skip reason or an error class; "" when allowed).
	PolicyAttempt(result, reason string)
}

type noopObserver struct{}

func (noopObserver) Decided(*pb.AttemptRecord, bool, time.Duration) {}
func (noopObserver) Renewed(string)                                 {}
func (noopObserver) LeaseExpired(string)                            {}
func (noopObserver) Fenced(string)                                  {}
func (noopObserver) WatermarkBatch(int)                             {}
func (noopObserver) Requested(string)                               {}
func (noopObserver) CrashAborted(string, string)                    {}
func (noopObserver) EpochChanged(string)                            {}
func (noopObserver) PolicyAttempt(string, string)                   {}
func (noopObserver) Refused(string, bool)                           {}
func (noopObserver) DryRun(bool, string)                            {}
