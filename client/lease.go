package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"google.golang.org/grpc"
)

// LeaseOption adjusts a Lease.
type LeaseOption func(*leaseOptions)

type leaseOptions struct {
	margin, interval time.Duration
	expectedEpoch    *uint64
	wait             bool
}

// WithMargin sets how long before the service's expiry the holder stops
// acting: the local deadline is send time + TTL − margin. Default
// max(TTL/10, 50 ms). It must cover the clock-rate difference between this
// process and the leader over one TTL, and the time to stop acting.
func WithMargin(d time.Duration) LeaseOption { return func(o *leaseOptions) { o.margin = d } }

// WithRenewInterval sets how often the lease is renewed (default TTL/3). It
// must be shorter than TTL − margin.
func WithRenewInterval(d time.Duration) LeaseOption { return func(o *leaseOptions) { o.interval = d } }

// WithExpectedEpoch makes Acquire a compare-and-set: it only takes the
// domain at this epoch (ErrEpochStale otherwise). Ignored by KeepLease.
func WithExpectedEpoch(epoch uint64) LeaseOption {
	return func(o *leaseOptions) { o.expectedEpoch = &epoch }
}

// WithWait makes Acquire wait for a lock held by another holder instead of
// failing at once with ErrFailedPrecondition: the leader blocks the call,
// writing nothing to the log, until the lock is released or its holder's
// lease expires on the leader, then proposes the acquire once (contention
// costs one log entry per grant). The context's deadline bounds the wait
// (Config.CallTimeout when it has none), not Config.RequestTimeout: shortly
// before that deadline the leader answers ErrFailedPrecondition, and nothing
// was proposed. When leadership changes, the wait ends with NOT_LEADER on
// the old leader and the retry loop re-issues it to the new one, within the
// same deadline. A follower forwards a waiting Acquire to the leader with
// the caller's deadline. At most 64 callers wait per lock on the leader
// (one more: ErrFailedPrecondition at once). On an aerodb domain it does not
// wait (authority there moves by promotion). Ignored by KeepLease.
func WithWait() LeaseOption { return func(o *leaseOptions) { o.wait = true } }

func leaseOpts(ttl time.Duration, opts []LeaseOption) (leaseOptions, error) {
	var o leaseOptions
	for _, f := range opts {
		f(&o)
	}
	if o.margin == 0 {
		o.margin = max(ttl/10, 50*time.Millisecond)
	}
	if o.interval == 0 {
		o.interval = ttl / 3
	}
	switch {
	case ttl <= 0:
		return o, fmt.Errorf("%w: lease TTL %v", ErrInvalidArgument, ttl)
	case o.margin < 0 || o.margin >= ttl:
		return o, fmt.Errorf("%w: lease margin %v must be in [0, TTL %v)", ErrInvalidArgument, o.margin, ttl)
	case o.interval <= 0 || o.interval >= ttl-o.margin:
		return o, fmt.Errorf("%w: renew interval %v must be in (0, TTL − margin = %v)", ErrInvalidArgument, o.interval, ttl-o.margin)
	}
	return o, nil
}

// leaseState is the deadline arithmetic of a lease (AU-12), free of clocks,
// network and goroutines: the caller feeds it send times and responses.
//
// The local deadline is the send time of the last renewal that succeeded +
// the granted time (at most the TTL) − margin. It never moves backwards. The
// service measures its expiry from its own receipt of the renewal, which is
// later than our send, so our deadline is always earlier than the
// service's by at least the margin (given clock rates within the margin).
type leaseState struct {
	ttl, margin time.Duration
	// deadline is zero until the first successful renewal (or the grant's
	// send time, for Acquire).
	deadline time.Time
	nextSeq  uint64
	pending  map[uint64]time.Time // seq → send time, awaiting a response
	renewals int                  // successful renewals
}

func newLeaseState(ttl, margin time.Duration) *leaseState {
	return &leaseState{ttl: ttl, margin: margin, pending: map[uint64]time.Time{}}
}

