package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/authz"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/cluster"
	"github.com/aerodb/authority/evidence"
	"github.com/aerodb/authority/failpoint"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/observability"
	"github.com/aerodb/authority/promotion"
	"github.com/aerodb/authority/tlsfiles"
	"github.com/aerodb/authority/transport"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
)

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// run starts every part of the server and blocks until ctx is cancelled
// (SIGTERM), then shuts down in reverse order.
func run(ctx context.Context, cfg Config) error {
	logger := hclog.New(&hclog.LoggerOptions{Name: "authorityd", Level: hclog.LevelFromString(cfg.LogLevel),
		JSONFormat: cfg.LogFormat == "json", Output: os.Stderr}).With("node", cfg.NodeID)
	reg := prometheus.NewRegistry()
	state := fsm.New()
	metrics := observability.NewMetrics(reg, state)
	deployMetrics := observability.NewDeployMetrics(reg)
	releaseMetrics := observability.NewReleaseMetrics(reg)
	src, err := loadTLS(cfg, logger)
	if err != nil {
		return err
	}
	restore, err := checkRestore(cfg, logger)
	if err != nil {
		return err
	}
	clusterID, err := clusterIDOf(ctx, cfg, src, logger)
	if err != nil {
		return err
	}
	evidenceStore, err := evidence.Open(filepath.Join(cfg.DataDir, "evidence"))
	if err != nil {
		return fmt.Errorf("evidence store: %w", err)
	}
	rejects := newPeerRejects(logger.Named("tls"))
	clusterCfg := cluster.Config{NodeID: cfg.NodeID, DataDir: cfg.DataDir, RaftAddr: cfg.RaftAddr, Logger: logger,
		FSM: state, Hooks: metrics, Evidence: evidenceStore, RaftRoutes: cfg.RaftRoutes, TLS: src, ClusterID: clusterID, RejectPeer: rejects.reject,
		HeartbeatTimeout: cfg.HeartbeatTimeout, ElectionTimeout: cfg.ElectionTimeout,
		LeaderLeaseTimeout: cfg.LeaderLeaseTimeout, SnapshotThreshold: cfg.SnapshotThreshold,
		SnapshotInterval: cfg.SnapshotInterval, TrailingLogs: cfg.TrailingLogs,
		MaxAppendEntries: cfg.RaftMaxAppendEntries, CommitTimeout: cfg.RaftCommitTimeout, LogCacheSize: cfg.RaftLogCache, LogStore: cfg.RaftLogStore,
		HistoryInMemory: cfg.HistoryInMemory,
		BatchApplyCh:    cfg.RaftBatchApply, ApplyOneByOne: !cfg.RaftBatchFSM,
		PreVoteDisabled: !cfg.RaftPreVote,
		// A log entry failing its checksum is never applied: one line naming
		// the index, the file and what to do, then exit (not a panic).
		OnCorruption: func(err error) {
			fmt.Fprintln(os.Stderr, "authorityd:", err)
			os.Exit(3)
		}}
	if cfg.ForceNewCluster {
		if err := cluster.ForceNewCluster(clusterCfg); err != nil {
			return err
		}
		logger.Warn("FORCE NEW CLUSTER: the raft configuration is now this server alone; every log entry kept; add servers with --join and restart without --force-new-cluster")
	}
	if restore != nil {
		if err := restoreFrom(cfg, clusterCfg, restore, logger); err != nil {
			return err
		}
	}
	node, err := cluster.Open(clusterCfg)
	if err != nil {
		return err
	}
	logger.Info("cluster identity", "cluster_id", clusterID, "tls", src != nil)
	if cfg.Bootstrap {
		peers := make([]cluster.Peer, len(cfg.Peers))
		for i, p := range cfg.Peers {
			peers[i] = cluster.Peer{ID: p.ID, Address: p.RaftAddr}
		}
		if err := node.Bootstrap(peers); err != nil {
			node.Shutdown()
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	clock, clockNote, err := serverClock()
	if err != nil {
		node.Shutdown()
		return err
	}
	if clockNote != "" {
		logger.Warn(clockNote)
	}
	svc := promotion.NewService(promotion.Config{Log: node, FSM: node.FSM(), Clock: clock,
		PromotionDisabled: cfg.PromotionDisabled, Logger: logger.Named("promotion"), Observer: metrics,
		WatermarkEntryPerCall: !cfg.WatermarkMerge,
		Policy:                promotion.PolicyConfig{Dwell: cfg.PolicyDwell, BackoffMin: cfg.PolicyBackoffMin, BackoffMax: cfg.PolicyBackoffMax}})
	grpcLis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		node.Shutdown()
		return fmt.Errorf("grpc listen: %w", err)
	}
	httpLis, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		grpcLis.Close()
		node.Shutdown()
		return fmt.Errorf("http listen: %w", err)
	}
	peers := map[string]string{}
	if len(cfg.Join) > 0 {
		peers = joinedPeers(ctx, cfg, src)
	}
	for _, p := range cfg.Peers {
		peers[p.ID] = p.GRPCAddr
	}
	api := transport.New(transport.Config{Node: node, Service: svc, Peers: peers, ForwardRoutes: cfg.ForwardRoutes, Logger: logger.Named("grpc"), TLS: src,
		Limits: cfg.Limits.rateLimits(), Metrics: reg, MinLeaseTTL: minLeaseTTL(cfg), MinLeaseTTLWhy: minLeaseTTLWhy(cfg)})
	denials := authz.NewReporter(logger.Named("authz"), reg)
	gate := authz.Config{Insecure: src == nil, TrustDomain: trustDomain(cfg), ClusterID: node.ClusterID, Denied: denials.Denied,
		Kinds: func(domain string) (pb.DomainKind, bool) {
			a, ok := node.FSM().AuthorityOf(domain)
			return a.Kind, ok
		}}
	lim := cfg.Limits
	// Authorization first (it puts the caller's identity in the context),
	// then the per-identity rate and stream limits.
	opts := []grpc.ServerOption{grpc.ChainUnaryInterceptor(gate.Unary(), api.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(gate.Stream(), api.StreamInterceptor())}
	opts = append(opts, grpcLimits(lim)...)
	grpcLis = netutil.LimitListener(grpcLis, lim.GRPCMaxConnections)
	if src != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(src.ServerConfig([]string{"h2"}, nil, rejects.reject))))
	}
	g := grpc.NewServer(opts...)
	api.Register(g)
	registerSecurityMetrics(reg, src == nil)
	httpSrv := &http.Server{Handler: httpHandler(reg, node, svc, src == nil), ErrorLog: httpErrorLog(logger.Named("http"))}
	httpLimits(httpSrv, lim)
	httpLis = netutil.LimitListener(httpLis, lim.HTTPMaxConnections)
	if src != nil {
		httpSrv.TLSConfig = src.ServerConfig([]string{"http/1.1"}, nil, rejects.reject)
		httpLis = tls.NewListener(httpLis, httpSrv.TLSConfig)
	}
	var metricsSrv *http.Server
	var metricsLis net.Listener
	if cfg.MetricsAddr != "" {
		if metricsLis, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			grpcLis.Close()
			httpLis.Close()
			node.Shutdown()
			return fmt.Errorf("metrics listen: %w", err)
		}
		metricsSrv = &http.Server{Handler: plainHandler(reg, node)}
		httpLimits(metricsSrv, lim)
		metricsLis = netutil.LimitListener(metricsLis, lim.HTTPMaxConnections)
	}

	var wg sync.WaitGroup
	leadCtx, stopLead := context.WithCancel(context.Background())
	if cfg.EventLog != "" {
		f, dropped, err := observability.OpenEventLog(cfg.EventLog)
		if err != nil {
			stopLead()
			node.Shutdown()
			return fmt.Errorf("event log: %w", err)
		}
		if dropped > 0 {
			logger.Warn("event log ended in a torn line (a crash mid-write); cut it off", "path", cfg.EventLog, "bytes", dropped)
		}
		defer f.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			observability.RunSink(leadCtx, node.FSM(), 1, observability.NewJSONLinesSink(f), logger.Named("events"))
		}()
	}
	wg.Add(1)
	go func() { // the deploy metrics count committed deploy events
		defer wg.Done()
		observability.RunSink(leadCtx, node.FSM(), 1, deployMetrics, logger.Named("deploy-metrics"))
	}()
	wg.Add(1)
	go func() { // the release metrics count committed release decisions
		defer wg.Done()
		observability.RunSink(leadCtx, node.FSM(), 1, releaseMetrics, logger.Named("release-metrics"))
	}()
	if src != nil {
		wg.Add(1)
		go func() { defer wg.Done(); reloadOnSIGHUP(leadCtx, src) }()
	}
	if metricsSrv != nil {
		wg.Add(1)
		go func() { defer wg.Done(); serveLogged(logger, "metrics", metricsSrv.Serve(metricsLis)) }()
	}
	wg.Add(3)
	go func() { defer wg.Done(); cluster.RunLeadership(leadCtx, node, svc, logger.Named("leadership")) }()
	go func() { defer wg.Done(); serveLogged(logger, "grpc", g.Serve(grpcLis)) }()
	go func() { defer wg.Done(); serveLogged(logger, "http", httpSrv.Serve(httpLis)) }()
	logger.Info("serving", "raft", node.Address(), "grpc", grpcLis.Addr().String(), "http", httpLis.Addr().String())
	if len(cfg.Join) > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); joinCluster(leadCtx, cfg, src, clusterID, logger.Named("join")) }()
	}

	<-ctx.Done()
	logger.Info("shutting down")
	stopLead() // leadership loop, notary and sinks end first: no new proposals
	shutdown(g, httpSrv)
	if metricsSrv != nil {
		metricsSrv.Close()
	}
	api.Close()
	if n, took, err := node.SnapshotForRestart(); err != nil {
		logger.Warn("snapshot before stopping", "error", err)
	} else if n > 0 {
		logger.Info("snapshot before stopping: the next start restores it instead of replaying", "entries", n, "took", took.Round(time.Millisecond))
	}
	err = node.Shutdown()
	wg.Wait()
	return err
}

