package transport

import (
	"container/list"
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/authz"
	"github.com/aerodb/authority/identity"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// ReasonRateLimited is the ErrorInfo reason of a call refused by a rate or
// stream limit (code RESOURCE_EXHAUSTED, with a google.rpc.RetryInfo
// delay): nothing was proposed; the call may be made again after the delay.
const ReasonRateLimited = pb.ReasonRateLimited

// Flags of the rate limits (named in refusals; cmd/authorityd defines
// them, docs/LIMITS.md lists them).
const (
	FlagWriteRate          = "--write-rate-per-identity"
	FlagWriteBurst         = "--write-burst-per-identity"
	FlagStreamsPerIdentity = "--grpc-max-streams-per-identity"
	FlagPromoteDeniedRate  = "--promote-denied-rate-per-domain"
	FlagPromoteDeniedBurst = "--promote-denied-burst-per-domain"
)

// Defaults of RateLimits. None throttles the project's own load: the
// benchmarks' busiest identity sends about 1,200 watermark batches (or
// 1,000 domain creations) as fast as the leader takes them, below the
// write burst; the jepsen-like workload sends at most about 50 writes/s
// per identity, and at most about 52 promotions/s on its one aerodb
// domain (two clients, a 20 ms pause, 55% promotions), half the denial
// rate; a client library keeps every KeepAlive, Watch and ReportProgress
// stream of one identity on one connection per server, already capped at
// 128 by --grpc-max-streams.
const (
	DefaultWritesPerSecond        = 1000
	DefaultWriteBurst             = 2000
	DefaultStreamsPerIdentity     = 128
	DefaultPromoteDeniedPerSecond = 100
	DefaultPromoteDeniedBurst     = 200
	// DefaultMaxTracked bounds the identities and the domains whose
	// buckets are kept (least recently used evicted first: an evicted
	// bucket comes back full).
	DefaultMaxTracked = 10_000
	// streamRetryDelay is the RetryInfo delay of a stream refused by the
	// per-identity cap (a stream of the identity may end any time).
	streamRetryDelay = time.Second
)

// RateLimits bound how fast one identity writes, how many streams it
// holds, and how fast one domain collects denied promotions. A zero rate
// or cap turns that limit off. Identities exist only with mutual TLS: an
// --insecure server applies the per-domain limit only.
type RateLimits struct {
	// WritesPerSecond and WriteBurst: a token bucket per identity for the
	// RPCs that write (writeRPCs). It is charged by the server that serves
	// the write: the leader, for the caller a follower forwards for (a
	// follower forwarding a call charges nothing), so the limit is
	// cluster-wide. Lease renewals (KeepAlive) and progress reports never
	// touch the log and are not charged.
	WritesPerSecond float64
	WriteBurst      int
	// StreamsPerIdentity caps the concurrent streams (Watch, KeepAlive,
	// ReportProgress) one identity holds open on this server, over all its
	// connections.
	StreamsPerIdentity int
	// PromoteDeniedPerSecond and PromoteDeniedBurst: a token bucket per
	// domain, on the leader, charged by every committed denied promotion.
	// A Promote on a domain whose bucket is empty is refused before
	// anything is evaluated or proposed. Dry runs commit nothing: they are
	// neither charged nor refused. Allowed promotions are not charged.
	PromoteDeniedPerSecond float64
	PromoteDeniedBurst     int
	// MaxTracked bounds the identities and domains with a bucket
	// (DefaultMaxTracked when 0).
	MaxTracked int
}

// DefaultRateLimits are the defaults above.
func DefaultRateLimits() RateLimits {
	return RateLimits{WritesPerSecond: DefaultWritesPerSecond, WriteBurst: DefaultWriteBurst,
		StreamsPerIdentity: DefaultStreamsPerIdentity, PromoteDeniedPerSecond: DefaultPromoteDeniedPerSecond,
		PromoteDeniedBurst: DefaultPromoteDeniedBurst, MaxTracked: DefaultMaxTracked}
}

// rpcKind is how the rate limits see an RPC.
type rpcKind int

const (
	rpcRead rpcKind = iota
	// rpcWrite proposes (or may propose) a log entry, on the leader: a
	// follower forwards it.
	rpcWrite
	// rpcLocalWrite changes this server without a log entry (a forced
	// snapshot): charged by the server that runs it.
	rpcLocalWrite
	// rpcStream is a long-lived stream (counted against the stream cap).
	rpcStream
)

// rpcKinds classifies every RPC of authz.Table (TestEveryRPCHasARateKind).
// Promote is a write even as a dry run (it costs the leader the same
// evaluation); TransferLeadership is counted as a write (it costs an
// election); KeepAlive and ReportProgress are streams whose messages
// touch no log.
var rpcKinds = map[string]rpcKind{
	"/authority.v1.Domains/CreateDomain":      rpcWrite,
	"/authority.v1.Domains/GetDomain":         rpcRead,
	"/authority.v1.Domains/ListDomains":       rpcRead,
	"/authority.v1.Domains/UpdatePolicy":      rpcWrite,
	"/authority.v1.Domains/RegisterMember":    rpcWrite,
	"/authority.v1.Domains/AssignInitial":     rpcWrite,
	"/authority.v1.Domains/LabelReleaseAbort": rpcWrite,

	"/authority.v1.Leases/Acquire":   rpcWrite,
	"/authority.v1.Leases/KeepAlive": rpcStream,
	"/authority.v1.Leases/Release":   rpcWrite,
	// One committed entry each (a deploy step; a release decision, whose
	// evidence the validator verifies).
	"/authority.v1.Leases/DeployStep":        rpcWrite,
	"/authority.v1.Leases/ReleaseTransition": rpcWrite,

	"/authority.v1.Watermarks/Advance":        rpcWrite,
	"/authority.v1.Watermarks/ReportProgress": rpcStream,

	"/authority.v1.Promotion/Promote": rpcWrite,
	"/authority.v1.Promotion/Explain": rpcRead,
	"/authority.v1.Promotion/History": rpcRead,
	// RequestHandover changes only the leader's lease table; forwarded
	// there like a write and charged as one.
	"/authority.v1.Promotion/RequestHandover": rpcWrite,

	"/authority.v1.Watch/Watch": rpcStream,

	"/authority.v1.Cluster/AddServer":          rpcWrite,
	"/authority.v1.Cluster/RemoveServer":       rpcWrite,
	"/authority.v1.Cluster/Status":             rpcRead,
	"/authority.v1.Cluster/Members":            rpcRead,
	"/authority.v1.Cluster/TransferLeadership": rpcWrite,
	"/authority.v1.Cluster/Snapshot":           rpcLocalWrite,
	// A backup stream (one at a time per server and its own bucket:
	// SaveSnapshot).
	"/authority.v1.Cluster/SaveSnapshot": rpcStream,
}

// buckets is a token bucket per key, at most max keys (least recently used
// evicted). Every method takes the time: tests pass fixed times.
type buckets struct {
	limit rate.Limit
	burst int
	max   int

	mu  sync.Mutex
	m   map[string]*list.Element
	lru list.List // of *bucket, most recently used first
}

type bucket struct {
	key string
	lim *rate.Limiter
}

func newBuckets(perSecond float64, burst, maxKeys int) *buckets {
	if perSecond <= 0 {
		return nil
	}
	if maxKeys <= 0 {
		maxKeys = DefaultMaxTracked
	}
	return &buckets{limit: rate.Limit(perSecond), burst: max(burst, 1), max: maxKeys, m: map[string]*list.Element{}}
}

// get returns key's limiter (a full bucket for a new key), under b.mu.
func (b *buckets) get(key string) *rate.Limiter {
	if e, ok := b.m[key]; ok {
		b.lru.MoveToFront(e)
		return e.Value.(*bucket).lim
	}
	for b.lru.Len() >= b.max {
		old := b.lru.Back()
		b.lru.Remove(old)
		delete(b.m, old.Value.(*bucket).key)
	}
	x := &bucket{key: key, lim: rate.NewLimiter(b.limit, b.burst)}
	b.m[key] = b.lru.PushFront(x)
	return x.lim
}

// take spends a token of key at now; when there is none it spends nothing
// and returns the wait until one is available.
func (b *buckets) take(key string, now time.Time) (wait time.Duration, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	lim := b.get(key)
	if lim.AllowN(now, 1) {
		return 0, true
	}
	return b.waitFor(lim.TokensAt(now)), false
}

// ready reports whether key has a token at now, without spending it, and
// the wait until it will.
func (b *buckets) ready(key string, now time.Time) (wait time.Duration, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	tokens := b.get(key).TokensAt(now)
	if tokens >= 1 {
		return 0, true
	}
	return b.waitFor(tokens), false
}

// charge spends a token of key at now even when there is none (the bucket
// goes into debt: later calls wait longer).
func (b *buckets) charge(key string, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.get(key).ReserveN(now, 1)
}

// waitFor is the time until tokens grows to one, rounded up to a
// millisecond (never zero: a zero RetryInfo reads as "no delay").
func (b *buckets) waitFor(tokens float64) time.Duration {
	sec := (1 - tokens) / float64(b.limit)
	ms := math.Ceil(sec * 1000)
	return time.Duration(max(ms, 1)) * time.Millisecond
}

func (b *buckets) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.m)
}