// granted starts the deadline from the send time of the request that
// granted the lease (Acquire): sent + TTL − margin.
func (s *leaseState) granted(sent time.Time) { s.extend(sent, s.ttl) }

// send records a renewal sent at now and returns its sequence number.
func (s *leaseState) send(now time.Time) uint64 {
	s.nextSeq++
	s.pending[s.nextSeq] = now
	return s.nextSeq
}

// success applies a successful response to renewal seq granting remaining.
// It reports whether the deadline moved. A response to an unknown seq (never
// sent, already answered, or from an abandoned stream) changes nothing.
func (s *leaseState) success(seq uint64, remaining time.Duration) bool {
	sent, ok := s.pending[seq]
	if !ok {
		return false
	}
	for q := range s.pending { // responses arrive in order: older ones are moot
		if q <= seq {
			delete(s.pending, q)
		}
	}
	s.renewals++
	return s.extend(sent, min(remaining, s.ttl))
}

func (s *leaseState) extend(sent time.Time, grant time.Duration) bool {
	if grant <= s.margin {
		return false
	}
	d := sent.Add(grant - s.margin)
	if s.deadline.IsZero() || d.After(s.deadline) {
		s.deadline = d
		return true
	}
	return false
}

// failed forgets a renewal that was answered with an error.
func (s *leaseState) failed(seq uint64) { delete(s.pending, seq) }

// dropPending forgets renewals sent on an abandoned stream.
func (s *leaseState) dropPending() { clear(s.pending) }

// oldestPending returns the send time of the oldest unanswered renewal.
func (s *leaseState) oldestPending() (time.Time, bool) {
	var oldest time.Time
	for _, t := range s.pending {
		if oldest.IsZero() || t.Before(oldest) {
			oldest = t
		}
	}
	return oldest, !oldest.IsZero()
}

// expired reports whether now is at or past a set deadline.
func (s *leaseState) expired(now time.Time) bool {
	return !s.deadline.IsZero() && !now.Before(s.deadline)
}

// keepAliveStream is the client side of Leases.KeepAlive.
type keepAliveStream interface {
	Send(*pb.KeepAliveRequest) error
	Recv() (*pb.KeepAliveResponse, error)
}

// leaseRetryCap bounds the backoff between a lease's reconnection attempts.
const leaseRetryCap = 100 * time.Millisecond

// MinLeaseTTL is the shortest lease TTL that survives a raft leader change
// with the default margin (TTL/10) and renewal interval (TTL/3), for
// servers run with these raft timeouts. A holder renews last at most one
// interval before the leader dies and loses the lease one margin before
// its TTL runs out, so it tolerates 0.57 × TTL without a successful
// renewal. A leader change takes up to two heartbeat timeouts to notice
// (raft's follower timeout is randomised in [1, 2] × heartbeat), about an
// election timeout to elect, then the new leader's barrier and the
// client's reconnection (at most leaseRetryCap apart); one second covers
// the last two on a loaded machine. At authorityd's defaults (500 ms and
// 500 ms) it is 4.4 s; measured renewal gaps after a leader kill were
// 0.64–1.57 s (internal/failovertest).
func MinLeaseTTL(heartbeatTimeout, electionTimeout time.Duration) time.Duration {
	gap := 2*heartbeatTimeout + electionTimeout + time.Second
	ttl := time.Duration(float64(gap) / (1 - 1.0/10 - 1.0/3))
	return ttl.Round(100 * time.Millisecond)
}

