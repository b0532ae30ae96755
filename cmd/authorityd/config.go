package main

import (
	"errors"
	"flag"
	"fmt"
	"github.com/aerodb/authority/cluster"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/aerodb/authority/promotion"
	"github.com/aerodb/authority/transport"
	"gopkg.in/yaml.v3"
)

// Config of one authorityd. Precedence: flags > environment
// (AUTHORITYD_<FLAG>, dashes as underscores) > YAML file (--config) >
// defaults.
type Config struct {
	// NodeID is the raft server id, stable across restarts.
	NodeID string `yaml:"node_id"`
	// RaftAddr: TCP address for raft traffic between servers.
	RaftAddr string `yaml:"raft_addr"`
	// GRPCAddr: the client API.
	GRPCAddr string `yaml:"grpc_addr"`
	// HTTPAddr: /healthz, /readyz, /metrics.
	HTTPAddr string `yaml:"http_addr"`
	// DataDir holds raft.db and snapshots/.
	DataDir string `yaml:"data_dir"`
	// Peers: every voter (including this node) as id,raft_addr,grpc_addr.
	Peers []Peer `yaml:"peers"`
	// Bootstrap forms the cluster from Peers when the data dir is empty. It
	// is safe on every node with the same peer list, and a no-op on restart.
	Bootstrap bool `yaml:"bootstrap"`
	// Join lists gRPC endpoints of a running cluster: this node asks it to
	// add it as a voter (idempotent, so it is safe on every restart).
	Join []string `yaml:"join"`
	// RaftRoutes overrides the address this node dials for a peer's raft
	// traffic (id → address), e.g. a per-link proxy in fault tests.
	RaftRoutes map[string]string `yaml:"raft_routes"`
	// ForwardRoutes overrides the address this node dials to forward API
	// calls to a peer that leads (id → address), e.g. a per-link proxy in
	// fault tests. Hints given to clients keep the peer's own address.
	ForwardRoutes map[string]string `yaml:"forward_routes"`
	// Raft timing. HeartbeatTimeout is raft's follower timeout (a follower
	// that hears no leader this long starts an election).
	HeartbeatTimeout   time.Duration `yaml:"heartbeat_timeout"`
	ElectionTimeout    time.Duration `yaml:"election_timeout"`
	LeaderLeaseTimeout time.Duration `yaml:"leader_lease_timeout"`
	SnapshotThreshold  uint64        `yaml:"snapshot_threshold"`
	// SnapshotInterval is how often raft checks the threshold; TrailingLogs
	// how many entries a snapshot keeps behind it.
	SnapshotInterval time.Duration `yaml:"snapshot_interval"`
	TrailingLogs     uint64        `yaml:"trailing_logs"`
	// Raft throughput tuning (docs/OPERATIONS.md, "Raft tuning"); the
	// defaults are the measured best. RaftMaxAppendEntries bounds one
	// AppendEntries and one leader group commit; RaftCommitTimeout is how
	// long an idle leader waits to tell followers its commit index;
	// RaftLogCache entries stay in memory; RaftBatchApply buffers
	// proposals into the leader loop (raft's BatchApplyCh); RaftBatchFSM
	// applies each commit's entries in one FSM call; RaftPreVote is
	// raft's pre-vote.
	RaftMaxAppendEntries int           `yaml:"raft_max_append_entries"`
	RaftCommitTimeout    time.Duration `yaml:"raft_commit_timeout"`
	RaftLogCache         int           `yaml:"raft_log_cache"`
	// RaftLogStore picks where a new data dir keeps its raft log: "wal"
	// (the default: hashicorp/raft-wal segments under wal/) or "bolt" (in
	// raft.db, the layout of data dirs made before wal/). An existing data
	// dir keeps its own.
	RaftLogStore   string `yaml:"raft_log_store"`
	RaftBatchApply bool   `yaml:"raft_batch_apply"`
	RaftBatchFSM   bool   `yaml:"raft_batch_fsm"`
	RaftPreVote    bool   `yaml:"raft_pre_vote"`
	// WatermarkMerge merges concurrent watermark advance calls into one
	// log entry (server-side group commit; off: one entry per call).
	WatermarkMerge bool `yaml:"watermark_merge"`
	// HistoryInMemory keeps the whole attempt history in the heap instead
	// of spilling cold segments to unlinked files in the data dir.
	HistoryInMemory bool `yaml:"history_in_memory"`
	// PromotionDisabled refuses every promotion on this server (AU-14).
	PromotionDisabled bool `yaml:"promotion_disabled"`
	// The automatic promotion policy (domains in PROMOTION_MODE_AUTOMATIC,
	// on the leader): no policy promotion of a domain within PolicyDwell of
	// its last promotion; PolicyBackoffMin doubling to PolicyBackoffMax
	// between two policy attempts of one domain and epoch.
	PolicyDwell      time.Duration `yaml:"policy_dwell"`
	PolicyBackoffMin time.Duration `yaml:"policy_backoff_min"`
	PolicyBackoffMax time.Duration `yaml:"policy_backoff_max"`
	// MinLeaseTTL refuses domain policies with a shorter lease TTL. Zero:
	// the shortest TTL that survives a leader change at this server's raft
	// timeouts (client.MinLeaseTTL).
	MinLeaseTTL time.Duration `yaml:"min_lease_ttl"`
	// EventLog, when set, appends every applied event to this file as JSON
	// lines (at least once: after a restart, replayed entries are written
	// again; deduplicate by index and seq).
	EventLog  string `yaml:"event_log"`
	LogLevel  string `yaml:"log_level"`
	LogFormat string `yaml:"log_format"`
	// CACert, Cert and Key: the CA bundle peers' certificates must chain
	// to, and this server's certificate (identity server/<node-id>) and
	// key. Every listener (gRPC, raft, forwarding, HTTP) uses mutual TLS
	// 1.3 with them; the files are re-read when they change and on SIGHUP.
	CACert string `yaml:"cacert"`
	Cert   string `yaml:"cert"`
	Key    string `yaml:"key"`
	// TrustDomain of the SPIFFE-style identities in certificates.
	TrustDomain string `yaml:"trust_domain"`
	// Insecure runs every listener in plaintext without authorization;
	// logged as a warning, shown on the status page and in /metrics.
	Insecure bool `yaml:"insecure"`
	// MetricsAddr, when set, serves /metrics, /healthz and /readyz in
	// plaintext on a separate listener (for scrapers without certificates).
	MetricsAddr string `yaml:"metrics_addr"`
	// ClusterToken goes into the cluster id derived at bootstrap (with the
	// peer list), like etcd's --initial-cluster-token: two clusters
	// bootstrapped from the same peer list with different tokens differ.
	ClusterToken string `yaml:"cluster_token"`
	// ForceNewCluster recovers from a lost quorum: before starting, this
	// server's configuration is rewritten to itself alone, keeping every
	// entry of its log (docs/OPERATIONS.md). Use once, then drop the flag.
	ForceNewCluster bool `yaml:"force_new_cluster"`
	// RestoreFrom starts a new cluster from a backup file (authorityctl
	// snapshot save): on first boot of an empty data dir, with --bootstrap
	// and the new cluster's --peer list (and a new --cluster-token), the
	// backup's state becomes the cluster's first snapshot. Every server of
	// the new cluster is started with the same file; a restart with it is
	// a no-op (docs/OPERATIONS.md).
	RestoreFrom string `yaml:"restore_from"`
	// Limits on the resources one client can hold (docs/LIMITS.md).
	Limits Limits `yaml:",inline"`
}

