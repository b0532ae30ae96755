package transport

import (
	"errors"
	"fmt"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/validator"
)

// Bounds on free-form request fields. Anything larger is refused before it
// can reach the log.
const (
	MaxReasonBytes  = 1024
	MaxAddressBytes = 256
	MaxDetailBytes  = 4096
	// MaxHashBytes bounds a WAL chain hash (SHA-256 is 32 bytes).
	MaxHashBytes = 64
)

// check collects every problem of one request (errors.Join), each naming
// the field and the value, so a caller fixes them all at once.
type check struct{ errs []error }

func (c *check) name(field, v string) {
	if err := fsm.ValidateName(field, v); err != nil {
		c.errs = append(c.errs, err)
	}
}

func (c *check) maxLen(field, v string, n int) {
	if len(v) > n {
		c.errs = append(c.errs, fmt.Errorf("%w: %s is %d bytes, more than %d", fsm.ErrInvalid, field, len(v), n))
	}
}

func (c *check) epoch(field string, v uint64) {
	if v == 0 {
		c.errs = append(c.errs, fmt.Errorf("%w: %s is 0; epochs start at 1", fsm.ErrInvalid, field))
	}
}

func (c *check) hash(field string, h []byte, lsn uint64) {
	switch {
	case len(h) > MaxHashBytes:
		c.errs = append(c.errs, fmt.Errorf("%w: %s is %d bytes, more than %d", fsm.ErrInvalid, field, len(h), MaxHashBytes))
	case lsn > 0 && len(h) == 0:
		c.errs = append(c.errs, fmt.Errorf("%w: %s is empty at lsn %d; a position needs its chain hash", fsm.ErrInvalid, field, lsn))
	}
}

func (c *check) policy(p *pb.Policy) {
	if p == nil {
		return // defaults
	}
	if p.LeaseTtlMs == 0 {
		c.errs = append(c.errs, fmt.Errorf("%w: policy.lease_ttl_ms is 0; give a TTL in [%d, %d] ms or omit the policy",
			fsm.ErrInvalid, fsm.MinLeaseTTLms, fsm.MaxLeaseTTLms))
	}
}

func (c *check) err() error {
	if len(c.errs) == 0 {
		return nil
	}
	return toStatus(errors.Join(c.errs...), nil)
}

func validateCreate(r *pb.CreateDomainRequest) error {
	var c check
	c.name("domain", r.GetName())
	switch r.GetKind() {
	case pb.DomainKind_DOMAIN_KIND_AERODB, pb.DomainKind_DOMAIN_KIND_LOCK, pb.DomainKind_DOMAIN_KIND_RELEASE:
	default:
		c.errs = append(c.errs, fmt.Errorf("%w: domain kind %v: want aerodb, lock or release", fsm.ErrInvalid, r.GetKind()))
	}
	c.policy(r.GetPolicy())
	return c.err()
}

func validateUpdate(r *pb.UpdatePolicyRequest) error {
	var c check
	c.name("domain", r.GetName())
	if r.GetPolicy() == nil {
		c.errs = append(c.errs, fmt.Errorf("%w: policy is missing", fsm.ErrInvalid))
	}
	c.policy(r.GetPolicy())
	return c.err()
}

func validateRegister(r *pb.RegisterMemberRequest) error {
	var c check
	c.name("domain", r.GetDomain())
	c.name("member id", r.GetMemberId())
	c.maxLen("address", r.GetAddress(), MaxAddressBytes)
	return c.err()
}

func validateHolder(domain, holder string) error {
	var c check
	c.name("domain", domain)
	c.name("holder", holder)
	return c.err()
}

func validateFenced(domain, holder string, epoch uint64) error {
	var c check
	c.name("domain", domain)
	c.name("holder", holder)
	c.epoch("epoch", epoch)
	return c.err()
}

func validateAdvance(r *pb.AdvanceRequest) error {
	var c check
	if n := len(r.GetAdvances()); n == 0 || n > fsm.MaxWatermarkBatch {
		c.errs = append(c.errs, fmt.Errorf("%w: %d advances in one call (want 1..%d)", fsm.ErrInvalid, n, fsm.MaxWatermarkBatch))
	}
	for i, a := range r.GetAdvances() {
		c.name(fmt.Sprintf("advances[%d].domain", i), a.GetDomain())
		c.name(fmt.Sprintf("advances[%d].holder", i), a.GetHolder())
		c.epoch(fmt.Sprintf("advances[%d].epoch", i), a.GetEpoch())
		c.hash(fmt.Sprintf("advances[%d].hash", i), a.GetHash(), a.GetLsn())
	}
	return c.err()
}

func validateReport(r *pb.ProgressReportRequest) error {
	var c check
	c.name("domain", r.GetDomain())
	rep := r.GetReport()
	if rep == nil {
		c.errs = append(c.errs, fmt.Errorf("%w: report is missing", fsm.ErrInvalid))
		return c.err()
	}
	c.name("report.member_id", rep.GetMemberId())
	c.hash("report.flushed_hash", rep.GetFlushedHash(), rep.GetFlushedLsn())
	if len(rep.GetHashAtWatermark()) > MaxHashBytes {
		c.hash("report.hash_at_watermark", rep.GetHashAtWatermark(), 0)
	}
	return c.err()
}

func validatePromote(r *pb.PromoteRequest) error {
	var c check
	q := r.GetRequest()
	if q == nil {
		c.errs = append(c.errs, fmt.Errorf("%w: request is missing", fsm.ErrInvalid))
		return c.err()
	}
	c.name("request_id", q.GetRequestId())
	c.name("domain", q.GetDomain())
	c.name("candidate", q.GetCandidate())
	c.maxLen("reason", q.GetReason(), MaxReasonBytes)
	known := validator.KnownWaivers()
	for _, w := range q.GetWaivers() {
		ok := false
		for _, k := range known {
			ok = ok || w == k
		}
		if !ok {
			c.errs = append(c.errs, fmt.Errorf("%w: unknown waiver %q (known: %v)", fsm.ErrInvalid, w, known))
		}
	}
	if q.ExpectedEpoch != nil && q.GetExpectedEpoch() == 0 {
		c.epoch("expected_epoch", 0)
	}
	return c.err()
}
