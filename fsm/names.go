package fsm

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// MaxNameLen bounds domain names, member ids and request ids.
const MaxNameLen = 128

// Bounds on a lease TTL: below the minimum no client can renew in time over a
// real network; above the maximum a dead holder blocks promotion for too long.
const (
	MinLeaseTTLms = 100
	MaxLeaseTTLms = 3_600_000
	// MaxReportAgeMs bounds how old a candidate's report may be.
	MaxReportAgeMs = 3_600_000
)

// ValidateName checks a domain name, member id or request id: 1..128
// characters of [A-Za-z0-9._:-], starting with a letter or digit.
func ValidateName(kind, s string) error {
	if s == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalid, kind)
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("%w: %s is %d bytes, longer than %d", ErrInvalid, kind, len(s), MaxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if alnum || i > 0 && (c == '.' || c == '_' || c == ':' || c == '-') {
			continue
		}
		return fmt.Errorf("%w: %s %q: character %q at %d is not allowed (use letters, digits, '.', '_', ':', '-')", ErrInvalid, kind, s, c, i)
	}
	return nil
}

// ValidatePolicy returns every violation at once, naming the field and value.
func ValidatePolicy(p *pb.Policy) error {
	if p == nil {
		return fmt.Errorf("%w: policy is missing", ErrInvalid)
	}
	var errs []error
	switch p.Mode {
	case pb.PromotionMode_PROMOTION_MODE_MANUAL, pb.PromotionMode_PROMOTION_MODE_AUTOMATIC:
	default:
		errs = append(errs, fmt.Errorf("%w: policy.mode %v is not manual or automatic", ErrInvalid, p.Mode))
	}
	if p.LeaseTtlMs < MinLeaseTTLms || p.LeaseTtlMs > MaxLeaseTTLms {
		errs = append(errs, fmt.Errorf("%w: policy.lease_ttl_ms %d is outside [%d, %d]", ErrInvalid, p.LeaseTtlMs, MinLeaseTTLms, MaxLeaseTTLms))
	}
	// A zero freshness bound would accept any old report: fail closed.
	if p.ReportMaxAgeMs == 0 || p.ReportMaxAgeMs > MaxReportAgeMs {
		errs = append(errs, fmt.Errorf("%w: policy.report_max_age_ms %d is outside [1, %d]", ErrInvalid, p.ReportMaxAgeMs, MaxReportAgeMs))
	}
	switch p.Durability {
	case pb.Durability_DURABILITY_UNSPECIFIED, pb.Durability_DURABILITY_AUTHORITY_GATED:
	case pb.Durability_DURABILITY_REPLICA_QUORUM:
		// K = 0 would acknowledge on the primary's flush alone: no set of
		// replicas could then be shown to hold every acknowledged write.
		if p.MinSyncReplicas == 0 {
			errs = append(errs, fmt.Errorf("%w: policy.min_sync_replicas is 0; replica-quorum needs K >= 1", ErrInvalid))
		}
	default:
		errs = append(errs, fmt.Errorf("%w: policy.durability %v is not authority-gated or replica-quorum", ErrInvalid, p.Durability))
	}
	if p.WatermarkIntervalMs > MaxWatermarkIntervalMs {
		errs = append(errs, fmt.Errorf("%w: policy.watermark_interval_ms %d is above %d", ErrInvalid, p.WatermarkIntervalMs, MaxWatermarkIntervalMs))
	}
	if r := p.GetRelease(); r != nil {
		errs = append(errs, validateReleasePolicy(r))
	}
	errs = append(errs, validateWaiverMode(p))
	return errors.Join(errs...)
}

// MaxWaiverReason bounds the operator's recorded reason for permitting
// waivers on a domain (it is rendered into every waived explanation).
const MaxWaiverReason = 256

// validateWaiverMode: a permitted deviation needs its reason; a strict or
// legacy (unspecified) domain carries none.
func validateWaiverMode(p *pb.Policy) error {
	reason := p.GetWaiverReason()
	switch p.GetWaiverMode() {
	case pb.WaiverMode_WAIVER_MODE_UNSPECIFIED, pb.WaiverMode_WAIVER_MODE_STRICT:
		if reason != "" {
			return fmt.Errorf("%w: policy.waiver_reason is set but waivers are not permitted (waiver_mode %v)", ErrInvalid, p.GetWaiverMode())
		}
	case pb.WaiverMode_WAIVER_MODE_PERMITTED:
		switch {
		case strings.TrimSpace(reason) == "":
			return fmt.Errorf("%w: policy.waiver_mode PERMITTED needs a waiver_reason (the recorded deviation)", ErrInvalid)
		case len(reason) > MaxWaiverReason:
			return fmt.Errorf("%w: policy.waiver_reason is %d bytes, at most %d", ErrInvalid, len(reason), MaxWaiverReason)
		case !utf8.ValidString(reason) || strings.ContainsFunc(reason, unicode.IsControl):
			return fmt.Errorf("%w: policy.waiver_reason must be printable UTF-8", ErrInvalid)
		}
	default:
		return fmt.Errorf("%w: policy.waiver_mode %v is not strict or permitted", ErrInvalid, p.GetWaiverMode())
	}
	return nil
}