// streamCounts counts the open streams per identity (an identity with none
// has no entry, so the map is bounded by the open streams).
type streamCounts struct {
	max int
	mu  sync.Mutex
	n   map[string]int
}

func (s *streamCounts) open(key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[key] >= s.max {
		return false
	}
	s.n[key]++
	return true
}

func (s *streamCounts) close(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n[key]--; s.n[key] <= 0 {
		delete(s.n, key)
	}
}

// limiter applies RateLimits.
type limiter struct {
	cfg      RateLimits
	writes   *buckets // nil: off
	denials  *buckets // nil: off
	streams  *streamCounts
	now      func() time.Time
	refusals *prometheus.CounterVec
}

func newLimiter(cfg RateLimits, reg prometheus.Registerer) *limiter {
	l := &limiter{cfg: cfg, now: time.Now,
		writes:  newBuckets(cfg.WritesPerSecond, cfg.WriteBurst, cfg.MaxTracked),
		denials: newBuckets(cfg.PromoteDeniedPerSecond, cfg.PromoteDeniedBurst, cfg.MaxTracked),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authority_rate_limited_total",
			Help: "Calls refused by a rate or stream limit (RESOURCE_EXHAUSTED), by RPC and the caller's role."}, []string{"method", "role"})}
	if cfg.StreamsPerIdentity > 0 {
		l.streams = &streamCounts{max: cfg.StreamsPerIdentity, n: map[string]int{}}
	}
	if reg != nil {
		reg.MustRegister(l.refusals)
	}
	return l
}