// Lease is authority held by one holder over one domain at one epoch, kept
// alive by renewals on a KeepAlive stream to the leader. Its one goroutine
// (started by Acquire/KeepLease, ended by loss, Release or Client.Close)
// owns its view of the stream, the renewal timer and the deadline timer.
// The client's leases of one holder share one KeepAlive stream per server:
// renewals queued together go out as one batched message (leaseMux).
//
// The holder must act only while the lease is held: watch Lost() or
// Context(). Loss happens exactly once, at the local deadline (ErrLeaseLost)
// or at once when the service says the lease is gone (ErrFenced,
// ErrEpochStale, ErrLeaseExpired, ErrNoLease), on Release (ErrReleased) or
// Client.Close (ErrClosed). A lost lease never renews again.
type Lease struct {
	c              *Client
	clock          Clock
	domain, holder string
	epoch          uint64
	ttl            time.Duration
	margin         time.Duration
	interval       time.Duration

	ctx    context.Context
	cancel context.CancelCauseFunc
	lost   chan struct{}
	once   sync.Once

	mu  sync.Mutex
	st  *leaseState
	err error

	first     chan struct{} // closed at the first successful renewal
	firstOnce sync.Once
	stop      chan struct{} // closed to end the goroutine
	stopOnce  sync.Once
	done      chan struct{} // closed when the goroutine has ended

	// open opens a KeepAlive stream to addr (a test double replaces it).
	open func(ctx context.Context, addr string) (keepAliveStream, error)
	// observe, when set (tests), sees every handled response.
	observe func(*pb.KeepAliveResponse)

	// handover is closed at the first renewal that carries a handover
	// request (planned switchover); candidate names who takes over.
	handover     chan struct{}
	handoverOnce sync.Once
	candidate    string    // guarded by mu
	handoverBy   time.Time // guarded by mu: when the request lapses (local clock)
}

func (c *Client) newLease(domain, holder string, epoch uint64, ttl time.Duration, o leaseOptions) *Lease {
	ctx, cancel := context.WithCancelCause(context.Background())
	l := &Lease{c: c, clock: c.cfg.Clock, domain: domain, holder: holder, epoch: epoch, ttl: ttl,
		margin: o.margin, interval: o.interval, ctx: ctx, cancel: cancel, lost: make(chan struct{}),
		st: newLeaseState(ttl, o.margin), first: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{}),
		handover: make(chan struct{})}
	l.open = func(ctx context.Context, addr string) (keepAliveStream, error) {
		return c.mux().openStream(ctx, addr, holder)
	}
	return l
}

// start registers the lease with the client and starts its goroutine.
func (l *Lease) start() error {
	l.c.mu.Lock()
	if l.c.closed {
		l.c.mu.Unlock()
		close(l.done)
		l.lose(ErrClosed)
		return ErrClosed
	}
	l.c.leases[l] = struct{}{}
	l.c.mu.Unlock()
	go l.run()
	return nil
}

