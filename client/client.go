// Package client is the Go client library of AeroDB Authority: it finds the
// leader, follows NOT_LEADER redirects, retries only when that is safe, keeps
// leases alive with local deadlines that end before the service's (AU-12),
// batches watermark advances across callers and domains (group commit),
// reports replica progress, proposes promotions and watches events.
//
// Every writing method documents which errors mean "may or may not have
// committed" (ErrOutcomeUnknown) and how to resolve them. Errors wrap the
// sentinels of errors.go; branch with errors.Is / errors.As.
package client

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Config of a Client. Zero durations take their defaults.
type Config struct {
	// Endpoints are gRPC addresses of authority servers. Any non-empty
	// subset of the cluster works: the client learns the leader's address
	// from NOT_LEADER hints and the others from the Members call at dial.
	// The order is a preference for stale reads.
	Endpoints []string
	// DialTimeout bounds Dial: it waits this long for one endpoint to
	// connect (default 5 s).
	DialTimeout time.Duration
	// RequestTimeout bounds each attempt of a call when the caller's context
	// has no earlier deadline (default 5 s).
	RequestTimeout time.Duration
	// CallTimeout bounds a whole call, every retry included, when the
	// caller's context has no deadline (default 30 s, and at least
	// RequestTimeout): a call never retries forever. A caller that wants
	// longer passes a context with its own deadline.
	CallTimeout time.Duration
	// MaxRetryDelay caps the retry backoff (default 1 s). Backoff starts at
	// 25 ms, doubles per retry and is fully jittered from Rand.
	MaxRetryDelay time.Duration
	// Clock measures lease deadlines, renewal intervals and backoff
	// (default: real time).
	Clock Clock
	// Rand is the randomness for backoff jitter and generated request ids
	// (default: a ChaCha8 source seeded from crypto/rand). Tests pass a
	// seeded source.
	Rand rand.Source
	// Credentials secure every connection (mutual TLS: they carry this
	// client's certificate, whose identity the servers authorize). Build
	// them with tlsfiles.Source.Credentials(true), which verifies each
	// server against the CA bundle and the dialled host and follows
	// certificate rotation on disk. Nil: plaintext, for servers run with
	// --insecure.
	Credentials credentials.TransportCredentials
	// DialOptions are appended to the client's own (its transport
	// credentials) for every connection, e.g. interceptors.
	DialOptions []grpc.DialOption
	// PinEndpoints keeps the client on the configured endpoints: it never
	// dials an address it learnt from Members or a NOT_LEADER hint, and
	// finds the leader by rotating through its endpoints (a follower
	// forwards leader-bound unary calls). For clients that reach the
	// servers through proxies, port forwards or NAT, where the addresses
	// servers advertise are not reachable (or must not be used).
	PinEndpoints bool
	// AckGateInflight is how many Advance calls the client's AckGate
	// batcher keeps in flight at once (default 1, at most 8). Each gate
	// still has at most one position in flight, so its positions commit
	// in order. A second call in flight lets the servers overlap one
	// batch's leader fsync with the previous batch's replication, but
	// splits the batches: measured on a CPU-bound 2-core machine, 2 cost
	// 28% more server CPU per write and 10% throughput (docs/OPERATIONS.md,
	// "Raft tuning"); it can pay where fsync latency, not CPU, bounds.
	AckGateInflight int
}

// Defaults.
const (
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 5 * time.Second
	// DefaultAckGateInflight: Advance calls of the AckGate batcher in
	// flight at once (Config.AckGateInflight).
	DefaultAckGateInflight = 1
	maxAckGateInflight     = 8
	DefaultCallTimeout     = 30 * time.Second
	DefaultMaxRetryDelay   = time.Second
	initialRetryDelay      = 25 * time.Millisecond
	// maxFreeRedirects bounds NOT_LEADER redirects followed without a
	// backoff pause (two servers naming each other during an election).
	maxFreeRedirects = 2
)

