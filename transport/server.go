// Package transport serves the authority.v1 gRPC API over the leader-side
// promotion.Service and the node's replicated state: followers forward
// writes to the leader, reads are linearizable (leader, barrier done, and a
// quorum check) unless the caller asks for a stale read.
package transport

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/authz"
	"github.com/aerodb/authority/cluster"
	"github.com/aerodb/authority/promotion"
	"github.com/aerodb/authority/tlsfiles"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// forwardedKey marks a request forwarded by a follower, so a node that is
// not leader either does not forward it again (no loops).
const forwardedKey = "x-authority-forwarded"

// Config of the gRPC server.
type Config struct {
	Node    *cluster.Node
	Service *promotion.Service
	// Peers maps raft server ids to their gRPC addresses, for forwarding
	// and for NOT_LEADER hints.
	Peers map[string]string
	// ForwardRoutes overrides the address dialled to forward to a peer
	// (id → address), e.g. a per-link proxy; hints keep Peers' addresses.
	ForwardRoutes map[string]string
	Logger        hclog.Logger
	// Dial options for forwarding connections (tests may add interceptors).
	DialOptions []grpc.DialOption
	// TLS, when set, secures forwarding connections with this server's
	// certificate; the leader authorizes the original caller, whose
	// identity travels in authz.MetaOnBehalfOf with the cluster id. Nil:
	// plaintext (--insecure).
	TLS *tlsfiles.Source
	// Limits are the rate and stream limits (ratelimit.go); the zero value
	// turns them off. Metrics, when set, registers their counter.
	Limits  RateLimits
	Metrics prometheus.Registerer
	// MinLeaseTTL refuses a policy whose lease TTL is shorter (0: no
	// bound); MinLeaseTTLWhy says what it was derived from.
	MinLeaseTTL    time.Duration
	MinLeaseTTLWhy string
}

// Server implements every authority.v1 service.
type Server struct {
	node   *cluster.Node
	svc    *promotion.Service
	peers  map[string]string
	routes map[string]string
	logger hclog.Logger
	dialOp []grpc.DialOption
	limits *limiter
	saves  *saveLimits
	minTTL time.Duration
	ttlWhy string

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// New builds a server; Register attaches it to a grpc.Server.
func New(cfg Config) *Server {
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	creds := insecure.NewCredentials()
	if cfg.TLS != nil {
		creds = cfg.TLS.Credentials(false)
	}
	dial := append([]grpc.DialOption{grpc.WithTransportCredentials(creds)}, cfg.DialOptions...)
	return &Server{node: cfg.Node, svc: cfg.Service, peers: cfg.Peers, routes: cfg.ForwardRoutes, logger: logger, dialOp: dial,
		limits: newLimiter(cfg.Limits, cfg.Metrics), saves: newSaveLimits(), conns: map[string]*grpc.ClientConn{}, minTTL: cfg.MinLeaseTTL, ttlWhy: cfg.MinLeaseTTLWhy}
}

// Register attaches every service to g. The gRPC server must chain
// UnaryInterceptor and StreamInterceptor after authz's (rate limits).
func (s *Server) Register(g *grpc.Server) {
	pbgrpc.RegisterDomainsServer(g, &domains{Server: s})
	pbgrpc.RegisterLeasesServer(g, &leases{Server: s})
	pbgrpc.RegisterWatermarksServer(g, &watermarks{Server: s})
	pbgrpc.RegisterPromotionServer(g, limitedPromotion{PromotionServer: &promotionAPI{Server: s}, s: s})
	pbgrpc.RegisterWatchServer(g, &watch{Server: s})
	pbgrpc.RegisterClusterServer(g, &clusterAPI{Server: s})
}

// Close drops forwarding connections.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = map[string]*grpc.ClientConn{}
}

// addrOf is a server's gRPC address: from the replicated server directory
// (servers that joined), else from the static peer list.
func (s *Server) addrOf(id string) string {
	if a, ok := s.node.FSM().ServerAddresses()[id]; ok {
		return a
	}
	return s.peers[id]
}

func (s *Server) header() *pb.ResponseHeader {
	id := s.leaderHint()
	return &pb.ResponseHeader{ServedBy: s.node.ID(), LeaderId: id, LeaderGrpcAddress: s.addrOf(id),
		Term: s.node.Term(), AppliedIndex: s.node.Raft().AppliedIndex()}
}

// leaderHint is the leader a client should go to: raft's leader, except
// this node itself while it is not yet serving (its barrier is pending), so
// a client never gets redirected to the node that just refused it.
func (s *Server) leaderHint() string {
	id, _ := s.node.Leader()
	if id == s.node.ID() && !s.svc.Ready() {
		return ""
	}
	return id
}

// leaderMeta is the NOT_LEADER hint: who leads and where its API is.
func (s *Server) leaderMeta() map[string]string {
	id := s.leaderHint()
	if id == "" {
		return nil
	}
	return map[string]string{pb.MetaLeaderID: id, pb.MetaLeaderAddr: s.addrOf(id)}
}