// refuse counts a refusal and builds its RESOURCE_EXHAUSTED status: an
// ErrorInfo (reason RATE_LIMITED, the flags of the limit) and, when wait
// is positive, a RetryInfo.
func (l *limiter) refuse(method string, id identity.Identity, wait time.Duration, flags, msg string) error {
	m := method
	if _, ok := rpcKinds[m]; !ok {
		m = "unknown"
	}
	role := "none"
	for _, r := range identity.Roles {
		if r == id.Role {
			role = string(r)
		}
	}
	l.refusals.WithLabelValues(m, role).Inc()
	meta := map[string]string{"limit": flags}
	if wait > 0 {
		msg += fmt.Sprintf("; retry in %v", wait)
		meta["retry_after_ms"] = fmt.Sprint(wait.Milliseconds())
	}
	st := status.New(reasonCode(ReasonRateLimited), msg)
	info := &errdetails.ErrorInfo{Reason: ReasonRateLimited, Domain: pb.ErrorDomain, Metadata: meta}
	withDetails, err := st.WithDetails(info)
	if wait > 0 {
		withDetails, err = st.WithDetails(info, &errdetails.RetryInfo{RetryDelay: durationpb.New(wait)})
	}
	if err == nil {
		st = withDetails
	}
	return st.Err()
}

