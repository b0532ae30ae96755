package transport

import (
	"errors"
	"fmt"
	"strings"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/validator"
)

// Bounds on free-form request fields. Anything larger is refused before it
// can reach the log (see also limits.go).
const (
	MaxReasonBytes  = 1024
	MaxAddressBytes = 256
	MaxDetailBytes  = 4096
	// MaxHashBytes bounds a WAL chain hash (SHA-256 is 32 bytes).
	MaxHashBytes = 64
)

// check collects every problem of one request (errors.Join), each naming
// the field and the limit, so a caller fixes them all at once. Values are
// quoted clipped (at most MaxQuotedBytes of input each), and at most
// maxReportedProblems problems are listed.
type check struct{ errs []error }

func (c *check) name(field, v string) {
	if len(v) > MaxNameBytes {
		// Not passed on: fsm.ValidateName would scan all of it.
		c.add("%s is %d bytes, longer than %d", field, len(v), MaxNameBytes)
		return
	}
	if err := fsm.ValidateName(field, v); err != nil {
		c.errs = append(c.errs, err)
	}
}

// optName checks a name that may be empty.
func (c *check) optName(field, v string) {
	if v != "" {
		c.name(field, v)
	}
}

func (c *check) maxLen(field, v string, n int) {
	if len(v) > n {
		c.add("%s is %d bytes, more than %d", field, len(v), n)
	}
}

func (c *check) epoch(field string, v uint64) {
	if v == 0 {
		c.add("%s is 0; epochs start at 1", field)
	}
}

func (c *check) hash(field string, h []byte, lsn uint64) {
	switch {
	case len(h) > MaxHashBytes:
		c.add("%s is %d bytes, more than %d", field, len(h), MaxHashBytes)
	case lsn > 0 && len(h) == 0:
		c.add("%s is empty at lsn %d; a position needs its chain hash", field, lsn)
	}
}

func (c *check) policy(p *pb.Policy) {
	if p == nil {
		return // defaults
	}
	c.enum("policy.mode", int32(p.GetMode()), promotionMode)
	c.enum("policy.durability", int32(p.GetDurability()), durabilities)
	if iv := p.GetWatermarkIntervalMs(); iv > fsm.MaxWatermarkIntervalMs {
		c.add("policy.watermark_interval_ms %d is above %d", iv, fsm.MaxWatermarkIntervalMs)
	}
	switch ttl := p.GetLeaseTtlMs(); {
	case ttl == 0:
		c.add("policy.lease_ttl_ms is 0; give a TTL in [%d, %d] ms or omit the policy", fsm.MinLeaseTTLms, fsm.MaxLeaseTTLms)
	case ttl < fsm.MinLeaseTTLms || ttl > fsm.MaxLeaseTTLms:
		c.add("policy.lease_ttl_ms %d is outside [%d, %d]", ttl, fsm.MinLeaseTTLms, fsm.MaxLeaseTTLms)
	}
	if a := p.GetReportMaxAgeMs(); a > fsm.MaxReportAgeMs {
		c.add("policy.report_max_age_ms %d is outside [1, %d] (0: the default)", a, fsm.MaxReportAgeMs)
	}
	if n := p.GetMinSyncReplicas(); n > MaxMembersPerDomain {
		c.add("policy.min_sync_replicas %d is more than the members per domain limit of %d", n, MaxMembersPerDomain)
	}
}

func (c *check) err() error {
	if len(c.errs) == 0 {
		return nil
	}
	errs := c.errs
	if len(errs) > maxReportedProblems {
		more := len(errs) - maxReportedProblems
		errs = append(errs[:maxReportedProblems:maxReportedProblems], fmt.Errorf("and %d more problems", more))
	}
	return toStatus(errors.Join(errs...), nil)
}

func validateCreate(r *pb.CreateDomainRequest) error {
	var c check
	c.name("domain", r.GetName())
	switch r.GetKind() {
	case pb.DomainKind_DOMAIN_KIND_AERODB, pb.DomainKind_DOMAIN_KIND_LOCK, pb.DomainKind_DOMAIN_KIND_RELEASE:
	default:
		c.add("domain kind %v: want aerodb, lock or release", r.GetKind())
	}
	c.policy(r.GetPolicy())
	return c.err()
}

func validateUpdate(r *pb.UpdatePolicyRequest) error {
	var c check
	c.name("domain", r.GetName())
	if r.GetPolicy() == nil {
		c.add("policy is missing")
	}
	c.policy(r.GetPolicy())
	return c.err()
}

func validateRegister(r *pb.RegisterMemberRequest) error {
	var c check
	c.name("domain", r.GetDomain())
	c.name("member id", r.GetMemberId())
	c.maxLen("address", r.GetAddress(), MaxAddressBytes)
	c.enum("state", int32(r.GetState()), memberStates)
	return c.err()
}