// grpcLimits are the gRPC server's resource limits (docs/LIMITS.md).
func grpcLimits(l Limits) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(l.GRPCMaxRecvBytes),
		grpc.MaxConcurrentStreams(uint32(l.GRPCMaxStreams)),
		grpc.ConnectionTimeout(l.GRPCHandshakeTimeout),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: l.GRPCKeepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: l.GRPCMaxConnectionIdle,
			Time: l.GRPCKeepaliveTime, Timeout: l.GRPCKeepaliveTimeout}),
	}
}

// httpLimits sets an HTTP server's timeouts and header bound.
func httpLimits(s *http.Server, l Limits) {
	s.ReadHeaderTimeout, s.ReadTimeout, s.IdleTimeout = l.HTTPReadHeaderTimeout, l.HTTPReadTimeout, l.HTTPIdleTimeout
	s.MaxHeaderBytes = l.HTTPMaxHeaderBytes
}

func serveLogged(logger hclog.Logger, what string, err error) {
	if err != nil && !errors.Is(err, grpc.ErrServerStopped) && !errors.Is(err, http.ErrServerClosed) {
		logger.Error("server stopped", "server", what, "error", err)
	}
}

// shutdown stops the API servers gracefully, bounded so open watch and
// keep-alive streams cannot hold the process.
func shutdown(g *grpc.Server, h *http.Server) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		done := make(chan struct{})
		go func() { g.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second): // open watch / keep-alive streams
			g.Stop()
		}
	}()
	go func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		h.Shutdown(ctx)
	}()
	wg.Wait()
}

