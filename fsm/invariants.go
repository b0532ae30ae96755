//go:build invariants

package fsm

import (
	"fmt"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// With the invariants build tag (make test sets it), every apply re-checks
// AU-1 over the whole history: epochs never go backwards and every epoch has
// exactly one holder. It panics: a violated safety invariant must stop the
// test at the entry that broke it.
type invariantChecker struct {
	seen map[string]map[uint64]string // domain → epoch → holder
	last map[string]uint64            // domain → highest epoch seen
}

// reset is called after a snapshot is restored into this FSM. The history
// is kept, not cleared: raft only installs a snapshot at a later index, so
// the restored state must continue what this FSM already saw (no epoch
// going back, no epoch with another holder). Clearing it would let a
// restore silently undo a grant. A fresh FSM (a restart) starts with no
// history, so its first restore checks nothing but the state itself.
func (c *invariantChecker) reset(f *FSM) {
	c.afterApply(f, f.sortedNames())
}

// afterApply checks the domains the entry worked on (touched): only they
// can have changed, since every change to a record is the encoding of an
// entry's working copy (records.go). After a restore, reset checks all.
func (c *invariantChecker) afterApply(f *FSM, touched []string) {
	if c.seen == nil {
		c.seen, c.last = map[string]map[uint64]string{}, map[string]uint64{}
	}
	for _, name := range touched {
		d, ok := f.peek(name)
		if !ok {
			continue
		}
		// A fence is only ever for the next epoch: granting an epoch clears
		// it (a leftover fence would let a later promotion decide on
		// reports fenced for an epoch already granted).
		if fc := d.GetFence(); fc != nil && fc.GetEpoch() != d.Epoch+1 {
			panic(fmt.Sprintf("invariant AU-4: domain %q at epoch %d keeps a fence for epoch %d", name, d.Epoch, fc.GetEpoch()))
		}
		// A deployment is worked on by a holder of the lock at or before
		// the current epoch, and its audit trail stays bounded.
		if dep := d.GetDeployment(); dep != nil && (d.Kind != pb.DomainKind_DOMAIN_KIND_LOCK || dep.Epoch > d.Epoch ||
			len(dep.Transitions) > MaxDeployTransitions) {
			panic(fmt.Sprintf("invariant deploy: domain %q (%v, epoch %d) records deployment %q at epoch %d with %d transitions",
				name, d.Kind, d.Epoch, dep.DeployId, dep.Epoch, len(dep.Transitions)))
		}
		if r, w := f.recs[name], recOf(d, nil); r.kind != w.kind || r.released != w.released || r.epoch != w.epoch ||
			r.ttlMs != w.ttlMs || r.holder != w.holder {
			panic(fmt.Sprintf("invariant records: domain %q's summary does not match its record", name))
		}
	}
	for _, name := range touched {
		r, ok := f.recs[name]
		if !ok {
			continue
		}
		d := struct { // what AU-1 reads of the record, from its summary
			Epoch  uint64
			Holder string
		}{r.epoch, r.holder}
		if d.Epoch < c.last[name] {
			panic(fmt.Sprintf("invariant AU-1: domain %q epoch went back from %d to %d", name, c.last[name], d.Epoch))
		}
		c.last[name] = d.Epoch
		if d.Epoch == 0 {
			continue
		}
		holders := c.seen[name]
		if holders == nil {
			holders = map[uint64]string{}
			c.seen[name] = holders
		}
		if h, ok := holders[d.Epoch]; ok && h != d.Holder {
			panic(fmt.Sprintf("invariant AU-1: domain %q epoch %d held by %q and %q", name, d.Epoch, h, d.Holder))
		}
		holders[d.Epoch] = d.Holder
	}
}

// verifyRestored decodes and checks every attempt record of a restored
// version-3 snapshot (production restores check checksums and structure,
// and each record when it is read).
func verifyRestored(st *restored) error { return checkHistories(st) }
