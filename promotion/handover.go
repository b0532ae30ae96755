package promotion

import (
	"fmt"
	"time"

	"github.com/aerodb/authority/fsm"
)

// Handover is a standing request, on the leader, that the holder of a
// domain hand its authority over to Candidate (planned switchover). It is
// delivered to the holder on its KeepAlive responses until it expires.
type Handover struct {
	Candidate string
	Remaining time.Duration
}

// RequestHandover records (or, with a zero d, clears) a request that the
// holder of domain at epoch hand over to candidate, standing for d. It
// fails with ErrNotLeader when demoted, ErrNoLease when the domain has no
// lease, and ErrFenced when epoch is not the held lease (released, expired
// or moved on): a request is only ever aimed at the lease the caller saw.
func (t *LeaseTable) RequestHandover(domain string, epoch uint64, candidate string, d time.Duration) (Observation, error) {
	sh := t.shard(domain)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if !sh.leader {
		return Observation{}, ErrNotLeader
	}
	l, ok := sh.leases[domain]
	if !ok {
		return Observation{}, ErrNoLease
	}
	now := t.clock.Now()
	obs := Observation{Domain: domain, Holder: l.holder, Epoch: l.epoch, Status: LeaseHeld}
	if d <= 0 {
		l.candidate, l.handoverUntil = "", time.Time{}
		return obs, nil
	}
	if l.epoch != epoch || l.released || t.expiredNow(domain, l, now) {
		return obs, fmt.Errorf("%w: domain %q lease is at epoch %d (released %v); handover asked at epoch %d",
			ErrFenced, domain, l.epoch, l.released, epoch)
	}
	obs.Remaining = l.expiry.Sub(now)
	l.candidate, l.handoverUntil = candidate, now.Add(d)
	return obs, nil
}

// Handover reports the standing handover request for (domain, epoch), if
// any and not yet expired.
func (t *LeaseTable) Handover(domain string, epoch uint64) (Handover, bool) {
	sh := t.shard(domain)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	l, ok := sh.leases[domain]
	if !sh.leader || !ok || l.epoch != epoch || l.released {
		return Handover{}, false
	}
	return t.handoverOf(l)
}

// handoverOf is the standing handover request of l, with its shard locked.
func (t *LeaseTable) handoverOf(l *lease) (Handover, bool) {
	if l.candidate == "" {
		return Handover{}, false
	}
	rem := l.handoverUntil.Sub(t.clock.Now())
	if rem <= 0 {
		l.candidate, l.handoverUntil = "", time.Time{}
		return Handover{}, false
	}
	return Handover{Candidate: l.candidate, Remaining: rem}, true
}

// RequestHandover asks the holder of domain at epoch to hand over to
// candidate within d (zero d clears the request). Nothing is logged: the
// request lives in the leader's lease table and reaches the holder on its
// next renewal; the promotion that follows the holder's release goes
// through the log and the validator as any other.
func (s *Service) RequestHandover(domain string, epoch uint64, candidate string, d time.Duration) (Observation, error) {
	if err := s.checkReady(); err != nil {
		return Observation{}, err
	}
	a, ok := s.fsm.AuthorityOf(domain)
	if !ok {
		return Observation{}, fmt.Errorf("%w: domain %q", fsm.ErrNotFound, domain)
	}
	if d > 0 && (a.Epoch != epoch || a.Released || a.Holder == "") {
		return Observation{}, fmt.Errorf("%w: domain %q is at epoch %d held by %q (released %v); handover asked at epoch %d",
			ErrFenced, domain, a.Epoch, a.Holder, a.Released, epoch)
	}
	if d > 0 && a.Holder == candidate {
		return Observation{}, fmt.Errorf("%w: %q already holds domain %q", ErrFenced, candidate, domain)
	}
	s.syncLease(a)
	obs, err := s.leases.RequestHandover(domain, epoch, candidate, d)
	if err == nil && d > 0 {
		s.logger.Info("handover requested", "domain", domain, "epoch", epoch, "holder", a.Holder, "candidate", candidate, "for", d)
	}
	return obs, err
}

// Handover is the standing handover request for the holder of domain at
// epoch, if any (see LeaseTable.Handover).
func (s *Service) Handover(domain string, epoch uint64) (Handover, bool) {
	return s.leases.Handover(domain, epoch)
}
