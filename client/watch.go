package client

import (
	"context"
	"errors"
	"io"
	"sync"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
)

// Watcher streams events in log order, resuming after disconnects on any
// server without gaps or duplicates. Its one goroutine (Watch to Close, or
// the end of Watch's context) owns the stream.
//
// A resumed stream restarts at the index of the last delivered event and
// drops every event at or before the last delivered (index, seq): an entry's
// events are never split or repeated. A server that stopped answering
// without closing its connection (paused) is not detected: the stream has
// no heartbeat.
type Watcher struct {
	c       *Client
	domains []string
	events  chan *pb.Event

	mu  sync.Mutex
	err error

	from      uint64 // resume point before anything was delivered
	lastIndex uint64
	lastSeq   uint32
	delivered bool

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// Watch streams the events of the given domains (all domains when none)
// with log index ≥ fromIndex; fromIndex 0 means "from now": the current
// endpoint's applied index + 1. The watcher runs until ctx ends, Close, or
// a final error (ErrCompacted: the events are gone; ErrInvalidArgument),
// after which Events is closed and Err says why.
func (c *Client) Watch(ctx context.Context, fromIndex uint64, domains ...string) (*Watcher, error) {
	if fromIndex == 0 {
		st, err := c.Status(ctx, "")
		if err != nil {
			return nil, err
		}
		fromIndex = st.GetHeader().GetAppliedIndex() + 1
	}
	w := &Watcher{c: c, domains: append([]string(nil), domains...), events: make(chan *pb.Event),
		from: fromIndex, stop: make(chan struct{}), done: make(chan struct{})}
	if err := c.track(w); err != nil {
		return nil, err
	}
	go w.run(ctx)
	return w, nil
}

// Events delivers the events in order; it is closed when the watcher ends.
func (w *Watcher) Events() <-chan *pb.Event { return w.events }

// Next returns the next event, or the watcher's error once it ended, or
// ctx's error.
func (w *Watcher) Next(ctx context.Context) (*pb.Event, error) {
	select {
	case ev, ok := <-w.events:
		if !ok {
			return nil, w.Err()
		}
		return ev, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Err is why the watcher ended (nil while it runs).
func (w *Watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Close stops the watcher and waits for its goroutine.
func (w *Watcher) Close() {
	w.closeWith(ErrClosed)
	<-w.done
}

func (w *Watcher) closeWith(err error) {
	w.closeOnce.Do(func() {
		w.mu.Lock()
		if w.err == nil {
			w.err = err
		}
		w.mu.Unlock()
		close(w.stop)
	})
}

func (w *Watcher) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
}

// resumeIndex is the from_index of the next stream.
func (w *Watcher) resumeIndex() uint64 {
	if w.delivered {
		return w.lastIndex
	}
	return w.from
}

// duplicate reports whether ev was already delivered.
func (w *Watcher) duplicate(ev *pb.Event) bool {
	if !w.delivered {
		return ev.GetIndex() < w.from
	}
	return ev.GetIndex() < w.lastIndex || ev.GetIndex() == w.lastIndex && ev.GetSeq() <= w.lastSeq
}

func (w *Watcher) run(ctx context.Context) {
	defer close(w.done)
	defer close(w.events)
	defer w.c.untrack(w)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-w.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	bo := w.c.newBackoff()
	for {
		err := w.stream(ctx, bo)
		if ctx.Err() != nil {
			w.fail(ctx.Err())
			return
		}
		class, hint := w.c.classify(err)
		if errors.Is(err, io.EOF) {
			class = classTransient
		}
		if class == classFinal {
			w.fail(mapError(err))
			return
		}
		addr := w.c.currentAddr()
		w.c.noteHint(err)
		if hint != "" {
			w.c.setLeader(hint)
		} else {
			w.c.noteFailure(addr, false)
		}
		if w.c.sleep(ctx, bo.delay()) != nil {
			w.fail(ctx.Err())
			return
		}
	}
}

// stream runs one Watch stream until it fails; events are delivered in
// order, duplicates dropped.
func (w *Watcher) stream(ctx context.Context, bo *backoff) error {
	_, conn, err := w.c.pick(false)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := pbgrpc.NewWatchClient(conn).Watch(sctx, &pb.WatchRequest{FromIndex: w.resumeIndex(), Domains: w.domains})
	if err != nil {
		return err
	}
	for {
		resp, err := s.Recv()
		if err != nil {
			return err
		}
		bo.reset()
		for _, ev := range resp.GetEvents() {
			if w.duplicate(ev) {
				continue
			}
			select {
			case w.events <- ev:
			case <-ctx.Done():
				return ctx.Err()
			}
			w.lastIndex, w.lastSeq, w.delivered = ev.GetIndex(), ev.GetSeq(), true
		}
	}
}