// httpHandler serves health, readiness and Prometheus metrics from a
// registry of this server's own (no global registry).
func httpHandler(reg *prometheus.Registry, node *cluster.Node, svc *promotion.Service, insecureMode bool) http.Handler {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerRaftMetrics(reg, node, svc)
	mux := http.NewServeMux()
	addHealth(mux, reg, node)
	// Failpoint admin (test builds only: 404 otherwise; loopback callers only).
	mux.Handle("/debug/failpoints", failpoint.Handler())
	mux.Handle("/", newStatusPage(node, svc, insecureMode))
	return mux
}

// plainHandler is the optional plaintext listener (--metrics-addr): health,
// readiness and metrics only, nothing that reveals domain state.
func plainHandler(reg *prometheus.Registry, node *cluster.Node) http.Handler {
	mux := http.NewServeMux()
	addHealth(mux, reg, node)
	return mux
}

func addHealth(mux *http.ServeMux, reg *prometheus.Registry, node *cluster.Node) {
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		leaderID, _ := node.Leader()
		if leaderID == "" {
			http.Error(w, "no known raft leader", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "ok leader=%s applied_index=%d\n", leaderID, node.FSM().LastIndex())
	})
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
}

// registerSecurityMetrics exposes whether the server runs without TLS.
func registerSecurityMetrics(reg prometheus.Registerer, insecureMode bool) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "authority_insecure",
		Help: "1 when this server runs --insecure: plaintext listeners, no authorization."}, func() float64 { return b2f(insecureMode) }))
}