// Limits bound what clients can make a server hold: message sizes, streams,
// connections, idle time. Each has a flag (and AUTHORITYD_* variable).
type Limits struct {
	// GRPCMaxRecvBytes bounds one received gRPC message.
	GRPCMaxRecvBytes int `yaml:"grpc_max_recv_bytes"`
	// GRPCMaxStreams bounds the concurrent streams (calls) of one gRPC
	// connection.
	GRPCMaxStreams int `yaml:"grpc_max_streams"`
	// GRPCMaxConnections caps open gRPC connections; more wait in the
	// listen backlog until one closes.
	GRPCMaxConnections int `yaml:"grpc_max_connections"`
	// GRPCHandshakeTimeout bounds a new connection's TLS and HTTP/2
	// handshake.
	GRPCHandshakeTimeout time.Duration `yaml:"grpc_handshake_timeout"`
	// GRPCKeepaliveMinTime is the shortest interval between a client's
	// pings the server tolerates (shorter: the connection is closed);
	// pings without an active stream are permitted.
	GRPCKeepaliveMinTime time.Duration `yaml:"grpc_keepalive_min_time"`
	// GRPCKeepaliveTime and GRPCKeepaliveTimeout: the server pings a
	// connection silent this long and closes it when the ping is not
	// answered in time (dead clients' streams are freed).
	GRPCKeepaliveTime    time.Duration `yaml:"grpc_keepalive_time"`
	GRPCKeepaliveTimeout time.Duration `yaml:"grpc_keepalive_timeout"`
	// GRPCMaxConnectionIdle closes a connection without calls this long.
	GRPCMaxConnectionIdle time.Duration `yaml:"grpc_max_connection_idle"`
	// HTTP server (status page, /healthz, /readyz, /metrics, /v1).
	HTTPReadHeaderTimeout time.Duration `yaml:"http_read_header_timeout"`
	HTTPReadTimeout       time.Duration `yaml:"http_read_timeout"`
	HTTPIdleTimeout       time.Duration `yaml:"http_idle_timeout"`
	HTTPMaxHeaderBytes    int           `yaml:"http_max_header_bytes"`
	// HTTPMaxConnections caps open HTTP connections (per HTTP listener).
	HTTPMaxConnections int `yaml:"http_max_connections"`
	// WriteRatePerIdentity and WriteBurstPerIdentity: a token bucket of
	// writes per caller identity, on the leader (0 rate: off).
	WriteRatePerIdentity  int `yaml:"write_rate_per_identity"`
	WriteBurstPerIdentity int `yaml:"write_burst_per_identity"`
	// GRPCMaxStreamsPerIdentity caps one identity's concurrent streams on
	// a server, over all its connections (0: off).
	GRPCMaxStreamsPerIdentity int `yaml:"grpc_max_streams_per_identity"`
	// PromoteDeniedRatePerDomain and PromoteDeniedBurstPerDomain: a token
	// bucket of denied promotions per domain, on the leader (0 rate: off).
	PromoteDeniedRatePerDomain  int `yaml:"promote_denied_rate_per_domain"`
	PromoteDeniedBurstPerDomain int `yaml:"promote_denied_burst_per_domain"`
}

