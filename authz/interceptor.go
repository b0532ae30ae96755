package authz

import (
	"context"
	"errors"
	"fmt"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/aerodb/authority/identity"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Metadata a server adds when it forwards a call to the leader: whose call
// it is, and which cluster the forwarding server belongs to. Honoured only
// from a verified server certificate.
const (
	MetaOnBehalfOf = "x-authority-on-behalf-of"
	MetaClusterID  = "x-authority-cluster-id"
)

// Config of the interceptor.
type Config struct {
	// Insecure turns authorization off (authorityd --insecure: plaintext,
	// every caller may do everything). Logged loudly by the server.
	Insecure bool
	// TrustDomain of identities (default identity.DefaultTrustDomain).
	TrustDomain string
	// ClusterID is this server's cluster id: calls forwarded by a server,
	// and joins, must carry the same.
	ClusterID func() string
	// Kinds looks up a domain's kind (holder roles are limited by kind).
	Kinds KindOf
	// Denied is told about every refused call (metrics, rate-limited log).
	Denied func(method string, id identity.Identity, err error)
}

type ctxKey struct{}

// IdentityFrom is the caller's effective identity, set by the interceptor
// (zero in insecure mode).
func IdentityFrom(ctx context.Context) (identity.Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(identity.Identity)
	return id, ok && !id.IsZero()
}

// WithIdentity returns ctx carrying id (tests of handlers).
func WithIdentity(ctx context.Context, id identity.Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// Unary authorizes every unary call.
func (c Config) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if c.Insecure {
			return handler(ctx, req)
		}
		id, err := c.caller(ctx, info.FullMethod)
		if err == nil {
			err = Decide(id, info.FullMethod, req, c.Kinds)
		}
		if err != nil {
			return nil, c.refuse(info.FullMethod, id, err)
		}
		return handler(WithIdentity(ctx, id), req)
	}
}

// Stream authorizes a stream when it opens (the caller's identity) and
// every message it receives (whom the message acts as).
func (c Config) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if c.Insecure {
			return handler(srv, ss)
		}
		id, err := c.caller(ss.Context(), info.FullMethod)
		if err == nil {
			err = decideOpen(id, info.FullMethod, c.Kinds)
		}
		if err != nil {
			return c.refuse(info.FullMethod, id, err)
		}
		return handler(srv, &checkedStream{ServerStream: ss, ctx: WithIdentity(ss.Context(), id), id: id, method: info.FullMethod, c: c})
	}
}

type checkedStream struct {
	grpc.ServerStream
	ctx    context.Context
	id     identity.Identity
	method string
	c      Config
}

func (s *checkedStream) Context() context.Context { return s.ctx }

func (s *checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if Table[s.method].Subjects == nil {
		return nil
	}
	if err := Decide(s.id, s.method, m, s.c.Kinds); err != nil {
		return s.c.refuse(s.method, s.id, err)
	}
	return nil
}

// caller is the effective identity: the verified client certificate's, or,
// for a call a server forwarded, the identity it forwards for.
func (c Config) caller(ctx context.Context, method string) (identity.Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return identity.Identity{}, errors.New("no TLS peer")
	}
	tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(tlsInfo.State.PeerCertificates) == 0 {
		return identity.Identity{}, errors.New("no client certificate")
	}
	td := c.TrustDomain
	if td == "" {
		td = identity.DefaultTrustDomain
	}
	// The handshake verified the chain (tlsfiles); this reads the identity.
	id, err := identity.FromCertificate(tlsInfo.State.PeerCertificates[0], td)
	if err != nil {
		return identity.Identity{}, err
	}
	md, _ := metadata.FromIncomingContext(ctx)
	behalf, cluster := first(md, MetaOnBehalfOf), first(md, MetaClusterID)
	if id.Role != identity.Server {
		if behalf != "" || cluster != "" {
			return id, errors.New("only servers forward calls on behalf of others")
		}
		return id, nil
	}
	ours := ""
	if c.ClusterID != nil {
		ours = c.ClusterID()
	}
	if cluster != "" && cluster != ours {
		return id, errors.New("server of another cluster (cluster id " + clip(cluster) + ", ours " + ours + ")")
	}
	if method == svcCluster+"AddServer" && cluster == "" {
		return id, errors.New("a joining server must present the cluster id")
	}
	if behalf == "" {
		return id, nil
	}
	if cluster == "" {
		return id, errors.New("a forwarded call must carry the cluster id")
	}
	fwd, err := identity.Parse(behalf)
	if err != nil {
		return id, err
	}
	return fwd, nil
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// refuse reports and converts a denial to PermissionDenied (the message
// names the method and why, bounded; never the request's content).
func (c Config) refuse(method string, id identity.Identity, err error) error {
	if c.Denied != nil {
		c.Denied(method, id, err)
	}
	var many *TooMany
	if errors.As(err, &many) {
		st := status.New(codes.InvalidArgument, many.Error())
		if withInfo, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: pb.ReasonInvalidArgument, Domain: pb.ErrorDomain,
			Metadata: map[string]string{"method": clip(method)}}); derr == nil {
			st = withInfo
		}
		return st.Err()
	}
	msg := fmt.Sprintf("permission denied: %s: %v", method, err)
	var d *Denied
	if errors.As(err, &d) {
		msg = d.Error()
	}
	st := status.New(codes.PermissionDenied, msg)
	if withInfo, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: pb.ReasonPermissionDenied, Domain: pb.ErrorDomain,
		Metadata: map[string]string{"method": clip(method), "identity": clip(id.String())}}); derr == nil {
		st = withInfo
	}
	return st.Err()
}