// admitWrite charges a write by id.
func (l *limiter) admitWrite(method string, id identity.Identity) error {
	wait, ok := l.writes.take(id.String(), l.now())
	if ok {
		return nil
	}
	return l.refuse(method, id, wait, FlagWriteRate+", "+FlagWriteBurst,
		fmt.Sprintf("rate limited: %s writes faster than %g per second (burst %d), the per-identity write limit (%s, %s)",
			clip(id.String()), l.cfg.WritesPerSecond, l.writes.burst, FlagWriteRate, FlagWriteBurst))
}

// UnaryInterceptor applies the per-identity write limit. It runs after
// authz's interceptor (the caller's identity is in the context).
func (s *Server) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if s.limits.writes == nil {
			return handler(ctx, req)
		}
		kind := rpcKinds[info.FullMethod]
		if kind != rpcWrite && kind != rpcLocalWrite {
			return handler(ctx, req)
		}
		// A follower forwards a write to the leader, which charges the
		// caller it forwards for: charging here too would count it twice.
		if kind == rpcWrite && !s.svc.Ready() && !forwarded(ctx) {
			return handler(ctx, req)
		}
		id, ok := authz.IdentityFrom(ctx)
		if !ok {
			return handler(ctx, req) // --insecure: no identities
		}
		if err := s.limits.admitWrite(info.FullMethod, id); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamInterceptor applies the per-identity stream cap. It runs after
// authz's interceptor.
func (s *Server) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		id, ok := authz.IdentityFrom(ss.Context())
		if s.limits.streams == nil || !ok {
			return handler(srv, ss)
		}
		key := id.String()
		if !s.limits.streams.open(key) {
			return s.limits.refuse(info.FullMethod, id, streamRetryDelay, FlagStreamsPerIdentity,
				fmt.Sprintf("too many streams: %s already has %d open streams on %s, the per-identity limit (%s)",
					clip(key), s.limits.cfg.StreamsPerIdentity, s.node.ID(), FlagStreamsPerIdentity))
		}
		defer s.limits.streams.close(key)
		return handler(srv, ss)
	}
}

// limitedPromotion is the Promotion service with the per-domain limit of
// denied promotions in front of Promote (on the leader; a follower
// forwards, and the leader applies it).
type limitedPromotion struct {
	pbgrpc.PromotionServer
	s *Server
}

func (p limitedPromotion) Promote(ctx context.Context, req *pb.PromoteRequest) (*pb.PromoteResponse, error) {
	l := p.s.limits
	r := req.GetRequest()
	domain := r.GetDomain()
	if l.denials == nil || r.GetDryRun() || !p.s.svc.Ready() || domain == "" || len(domain) > MaxNameBytes {
		return p.PromotionServer.Promote(ctx, req) // (a bad name is refused there)
	}
	if wait, ok := l.denials.ready(domain, l.now()); !ok {
		id, _ := authz.IdentityFrom(ctx)
		return nil, l.refuse("/authority.v1.Promotion/Promote", id, wait, FlagPromoteDeniedRate+", "+FlagPromoteDeniedBurst,
			fmt.Sprintf("rate limited: domain %s has had more than %g denied promotions per second (burst %d), the per-domain limit (%s, %s); nothing was evaluated",
				quote(domain), l.cfg.PromoteDeniedPerSecond, l.denials.burst, FlagPromoteDeniedRate, FlagPromoteDeniedBurst))
	}
	resp, err := p.PromotionServer.Promote(ctx, req)
	if err == nil && resp.GetCommitted() && !resp.GetDuplicate() && !resp.GetRecord().GetDecision().GetAllowed() {
		l.denials.charge(domain, l.now())
	}
	return resp, err
}