func (cfg Config) withDefaults() Config {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.MaxRetryDelay <= 0 {
		cfg.MaxRetryDelay = DefaultMaxRetryDelay
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = max(DefaultCallTimeout, cfg.RequestTimeout)
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.Rand == nil {
		var seed [32]byte
		_, _ = crand.Read(seed[:])
		cfg.Rand = rand.NewChaCha8(seed)
	}
	if cfg.AckGateInflight <= 0 {
		cfg.AckGateInflight = DefaultAckGateInflight
	}
	cfg.AckGateInflight = min(cfg.AckGateInflight, maxAckGateInflight)
	cfg.Endpoints = dedup(cfg.Endpoints)
	return cfg
}

func dedup(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, e := range in {
		if e != "" && !seen[e] {
			seen[e] = true
			out = append(out, e)
		}
	}
	return out
}

// Client talks to an authority cluster. It is safe for concurrent use. It
// keeps one grpc.ClientConn per server address; its goroutines are the
// watermark batcher's flusher (started on first use) and one per Lease,
// Watcher and ProgressReporter, each stopped by its own Close/Release or by
// Client.Close.
type Client struct {
	cfg Config

	// life ends when the client closes; background work derives from it.
	life     context.Context
	stopLife context.CancelFunc

	mu        sync.Mutex
	closed    bool
	conns     map[string]*grpc.ClientConn // by address
	endpoints []string                    // rotation: configured, then discovered
	next      int                         // rotation index for leader-bound calls
	staleNext int                         // rotation index for stale reads
	leader    string                      // last known leader address ("" unknown)
	idAddr    map[string]string           // server id → gRPC address
	leases    map[*Lease]struct{}
	closers   map[closer]struct{}

	rndMu sync.Mutex
	rnd   *rand.Rand

	watermarkBatcher *watermarkBatcher

	// leaseMux carries every Lease's renewals, batched, on one KeepAlive
	// stream per server and holder (created on first use).
	muxOnce  sync.Once
	leaseMux *leaseMux
}

// closer is background work the client stops on Close.
type closer interface{ closeWith(err error) }

// Dial connects to the given endpoints with the default configuration.
func Dial(ctx context.Context, endpoints ...string) (*Client, error) {
	return DialConfig(ctx, Config{Endpoints: endpoints})
}

// DialConfig connects to cfg.Endpoints: it returns once one of them is
// connected (within DialTimeout or ctx), then asks it for the cluster's
// members to learn the other servers and the leader (best effort).
func DialConfig(ctx context.Context, cfg Config) (*Client, error) {
	c, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	cfg = c.cfg
	for _, e := range cfg.Endpoints {
		if _, err := c.conn(e); err != nil {
			c.Close()
			return nil, err
		}
	}
	dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if err := c.waitConnected(dctx); err != nil {
		c.Close()
		return nil, err
	}
	if !cfg.PinEndpoints {
		c.discover(dctx)
	}
	return c, nil
}

// newClient builds a client without connecting.
func newClient(cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	if len(cfg.Endpoints) == 0 {
		return nil, fmt.Errorf("%w: no endpoints", ErrInvalidArgument)
	}
	life, stop := context.WithCancel(context.Background())
	c := &Client{cfg: cfg, life: life, stopLife: stop, conns: map[string]*grpc.ClientConn{},
		endpoints: append([]string(nil), cfg.Endpoints...), idAddr: map[string]string{},
		leases: map[*Lease]struct{}{}, closers: map[closer]struct{}{}, rnd: rand.New(cfg.Rand)}
	c.watermarkBatcher = newWatermarkBatcher(c)
	return c, nil
}

// waitConnected returns once any endpoint's connection is ready.
func (c *Client) waitConnected(ctx context.Context) error {
	c.mu.Lock()
	conns := make([]*grpc.ClientConn, 0, len(c.endpoints))
	for _, e := range c.endpoints {
		conns = append(conns, c.conns[e])
	}
	c.mu.Unlock()
	ready := make(chan struct{}, len(conns))
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, cc := range conns {
		go func() {
			cc.Connect()
			for {
				s := cc.GetState()
				if s == connectivity.Ready {
					ready <- struct{}{}
					return
				}
				if s == connectivity.TransientFailure || s == connectivity.Idle {
					cc.Connect()
				}
				if !cc.WaitForStateChange(wctx, s) {
					return
				}
			}
		}()
	}
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("authority: dial %v: no endpoint connected: %w", c.cfg.Endpoints, ctx.Err())
	}
}