// memberLimit refuses a new member of a domain that already has
// MaxMembersPerDomain members, judged on this node's applied state (the
// leader's when it serves the call). Updating an existing member is always
// allowed.
func memberLimit(f *fsm.FSM, r *pb.RegisterMemberRequest) error {
	d, ok := f.Domain(r.GetDomain())
	if !ok {
		return nil // NOT_FOUND comes from the service
	}
	for _, m := range d.GetMembers() {
		if m.GetId() == r.GetMemberId() {
			return nil
		}
	}
	if n := len(d.GetMembers()); n >= MaxMembersPerDomain {
		return invalid("domain %q has %d members, the members per domain limit is %d", r.GetDomain(), n, MaxMembersPerDomain)
	}
	return nil
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

// validateRenewBatch checks a batched KeepAlive message: one holder, at most
// MaxRenewalsPerMessage (domain, epoch) pairs, every name valid and every
// epoch set; the single-lease fields empty. The count is checked before
// anything is scanned.
func validateRenewBatch(req *pb.KeepAliveRequest) error {
	var c check
	n, ne := len(req.GetDomains()), len(req.GetEpochs())
	switch {
	case n > MaxRenewalsPerMessage || ne > MaxRenewalsPerMessage:
		c.add("batch of %d domains and %d epochs; at most %d renewals per message", n, ne, MaxRenewalsPerMessage)
		return c.err()
	case n != ne:
		c.add("batch of %d domains but %d epochs; give one epoch per domain", n, ne)
		return c.err()
	case req.GetDomain() != "" || req.GetEpoch() != 0:
		c.add("a batch names its leases in domains and epochs; domain and epoch must be empty")
		return c.err()
	}
	c.name("holder", req.GetHolder())
	for i, d := range req.GetDomains() {
		if len(d) > MaxNameBytes {
			c.add("domains[%d] is %d bytes, longer than %d", i, len(d), MaxNameBytes)
		} else if err := fsm.ValidateName("domain", d); err != nil {
			c.add("domains[%d]: %v", i, err)
		}
		if req.GetEpochs()[i] == 0 {
			c.add("epochs[%d] is 0; epochs start at 1", i)
		}
		if len(c.errs) > maxReportedProblems {
			c.add("(stopped at renewal %d of %d)", i, n)
			break
		}
	}
	return c.err()
}

// validateNames checks required names (pairs of field, value).
func validateNames(kv ...string) error {
	var c check
	for i := 0; i+1 < len(kv); i += 2 {
		c.name(kv[i], kv[i+1])
	}
	return c.err()
}

func validateList(r *pb.ListDomainsRequest) error {
	var c check
	c.maxLen("after", r.GetAfter(), MaxNameBytes)
	if r.GetLimit() > maxListLimit {
		c.add("limit %d exceeds %d", r.GetLimit(), maxListLimit)
	}
	return c.err()
}

func validateWatch(r *pb.WatchRequest) error {
	var c check
	if c.count("domains", len(r.GetDomains()), MaxWatchDomains) {
		for i, d := range r.GetDomains() {
			c.name(fmt.Sprintf("domains[%d]", i), d)
		}
	}
	return c.err()
}

func validateAdvance(r *pb.AdvanceRequest) error {
	var c check
	n := len(r.GetAdvances())
	if n == 0 || n > MaxAdvancesPerRequest {
		c.add("%d advances in one call (want 1..%d, the advances per request limit)", n, MaxAdvancesPerRequest)
		return c.err()
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
		c.add("report is missing")
		return c.err()
	}
	c.name("report.member_id", rep.GetMemberId())
	c.hash("report.flushed_hash", rep.GetFlushedHash(), rep.GetFlushedLsn())
	if len(rep.GetHashAtWatermark()) > MaxHashBytes {
		c.hash("report.hash_at_watermark", rep.GetHashAtWatermark(), 0)
	}
	c.enum("report.state", int32(rep.GetState()), replicaStates)
	if n := len(rep.GetChain()); n > MaxChainPoints {
		c.add("report.chain has %d points, more than %d", n, MaxChainPoints)
	} else {
		for i, p := range rep.GetChain() {
			c.hash(fmt.Sprintf("report.chain[%d].hash", i), p.GetHash(), p.GetLsn())
		}
	}
	return c.err()
}

// MaxChainPoints bounds the chain hashes one progress report carries: one
// per fenced replica of the domain at most.
const MaxChainPoints = MaxMembersPerDomain

// PolicyRequestPrefix starts the request ids of the automatic policy's
// promotion attempts (promotion.policyRequestID).
const PolicyRequestPrefix = "policy-"

func validatePromote(r *pb.PromoteRequest) error {
	var c check
	q := r.GetRequest()
	if q == nil {
		c.add("request is missing")
		return c.err()
	}
	c.name("request_id", q.GetRequestId())
	c.name("domain", q.GetDomain())
	c.name("candidate", q.GetCandidate())
	c.maxLen("reason", q.GetReason(), MaxReasonBytes)
	c.enum("initiated_by", int32(q.GetInitiatedBy()), initiators)
	// The automatic policy runs inside the leader; no caller may speak for
	// it, nor take the request ids it uses.
	if q.GetInitiatedBy() == pb.Initiator_INITIATOR_POLICY {
		c.add("initiated_by POLICY is reserved for the leader's automatic policy")
	}
	if strings.HasPrefix(q.GetRequestId(), PolicyRequestPrefix) {
		c.add("request_id %s: the prefix %q is reserved for the leader's automatic policy", quote(q.GetRequestId()), PolicyRequestPrefix)
	}
	if c.count("waivers", len(q.GetWaivers()), MaxWaivers) {
		known := validator.KnownWaivers()
		seen := map[string]bool{}
		for i, w := range q.GetWaivers() {
			ok := validator.IsKnownWaiver(w)
			switch {
			case !ok && len(w) > MaxNameBytes:
				c.add("waivers[%d] is %d bytes, not a known waiver (known: %v)", i, len(w), known)
			case !ok:
				c.add("unknown waiver %s at waivers[%d] (known: %v)", quote(w), i, known)
			case seen[w]:
				c.add("waiver %q named twice (waivers[%d]); name each waiver once", w, i)
			}
			seen[w] = true
		}
	}
	if q.ExpectedEpoch != nil && q.GetExpectedEpoch() == 0 {
		c.epoch("expected_epoch", 0)
	}
	return c.err()
}
