package promotion

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
)

// Leader observations that belong in the ordered, replicated event log but
// change no state: a leader change, a lease the leader found expired,
// fencing rejections (coalesced per domain and kind), and promotion
// requests refused before the lifecycle or dry-run (coalesced per domain,
// reason and outcome: refusals.go). There is no
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
// ordered notes, noteKinds coalesced keys): past that, a note is dropped
// and counted.
const (
	noteQueue = 1024
	noteKinds = 1024
)

// Note kinds (the fsm maps them to event types): pb.Note*, shared with fsm.
const (
	noteLeaderChanged    = pb.NoteLeaderChanged
	noteLeaseExpired     = pb.NoteLeaseExpired
	noteFencingRejected  = pb.NoteFencingRejected
	notePromotionRefused = pb.NotePromotionRefused
	notePromotionDryRun  = pb.NotePromotionDryRun
)

// noteKey is a coalesced observation: a kind, a domain ("" for none) and
// up to two fixed fields (values from small fixed sets), counted.
type noteKey struct{ kind, domain, k1, v1, k2, v2 string }

type notebook struct {
	mu      sync.Mutex
	pending []*pb.Note
	counted map[noteKey]uint64
	dropped atomic.Uint64
}

func newNotebook() *notebook { return &notebook{counted: map[noteKey]uint64{}} }

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

// count adds one to a coalesced observation; the count is written as one
// note per key with the next flush.
func (n *notebook) count(k noteKey) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.counted[k]; !ok && len(n.counted) >= noteKinds {
		n.dropped.Add(1)
		return
	}
	n.counted[k]++
}

// fencedOnce counts a fencing rejection (coalesced per domain and kind).
func (n *notebook) fencedOnce(domain, kind string) {
	n.count(noteKey{kind: noteFencingRejected, domain: domain, k1: "kind", v1: kind})
}

// take empties the notebook: the ordered notes, then one coalesced note
// per key in a fixed order.
func (n *notebook) take() []*pb.Note {
	if n == nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	out := n.pending
	n.pending = nil
	keys := make([]noteKey, 0, len(n.counted))
	for k := range n.counted {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b noteKey) int {
		return cmp.Or(cmp.Compare(a.kind, b.kind), cmp.Compare(a.domain, b.domain), cmp.Compare(a.v1, b.v1), cmp.Compare(a.v2, b.v2))
	})
	for _, k := range keys {
		obs := &pb.Note{Kind: k.kind, Domain: k.domain, Fields: []*pb.Observed{{Key: k.k1, Value: k.v1}}}
		if k.k2 != "" {
			obs.Fields = append(obs.Fields, &pb.Observed{Key: k.k2, Value: k.v2})
		}
		obs.Fields = append(obs.Fields, &pb.Observed{Key: "count", Value: fmt.Sprint(n.counted[k])})
		out = append(out, obs)
	}
	clear(n.counted)
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
	return len(n.pending) + len(n.counted), n.dropped.Load()
}

// FlushNotes writes the pending observations now (a reader needs them). A
// note that cannot be written is dropped and logged: an observation never
// fails the request that carried it. Nothing pending writes nothing.
func (s *Service) FlushNotes(ctx context.Context) {
	for _, obs := range s.notes.Load().take() {
		s.writeNote(ctx, obs)
	}
}

// notesAhead writes the pending observations ahead of the write the
// caller proposes next, from the same goroutine. A log that can pipeline
// gets them queued without a commit wait each: the write queued behind
// them commits only after them, so they still precede it. The returned
// func, called once the write is done, collects their results (failures
// are logged, as FlushNotes does). Without a pipelining log it is
// FlushNotes.
func (s *Service) notesAhead(ctx context.Context) func() {
	pl, ok := s.log.(Pipeliner)
	if !ok {
		s.FlushNotes(ctx)
		return func() {}
	}
	notes := s.notes.Load().take()
	if len(notes) == 0 {
		return func() {}
	}
	waits := make([]func(context.Context) (*fsm.Result, error), len(notes))
	for i, obs := range notes {
		w, err := s.queue(ctx, pl, &pb.Command{Body: &pb.Command_Note{Note: obs}})
		if err != nil {
			w = func(context.Context) (*fsm.Result, error) { return nil, err }
		}
		waits[i] = w
	}
	return func() {
		for i, w := range waits {
			res, err := w(ctx)
			if err == nil {
				err = res.Err
			}
			if err != nil {
				s.logger.Debug("note not recorded", "kind", notes[i].Kind, "domain", notes[i].Domain, "error", err)
			}
		}
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