// discover learns every server's gRPC address and the leader from Members.
func (c *Client) discover(ctx context.Context) {
	for _, e := range c.snapshotEndpoints() {
		conn, err := c.conn(e)
		if err != nil {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
		resp, err := pbgrpc.NewClusterClient(conn).Members(actx, &pb.MembersRequest{})
		cancel()
		if err == nil {
			c.learnMembers(resp)
			return
		}
	}
}

func (c *Client) learnMembers(resp *pb.MembersResponse) {
	if c.cfg.PinEndpoints {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range resp.GetServers() {
		if s.GetGrpcAddress() == "" {
			continue
		}
		c.idAddr[s.GetId()] = s.GetGrpcAddress()
		c.addEndpointLocked(s.GetGrpcAddress())
		if s.GetLeader() {
			c.leader = s.GetGrpcAddress()
		}
	}
}

func (c *Client) addEndpointLocked(addr string) {
	for _, e := range c.endpoints {
		if e == addr {
			return
		}
	}
	c.endpoints = append(c.endpoints, addr)
}

func (c *Client) snapshotEndpoints() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.endpoints...)
}

// Close stops every lease (their Lost channels close with ErrClosed), gate,
// watcher and reporter of this client, and closes the connections. Leases
// are not released on the service: they expire there after their TTL.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	leases := make([]*Lease, 0, len(c.leases))
	for l := range c.leases {
		leases = append(leases, l)
	}
	closers := make([]closer, 0, len(c.closers))
	for w := range c.closers {
		closers = append(closers, w)
	}
	c.mu.Unlock()
	for _, l := range leases {
		l.lose(ErrClosed)
		l.stopRun()
	}
	for _, w := range closers {
		w.closeWith(ErrClosed)
	}
	c.watermarkBatcher.close()
	c.stopLife()
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, cc := range c.conns {
		errs = append(errs, cc.Close())
	}
	c.conns = map[string]*grpc.ClientConn{}
	return errors.Join(errs...)
}

func (c *Client) track(w closer) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	c.closers[w] = struct{}{}
	return nil
}

func (c *Client) untrack(w closer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.closers, w)
}

// Conn returns the connection to the current best endpoint (the last known
// leader, else the next endpoint in rotation), for raw authority.v1 stubs.
// It is owned by the client: do not close it.
func (c *Client) Conn() *grpc.ClientConn {
	_, conn, err := c.pick(false)
	if err != nil {
		return nil
	}
	return conn
}

// conn returns (creating it if needed) the connection to addr.
func (c *Client) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if cc, ok := c.conns[addr]; ok {
		return cc, nil
	}
	creds := insecure.NewCredentials()
	if c.cfg.Credentials != nil {
		creds = c.cfg.Credentials
	}
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, c.cfg.DialOptions...)
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("authority: connect %s: %w", addr, err)
	}
	c.conns[addr] = cc
	return cc, nil
}

// pick chooses the server for the next attempt: the last known leader for
// leader-bound calls, the configured order for stale reads.
func (c *Client) pick(stale bool) (string, *grpc.ClientConn, error) {
	c.mu.Lock()
	var addr string
	switch {
	case stale:
		addr = c.endpoints[c.staleNext%len(c.endpoints)]
	case c.leader != "":
		addr = c.leader
	default:
		addr = c.endpoints[c.next%len(c.endpoints)]
	}
	c.mu.Unlock()
	conn, err := c.conn(addr)
	return addr, conn, err
}