// fail converts an error to a status with the leader hint when relevant.
func (s *Server) fail(err error) error { return toStatus(err, s.leaderMeta()) }

// leaderConn returns a connection to the current leader's API, or nil when
// this node should serve itself (it leads, the leader is unknown, or the
// request was already forwarded once).
func (s *Server) leaderConn(ctx context.Context) *grpc.ClientConn {
	if s.svc.Ready() || forwarded(ctx) {
		return nil
	}
	id, _ := s.node.Leader()
	addr := s.addrOf(id)
	if id == "" || id == s.node.ID() || addr == "" {
		return nil
	}
	if r, ok := s.routes[id]; ok {
		addr = r
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.conns[addr]; ok {
		return c
	}
	c, err := grpc.NewClient(addr, s.dialOp...)
	if err != nil {
		s.logger.Warn("dial leader", "leader", id, "address", addr, "error", err)
		return nil
	}
	s.conns[addr] = c
	return c
}

func forwarded(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	return ok && len(md.Get(forwardedKey)) > 0
}

// forwardCtx marks a call as forwarded and, with TLS, names whose call it
// is and this server's cluster (the leader authorizes that identity again).
func (s *Server) forwardCtx(ctx context.Context) context.Context {
	kv := []string{forwardedKey, "1"}
	if id, ok := authz.IdentityFrom(ctx); ok {
		kv = append(kv, authz.MetaOnBehalfOf, id.String(), authz.MetaClusterID, s.node.ClusterID())
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// forward runs a unary write on the leader when this node is not it; ok is
// false when the caller must serve the request locally.
func forward[Resp any](ctx context.Context, s *Server, call func(context.Context, *grpc.ClientConn) (Resp, error)) (resp Resp, ok bool, err error) {
	return forwardAs(ctx, s, false, call)
}

// forwardRead is forward for a read: a read that fails on the way to the
// leader changed nothing, so it is NOT_LEADER (the client tries again,
// elsewhere), or RESOURCE_EXHAUSTED when a message exceeded a size limit
// (final: retrying cannot help) — never OUTCOME_UNKNOWN.
func forwardRead[Resp any](ctx context.Context, s *Server, call func(context.Context, *grpc.ClientConn) (Resp, error)) (resp Resp, ok bool, err error) {
	return forwardAs(ctx, s, true, call)
}

func forwardAs[Resp any](ctx context.Context, s *Server, read bool, call func(context.Context, *grpc.ClientConn) (Resp, error)) (resp Resp, ok bool, err error) {
	conn := s.leaderConn(ctx)
	if conn == nil {
		return resp, false, nil
	}
	if st := conn.GetState(); st == connectivity.TransientFailure || st == connectivity.Shutdown {
		// The leader is unreachable from here and nothing is sent: a
		// definite NOT_LEADER (the client tries another server), not an
		// unknown outcome.
		conn.Connect()
		return resp, true, s.fail(fmt.Errorf("%w: leader %s unreachable from %s", promotion.ErrNotLeader, conn.Target(), s.node.ID()))
	}
	resp, err = call(s.forwardCtx(ctx), conn)
	if err != nil && !hasErrorInfo(err) && read {
		if status.Code(err) == codes.ResourceExhausted {
			return resp, true, status.Error(codes.ResourceExhausted, clip("forwarding a read to the leader: "+status.Convert(err).Message()))
		}
		return resp, true, s.fail(fmt.Errorf("%w: forwarding a read to the leader failed (nothing changed): %s", promotion.ErrNotLeader, clip(err.Error())))
	}
	if err != nil && !hasErrorInfo(err) {
		// The hop to the leader failed without an answer from it: the write
		// may or may not have reached the leader and committed.
		err = toStatus(fmt.Errorf("%w: forwarding to the leader: %v", promotion.ErrIndeterminate, err), nil)
	}
	return resp, true, err
}

func hasErrorInfo(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	for _, d := range st.Details() {
		if _, ok := d.(*errdetails.ErrorInfo); ok {
			return true
		}
	}
	return false
}

// linearizable checks that a non-stale read may be served here: this node
// leads, has applied every earlier term's entries, and a quorum confirms it.
func (s *Server) linearizable(ctx context.Context) error {
	if !s.svc.Ready() {
		return s.fail(promotion.ErrNotLeader)
	}
	if err := s.node.VerifyLeader(ctx); err != nil {
		if errors.Is(err, promotion.ErrIndeterminate) || ctx.Err() != nil {
			// A read changes nothing: its outcome is never unknown.
			err = fmt.Errorf("%w: leadership not confirmed: %v", promotion.ErrNotLeader, err)
		}
		return s.fail(err)
	}
	// The leader's pending observations (a lease found expired, fencing
	// rejections) are written before the read: a reader sees every
	// observation made before it asked. Nothing pending writes nothing.
	s.svc.FlushNotes(ctx)
	return nil
}

func hexHash(h [32]byte) string { return hex.EncodeToString(h[:]) }
