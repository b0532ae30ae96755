package promotion

import (
	"errors"
	"strconv"
	"sync"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
)

// Reasons a promotion request is refused before it enters the lifecycle (no
// intent, no entry of its own). A fixed set: the metric label
// (replication_promotion_refused_total{reason}) and the reason field of the
// replication.promotion.refused event.
const (
	RefusedNotLeader         = "not_leader"
	RefusedNotReady          = "not_ready"
	RefusedInvalid           = "invalid_request"
	RefusedUnknownDomain     = "unknown_domain"
	RefusedGloballyDisabled  = "globally_disabled"
	RefusedRequestIDConflict = "request_id_conflict"
)

// RefusalReasons lists every refusal reason (for tests and docs).
func RefusalReasons() []string {
	return []string{RefusedNotLeader, RefusedNotReady, RefusedInvalid, RefusedUnknownDomain, RefusedGloballyDisabled, RefusedRequestIDConflict}
}

// refused makes a refusal observable: the observer counts it (every node),
// and on the leader a coalesced note (per domain, reason and dry_run)
// rides ahead of the next write as a replication.promotion.refused event.
// An unknown or malformed domain name is not echoed: those are noted
// without a domain.
func (s *Service) refused(req *pb.PromotionRequest, reason string) {
	dry := req.GetDryRun()
	s.obs.Refused(reason, dry)
	domain := req.GetDomain()
	if reason == RefusedInvalid || reason == RefusedUnknownDomain {
		domain = ""
	}
	s.notes.Load().count(noteKey{kind: notePromotionRefused, domain: domain,
		k1: "reason", v1: reason, k2: "dry_run", v2: strconv.FormatBool(dry)})
	if domain != "" {
		s.logger.Debug("promotion refused", "reason", reason, "domain", domain, "request_id", req.GetRequestId(), "dry_run", dry)
	} else {
		s.logger.Debug("promotion refused", "reason", reason, "dry_run", dry)
	}
}

// dryRunObserved counts a dry run and notes it (coalesced per domain,
// outcome and denial reason).
func (s *Service) dryRunObserved(rec *pb.AttemptRecord) {
	d := rec.GetDecision()
	outcome := "denied"
	if d.GetAllowed() {
		outcome = "allowed"
	}
	s.obs.DryRun(d.GetAllowed(), d.GetDenialReason())
	s.notes.Load().count(noteKey{kind: notePromotionDryRun, domain: rec.GetRequest().GetDomain(),
		k1: "outcome", v1: outcome, k2: "reason", v2: d.GetDenialReason()})
}

// refusalReason classifies an admission error.
func refusalReason(err error) string {
	switch {
	case errors.Is(err, ErrNotLeader):
		return RefusedNotLeader
	case errors.Is(err, ErrNotReady):
		return RefusedNotReady
	case errors.Is(err, fsm.ErrNotFound):
		return RefusedUnknownDomain
	case errors.Is(err, ErrGloballyDisabled):
		return RefusedGloballyDisabled
	case errors.Is(err, fsm.ErrConflict):
		return RefusedRequestIDConflict
	}
	return RefusedInvalid
}

// maxUndecided bounds the attempts this node remembers having left
// undecided (their intent may be pending).
const maxUndecided = 1024

// undecided remembers, per (domain, request id), the last lifecycle state
// an attempt this node led reached before it returned without a decision
// (leadership lost, a failed or unknown proposal). When this node later
// becomes leader and records the abort of that pending intent, the abort
// names that state; an intent no node here remembers (its leader crashed)
// is aborted as PromotionRequested, the last state the log proves.
type undecided struct {
	mu    sync.Mutex
	state map[undecidedKey]State
}

type undecidedKey struct{ domain, requestID string }

func (u *undecided) remember(domain, id string, st State) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.state == nil {
		u.state = map[undecidedKey]State{}
	}
	if _, ok := u.state[undecidedKey{domain, id}]; !ok && len(u.state) >= maxUndecided {
		return
	}
	u.state[undecidedKey{domain, id}] = st
}

func (u *undecided) forget(domain, id string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.state, undecidedKey{domain, id})
}

// lastKnown is the state to record in the abort of a pending intent.
func (u *undecided) lastKnown(domain, id string) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if st, ok := u.state[undecidedKey{domain, id}]; ok && st > PromotionRequested {
		return st.String()
	}
	return LastKnownRequested
}

// keepOnly drops what is no longer pending (decided or aborted elsewhere).
func (u *undecided) keepOnly(pending []fsm.PendingIntent) {
	keep := make(map[undecidedKey]bool, len(pending))
	for _, p := range pending {
		keep[undecidedKey{p.Domain, p.RequestID}] = true
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for k := range u.state {
		if !keep[k] {
			delete(u.state, k)
		}
	}
}