// currentAddr is the address pick(false) would use.
func (c *Client) currentAddr() string {
	addr, _, _ := c.pick(false)
	return addr
}

// setLeader follows a NOT_LEADER hint.
func (c *Client) setLeader(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.leader = addr
	c.addEndpointLocked(addr)
}

// noteFailure moves away from addr after a transport failure or a
// NOT_LEADER without hint.
func (c *Client) noteFailure(addr string, stale bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leader == addr {
		c.leader = ""
	}
	n := len(c.endpoints)
	if stale {
		if c.endpoints[c.staleNext%n] == addr {
			c.staleNext++
		}
		return
	}
	if c.endpoints[c.next%n] == addr {
		c.next++
	}
}

// noteHeader learns the leader from a response header.
func (c *Client) noteHeader(h *pb.ResponseHeader) {
	if h.GetLeaderId() == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if addr, ok := c.idAddr[h.GetLeaderId()]; ok {
		c.leader = addr
	}
}

// noteHint records the leader named by a NOT_LEADER error and returns its
// address.
func (c *Client) noteHint(err error) string {
	if c.cfg.PinEndpoints {
		return ""
	}
	var e *Error
	if !errors.As(mapError(err), &e) || e.Reason != pb.ReasonNotLeader {
		return ""
	}
	addr, id := e.Metadata[pb.MetaLeaderAddr], e.Metadata[pb.MetaLeaderID]
	if addr != "" && id != "" {
		c.mu.Lock()
		c.idAddr[id] = addr
		c.mu.Unlock()
	}
	return addr
}

// jitter returns a uniformly random duration in [0, d].
func (c *Client) jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	c.rndMu.Lock()
	defer c.rndMu.Unlock()
	return time.Duration(c.rnd.Int64N(int64(d) + 1))
}

// randomID returns a 128-bit random hex id (for promotion request ids).
func (c *Client) randomID() string {
	c.rndMu.Lock()
	defer c.rndMu.Unlock()
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], c.rnd.Uint64())
	binary.BigEndian.PutUint64(b[8:], c.rnd.Uint64())
	return fmt.Sprintf("%x", b)
}

// backoff is exponential backoff with full jitter: 25 ms, doubling, capped
// at MaxRetryDelay.
type backoff struct {
	c    *Client
	next time.Duration
	cap  time.Duration // 0: MaxRetryDelay
}

func (c *Client) newBackoff() *backoff { return &backoff{c: c, next: initialRetryDelay} }

func (b *backoff) delay() time.Duration {
	d := b.c.jitter(b.next)
	limit := b.c.cfg.MaxRetryDelay
	if b.cap > 0 {
		limit = min(limit, b.cap)
	}
	b.next = min(2*b.next, limit)
	return d
}

func (b *backoff) reset() { b.next = initialRetryDelay }

// sleep waits d on the client's clock, or until ctx ends.
func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	t := c.cfg.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// retryPolicy says which failures a call may retry.
type retryPolicy int

const (
	// retryRead: NOT_LEADER and transport failures (nothing to resolve).
	retryRead retryPolicy = iota
	// retryIdempotent: NOT_LEADER and transport failures; a transport
	// failure after sending marks the outcome unknown until an attempt
	// answers definitively (re-sending is safe).
	retryIdempotent
	// retryNotLeader: only NOT_LEADER (nothing was proposed); a transport
	// failure returns ErrOutcomeUnknown at once.
	retryNotLeader
)

