package promotion

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// Leader observations that belong in the ordered, replicated event log but
// change no state: a leader change, a lease the leader found expired, and
// fencing rejections (coalesced per domain and kind). There is no
// background writer and no timer (readiness §9): an observation is made
// when a request needs it (a renewal, an acquire or a status read finds
// the lease expired; a fenced request is refused) and waits in the term's
// notebook until
//
//   - the next entry this leader proposes carries it: the pending notes are
//     written just ahead of that entry, so an observation precedes the
//     write that followed it; or
//   - a linearizable read asks for it (FlushNotes): a reader of the log
//     sees every observation made before its read.
//
// So a domain nobody touches costs no timer and no log write. Noting never
// blocks a decision or a renewal; the notebook is bounded (noteQueue
// ordered notes, noteKinds coalesced fencing keys): past that, a note is
// dropped and counted.
const (
	noteQueue = 1024
	noteKinds = 1024
)

// Note kinds (the fsm maps them to event types).
const (
	noteLeaderChanged   = "leader_changed"
	noteLeaseExpired    = "lease_expired"
	noteFencingRejected = "fencing_rejected"
)

type fenceKey struct{ domain, kind string }

type notebook struct {
	mu      sync.Mutex
	pending []*pb.Note
	fenced  map[fenceKey]uint64
	dropped atomic.Uint64
}

func newNotebook() *notebook { return &notebook{fenced: map[fenceKey]uint64{}} }

// note records an observation without blocking (nil-safe when no notebook:
// a follower notes nothing).
func (n *notebook) note(kind, domain string, fields ...string) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.pending) >= noteQueue {
		n.dropped.Add(1)
		return
	}
	obs := &pb.Note{Kind: kind, Domain: domain}
	for i := 0; i+1 < len(fields); i += 2 {
		obs.Fields = append(obs.Fields, &pb.Observed{Key: fields[i], Value: fields[i+1]})
	}
	n.pending = append(n.pending, obs)
}

// fenced counts a fencing rejection; the count is written as one note per
// (domain, kind) with the next flush.
func (n *notebook) fencedOnce(domain, kind string) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	k := fenceKey{domain, kind}
	if _, ok := n.fenced[k]; !ok && len(n.fenced) >= noteKinds {
		n.dropped.Add(1)
		return
	}
	n.fenced[k]++
}

// take empties the notebook: the ordered notes, then one coalesced note
// per (domain, kind) in a fixed order.
func (n *notebook) take() []*pb.Note {
	if n == nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	out := n.pending
	n.pending = nil
	keys := make([]fenceKey, 0, len(n.fenced))
	for k := range n.fenced {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b fenceKey) int {
		return cmp.Or(cmp.Compare(a.domain, b.domain), cmp.Compare(a.kind, b.kind))
	})
	for _, k := range keys {
		out = append(out, &pb.Note{Kind: noteFencingRejected, Domain: k.domain, Fields: []*pb.Observed{
			{Key: "kind", Value: k.kind}, {Key: "count", Value: fmt.Sprint(n.fenced[k])}}})
	}
	clear(n.fenced)
	return out
}

// PendingNotes reports how many observations wait for the next write (ordered
// notes plus coalesced fencing keys) and how many were dropped this term.
func (s *Service) PendingNotes() (pending int, dropped uint64) {
	n := s.notes.Load()
	if n == nil {
		return 0, 0
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.pending) + len(n.fenced), n.dropped.Load()
}

// FlushNotes writes the pending observations now (a reader needs them). A
// note that cannot be written is dropped and logged: an observation never
// fails the request that carried it. Nothing pending writes nothing.
func (s *Service) FlushNotes(ctx context.Context) {
	for _, obs := range s.notes.Load().take() {
		s.writeNote(ctx, obs)
	}
}

// startNotes opens the notebook of a new leadership term (BecomeLeader,
// with s.mu held).
func (s *Service) startNotes() { s.notes.Store(newNotebook()) }

// stopNotes drops the current term's notebook (StepDown, with s.mu held):
// a follower writes nothing.
func (s *Service) stopNotes() { s.notes.Store(nil) }

func (s *Service) writeNote(ctx context.Context, obs *pb.Note) {
	res, err := s.proposeOne(ctx, &pb.Command{Body: &pb.Command_Note{Note: obs}})
	if err == nil {
		err = res.Err
	}
	if err != nil {
		s.logger.Debug("note not recorded", "kind", obs.Kind, "domain", obs.Domain, "error", err)
	}
}
