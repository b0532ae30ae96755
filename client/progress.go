package client

import (
	"context"
	"sync"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// ReportProgress sends one progress report of a replica to the leader and
// returns the domain's current watermark (report your own hash at its lsn
// next time). Reports are soft state on the leader (not logged), so the call
// is retried freely; after a leader change the new leader has no report
// until replicas report again. Long-running replicas use a ProgressReporter.
func (c *Client) ReportProgress(ctx context.Context, domain string, r *pb.ProgressReport) (*pb.Watermark, error) {
	var wm *pb.Watermark
	_, err := c.invoke(ctx, retryRead, false, func(ctx context.Context, conn *grpc.ClientConn) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		s, err := pbgrpc.NewWatermarksClient(conn).ReportProgress(ctx)
		if err != nil {
			return err
		}
		if err := s.Send(&pb.ProgressReportRequest{Domain: domain, Report: r}); err != nil {
			_, rerr := s.Recv() // the stream's real error
			if rerr != nil {
				return rerr
			}
			return err
		}
		resp, err := s.Recv()
		if err != nil {
			return err
		}
		_ = s.CloseSend()
		if err := reasonError(resp.GetErrorReason(), resp.GetErrorMessage()); err != nil {
			return err
		}
		c.noteHeader(resp.GetHeader())
		wm = resp.GetWatermark()
		return nil
	})
	return wm, err
}

// ProgressReporter keeps a replica's progress flowing to the leader: its one
// goroutine (Start to Close, or the Start context's end) keeps a
// ReportProgress stream to the leader, reconnecting with backoff and
// following NOT_LEADER hints, sends source() every interval and at once when
// Report is called, and records the latest watermark the leader returned.
type ProgressReporter struct {
	c        *Client
	domain   string
	interval time.Duration
	source   func() *pb.ProgressReport
	onResp   func(*pb.ProgressReportResponse)

	mu  sync.Mutex
	wm  *pb.Watermark
	err error

	now       chan struct{}
	stop      chan struct{}
	done      chan struct{}
	startOnce sync.Once
	closeOnce sync.Once
}

// NewProgressReporter returns a reporter for domain; source is called for
// each report (from the reporter's goroutine) and must be safe to call
// concurrently with the replica's own work.
func NewProgressReporter(c *Client, domain string, interval time.Duration, source func() *pb.ProgressReport) *ProgressReporter {
	return &ProgressReporter{c: c, domain: domain, interval: interval, source: source,
		now: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

// OnResponse sets f, called from the reporter's goroutine with every reply
// of the leader that carries no error, before the next report is built
// (replica-quorum: the reply names the domain's fence and the chain lsns the
// next report must carry). Call it before Start.
func (r *ProgressReporter) OnResponse(f func(*pb.ProgressReportResponse)) { r.onResp = f }

// Start starts the reporter's goroutine; it stops when ctx ends or on Close.
// Calling Start again does nothing.
func (r *ProgressReporter) Start(ctx context.Context) {
	r.startOnce.Do(func() {
		if err := r.c.track(r); err != nil {
			r.setErr(err)
			close(r.done)
			return
		}
		go r.run(ctx)
	})
}

// Report asks for a report at once (e.g. after flushing a new position).
func (r *ProgressReporter) Report() {
	select {
	case r.now <- struct{}{}:
	default:
	}
}

// Watermark is the domain's watermark from the leader's latest reply (nil
// before the first reply).
func (r *ProgressReporter) Watermark() *pb.Watermark {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.wm
}

// Err is the error of the latest report (nil after a successful one).
func (r *ProgressReporter) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Close stops the reporter and waits for its goroutine.
func (r *ProgressReporter) Close() {
	r.closeWith(ErrClosed)
	r.startOnce.Do(func() { close(r.done) })
	<-r.done
}

func (r *ProgressReporter) closeWith(error) {
	r.closeOnce.Do(func() { close(r.stop) })
}

func (r *ProgressReporter) setErr(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = err
}

type progressEvent struct {
	gen    uint64
	stream grpc.BidiStreamingClient[pb.ProgressReportRequest, pb.ProgressReportResponse]
	resp   *pb.ProgressReportResponse
	err    error
}

func (r *ProgressReporter) receive(ctx context.Context, gen uint64, addr string, events chan<- progressEvent) {
	deliver := func(ev progressEvent) bool {
		select {
		case events <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	conn, err := r.c.conn(addr)
	if err != nil {
		deliver(progressEvent{gen: gen, err: err})
		return
	}
	s, err := pbgrpc.NewWatermarksClient(conn).ReportProgress(ctx)
	if err != nil {
		deliver(progressEvent{gen: gen, err: err})
		return
	}
	if !deliver(progressEvent{gen: gen, stream: s}) {
		return
	}
	for {
		resp, err := s.Recv()
		if err != nil {
			deliver(progressEvent{gen: gen, err: err})
			return
		}
		if !deliver(progressEvent{gen: gen, resp: resp}) {
			return
		}
	}
}

func (r *ProgressReporter) run(ctx context.Context) {
	defer close(r.done)
	defer r.c.untrack(r)
	clock := r.c.cfg.Clock
	events := make(chan progressEvent)
	var (
		gen        uint64
		stream     grpc.BidiStreamingClient[pb.ProgressReportRequest, pb.ProgressReportResponse]
		addr       string
		cancelS    context.CancelFunc
		connecting bool
		retryT     Timer
	)
	bo := r.c.newBackoff()
	tick := clock.NewTimer(r.interval)
	defer func() {
		tick.Stop()
		stopTimer(retryT)
		if cancelS != nil {
			cancelS()
		}
	}()
	connect := func() {
		gen++
		sctx, cancel := context.WithCancel(ctx)
		cancelS, connecting, addr = cancel, true, r.c.currentAddr()
		go r.receive(sctx, gen, addr, events)
	}
	reconnectLater := func(hint string) {
		if cancelS != nil {
			cancelS()
			cancelS = nil
		}
		stream, connecting = nil, false
		if hint != "" {
			r.c.setLeader(hint)
		} else {
			r.c.noteFailure(addr, false)
		}
		stopTimer(retryT)
		retryT = clock.NewTimer(bo.delay())
	}
	send := func() {
		if stream == nil {
			return
		}
		rep := r.source()
		if rep == nil {
			return
		}
		_ = stream.Send(&pb.ProgressReportRequest{Domain: r.domain, Report: proto.Clone(rep).(*pb.ProgressReport)})
	}
	connect()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.stop:
			return
		case <-timerC(retryT):
			retryT = nil
			if stream == nil && !connecting {
				connect()
			}
		case <-tick.C():
			tick = clock.NewTimer(r.interval)
			send()
		case <-r.now:
			send()
		case ev := <-events:
			if ev.gen != gen {
				continue
			}
			switch {
			case ev.stream != nil:
				stream, connecting = ev.stream, false
				send()
			case ev.resp != nil:
				err := reasonError(ev.resp.GetErrorReason(), ev.resp.GetErrorMessage())
				r.mu.Lock()
				r.err = err
				if err == nil || ev.resp.GetWatermark() != nil {
					r.wm = ev.resp.GetWatermark()
				}
				r.mu.Unlock()
				if class, _ := classify(err); err != nil && class != classFinal {
					reconnectLater("")
				} else if err == nil {
					bo.reset()
				}
				if err == nil && r.onResp != nil {
					r.onResp(ev.resp)
				}
			default:
				r.setErr(mapError(ev.err))
				r.c.noteHint(ev.err)
				_, hint := r.c.classify(ev.err)
				reconnectLater(hint)
			}
		}
	}
}
