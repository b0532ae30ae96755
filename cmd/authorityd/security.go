package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/authz"
	"github.com/aerodb/authority/cluster"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/tlsfiles"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// loadTLS reads the server's certificate material (nil with --insecure)
// and checks that the certificate names this server.
func loadTLS(cfg Config, logger hclog.Logger) (*tlsfiles.Source, error) {
	if cfg.Insecure {
		logger.Warn("INSECURE: --insecure: every listener is plaintext and every caller may do everything; use only on a trusted loopback for development")
		return nil, nil
	}
	src, err := tlsfiles.Load(tlsfiles.Files{CA: cfg.CACert, Cert: cfg.Cert, Key: cfg.Key}, tlsfiles.Options{
		TrustDomain: cfg.TrustDomain,
		OnReload: func(err error) {
			if err != nil {
				logger.Error("certificate reload failed; keeping the previous certificates", "error", err)
				return
			}
			logger.Info("certificates reloaded", "cert", cfg.Cert, "cacert", cfg.CACert)
		},
	})
	if err != nil {
		return nil, err
	}
	if want := (identity.Identity{Role: identity.Server, Name: cfg.NodeID}); src.Self() != want {
		return nil, fmt.Errorf("certificate %s names %s, not %s", cfg.Cert, src.Self(), want)
	}
	return src, nil
}

// reloadOnSIGHUP re-reads the certificates on every SIGHUP until ctx ends
// (changed files are also picked up on their own within a second).
func reloadOnSIGHUP(ctx context.Context, src *tlsfiles.Source) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			src.Reload()
		}
	}
}

