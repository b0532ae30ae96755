package promotion

import (
	"slices"
	"sync"
)

// domainLocks serialises a promotion against every other write to its
// domain on the leader: a promotion holds the write lock from validation
// until its entry is applied, other writes hold the read lock from proposal
// until apply. So the leader's pre-validation sees exactly the state the
// entry will be applied to, and the lifecycle's Approved → Transitioning →
// Succeeded path is never contradicted at apply. (The FSM re-validates
// anyway: this is about honest lifecycles, not safety.)
type domainLocks struct {
	mu    sync.Mutex
	locks map[string]*sync.RWMutex
}

func (l *domainLocks) get(domain string) *sync.RWMutex {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.locks == nil {
		l.locks = map[string]*sync.RWMutex{}
	}
	m, ok := l.locks[domain]
	if !ok {
		m = &sync.RWMutex{}
		l.locks[domain] = m
	}
	return m
}

// exclusive locks one domain for a promotion.
func (l *domainLocks) exclusive(domain string) func() {
	m := l.get(domain)
	m.Lock()
	return m.Unlock
}

// shared read-locks a set of domains in sorted order (no deadlock between
// batches) and returns the unlock.
func (l *domainLocks) shared(domains ...string) func() {
	sorted := slices.Clone(domains)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	held := make([]*sync.RWMutex, len(sorted))
	for i, d := range sorted {
		held[i] = l.get(d)
		held[i].RLock()
	}
	return func() {
		for _, m := range held {
			m.RUnlock()
		}
	}
}
