package replication

import (
	"errors"
	"fmt"
	"sync"
)

// ErrStaleEpoch is returned by FenceGuard.Admit for anything stamped with
// an epoch below the highest seen.
var ErrStaleEpoch = errors.New("replication: stale epoch")

// FenceGuard tracks the highest authority epoch a node has seen and
// rejects anything stamped with a lower one (AU-12: the old primary is
// fenced by epoch, not by belief that it is dead). It is safe for
// concurrent use.
type FenceGuard struct {
	mu      sync.Mutex
	highest uint64
	persist func(uint64) error
}

// NewFenceGuard starts at highest (e.g. loaded from disk); persist, when
// not nil, is called with every new highest before it takes effect, so a
// restart never forgets a fence (a failed persist leaves the guard as it
// was).
func NewFenceGuard(highest uint64, persist func(uint64) error) *FenceGuard {
	return &FenceGuard{highest: highest, persist: persist}
}

// Highest is the highest epoch seen.
func (g *FenceGuard) Highest() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.highest
}

// Observe raises the fence to epoch if it is higher; it reports whether it
// did.
func (g *FenceGuard) Observe(epoch uint64) (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if epoch <= g.highest {
		return false, nil
	}
	if g.persist != nil {
		if err := g.persist(epoch); err != nil {
			return false, fmt.Errorf("persist fence epoch %d: %w", epoch, err)
		}
	}
	g.highest = epoch
	return true, nil
}

// Check returns an error wrapping ErrStaleEpoch when epoch is below the
// highest seen.
// Fencing by epoch, not by belief that the old holder is dead (AU-12).
func (g *FenceGuard) Check(epoch uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if epoch < g.highest {
		return fmt.Errorf("%w: epoch %d is below the highest seen %d", ErrStaleEpoch, epoch, g.highest)
	}
	return nil
}

// Admit checks epoch and then observes it: what passes raises the fence.
func (g *FenceGuard) Admit(epoch uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case epoch < g.highest:
		return fmt.Errorf("%w: epoch %d is below the highest seen %d", ErrStaleEpoch, epoch, g.highest)
	case epoch == g.highest:
		return nil
	}
	if g.persist != nil {
		if err := g.persist(epoch); err != nil {
			return fmt.Errorf("persist fence epoch %d: %w", epoch, err)
		}
	}
	g.highest = epoch
	return nil
}
