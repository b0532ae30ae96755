package fsm

import (
	"errors"
	"fmt"
	"sort"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/protobuf/proto"
)

// Event types. The replication.promotion.* names and fields are AeroDB's
// (P6-O1); authority.* are ours. Every event is derived from an applied
// entry, so the sequence is identical on every node and after replay.
const (
	EventPromotionRequested           = "replication.promotion.requested"
	EventPromotionValidationStarted   = "replication.promotion.validation_started"
	EventPromotionValidationFailed    = "replication.promotion.validation_failed"
	EventPromotionValidationSucceeded = "replication.promotion.validation_succeeded"
	EventPromotionTransitionStarted   = "replication.promotion.transition_started"
	EventPromotionTransitionCompleted = "replication.promotion.transition_completed"
	EventPromotionAbortedOnCrash      = "replication.promotion.aborted_on_crash"

	EventDomainCreated     = "authority.domain.created"
	EventDomainUpdated     = "authority.domain.updated"
	EventMemberRegistered  = "authority.member.registered"
	EventInitialAssignment = "authority.assignment.initial"
	EventLeaseAcquired     = "authority.lease.acquired"
	EventLeaseReleased     = "authority.lease.released"
	EventWatermarkAdvanced = "authority.watermark.advanced"
	EventWorkCompleted     = "authority.work.completed"
	EventWorkAborted       = "authority.work.aborted"
	EventFencePrepared     = "authority.fence.prepared"
)

// EventRetention is how many events the FSM keeps for Watch at least (up to
// twice as many between trims). Older ones are dropped; a watch that asks
// for them gets ErrCompacted and must re-read the state.
const EventRetention = 8192

// ErrCompacted: the requested events were dropped by retention.
var ErrCompacted = errors.New("events compacted")

// eventLog is the retained tail of the event sequence plus a channel closed
// (and replaced) whenever events are appended, so watchers wake without
// polling. It starts no goroutine.
type eventLog struct {
	events         []*pb.Event
	droppedThrough uint64
	notify         chan struct{}
	seq            uint32 // next seq within the current entry
}

func (l *eventLog) beginEntry() { l.seq = 0 }

func (l *eventLog) append(ev *pb.Event) {
	ev.Seq = l.seq
	l.seq++
	l.events = append(l.events, ev)
	// Trim in chunks (down to EventRetention once it reaches twice that),
	// so appending stays O(1) amortised; the extra tail is still served.
	if over := len(l.events) - EventRetention; over >= EventRetention {
		l.droppedThrough = l.events[over-1].Index
		l.events = append(l.events[:0:0], l.events[over:]...)
	}
}

// wake closes the current notify channel if anything was appended.
func (l *eventLog) wake(appended bool) {
	if !appended {
		return
	}
	if l.notify != nil {
		close(l.notify)
	}
	l.notify = make(chan struct{})
}

// emit records one event of the entry being applied.
func (f *FSM) emit(e entry, typ string, d *pb.Domain, fields ...string) {
	ev := &pb.Event{Index: e.index, Type: typ, StampedUnixMs: e.cmd.GetStampedUnixMs()}
	if d != nil {
		ev.Domain, ev.Epoch, ev.Holder = d.Name, d.Epoch, d.Holder
	}
	for i := 0; i+1 < len(fields); i += 2 {
		ev.Fields = append(ev.Fields, &pb.Observed{Key: fields[i], Value: fields[i+1]})
	}
	f.events.append(ev)
}

// EventsFrom returns up to max retained events with index >= from, in order,
// and a channel that is closed when events after them are appended.
// ErrCompacted when some events with index >= from were dropped.
func (f *FSM) EventsFrom(from uint64, max int) ([]*pb.Event, <-chan struct{}, error) {
	return f.EventsAfter(from, -1, max)
}

// EventsAfter is EventsFrom resuming inside an entry: events at index from
// with seq <= afterSeq are skipped (afterSeq -1 skips none).
func (f *FSM) EventsAfter(from uint64, afterSeq int64, max int) ([]*pb.Event, <-chan struct{}, error) {
	f.mu.Lock() // may create the notify channel
	defer f.mu.Unlock()
	if f.events.notify == nil {
		f.events.notify = make(chan struct{})
	}
	if from <= f.events.droppedThrough {
		return nil, nil, fmt.Errorf("%w: events through index %d were dropped; asked from %d", ErrCompacted, f.events.droppedThrough, from)
	}
	evs := f.events.events
	i := sort.Search(len(evs), func(i int) bool {
		return evs[i].Index > from || evs[i].Index == from && int64(evs[i].Seq) > afterSeq
	})
	end := min(len(evs), i+max)
	out := make([]*pb.Event, 0, end-i)
	for _, ev := range evs[i:end] {
		out = append(out, proto.Clone(ev).(*pb.Event))
	}
	if end < len(evs) {
		closed := make(chan struct{})
		close(closed)
		return out, closed, nil // more are ready now
	}
	return out, f.events.notify, nil
}

func u(v uint64) string { return fmt.Sprint(v) }

// OldestRetainedIndex is the lowest index a reader can still ask for.
func (f *FSM) OldestRetainedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.events.droppedThrough + 1
}