func trustDomain(cfg Config) string {
	if cfg.TrustDomain == "" {
		return identity.DefaultTrustDomain
	}
	return cfg.TrustDomain
}

func registerRaftMetrics(reg prometheus.Registerer, node *cluster.Node, svc *promotion.Service) {
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	r := node.Raft()
	gauge("authority_raft_term", "Current raft term.", func() float64 { return float64(r.CurrentTerm()) })
	gauge("authority_raft_commit_index", "Raft commit index.", func() float64 { return float64(r.CommitIndex()) })
	gauge("authority_raft_applied_index", "Raft applied index.", func() float64 { return float64(r.AppliedIndex()) })
	gauge("authority_raft_is_leader", "1 when this node is the raft leader.", func() float64 { return b2f(r.State() == raft.Leader) })
	gauge("authority_leader_ready", "1 when this node leads and its barrier is done.", func() float64 { return b2f(svc.Ready()) })
	gauge("authority_raft_last_contact_seconds", "Seconds since the last contact with the leader (0 on the leader).", func() float64 {
		if r.State() == raft.Leader {
			return 0
		}
		return time.Since(r.LastContact()).Seconds()
	})
	gauge("authority_leases", "Leases tracked by this node's leader-local table.", func() float64 { return float64(svc.Leases().Len()) })
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// joinCluster asks the cluster at cfg.Join to add this node as a voter,
// retrying with backoff until it succeeds or ctx ends. Adding a voter that
// is already in the configuration is a no-op, so this runs on every start.
func joinCluster(ctx context.Context, cfg Config, src *tlsfiles.Source, clusterID string, logger hclog.Logger) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := tryJoin(ctx, cfg, src, clusterID)
		if err == nil {
			logger.Info("joined the cluster", "via", cfg.Join)
			return
		}
		logger.Warn("join failed; retrying", "error", err, "backoff", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func tryJoin(ctx context.Context, cfg Config, src *tlsfiles.Source, clusterID string) error {
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	ccfg := client.Config{Endpoints: cfg.Join, RequestTimeout: 40 * time.Second, DialOptions: []grpc.DialOption{withClusterID(clusterID)}}
	if src != nil {
		ccfg.Credentials = src.Credentials(true)
	}
	c, err := client.DialConfig(ctx, ccfg)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.AddServer(ctx, cfg.NodeID, cfg.RaftAddr, cfg.GRPCAddr)
	return err
}

// minLeaseTTL is the configured minimum lease TTL, or the one derived from
// the raft timeouts.
func minLeaseTTL(cfg Config) time.Duration {
	if cfg.MinLeaseTTL > 0 {
		return cfg.MinLeaseTTL
	}
	return client.MinLeaseTTL(cfg.HeartbeatTimeout, cfg.ElectionTimeout)
}

func minLeaseTTLWhy(cfg Config) string {
	if cfg.MinLeaseTTL > 0 {
		return "set by --min-lease-ttl"
	}
	return fmt.Sprintf("derived from raft heartbeat timeout %v and election timeout %v", cfg.HeartbeatTimeout, cfg.ElectionTimeout)
}