// deriveClusterID is the id of a cluster bootstrapped from peers: a hash
// of the token and the sorted peer list (etcd derives its cluster id from
// --initial-cluster and --initial-cluster-token the same way). Every
// bootstrap peer computes the same id without talking to the others.
func deriveClusterID(token string, peers []Peer) string {
	if token == "" {
		token = "authority"
	}
	lines := make([]string, len(peers))
	for i, p := range peers {
		lines[i] = p.ID + "=" + p.RaftAddr
	}
	slices.Sort(lines)
	h := sha256.New()
	fmt.Fprintf(h, "authority-cluster/v1\n%s\n", token)
	for _, l := range lines {
		fmt.Fprintln(h, l)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// clusterIDOf binds the data dir to this server and returns its cluster
// id: the one stored in the data dir; else, for a new bootstrap, the
// derived one; else, for a new joiner, the running cluster's (asked over
// its API, retrying until ctx ends).
func clusterIDOf(ctx context.Context, cfg Config, src *tlsfiles.Source, logger hclog.Logger) (string, error) {
	stored, ok, err := cluster.ReadDataDirIdentity(cfg.DataDir)
	if err != nil {
		return "", err
	}
	want := ""
	switch {
	case ok:
		want = stored.ClusterID
	case len(cfg.Join) > 0 && !hasRaftState(cfg.DataDir):
		want, err = fetchClusterID(ctx, cfg, src, logger)
		if err != nil {
			return "", err
		}
	default:
		// A bootstrap peer, or a data dir from before identities were
		// stored (it keeps the id its peer list derives).
		want = deriveClusterID(cfg.ClusterToken, cfg.Peers)
	}
	return cluster.BindDataDir(cfg.DataDir, cfg.NodeID, want)
}

func hasRaftState(dir string) bool {
	_, err := os.Stat(dir + "/raft.db")
	return err == nil
}

func fetchClusterID(ctx context.Context, cfg Config, src *tlsfiles.Source, logger hclog.Logger) (string, error) {
	backoff := 100 * time.Millisecond
	for {
		id, err := askClusterID(ctx, cfg, src)
		if err == nil {
			logger.Info("learnt the cluster id from the running cluster", "cluster_id", id, "via", cfg.Join)
			return id, nil
		}
		logger.Warn("asking the cluster for its id; retrying", "error", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func askClusterID(ctx context.Context, cfg Config, src *tlsfiles.Source) (string, error) {
	var errs []error
	for _, ep := range cfg.Join {
		conn, err := grpc.NewClient(ep, grpc.WithTransportCredentials(serverCreds(src, true)))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		st, err := pbgrpc.NewClusterClient(conn).Status(cctx, &pb.StatusRequest{})
		cancel()
		conn.Close()
		if err == nil && st.GetClusterId() != "" {
			return st.GetClusterId(), nil
		}
		errs = append(errs, fmt.Errorf("%s: %v", ep, err))
	}
	return "", errors.Join(errs...)
}

// serverCreds are the credentials this server dials others with.
func serverCreds(src *tlsfiles.Source, verifyHost bool) credentials.TransportCredentials {
	if src == nil {
		return insecure.NewCredentials()
	}
	return src.Credentials(verifyHost)
}

// withClusterID adds this server's cluster id to every outgoing call (a
// join must present it).
func withClusterID(id string) grpc.DialOption {
	return grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(metadata.AppendToOutgoingContext(ctx, authz.MetaClusterID, id), method, req, reply, cc, opts...)
	})
}

// peerRejects logs refused handshakes (gRPC, HTTP, raft) at most once per
// second per peer host and kind of refusal: a client retrying with a bad
// certificate comes from a new port each time, so the port is not part of
// the key, and the kinds are a small fixed set.
type peerRejects struct {
	logger hclog.Logger
	mu     sync.Mutex
	last   map[string]time.Time
}

func newPeerRejects(logger hclog.Logger) *peerRejects {
	return &peerRejects{logger: logger, last: map[string]time.Time{}}
}

func (p *peerRejects) reject(peer string, err error) {
	key := peer
	if host, _, err := net.SplitHostPort(peer); err == nil {
		key = host
	}
	key += "|" + refusalKind(err)
	now := time.Now()
	p.mu.Lock()
	if t, ok := p.last[key]; ok && now.Sub(t) < time.Second {
		p.mu.Unlock()
		return
	}
	if len(p.last) > 4096 {
		p.last = map[string]time.Time{}
	}
	p.last[key] = now
	p.mu.Unlock()
	p.logger.Warn("connection refused", "peer", peer, "error", err)
}

// httpErrorLog routes net/http's own errors to the server's log, except
// TLS handshake failures: the certificate check already logged those, once
// per second per peer (a client retrying with a bad certificate must not
// flood the log).
func httpErrorLog(logger hclog.Logger) *log.Logger {
	return log.New(handshakeFilter{w: logger.StandardWriter(&hclog.StandardLoggerOptions{InferLevels: true})}, "", 0)
}

type handshakeFilter struct{ w io.Writer }

func (f handshakeFilter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("TLS handshake error")) {
		return len(p), nil
	}
	return f.w.Write(p)
}

// refusalKind sorts a refused handshake into a small fixed set.
func refusalKind(err error) string {
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var hostname x509.HostnameError
	switch {
	case errors.As(err, &unknown):
		return "unknown-authority"
	case errors.As(err, &invalid):
		return fmt.Sprintf("invalid-%d", invalid.Reason)
	case errors.As(err, &hostname):
		return "hostname"
	case errors.Is(err, identity.ErrNoIdentity):
		return "no-identity"
	case errors.Is(err, cluster.ErrOtherCluster):
		return "other-cluster"
	}
	return "other"
}

// joinedPeers asks the running cluster (cfg.Join) for every server's gRPC
// address, best effort: a server started with --join has no static peer
// list, and servers that formed the cluster by bootstrap are not in the
// replicated server directory, so without this it could neither forward
// to such a leader nor probe such a voter before a membership change.
func joinedPeers(ctx context.Context, cfg Config, src *tlsfiles.Source) map[string]string {
	out := map[string]string{}
	for _, ep := range cfg.Join {
		conn, err := grpc.NewClient(ep, grpc.WithTransportCredentials(serverCreds(src, true)))
		if err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		m, err := pbgrpc.NewClusterClient(conn).Members(cctx, &pb.MembersRequest{})
		cancel()
		conn.Close()
		if err != nil {
			continue
		}
		for _, s := range m.GetServers() {
			if s.GetGrpcAddress() != "" {
				out[s.GetId()] = s.GetGrpcAddress()
			}
		}
		return out
	}
	return out
}