// rateLimits are the transport's rate and stream limits.
func (l Limits) rateLimits() transport.RateLimits {
	r := transport.DefaultRateLimits()
	r.WritesPerSecond, r.WriteBurst = float64(l.WriteRatePerIdentity), l.WriteBurstPerIdentity
	r.StreamsPerIdentity = l.GRPCMaxStreamsPerIdentity
	r.PromoteDeniedPerSecond, r.PromoteDeniedBurst = float64(l.PromoteDeniedRatePerDomain), l.PromoteDeniedBurstPerDomain
	return r
}

func defaultLimits() Limits {
	return Limits{
		GRPCMaxRecvBytes: 4 << 20, GRPCMaxStreams: 128, GRPCMaxConnections: 1024, GRPCHandshakeTimeout: 10 * time.Second,
		GRPCKeepaliveMinTime: 10 * time.Second, GRPCKeepaliveTime: time.Minute, GRPCKeepaliveTimeout: 20 * time.Second,
		GRPCMaxConnectionIdle: 15 * time.Minute,
		HTTPReadHeaderTimeout: 5 * time.Second, HTTPReadTimeout: 10 * time.Second, HTTPIdleTimeout: time.Minute,
		HTTPMaxHeaderBytes: 16 << 10, HTTPMaxConnections: 256,
		WriteRatePerIdentity: transport.DefaultWritesPerSecond, WriteBurstPerIdentity: transport.DefaultWriteBurst,
		GRPCMaxStreamsPerIdentity:  transport.DefaultStreamsPerIdentity,
		PromoteDeniedRatePerDomain: transport.DefaultPromoteDeniedPerSecond, PromoteDeniedBurstPerDomain: transport.DefaultPromoteDeniedBurst,
	}
}

// limitFlag is one limit's flag: a duration or an integer in Limits, with
// its lower and upper bound (Validate).
type limitFlag struct {
	name, usage string
	dur         func(*Limits) *time.Duration
	num         func(*Limits) *int
	lo, hi      int64
}

var limitFlags = []limitFlag{
	{name: "grpc-max-recv-bytes", usage: "largest gRPC message received, bytes (default 4194304)",
		num: func(l *Limits) *int { return &l.GRPCMaxRecvBytes }, lo: 64 << 10, hi: 64 << 20},
	{name: "grpc-max-streams", usage: "concurrent streams per gRPC connection (default 128)",
		num: func(l *Limits) *int { return &l.GRPCMaxStreams }, lo: 1, hi: 1 << 20},
	{name: "grpc-max-connections", usage: "open gRPC connections; more wait in the backlog (default 1024)",
		num: func(l *Limits) *int { return &l.GRPCMaxConnections }, lo: 1, hi: 1 << 20},
	{name: "grpc-handshake-timeout", usage: "bound on a new gRPC connection's handshake (default 10s)",
		dur: func(l *Limits) *time.Duration { return &l.GRPCHandshakeTimeout }, lo: int64(10 * time.Millisecond), hi: int64(10 * time.Minute)},
	{name: "grpc-keepalive-min-time", usage: "shortest client ping interval tolerated (default 10s)",
		dur: func(l *Limits) *time.Duration { return &l.GRPCKeepaliveMinTime }, lo: int64(time.Millisecond), hi: int64(time.Hour)},
	{name: "grpc-keepalive-time", usage: "ping a gRPC connection silent this long (default 1m)",
		dur: func(l *Limits) *time.Duration { return &l.GRPCKeepaliveTime }, lo: int64(time.Second), hi: int64(24 * time.Hour)},
	{name: "grpc-keepalive-timeout", usage: "close a gRPC connection whose ping is unanswered this long (default 20s)",
		dur: func(l *Limits) *time.Duration { return &l.GRPCKeepaliveTimeout }, lo: int64(time.Millisecond), hi: int64(time.Hour)},
	{name: "grpc-max-connection-idle", usage: "close a gRPC connection without calls this long (default 15m)",
		dur: func(l *Limits) *time.Duration { return &l.GRPCMaxConnectionIdle }, lo: int64(time.Second), hi: int64(30 * 24 * time.Hour)},
	{name: "http-read-header-timeout", usage: "HTTP: time to read a request's headers (default 5s)",
		dur: func(l *Limits) *time.Duration { return &l.HTTPReadHeaderTimeout }, lo: int64(time.Millisecond), hi: int64(10 * time.Minute)},
	{name: "http-read-timeout", usage: "HTTP: time to read a whole request (default 10s)",
		dur: func(l *Limits) *time.Duration { return &l.HTTPReadTimeout }, lo: int64(time.Millisecond), hi: int64(10 * time.Minute)},
	{name: "http-idle-timeout", usage: "HTTP: close a keep-alive connection idle this long (default 1m)",
		dur: func(l *Limits) *time.Duration { return &l.HTTPIdleTimeout }, lo: int64(time.Millisecond), hi: int64(24 * time.Hour)},
	{name: "http-max-header-bytes", usage: "HTTP: largest request header, bytes (default 16384)",
		num: func(l *Limits) *int { return &l.HTTPMaxHeaderBytes }, lo: 1 << 10, hi: 1 << 20},
	{name: "http-max-connections", usage: "open HTTP connections per HTTP listener; more wait in the backlog (default 256)",
		num: func(l *Limits) *int { return &l.HTTPMaxConnections }, lo: 1, hi: 1 << 20},
	{name: "write-rate-per-identity", usage: "writes per second per caller identity, on the leader; 0: unlimited (default 1000)",
		num: func(l *Limits) *int { return &l.WriteRatePerIdentity }, lo: 0, hi: 1 << 20},
	{name: "write-burst-per-identity", usage: "writes one identity may make at once above its rate (default 2000)",
		num: func(l *Limits) *int { return &l.WriteBurstPerIdentity }, lo: 1, hi: 1 << 24},
	{name: "grpc-max-streams-per-identity", usage: "concurrent streams per caller identity on a server, all connections; 0: unlimited (default 128)",
		num: func(l *Limits) *int { return &l.GRPCMaxStreamsPerIdentity }, lo: 0, hi: 1 << 20},
	{name: "promote-denied-rate-per-domain", usage: "denied promotions per second per domain, on the leader; 0: unlimited (default 100)",
		num: func(l *Limits) *int { return &l.PromoteDeniedRatePerDomain }, lo: 0, hi: 1 << 20},
	{name: "promote-denied-burst-per-domain", usage: "denied promotions one domain may collect at once above its rate (default 200)",
		num: func(l *Limits) *int { return &l.PromoteDeniedBurstPerDomain }, lo: 1, hi: 1 << 24},
}

