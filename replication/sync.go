package replication

import (
	"slices"
	"sync"
)

// SyncTracker decides how far a primary may advance the watermark: to the
// highest lsn that it flushed locally and that at least minSync replicas
// flushed (DESIGN §6), so that when the primary dies a replica holding the
// watermark exists. The caller verifies each acknowledged position against
// its own chain before passing it in. Safe for concurrent use.
type SyncTracker struct {
	mu       sync.Mutex
	minSync  int
	local    uint64
	replicas map[string]uint64
}

// NewSyncTracker requires minSync replicas (values below 1 mean 1).
func NewSyncTracker(minSync int) *SyncTracker {
	return &SyncTracker{minSync: max(minSync, 1), replicas: map[string]uint64{}}
}

// Local records the primary's own flushed lsn.
func (t *SyncTracker) Local(lsn uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.local = max(t.local, lsn)
}

// Ack records that replica flushed up to lsn (it never goes back: a
// replica that reconnects reports at least what it acknowledged, and a
// lower number would only delay the watermark).
func (t *SyncTracker) Ack(replica string, lsn uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.replicas[replica] = max(t.replicas[replica], lsn)
}

// Eligible is the highest lsn the watermark may cover (0: none yet).
func (t *SyncTracker) Eligible() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.replicas) < t.minSync {
		return 0
	}
	lsns := make([]uint64, 0, len(t.replicas))
	for _, l := range t.replicas {
		lsns = append(lsns, l)
	}
	slices.Sort(lsns)
	return min(t.local, lsns[len(lsns)-t.minSync])
}