// Acquire takes a lease through the log (a free or expired lock, or an
// aerodb holder re-acquiring its own expired lease) and keeps it alive. The
// first local deadline is the send time of the granted Acquire attempt + TTL −
// margin; the first renewal is sent at once.
//
// Without WithWait, a lock whose holder's lease is valid on the leader is
// refused at once with ErrFailedPrecondition (the leader writes nothing);
// with it, Acquire waits for the lock within ctx's deadline.
//
// Outcome: the call is retried across leader changes. If an attempt's
// outcome was unknown and a later attempt fails, the domain is read back:
// held (not released) by holder at the expected epoch (when given) means
// our acquire committed; the lease's first renewal then confirms it (or the
// lease is lost at once). An error wrapping ErrOutcomeUnknown (the context
// ended after a send) means the domain may or may not be ours: read it with
// GetDomain, and if it is, keep it with KeepLease (or let it expire).
func (c *Client) Acquire(ctx context.Context, domain, holder string, opts ...LeaseOption) (*Lease, error) {
	var o leaseOptions
	for _, f := range opts {
		f(&o)
	}
	req := &pb.AcquireRequest{Domain: domain, Holder: holder, ExpectedEpoch: o.expectedEpoch, Wait: o.wait}
	if _, ok := ctx.Deadline(); o.wait && !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.CallTimeout)
		defer cancel()
	}
	// Read the domain first: if the outcome turns out unknown, only a grant
	// newer than this one can be ours (the holder may still hold an older
	// grant whose lease the leader has not yet seen expire).
	before, err := c.GetDomain(ctx, domain)
	if err != nil {
		return nil, err
	}
	sent := c.cfg.Clock.Now()
	var lastSent time.Time
	resp, unknown, err := unary(ctx, c, retryIdempotent, false, func(actx context.Context, conn *grpc.ClientConn) (*pb.LeaseResponse, error) {
		if o.wait {
			// The caller's deadline bounds a wait, not RequestTimeout: the
			// leader answers definitively shortly before it.
			actx = ctx
		}
		lastSent = c.cfg.Clock.Now()
		return pbgrpc.NewLeasesClient(conn).Acquire(actx, req)
	})
	var epoch, ttlMs uint64
	switch {
	case err == nil:
		epoch, ttlMs = resp.GetEpoch(), resp.GetTtlMs()
		// The answering attempt made the grant the leader's lease runs
		// from (an earlier attempt's grant would have refused this one on
		// a lock, and an aerodb re-acquire grants afresh): its send time
		// precedes that grant, even after a long wait.
		sent = lastSent
	case unknown && !errors.Is(err, ErrOutcomeUnknown):
		d, gerr := c.GetDomain(ctx, domain)
		if gerr != nil {
			return nil, fmt.Errorf("%w: %w (reading it back: %v)", ErrOutcomeUnknown, err, gerr)
		}
		if !acquiredSince(before, d, holder) {
			return nil, err
		}
		epoch, ttlMs = d.GetEpoch(), d.GetPolicy().GetLeaseTtlMs()
	default:
		return nil, err
	}
	ttl := time.Duration(ttlMs) * time.Millisecond
	lo, err := leaseOpts(ttl, opts)
	if err != nil {
		return nil, err
	}
	l := c.newLease(domain, holder, epoch, ttl, lo)
	l.st.granted(sent)
	if !c.cfg.Clock.Now().Before(l.st.deadline.Add(-lo.interval)) {
		// The retries took most of the TTL: confirm with a renewal first.
		l.st.deadline = time.Time{}
		if err := l.awaitFirst(ctx); err != nil {
			return nil, err
		}
		return l, nil
	}
	l.firstOnce.Do(func() { close(l.first) })
	if err := l.start(); err != nil {
		return nil, err
	}
	return l, nil
}

// KeepLease keeps alive authority granted elsewhere (AssignInitial, a
// promotion, an earlier Acquire): the holder at epoch with the domain's TTL
// (ttl 0: read it from the domain's policy). The first renewal is made
// before it returns; its error (ErrFenced, ErrLeaseExpired, ErrNoLease, or
// the context's) is returned and no lease is kept. KeepLease writes nothing.
func (c *Client) KeepLease(ctx context.Context, domain, holder string, epoch uint64, ttl time.Duration, opts ...LeaseOption) (*Lease, error) {
	if ttl == 0 {
		d, err := c.GetDomain(ctx, domain)
		if err != nil {
			return nil, err
		}
		ttl = time.Duration(d.GetPolicy().GetLeaseTtlMs()) * time.Millisecond
	}
	lo, err := leaseOpts(ttl, opts)
	if err != nil {
		return nil, err
	}
	l := c.newLease(domain, holder, epoch, ttl, lo)
	if err := l.awaitFirst(ctx); err != nil {
		return nil, err
	}
	return l, nil
}

// awaitFirst starts the lease and waits for its first successful renewal.
func (l *Lease) awaitFirst(ctx context.Context) error {
	if err := l.start(); err != nil {
		return err
	}
	select {
	case <-l.first:
		return nil
	case <-l.lost:
		l.stopRun()
		return l.Err()
	case <-ctx.Done():
		l.lose(fmt.Errorf("authority: first renewal of %q: %w", l.domain, ctx.Err()))
		l.stopRun()
		return l.Err()
	}
}

// Domain of the lease.
func (l *Lease) Domain() string { return l.domain }

// Holder of the lease.
func (l *Lease) Holder() string { return l.holder }

// Epoch the lease holds: stamp it on every fenced write.
func (l *Lease) Epoch() uint64 { return l.epoch }