func (f limitFlag) set(l *Limits, v string) error {
	if f.dur != nil {
		d, err := time.ParseDuration(v)
		*f.dur(l) = d
		return err
	}
	n, err := strconv.Atoi(v)
	*f.num(l) = n
	return err
}

func (f limitFlag) value(l *Limits) int64 {
	if f.dur != nil {
		return int64(*f.dur(l))
	}
	return int64(*f.num(l))
}

func (f limitFlag) format(v int64) string {
	if f.dur != nil {
		return time.Duration(v).String()
	}
	return strconv.FormatInt(v, 10)
}

func (l Limits) validate() []error {
	var errs []error
	for _, f := range limitFlags {
		if v := f.value(&l); v < f.lo || v > f.hi {
			errs = append(errs, fmt.Errorf("%s %s: want %s..%s", f.name, f.format(v), f.format(f.lo), f.format(f.hi)))
		}
	}
	return errs
}

// Peer is one voter of the cluster.
type Peer struct {
	ID       string `yaml:"id"`
	RaftAddr string `yaml:"raft_addr"`
	GRPCAddr string `yaml:"grpc_addr"`
}

func defaults() Config {
	return Config{
		RaftAddr: "127.0.0.1:7001", GRPCAddr: "127.0.0.1:8001", HTTPAddr: "127.0.0.1:9001",
		HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond, SnapshotThreshold: 8192,
		RaftMaxAppendEntries: cluster.DefaultMaxAppendEntries, RaftCommitTimeout: cluster.DefaultCommitTimeout,
		RaftLogCache: cluster.DefaultLogCacheSize, RaftBatchFSM: true, RaftPreVote: true,
		WatermarkMerge: true,
		LogLevel:       "info", LogFormat: "text", Limits: defaultLimits(),
		PolicyDwell: promotion.DefaultPolicyDwell, PolicyBackoffMin: promotion.DefaultPolicyBackoffMin,
		PolicyBackoffMax: promotion.DefaultPolicyBackoffMax,
	}
}

// peerList is the flag form of Peers: "id,raft_addr,grpc_addr;…" or one
// --peer flag per voter.
type peerList []Peer

func (p *peerList) String() string {
	parts := make([]string, len(*p))
	for i, x := range *p {
		parts[i] = x.ID + "," + x.RaftAddr + "," + x.GRPCAddr
	}
	return strings.Join(parts, ";")
}

func (p *peerList) Set(v string) error {
	for _, item := range strings.Split(v, ";") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		f := strings.Split(item, ",")
		if len(f) != 3 {
			return fmt.Errorf("peer %q: want id,raft_addr,grpc_addr", item)
		}
		*p = append(*p, Peer{ID: f[0], RaftAddr: f[1], GRPCAddr: f[2]})
	}
	return nil
}

// errShowVersion: --version was given (main prints it and exits 0).
var errShowVersion = errors.New("show version")

