package promotion

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// Leader observations that belong in the ordered, replicated event log but
// change no state: a leader change, a lease the leader found expired, and
// fencing rejections (coalesced per domain and kind, at most one entry per
// noteFlush). They are written by the notary, one goroutine per leadership
// term, from a bounded queue: noting never blocks a decision or a renewal;
// when the queue is full the note is dropped and counted.
const (
	noteQueue = 1024
	noteFlush = time.Second
)

type notary struct {
	queue   chan *pb.Note
	dropped atomic.Uint64
	cancel  context.CancelFunc
	done    chan struct{}
}

// note queues an observation without blocking (nil-safe when no notary).
func (n *notary) note(kind, domain string, fields ...string) {
	if n == nil {
		return
	}
	obs := &pb.Note{Kind: kind, Domain: domain}
	for i := 0; i+1 < len(fields); i += 2 {
		obs.Fields = append(obs.Fields, &pb.Observed{Key: fields[i], Value: fields[i+1]})
	}
	select {
	case n.queue <- obs:
	default:
		n.dropped.Add(1)
	}
}

// startNotary starts the notary of a new leadership term (called by
// BecomeLeader, with s.mu held).
func (s *Service) startNotary() {
	ctx, cancel := context.WithCancel(context.Background())
	n := &notary{queue: make(chan *pb.Note, noteQueue), cancel: cancel, done: make(chan struct{})}
	s.notes.Store(n)
	go func() {
		defer close(n.done)
		s.runNotary(ctx, n)
	}()
}

// stopNotary ends the current term's notary (StepDown, with s.mu held).
// Queued notes are dropped: a follower writes nothing.
func (s *Service) stopNotary() {
	n := s.notes.Swap(nil)
	if n == nil {
		return
	}
	n.cancel()
	<-n.done
}

type fenceKey struct{ domain, kind string }

func (s *Service) runNotary(ctx context.Context, n *notary) {
	tick := time.NewTicker(noteFlush)
	defer tick.Stop()
	fenced := map[fenceKey]int{}
	for {
		select {
		case <-ctx.Done():
			return
		case obs := <-n.queue:
			if obs.Kind == "fencing_rejected" {
				fenced[fenceKey{obs.Domain, obs.Fields[0].Value}]++
				continue
			}
			s.proposeNote(ctx, obs)
		case <-tick.C:
			s.flushFenced(ctx, fenced)
			clear(fenced)
		}
	}
}

// flushFenced writes one note per (domain, kind) with the count, in a
// fixed order.
func (s *Service) flushFenced(ctx context.Context, fenced map[fenceKey]int) {
	keys := make([]fenceKey, 0, len(fenced))
	for k := range fenced {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b fenceKey) int {
		return cmp.Or(cmp.Compare(a.domain, b.domain), cmp.Compare(a.kind, b.kind))
	})
	for _, k := range keys {
		s.proposeNote(ctx, &pb.Note{Kind: "fencing_rejected", Domain: k.domain, Fields: []*pb.Observed{
			{Key: "kind", Value: k.kind}, {Key: "count", Value: fmt.Sprint(fenced[k])}}})
	}
}

func (s *Service) proposeNote(ctx context.Context, obs *pb.Note) {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res, err := s.propose(pctx, &pb.Command{Body: &pb.Command_Note{Note: obs}})
	if err == nil {
		err = res.Err
	}
	if err != nil {
		s.logger.Debug("note not recorded", "kind", obs.Kind, "domain", obs.Domain, "error", err)
	}
}