// TTL granted per renewal.
func (l *Lease) TTL() time.Duration { return l.ttl }

// Check reports whether the lease is held at this moment: nil while it was
// not lost and the clock is before the local deadline, else why not. It
// reads the monotonic clock at the call, so a holder that was paused (a
// SIGSTOP, a long GC, a suspended VM) past its deadline learns it here even
// before the lease's own timer has run: the lease is then lost (ErrLeaseLost)
// and Lost, Context and Err agree from that moment. Call it immediately
// before every side effect that needs authority, and fence the side effect
// by Epoch at the resource too: a pause between the check and the effect
// can still land the effect after the deadline, and only the resource can
// refuse it then.
func (l *Lease) Check() error { return l.expireIfDue() }

// Valid is Check() == nil.
func (l *Lease) Valid() bool { return l.Check() == nil }

// expireIfDue loses the lease when the clock is at or past its deadline,
// and returns Err.
func (l *Lease) expireIfDue() error {
	l.mu.Lock()
	err := l.err
	due := err == nil && l.st.expired(l.clock.Now())
	l.mu.Unlock()
	if !due {
		return err
	}
	l.lose(ErrLeaseLost)
	l.stopRun() // a lost lease never renews again
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Context is cancelled when the lease is lost; context.Cause gives Err().
// Its Err and Done check the deadline against the clock when called (as
// Check does). Contexts derived from it are cancelled by the lease's timer,
// which may run late after a pause: check the lease itself before acting.
func (l *Lease) Context() context.Context { return leaseContext{l.ctx, l} }

// Lost is closed when the lease is lost (exactly once). Calling it checks
// the deadline against the clock, as Check does.
func (l *Lease) Lost() <-chan struct{} {
	l.expireIfDue()
	return l.lost
}

// Err is nil while the lease is held, then why it was lost. It checks the
// deadline against the clock, as Check does.
func (l *Lease) Err() error {
	if err := l.expireIfDue(); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// leaseContext is the lease's context with Err and Done that first check
// the deadline against the clock.
type leaseContext struct {
	context.Context
	l *Lease
}

func (c leaseContext) Done() <-chan struct{} {
	c.l.expireIfDue()
	return c.Context.Done()
}

func (c leaseContext) Err() error {
	c.l.expireIfDue()
	return c.Context.Err()
}

// Deadline is the current local deadline: send time of the last successful
// renewal + TTL − margin, on the client's Clock. Zero before the first
// success. After loss it stays at its last value.
func (l *Lease) Deadline() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st.deadline
}

// Release stops the renewals, marks the lease lost (ErrReleased: stop
// acting first), then releases authority through the log so another holder
// may take it without waiting for expiry.
//
// Outcome: the Release RPC is retried across leader changes. If an attempt's
// outcome was unknown and a later attempt is fenced, the domain is read
// back: released at this epoch means ours committed. An error wrapping
// ErrOutcomeUnknown means it may or may not be released: read the domain;
// if it is not, the lease simply expires on the service after its TTL.
func (l *Lease) Release(ctx context.Context) error {
	l.lose(ErrReleased)
	l.stopRun()
	<-l.done
	req := &pb.ReleaseRequest{Domain: l.domain, Holder: l.holder, Epoch: l.epoch}
	_, unknown, err := unary(ctx, l.c, retryIdempotent, false, func(ctx context.Context, conn *grpc.ClientConn) (*pb.AuthorityResponse, error) {
		return pbgrpc.NewLeasesClient(conn).Release(ctx, req)
	})
	if err == nil || !unknown || errors.Is(err, ErrOutcomeUnknown) {
		return err
	}
	if d, gerr := l.c.GetDomain(ctx, l.domain); gerr == nil && d.GetEpoch() == l.epoch && d.GetReleased() {
		return nil
	}
	return err
}

// lose ends the lease once: records why, cancels Context, closes Lost.
func (l *Lease) lose(err error) {
	l.once.Do(func() {
		l.mu.Lock()
		l.err = err
		l.mu.Unlock()
		l.cancel(err)
		close(l.lost)
		l.c.mu.Lock()
		delete(l.c.leases, l)
		l.c.mu.Unlock()
	})
}

func (l *Lease) stopRun() { l.stopOnce.Do(func() { close(l.stop) }) }

// streamEvent is what a stream's receiver goroutine reports to run.
type streamEvent struct {
	gen    uint64
	stream keepAliveStream
	resp   *pb.KeepAliveResponse
	err    error
}

// receive opens a stream to addr and forwards what it receives until ctx
// ends or the stream fails.
func (l *Lease) receive(ctx context.Context, gen uint64, addr string, events chan<- streamEvent) {
	deliver := func(ev streamEvent) bool {
		select {
		case events <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	s, err := l.open(ctx, addr)
	if err != nil {
		deliver(streamEvent{gen: gen, err: err})
		return
	}
	if !deliver(streamEvent{gen: gen, stream: s}) {
		return
	}
	for {
		resp, err := s.Recv()
		if err != nil {
			deliver(streamEvent{gen: gen, err: err})
			return
		}
		if !deliver(streamEvent{gen: gen, resp: resp}) {
			return
		}
	}
}

// run is the lease's goroutine: it renews every interval on a stream to the
// leader, reconnects on stream failures (following NOT_LEADER hints, with
// backoff), abandons a stream whose oldest renewal went unanswered for a
// whole interval (a paused or partitioned server), and ends the lease when
// the deadline passes or the service says it is gone.
func (l *Lease) run() {
	defer close(l.done)
	events := make(chan streamEvent)
	var (
		gen        uint64
		stream     keepAliveStream
		addr       string
		cancelS    context.CancelFunc
		connecting bool
		retryT     Timer
		deadlineT  Timer
		redirects  int
	)
	bo := l.c.newBackoff()
	// A lease cannot wait out a long backoff: during a leader change every
	// server answers NOT_LEADER until the new leader is ready, and the
	// first renewal after that must come within the lease's slack. Retry
	// at least every leaseRetryCap (a renewal is a few hundred bytes).
	bo.cap = leaseRetryCap
	renewT := l.clock.NewTimer(l.interval)
	defer func() {
		renewT.Stop()
		stopTimer(retryT)
		stopTimer(deadlineT)
		if cancelS != nil {
			cancelS()
		}
	}()
	armDeadline := func() {
		stopTimer(deadlineT)
		l.mu.Lock()
		dl := l.st.deadline
		l.mu.Unlock()
		deadlineT = nil
		if !dl.IsZero() {
			deadlineT = l.clock.NewTimer(dl.Sub(l.clock.Now()))
		}
	}
	connect := func() {
		gen++
		ctx, cancel := context.WithCancel(l.c.life)
		cancelS, connecting, addr = cancel, true, l.c.currentAddr()
		go l.receive(ctx, gen, addr, events)
	}
	disconnect := func() {
		if cancelS != nil {
			cancelS()
			cancelS = nil
		}
		stream, connecting = nil, false
		l.mu.Lock()
		l.st.dropPending()
		l.mu.Unlock()
	}
	retryLater := func() {
		stopTimer(retryT)
		retryT = l.clock.NewTimer(bo.delay())
	}
	send := func() {
		l.mu.Lock()
		seq := l.st.send(l.clock.Now()) // the send time is taken before sending
		l.mu.Unlock()
		_ = stream.Send(&pb.KeepAliveRequest{Domain: l.domain, Holder: l.holder, Epoch: l.epoch, Seq: seq})
	}

	armDeadline()
	connect()
	for {
		select {
		case <-l.stop:
			return
		case <-timerC(deadlineT):
			deadlineT = nil
			l.mu.Lock()
			expired := l.st.expired(l.clock.Now())
			l.mu.Unlock()
			if expired {
				l.lose(ErrLeaseLost)
				return
			}
			armDeadline()
		case <-timerC(retryT):
			retryT = nil
			if stream == nil && !connecting {
				connect()
			}
		case <-renewT.C():
			renewT = l.clock.NewTimer(l.interval)
			if stream == nil {
				if !connecting && retryT == nil {
					connect()
				}
				continue
			}
			l.mu.Lock()
			oldest, waiting := l.st.oldestPending()
			l.mu.Unlock()
			if waiting && l.clock.Now().Sub(oldest) >= l.interval {
				l.c.noteFailure(addr, false) // unanswered for an interval: try elsewhere
				disconnect()
				connect()
				continue
			}
			send()
		case ev := <-events:
			if ev.gen != gen {
				continue
			}
			switch {
			case ev.stream != nil:
				stream, connecting = ev.stream, false
				send() // renew at once on a new stream
			case ev.resp != nil:
				lostErr, renewed, keep := l.handle(ev.resp)
				if lostErr != nil {
					l.lose(lostErr)
					return
				}
				if renewed {
					bo.reset()
					redirects = 0
					armDeadline()
					l.firstOnce.Do(func() { close(l.first) })
				}
				if keep {
					continue
				}
				l.c.noteFailure(addr, false) // NOT_LEADER (barrier pending) or a transient error
				disconnect()
				retryLater()
			default:
				disconnect()
				err := mapError(ev.err)
				if lostReason(err) {
					l.lose(err)
					return
				}
				class, hint := l.c.classify(ev.err)
				l.c.noteHint(ev.err)
				switch {
				case class == classNotLeader && hint != "" && hint != addr && redirects < maxFreeRedirects:
					redirects++
					l.c.setLeader(hint)
					connect()
				case hint != "":
					l.c.setLeader(hint)
					retryLater()
				default:
					l.c.noteFailure(addr, false)
					retryLater()
				}
			}
		}
	}
}

// handle applies one response. lostErr: the lease is gone for good.
// renewed: a renewal moved the deadline. keep: the stream stays usable (otherwise it
// is abandoned, e.g. NOT_LEADER while the new leader's barrier is pending).
func (l *Lease) handle(resp *pb.KeepAliveResponse) (lostErr error, renewed, keep bool) {
	if l.observe != nil {
		defer l.observe(resp)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if resp.GetErrorReason() == "" {
		if _, known := l.st.pending[resp.GetSeq()]; !known {
			return nil, false, true // a late or duplicate answer: harmless
		}
		sent := l.st.pending[resp.GetSeq()]
		moved := l.st.success(resp.GetSeq(), time.Duration(resp.GetRemainingMs())*time.Millisecond)
		if h := resp.GetHandover(); h != nil && h.GetCandidate() != "" {
			l.handoverOnce.Do(func() {
				l.candidate = h.GetCandidate()
				// From the send time, as the lease's own deadline: earlier
				// than the leader's view of the request's deadline.
				l.handoverBy = sent.Add(time.Duration(h.GetRemainingMs()) * time.Millisecond)
				close(l.handover)
			})
		}
		return nil, moved, true
	}
	l.st.failed(resp.GetSeq())
	err := reasonError(resp.GetErrorReason(), resp.GetErrorMessage())
	if lostReason(err) {
		return err, false, false
	}
	return nil, false, false
}

func stopTimer(t Timer) {
	if t != nil {
		t.Stop()
	}
}

// timerC returns t's channel, or nil (blocks forever) for no timer.
func timerC(t Timer) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C()
}

// acquiredSince reports whether d, read after an Acquire whose outcome was
// unknown, shows that Acquire's grant: holder holds an epoch newer than the
// one before the call (lock and release domains), or — on an aerodb domain,
// where a re-acquire keeps the epoch — holder still holds the same epoch and
// the domain record changed at a later log index.
func acquiredSince(before, d *pb.Domain, holder string) bool {
	if d.GetHolder() != holder || d.GetReleased() {
		return false
	}
	if d.GetKind() == pb.DomainKind_DOMAIN_KIND_AERODB {
		return d.GetEpoch() == before.GetEpoch() && d.GetUpdatedIndex() > before.GetUpdatedIndex()
	}
	return d.GetEpoch() > before.GetEpoch()
}