// loadConfig parses flags, environment and the YAML file into a validated
// config.
func loadConfig(args []string, env func(string) string) (Config, error) {
	fs := flag.NewFlagSet("authorityd", flag.ContinueOnError)
	file := fs.String("config", "", "YAML config file")
	var flagCfg Config
	var peers peerList
	fs.StringVar(&flagCfg.NodeID, "node-id", "", "raft server id (stable across restarts)")
	fs.StringVar(&flagCfg.RaftAddr, "raft-addr", "", "raft TCP address (default 127.0.0.1:7001)")
	fs.StringVar(&flagCfg.GRPCAddr, "grpc-addr", "", "gRPC API address (default 127.0.0.1:8001)")
	fs.StringVar(&flagCfg.HTTPAddr, "http-addr", "", "HTTP address for /healthz, /readyz, /metrics (default 127.0.0.1:9001)")
	fs.StringVar(&flagCfg.DataDir, "data-dir", "", "data directory")
	fs.Var(&peers, "peer", "voter as id,raft_addr,grpc_addr (repeat, or ';'-separated)")
	bootstrap := fs.Bool("bootstrap", false, "form the cluster from --peer when the data dir is empty")
	join := fs.String("join", "", "comma-separated gRPC endpoints of a running cluster to join as a voter")
	routesFlag := fs.String("raft-route", "", "comma-separated id=address: dial this peer's raft traffic at address (e.g. a proxy)")
	forwardFlag := fs.String("forward-route", "", "comma-separated id=address: forward API calls to this peer at address (e.g. a proxy)")
	fs.DurationVar(&flagCfg.HeartbeatTimeout, "heartbeat-timeout", 0, "raft follower timeout before an election (default 500ms)")
	fs.DurationVar(&flagCfg.ElectionTimeout, "election-timeout", 0, "raft candidate timeout (default 500ms)")
	fs.DurationVar(&flagCfg.LeaderLeaseTimeout, "leader-lease-timeout", 0, "leader steps down without quorum contact this long (default 250ms)")
	fs.Uint64Var(&flagCfg.SnapshotThreshold, "snapshot-threshold", 0, "log entries between snapshots (default 8192)")
	fs.DurationVar(&flagCfg.SnapshotInterval, "snapshot-interval", 0, "how often raft checks the snapshot threshold (default 120s)")
	fs.Uint64Var(&flagCfg.TrailingLogs, "trailing-logs", 0, "log entries kept behind a snapshot (default 10240)")
	fs.IntVar(&flagCfg.RaftMaxAppendEntries, "raft-max-append-entries", 0, "entries per AppendEntries and per leader group commit, 1..1024 (default 64)")
	fs.DurationVar(&flagCfg.RaftCommitTimeout, "raft-commit-timeout", 0, "an idle leader tells followers its commit index after this long (default 50ms)")
	fs.IntVar(&flagCfg.RaftLogCache, "raft-log-cache", 0, "recent log entries kept in memory (default 512)")
	fs.StringVar(&flagCfg.RaftLogStore, "raft-log-store", "", "where a new data dir keeps its raft log: wal (default) or bolt; an existing data dir keeps its own")
	raftBools := map[string]*bool{}
	for _, b := range []struct {
		name, usage string
		def         bool
	}{
		{"raft-batch-apply", "buffer proposals into raft's leader loop (BatchApplyCh)", false},
		{"raft-batch-fsm", "apply each commit's entries in one FSM call (BatchingFSM)", true},
		{"raft-pre-vote", "raft pre-vote before elections", true},
		{"watermark-merge", "merge concurrent watermark advance calls into one log entry", true},
		{"history-in-memory", "keep the whole attempt history in memory, not its cold segments in unlinked files in the data dir", false},
	} {
		raftBools[b.name] = fs.Bool(b.name, b.def, b.usage+fmt.Sprintf(" (default %v)", b.def))
	}
	disabled := fs.Bool("promotion-disabled", false, "refuse every promotion on this server")
	fs.DurationVar(&flagCfg.MinLeaseTTL, "min-lease-ttl", 0, "refuse domain policies with a shorter lease TTL (default: the shortest that survives a leader change at these raft timeouts, 4.4s at the defaults)")
	fs.DurationVar(&flagCfg.PolicyDwell, "policy-dwell", 0, "automatic policy: no policy promotion of a domain this soon after its last promotion (default 10s)")
	fs.DurationVar(&flagCfg.PolicyBackoffMin, "policy-backoff-min", 0, "automatic policy: first wait between two attempts of one domain, doubling (default 500ms)")
	fs.DurationVar(&flagCfg.PolicyBackoffMax, "policy-backoff-max", 0, "automatic policy: longest wait between two attempts of one domain (default 30s)")
	fs.StringVar(&flagCfg.LogLevel, "log-level", "", "trace|debug|info|warn|error (default info)")
	fs.StringVar(&flagCfg.LogFormat, "log-format", "", "text|json (default text)")
	fs.StringVar(&flagCfg.EventLog, "event-log", "", "append applied events to this file as JSON lines")
	fs.StringVar(&flagCfg.CACert, "cacert", "", "CA bundle (PEM) peer certificates must chain to")
	fs.StringVar(&flagCfg.Cert, "cert", "", "this server's certificate (PEM; identity spiffe://<trust-domain>/server/<node-id>)")
	fs.StringVar(&flagCfg.Key, "key", "", "this server's private key (PEM)")
	fs.StringVar(&flagCfg.TrustDomain, "trust-domain", "", "trust domain of certificate identities (default aerodb-authority)")
	insecureFlag := fs.Bool("insecure", false, "plaintext and no authorization on every listener (logged as a warning)")
	fs.StringVar(&flagCfg.MetricsAddr, "metrics-addr", "", "serve /metrics, /healthz, /readyz in plaintext on this extra address")
	fs.StringVar(&flagCfg.ClusterToken, "cluster-token", "", "token mixed into the cluster id at bootstrap (default authority)")
	forceNew := fs.Bool("force-new-cluster", false, "lost-quorum recovery: restart as a one-server cluster keeping every log entry")
	fs.StringVar(&flagCfg.RestoreFrom, "restore-from", "", "start a new cluster from this backup file (first boot of an empty data dir; with --bootstrap, --peer and a new --cluster-token)")
	showVersion := fs.Bool("version", false, "print the version, commit and Go version, and exit")
	for _, f := range limitFlags {
		if f.dur != nil {
			fs.DurationVar(f.dur(&flagCfg.Limits), f.name, 0, f.usage)
		} else {
			fs.IntVar(f.num(&flagCfg.Limits), f.name, 0, f.usage)
		}
	}
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if *showVersion {
		return Config{}, errShowVersion
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	cfg := defaults()
	if *file != "" {
		if err := mergeFile(&cfg, *file); err != nil {
			return Config{}, err
		}
	}
	if err := mergeEnv(&cfg, fs, env); err != nil {
		return Config{}, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	mergeFlags(&cfg, flagCfg, set)
	if set["peer"] {
		cfg.Peers = peers
	}
	if set["bootstrap"] {
		cfg.Bootstrap = *bootstrap
	}
	if set["join"] {
		cfg.Join = splitList(*join)
	}
	if set["raft-route"] {
		r, err := parseRoutes(*routesFlag)
		if err != nil {
			return Config{}, err
		}
		cfg.RaftRoutes = r
	}
	if set["forward-route"] {
		r, err := parseRoutes(*forwardFlag)
		if err != nil {
			return Config{}, fmt.Errorf("forward-route: %w", err)
		}
		cfg.ForwardRoutes = r
	}
	if set["promotion-disabled"] {
		cfg.PromotionDisabled = *disabled
	}
	for name, v := range raftBools {
		if set[name] {
			*raftBool(&cfg, name) = *v
		}
	}
	if set["insecure"] {
		cfg.Insecure = *insecureFlag
	}
	if set["force-new-cluster"] {
		cfg.ForceNewCluster = *forceNew
	}
	return cfg, cfg.Validate()
}

func mergeFile(cfg *Config, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// mergeEnv applies AUTHORITYD_* variables by setting the same-named flags
// on a scratch flag set, so parsing rules are the flags' own.
func mergeEnv(cfg *Config, fs *flag.FlagSet, env func(string) string) error {
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "config" {
			return
		}
		v := env("AUTHORITYD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_")))
		if v == "" {
			return
		}
		if err := applyValue(cfg, f.Name, v); err != nil {
			errs = append(errs, fmt.Errorf("environment AUTHORITYD_%s: %w", strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_")), err))
		}
	})
	return errors.Join(errs...)
}

func applyValue(cfg *Config, name, v string) error {
	var err error
	switch name {
	case "node-id":
		cfg.NodeID = v
	case "raft-addr":
		cfg.RaftAddr = v
	case "grpc-addr":
		cfg.GRPCAddr = v
	case "http-addr":
		cfg.HTTPAddr = v
	case "data-dir":
		cfg.DataDir = v
	case "peer":
		var p peerList
		err = p.Set(v)
		cfg.Peers = p
	case "bootstrap":
		cfg.Bootstrap, err = strconv.ParseBool(v)
	case "join":
		cfg.Join = splitList(v)
	case "raft-route":
		cfg.RaftRoutes, err = parseRoutes(v)
	case "forward-route":
		cfg.ForwardRoutes, err = parseRoutes(v)
	case "promotion-disabled":
		cfg.PromotionDisabled, err = strconv.ParseBool(v)
	case "heartbeat-timeout":
		cfg.HeartbeatTimeout, err = time.ParseDuration(v)
	case "election-timeout":
		cfg.ElectionTimeout, err = time.ParseDuration(v)
	case "leader-lease-timeout":
		cfg.LeaderLeaseTimeout, err = time.ParseDuration(v)
	case "snapshot-threshold":
		cfg.SnapshotThreshold, err = strconv.ParseUint(v, 10, 64)
	case "snapshot-interval":
		cfg.SnapshotInterval, err = time.ParseDuration(v)
	case "trailing-logs":
		cfg.TrailingLogs, err = strconv.ParseUint(v, 10, 64)
	case "raft-max-append-entries":
		cfg.RaftMaxAppendEntries, err = strconv.Atoi(v)
	case "raft-commit-timeout":
		cfg.RaftCommitTimeout, err = time.ParseDuration(v)
	case "raft-log-cache":
		cfg.RaftLogCache, err = strconv.Atoi(v)
	case "raft-log-store":
		cfg.RaftLogStore = v
	case "raft-batch-apply", "raft-batch-fsm", "raft-pre-vote", "watermark-merge", "history-in-memory":
		*raftBool(cfg, name), err = strconv.ParseBool(v)
	case "min-lease-ttl":
		cfg.MinLeaseTTL, err = time.ParseDuration(v)
	case "policy-dwell":
		cfg.PolicyDwell, err = time.ParseDuration(v)
	case "policy-backoff-min":
		cfg.PolicyBackoffMin, err = time.ParseDuration(v)
	case "policy-backoff-max":
		cfg.PolicyBackoffMax, err = time.ParseDuration(v)
	case "log-level":
		cfg.LogLevel = v
	case "log-format":
		cfg.LogFormat = v
	case "event-log":
		cfg.EventLog = v
	case "cacert":
		cfg.CACert = v
	case "cert":
		cfg.Cert = v
	case "key":
		cfg.Key = v
	case "trust-domain":
		cfg.TrustDomain = v
	case "insecure":
		cfg.Insecure, err = strconv.ParseBool(v)
	case "metrics-addr":
		cfg.MetricsAddr = v
	case "cluster-token":
		cfg.ClusterToken = v
	case "force-new-cluster":
		cfg.ForceNewCluster, err = strconv.ParseBool(v)
	case "restore-from":
		cfg.RestoreFrom = v
	default:
		for _, f := range limitFlags {
			if f.name == name {
				err = f.set(&cfg.Limits, v)
			}
		}
	}
	return err
}

// raftBool is the config field of a boolean raft tuning flag.
func raftBool(cfg *Config, name string) *bool {
	switch name {
	case "raft-batch-apply":
		return &cfg.RaftBatchApply
	case "raft-batch-fsm":
		return &cfg.RaftBatchFSM
	case "raft-pre-vote":
		return &cfg.RaftPreVote
	case "watermark-merge":
		return &cfg.WatermarkMerge
	case "history-in-memory":
		return &cfg.HistoryInMemory
	}
	panic("authorityd: no raft flag " + name)
}

func mergeFlags(cfg *Config, f Config, set map[string]bool) {
	str := map[string]*string{"node-id": &cfg.NodeID, "raft-addr": &cfg.RaftAddr, "grpc-addr": &cfg.GRPCAddr,
		"http-addr": &cfg.HTTPAddr, "data-dir": &cfg.DataDir, "log-level": &cfg.LogLevel, "log-format": &cfg.LogFormat,
		"event-log": &cfg.EventLog, "cacert": &cfg.CACert, "cert": &cfg.Cert, "key": &cfg.Key,
		"trust-domain": &cfg.TrustDomain, "metrics-addr": &cfg.MetricsAddr, "cluster-token": &cfg.ClusterToken,
		"restore-from": &cfg.RestoreFrom}
	src := map[string]string{"node-id": f.NodeID, "raft-addr": f.RaftAddr, "grpc-addr": f.GRPCAddr,
		"http-addr": f.HTTPAddr, "data-dir": f.DataDir, "log-level": f.LogLevel, "log-format": f.LogFormat,
		"event-log": f.EventLog, "cacert": f.CACert, "cert": f.Cert, "key": f.Key,
		"trust-domain": f.TrustDomain, "metrics-addr": f.MetricsAddr, "cluster-token": f.ClusterToken,
		"restore-from": f.RestoreFrom}
	for name, dst := range str {
		if set[name] {
			*dst = src[name]
		}
	}
	if set["heartbeat-timeout"] {
		cfg.HeartbeatTimeout = f.HeartbeatTimeout
	}
	if set["election-timeout"] {
		cfg.ElectionTimeout = f.ElectionTimeout
	}
	if set["leader-lease-timeout"] {
		cfg.LeaderLeaseTimeout = f.LeaderLeaseTimeout
	}
	if set["snapshot-threshold"] {
		cfg.SnapshotThreshold = f.SnapshotThreshold
	}
	if set["snapshot-interval"] {
		cfg.SnapshotInterval = f.SnapshotInterval
	}
	if set["trailing-logs"] {
		cfg.TrailingLogs = f.TrailingLogs
	}
	if set["raft-max-append-entries"] {
		cfg.RaftMaxAppendEntries = f.RaftMaxAppendEntries
	}
	if set["raft-commit-timeout"] {
		cfg.RaftCommitTimeout = f.RaftCommitTimeout
	}
	if set["raft-log-cache"] {
		cfg.RaftLogCache = f.RaftLogCache
	}
	if set["raft-log-store"] {
		cfg.RaftLogStore = f.RaftLogStore
	}
	if set["min-lease-ttl"] {
		cfg.MinLeaseTTL = f.MinLeaseTTL
	}
	if set["policy-dwell"] {
		cfg.PolicyDwell = f.PolicyDwell
	}
	if set["policy-backoff-min"] {
		cfg.PolicyBackoffMin = f.PolicyBackoffMin
	}
	if set["policy-backoff-max"] {
		cfg.PolicyBackoffMax = f.PolicyBackoffMax
	}
	for _, lf := range limitFlags {
		if !set[lf.name] {
			continue
		}
		if lf.dur != nil {
			*lf.dur(&cfg.Limits) = *lf.dur(&f.Limits)
		} else {
			*lf.num(&cfg.Limits) = *lf.num(&f.Limits)
		}
	}
}

// Validate returns every problem at once, naming the setting and value.
func (c Config) Validate() error {
	var errs []error
	if c.NodeID == "" {
		errs = append(errs, errors.New("node-id is required"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data-dir is required"))
	}
	for name, addr := range map[string]string{"raft-addr": c.RaftAddr, "grpc-addr": c.GRPCAddr, "http-addr": c.HTTPAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %v", name, addr, err))
		}
	}
	if len(c.Peers) == 0 && len(c.Join) == 0 && !c.ForceNewCluster {
		errs = append(errs, errors.New("give --peer (every voter, this node included) to bootstrap, or --join to join a running cluster"))
	}
	if c.Bootstrap && len(c.Join) > 0 {
		errs = append(errs, errors.New("--bootstrap and --join exclude each other"))
	}
	for _, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			errs = append(errs, fmt.Errorf("join endpoint %q: %v", j, err))
		}
	}
	seen := map[string]bool{}
	self := false
	for _, p := range c.Peers {
		if p.ID == "" || p.RaftAddr == "" || p.GRPCAddr == "" {
			errs = append(errs, fmt.Errorf("peer %+v: id, raft_addr and grpc_addr are required", p))
		}
		if seen[p.ID] {
			errs = append(errs, fmt.Errorf("peer %q listed twice", p.ID))
		}
		seen[p.ID] = true
		self = self || p.ID == c.NodeID
	}
	if len(c.Peers) > 0 && !self && len(c.Join) == 0 {
		errs = append(errs, fmt.Errorf("node-id %q is not among the peers", c.NodeID))
	}
	if c.HeartbeatTimeout < 5*time.Millisecond || c.ElectionTimeout < c.HeartbeatTimeout {
		errs = append(errs, fmt.Errorf("heartbeat-timeout %v must be ≥ 5ms and election-timeout %v ≥ it", c.HeartbeatTimeout, c.ElectionTimeout))
	}
	if c.LeaderLeaseTimeout <= 0 || c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		errs = append(errs, fmt.Errorf("leader-lease-timeout %v must be in (0, heartbeat-timeout %v]", c.LeaderLeaseTimeout, c.HeartbeatTimeout))
	}
	tlsFiles := 0
	for _, f := range []string{c.CACert, c.Cert, c.Key} {
		if f != "" {
			tlsFiles++
		}
	}
	switch {
	case c.Insecure && tlsFiles > 0:
		errs = append(errs, errors.New("--insecure excludes --cacert, --cert and --key"))
	case !c.Insecure && tlsFiles != 3:
		errs = append(errs, errors.New("give --cacert, --cert and --key (mutual TLS on every listener), or --insecure for plaintext without authorization"))
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			errs = append(errs, fmt.Errorf("metrics-addr %q: %v", c.MetricsAddr, err))
		}
	}
	if c.ForceNewCluster && (c.Bootstrap || len(c.Join) > 0) {
		errs = append(errs, errors.New("--force-new-cluster recovers an existing data dir: drop --bootstrap and --join"))
	}
	if c.RestoreFrom != "" && (!c.Bootstrap || len(c.Peers) == 0 || len(c.Join) > 0 || c.ForceNewCluster) {
		errs = append(errs, errors.New("--restore-from starts a new cluster: give it with --bootstrap and the new cluster's --peer list, without --join or --force-new-cluster"))
	}
	if c.RaftMaxAppendEntries < 1 || c.RaftMaxAppendEntries > 1024 {
		errs = append(errs, fmt.Errorf("raft-max-append-entries %d: want 1..1024", c.RaftMaxAppendEntries))
	}
	if c.RaftCommitTimeout < time.Millisecond || c.RaftCommitTimeout > 10*time.Second {
		errs = append(errs, fmt.Errorf("raft-commit-timeout %v: want 1ms..10s", c.RaftCommitTimeout))
	}
	if c.RaftLogCache < 1 || c.RaftLogCache > 1<<16 {
		errs = append(errs, fmt.Errorf("raft-log-cache %d: want 1..65536", c.RaftLogCache))
	}
	if c.RaftLogStore != "" && c.RaftLogStore != cluster.LogStoreWAL && c.RaftLogStore != cluster.LogStoreBolt {
		errs = append(errs, fmt.Errorf("raft-log-store %.32q: want wal or bolt", c.RaftLogStore))
	}
	if c.MinLeaseTTL < 0 || c.MinLeaseTTL > time.Hour {
		errs = append(errs, fmt.Errorf("min-lease-ttl %v: want 0 (derived from the raft timeouts) up to 1h", c.MinLeaseTTL))
	}
	if c.PolicyDwell < time.Millisecond || c.PolicyDwell > 24*time.Hour {
		errs = append(errs, fmt.Errorf("policy-dwell %v: want 1ms..24h", c.PolicyDwell))
	}
	if c.PolicyBackoffMin < time.Millisecond || c.PolicyBackoffMax < c.PolicyBackoffMin || c.PolicyBackoffMax > time.Hour {
		errs = append(errs, fmt.Errorf("policy-backoff-min %v and policy-backoff-max %v: want 1ms ≤ min ≤ max ≤ 1h", c.PolicyBackoffMin, c.PolicyBackoffMax))
	}
	errs = append(errs, c.Limits.validate()...)
	switch c.LogFormat {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log-format %q: want text or json", c.LogFormat))
	}
	return errors.Join(errs...)
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parseRoutes reads "id=host:port,id=host:port".
func parseRoutes(v string) (map[string]string, error) {
	out := map[string]string{}
	for _, item := range splitList(v) {
		id, addr, ok := strings.Cut(item, "=")
		if !ok || id == "" {
			return nil, fmt.Errorf("route %q: want id=host:port", item)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("route %q: %v", item, err)
		}
		out[id] = addr
	}
	return out, nil
}
