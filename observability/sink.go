package observability

import (
	"bufio"
	"context"
	"errors"
	"io"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"github.com/hashicorp/go-hclog"
)

// EventSink receives the node's events in (index, seq) order, e.g. to write
// them to a file or ship them elsewhere. A sink that also has a
// `Flush() error` method is flushed whenever RunSink has caught up.
type EventSink interface {
	Write(ctx context.Context, ev *pb.Event) error
}

// RunSink feeds a sink from the FSM's event log until ctx ends. It runs on
// its own goroutine and only reads the log, so a slow, blocked or failing
// sink can delay nothing but itself: apply, decisions and Watch go on
// (AU-11: observability never changes a decision). A failed write is
// logged and retried with backoff; if the sink falls behind the retained
// events it resumes at the oldest retained one and logs the gap.
//
// from is the first log index to deliver; 0 means "events applied from now
// on".
func RunSink(ctx context.Context, f *fsm.FSM, from uint64, sink EventSink, logger hclog.Logger) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if from == 0 {
		from = f.LastIndex() + 1
	}
	if fl, ok := sink.(interface{ Flush() error }); ok {
		defer fl.Flush() // what was written reaches the file on shutdown too
	}
	after := int64(-1)
	backoff := 10 * time.Millisecond
	for ctx.Err() == nil {
		evs, wake, err := f.EventsAfter(from, after, 256)
		if errors.Is(err, fsm.ErrCompacted) {
			oldest := f.OldestRetainedIndex()
			logger.Warn("event sink fell behind; events were dropped", "from_index", from, "resuming_at", oldest)
			from, after = oldest, -1
			continue
		}
		for _, ev := range evs {
			for {
				err := sink.Write(ctx, ev)
				if err == nil || ctx.Err() != nil {
					break
				}
				logger.Warn("event sink write failed; retrying", "index", ev.Index, "error", err, "backoff", backoff)
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, 5*time.Second)
			}
			backoff = 10 * time.Millisecond
			from, after = ev.Index, int64(ev.Seq)
		}
		if len(evs) > 0 {
			continue
		}
		if fl, ok := sink.(interface{ Flush() error }); ok {
			if err := fl.Flush(); err != nil {
				logger.Warn("event sink flush failed", "error", err)
			}
		}
		select {
		case <-ctx.Done():
		case <-wake:
		}
	}
}

// JSONLinesSink writes one JSON object per event (deterministic field
// order) to W. Wrap W in a bufio.Writer (NewJSONLinesSink does) so a burst
// of events costs one write, flushed when the sink catches up.
type JSONLinesSink struct{ W io.Writer }

// NewJSONLinesSink buffers writes to w.
func NewJSONLinesSink(w io.Writer) JSONLinesSink {
	return JSONLinesSink{W: bufio.NewWriterSize(w, 64<<10)}
}

// Flush flushes a buffered writer.
func (s JSONLinesSink) Flush() error {
	if f, ok := s.W.(interface{ Flush() error }); ok {
		return f.Flush()
	}
	return nil
}

func (s JSONLinesSink) Write(_ context.Context, ev *pb.Event) error {
	b, err := EventLine(ev)
	if err != nil {
		return err
	}
	_, err = s.W.Write(b)
	return err
}