// MaxWatermarkIntervalMs bounds a replica-quorum holder's watermark
// interval: the watermark is still what promotions and monitoring read.
const MaxWatermarkIntervalMs = 60_000

// ReplicaQuorum reports whether a policy is in replica-quorum durability.
func ReplicaQuorum(p *pb.Policy) bool {
	return p.GetDurability() == pb.Durability_DURABILITY_REPLICA_QUORUM
}

func validKind(k pb.DomainKind) bool {
	switch k {
	case pb.DomainKind_DOMAIN_KIND_AERODB, pb.DomainKind_DOMAIN_KIND_LOCK, pb.DomainKind_DOMAIN_KIND_RELEASE:
		return true
	}
	return false
}

// Bounds of a release policy.
const (
	MaxTrustedKeys     = 32
	MaxChangeWindows   = 64
	MaxAllowedDigests  = 1024
	MaxRequiredMetrics = 64
)

// validateReleasePolicy bounds a release policy and checks every key and
// window, returning every violation at once.
func validateReleasePolicy(r *pb.ReleasePolicy) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: policy.release."+format, append([]any{ErrInvalid}, args...)...))
	}
	if r.GetEnvironment() != "" {
		if err := ValidateName("policy.release.environment", r.GetEnvironment()); err != nil {
			errs = append(errs, err)
		}
	}
	if len(r.GetKeys()) > MaxTrustedKeys || len(r.GetWindows()) > MaxChangeWindows ||
		len(r.GetAllowedDigests()) > MaxAllowedDigests || len(r.GetRequiredMetrics()) > MaxRequiredMetrics {
		bad("keys/windows/allowed_digests/required_metrics: %d/%d/%d/%d, more than %d/%d/%d/%d", len(r.GetKeys()), len(r.GetWindows()),
			len(r.GetAllowedDigests()), len(r.GetRequiredMetrics()), MaxTrustedKeys, MaxChangeWindows, MaxAllowedDigests, MaxRequiredMetrics)
		return errors.Join(errs...)
	}
	for i, k := range r.GetKeys() {
		if ValidateName("key id", k.GetKeyId()) != nil || ValidateName("evidence type", k.GetEvidenceType()) != nil || len(k.GetEd25519PublicKey()) != 32 {
			bad("keys[%d]: want a key id, an evidence type and a 32-byte Ed25519 public key", i)
		}
	}
	for i, w := range r.GetWindows() {
		switch {
		case ValidateName("window name", w.GetName()) != nil:
			bad("windows[%d]: name is not a valid name", i)
		case w.GetKind() != pb.WindowKind_WINDOW_KIND_ALLOW && w.GetKind() != pb.WindowKind_WINDOW_KIND_DENY:
			bad("windows[%d] %s: kind must be allow or deny", i, w.GetName())
		case w.GetWeekdays() == 0 && w.GetStartUnixMs() >= w.GetEndUnixMs():
			bad("windows[%d] %s: a one-off window needs start < end", i, w.GetName())
		case w.GetWeekdays() != 0 && (w.GetWeekdays() >= 1<<7 || w.GetStartMinute() >= 24*60 || w.GetDurationMinutes() == 0 || w.GetDurationMinutes() > 7*24*60):
			bad("windows[%d] %s: a weekly window needs weekdays in 1..127, start_minute < 1440, duration 1..10080 minutes", i, w.GetName())
		}
	}
	for i, dg := range r.GetAllowedDigests() {
		if validateDigest(dg) != nil {
			bad("allowed_digests[%d]: not sha256:<64 hex>", i)
		}
	}
	for i, m := range r.GetRequiredMetrics() {
		if ValidateName("metric", m) != nil {
			bad("required_metrics[%d]: not a valid name", i)
		}
	}
	return errors.Join(errs...)
}
