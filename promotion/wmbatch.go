package promotion

import (
	"context"
	"fmt"
	"sync"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
)

// Server-side group commit of watermark advances. Concurrent
// AdvanceWatermark calls (from many holders, or from one holder's
// unbatched writers) are merged into one AdvanceWatermark log entry instead
// of one entry each: one proposal, one FSM apply, one replicated entry for
// the lot. The semantics are those of separate entries:
//
//   - each call still holds its domains' shared locks from before its
//     advances are queued until its reply (a promotion's exclusive lock
//     waits for it exactly as before);
//   - a call is answered only after the entry holding its advances is
//     committed and applied, with its own advances' results (the FSM applies
//     the entry's advances one by one, in order, each on its own: one
//     fenced or conflicting advance does not fail its neighbours);
//   - calls merged into one entry were concurrent (none had returned before
//     another was queued), so any order among them is a valid order; a
//     caller's next call is queued after its previous one returned, so it
//     lands in a later entry.
//
// At most wmMaxInflight merged entries are proposed at once (raft overlaps
// the leader's fsync of one with the followers' of the previous); what
// arrives meanwhile waits for the next entry. A merged entry holds at most
// wmMaxMerged advances (the API's per-call bound: merging never makes an
// entry larger than one call could), unless one call alone is larger; a
// call is never split.
const (
	wmMaxInflight = 2
	wmMaxMerged   = 1000
	// wmProposeTimeout bounds one merged proposal (no single caller's
	// context governs it: a caller that stops waiting must not fail the
	// others).
	wmProposeTimeout = 10 * time.Second
)

type wmCommitter struct {
	mu       sync.Mutex
	queue    []*wmCall
	inflight int
}

type wmCall struct {
	advs []*pb.WatermarkAdvance
	done chan wmOutcome // buffered: the runner never blocks on it
}

type wmOutcome struct {
	results []fsm.WatermarkResult
	index   uint64
	err     error
}

// commitWatermarks commits advances (already checked against the lease,
// their domains' shared locks held by the caller) in a merged entry and
// returns their results in order and the entry's index. When ctx ends first
// the outcome is unknown: ErrIndeterminate (the advances may still commit).
func (s *Service) commitWatermarks(ctx context.Context, advs []*pb.WatermarkAdvance) ([]fsm.WatermarkResult, uint64, error) {
	c := &wmCall{advs: advs, done: make(chan wmOutcome, 1)}
	w := &s.wm
	w.mu.Lock()
	w.queue = append(w.queue, c)
	run := w.inflight < wmMaxInflight
	if run {
		w.inflight++
	}
	w.mu.Unlock()
	if run {
		go s.runWatermarkEntries()
	}
	select {
	case o := <-c.done:
		return o.results, o.index, o.err
	case <-ctx.Done():
		return nil, 0, fmt.Errorf("%w: %v", ErrIndeterminate, ctx.Err())
	}
}

// runWatermarkEntries proposes merged entries until the queue is empty.
func (s *Service) runWatermarkEntries() {
	w := &s.wm
	for {
		w.mu.Lock()
		calls := w.take()
		if len(calls) == 0 {
			w.inflight--
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		s.proposeWatermarks(calls)
	}
}

// take removes the longest prefix of the queue that fits one entry (at
// least one call: a call alone never exceeds fsm.MaxWatermarkBatch).
func (w *wmCommitter) take() []*wmCall {
	n, total := 0, 0
	for n < len(w.queue) && (n == 0 || total+len(w.queue[n].advs) <= wmMaxMerged) {
		total += len(w.queue[n].advs)
		n++
	}
	calls := w.queue[:n:n]
	w.queue = w.queue[n:]
	if len(w.queue) == 0 {
		w.queue = nil // let the backing array go
	}
	return calls
}

// proposeWatermarks proposes one entry for calls and answers each.
func (s *Service) proposeWatermarks(calls []*wmCall) {
	send := calls[0].advs
	if len(calls) > 1 {
		n := 0
		for _, c := range calls {
			n += len(c.advs)
		}
		send = make([]*pb.WatermarkAdvance, 0, n)
		for _, c := range calls {
			send = append(send, c.advs...)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), wmProposeTimeout)
	res, err := s.propose(ctx, &pb.Command{Body: &pb.Command_AdvanceWatermark{AdvanceWatermark: &pb.AdvanceWatermark{Advances: send}}})
	cancel()
	switch {
	case err == nil && res.Err != nil && len(res.Watermarks) == 0:
		err = res.Err
	case err == nil && len(res.Watermarks) != len(send):
		err = fmt.Errorf("promotion: watermark entry at %d has %d results for %d advances", res.Index, len(res.Watermarks), len(send))
	}
	off := 0
	for _, c := range calls {
		if err != nil {
			c.done <- wmOutcome{err: err}
			continue
		}
		c.done <- wmOutcome{results: res.Watermarks[off : off+len(c.advs) : off+len(c.advs)], index: res.Index}
		off += len(c.advs)
	}
}