// invoke runs one call with leader discovery, redirects and retries until
// it answers definitively or ctx ends (a ctx without a deadline gets
// CallTimeout). unknown reports that some attempt may have been applied
// without the caller learning it (only for writes), so a definitive error
// afterwards may be the consequence of that earlier attempt.
func (c *Client) invoke(ctx context.Context, policy retryPolicy, stale bool,
	call func(context.Context, *grpc.ClientConn) error) (unknown bool, err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.CallTimeout)
		defer cancel()
	}
	bo := c.newBackoff()
	redirects := 0
	var last error
	for {
		addr, conn, err := c.pick(stale)
		if err != nil {
			return unknown, err
		}
		actx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
		err = call(actx, conn)
		cancel()
		if err == nil {
			return unknown, nil
		}
		class, hint := c.classify(err)
		if ctx.Err() != nil {
			if class == classFinal && hasReason(err) {
				return unknown, mapError(err)
			}
			return unknown, giveUp(ctx, unknown || (policy != retryRead && class != classNotLeader && class != classNotSent), mapError(err))
		}
		last = mapError(err)
		switch class {
		case classFinal:
			return unknown, last
		case classNotSent:
			c.noteFailure(addr, stale)
		case classNotLeader:
			c.noteHint(err)
			if hint != "" && hint != addr && redirects < maxFreeRedirects {
				c.setLeader(hint)
				redirects++
				continue
			}
			if hint != "" {
				c.setLeader(hint)
			} else {
				c.noteFailure(addr, stale)
			}
		case classRetryAfter:
			// A rate limit: nothing was applied; wait at least what the
			// server asked. When that outlasts the caller's deadline (or
			// CallTimeout), the answer is the refusal itself, now.
			wait := max(retryDelay(err), bo.delay())
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
				if unknown {
					return unknown, fmt.Errorf("%w: %w", ErrOutcomeUnknown, last)
				}
				return unknown, last
			}
			if err := c.sleep(ctx, wait); err != nil {
				return unknown, giveUp(ctx, unknown, last)
			}
			continue
		case classTransient:
			switch policy {
			case retryNotLeader:
				return true, fmt.Errorf("%w: %w", ErrOutcomeUnknown, last)
			case retryIdempotent:
				unknown = true
			}
			c.noteFailure(addr, stale)
		}
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		if closed {
			return unknown, ErrClosed
		}
		if err := c.sleep(ctx, bo.delay()); err != nil {
			return unknown, giveUp(ctx, unknown, last)
		}
		redirects = 0
	}
}

// hasReason reports whether err is a server answer with an authority reason.
func hasReason(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return true
	}
	_, info := errorInfo(err)
	return info != nil
}

// headered is a response with a ResponseHeader.
type headered interface{ GetHeader() *pb.ResponseHeader }

// unary runs a unary call through invoke and learns the leader from the
// response header.
func unary[Resp headered](ctx context.Context, c *Client, policy retryPolicy, stale bool,
	call func(context.Context, *grpc.ClientConn) (Resp, error)) (resp Resp, unknown bool, err error) {
	unknown, err = c.invoke(ctx, policy, stale, func(ctx context.Context, conn *grpc.ClientConn) error {
		r, err := call(ctx, conn)
		if err == nil {
			resp = r
		}
		return err
	})
	if err == nil && !stale {
		c.noteHeader(resp.GetHeader())
	}
	return resp, unknown, err
}

// ReadOption adjusts a read.
type ReadOption func(*readOptions)

type readOptions struct{ stale bool }

// Stale lets a read be served from the applied state of whichever server
// answers (the configured endpoints in order), without confirming
// leadership: it may miss the latest commits. Default reads are
// linearizable (served by the leader after a quorum check).
func Stale() ReadOption { return func(o *readOptions) { o.stale = true } }

func readOpts(opts []ReadOption) readOptions {
	var o readOptions
	for _, f := range opts {
		f(&o)
	}
	return o
}

func (o readOptions) proto() *pb.ReadOptions { return &pb.ReadOptions{Stale: o.stale} }
