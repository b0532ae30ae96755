package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const peers = "s1,127.0.0.1:7001,127.0.0.1:8001;s2,127.0.0.1:7002,127.0.0.1:8002;s3,127.0.0.1:7003,127.0.0.1:8003"

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// tlsArgs are a server's certificate flags (Validate checks that they are
// given, not the files: loading them is the server's start).
var tlsArgs = []string{"--cacert", "ca.crt", "--cert", "server-s1.crt", "--key", "server-s1.key"}

// withTLS appends the certificate flags to a command line.
func withTLS(args ...string) []string { return append(args, tlsArgs...) }

func TestConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "authorityd.yaml")
	yaml := `node_id: s2
data_dir: /from/file
grpc_addr: 127.0.0.1:8002
heartbeat_timeout: 700ms
election_timeout: 900ms
cacert: /etc/authority/ca.crt
cert: /etc/authority/server-s2.crt
key: /etc/authority/server-s2.key
peers:
  - {id: s1, raft_addr: "127.0.0.1:7001", grpc_addr: "127.0.0.1:8001"}
  - {id: s2, raft_addr: "127.0.0.1:7002", grpc_addr: "127.0.0.1:8002"}
`
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig([]string{"--config", file, "--data-dir", "/from/flag"},
		env(map[string]string{"AUTHORITYD_DATA_DIR": "/from/env", "AUTHORITYD_GRPC_ADDR": "127.0.0.1:9999", "AUTHORITYD_LOG_FORMAT": "json"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/from/flag" {
		t.Errorf("data dir %q: a flag beats env and file", cfg.DataDir)
	}
	if cfg.GRPCAddr != "127.0.0.1:9999" {
		t.Errorf("grpc addr %q: env beats file", cfg.GRPCAddr)
	}
	if cfg.NodeID != "s2" || cfg.HeartbeatTimeout != 700*time.Millisecond || len(cfg.Peers) != 2 {
		t.Errorf("file values lost: %+v", cfg)
	}
	if cfg.CACert != "/etc/authority/ca.crt" || cfg.Cert != "/etc/authority/server-s2.crt" || cfg.Key != "/etc/authority/server-s2.key" || cfg.Insecure {
		t.Errorf("certificate files from the file: %+v", cfg)
	}
	if cfg.LogFormat != "json" || cfg.LeaderLeaseTimeout != 250*time.Millisecond {
		t.Errorf("env/default values: %+v", cfg)
	}
}

func TestConfigFlagsAlone(t *testing.T) {
	cfg, err := loadConfig(withTLS("--node-id", "s1", "--data-dir", "d", "--peer", peers, "--bootstrap"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Bootstrap || len(cfg.Peers) != 3 || cfg.Peers[2].GRPCAddr != "127.0.0.1:8003" {
		t.Fatalf("%+v", cfg)
	}
}

// Validate reports every problem at once, naming the setting and value.
func TestConfigValidateListsEveryProblem(t *testing.T) {
	_, err := loadConfig([]string{"--raft-addr", "nonsense", "--log-format", "xml", "--peer", "s9,a:1,b:2;s9,a:1,b:2",
		"--heartbeat-timeout", "1ms", "--leader-lease-timeout", "2s"}, env(nil))
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"node-id is required", "data-dir is required", `raft-addr "nonsense"`, `log-format "xml"`,
		`peer "s9" listed twice`, "heartbeat-timeout 1ms", "leader-lease-timeout 2s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}

func TestConfigRejectsBadInput(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(file, []byte("node_id: s1\nno_such_setting: 1\n"), 0o600)
	cases := map[string][]string{
		"unknown YAML field":  {"--config", file},
		"missing file":        {"--config", filepath.Join(t.TempDir(), "absent.yaml")},
		"malformed peer":      {"--peer", "s1,only-two"},
		"unknown flag":        {"--frobnicate"},
		"stray argument":      {"--node-id", "s1", "extra"},
		"malformed duration":  {"--heartbeat-timeout", "soon"},
		"node not among peer": withTLS("--node-id", "s7", "--data-dir", "d", "--peer", peers),
	}
	for name, args := range cases {
		if _, err := loadConfig(args, env(nil)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := loadConfig(withTLS("--node-id", "s1", "--data-dir", "d", "--peer", peers),
		env(map[string]string{"AUTHORITYD_BOOTSTRAP": "maybe"})); err == nil || !strings.Contains(err.Error(), "AUTHORITYD_BOOTSTRAP") {
		t.Errorf("malformed env value: %v", err)
	}
}

func TestConfigJoin(t *testing.T) {
	cfg, err := loadConfig(withTLS("--node-id", "s4", "--data-dir", "d", "--join", "127.0.0.1:8001, 127.0.0.1:8002"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Join) != 2 || cfg.Join[1] != "127.0.0.1:8002" || cfg.Bootstrap {
		t.Fatalf("%+v", cfg)
	}
	if _, err := loadConfig(withTLS("--node-id", "s4", "--data-dir", "d", "--join", "127.0.0.1:8001", "--bootstrap"), env(nil)); err == nil ||
		!strings.Contains(err.Error(), "exclude each other") {
		t.Fatalf("join with bootstrap: %v", err)
	}
	if _, err := loadConfig(withTLS("--node-id", "s4", "--data-dir", "d", "--join", "nonsense"), env(nil)); err == nil {
		t.Fatal("malformed join endpoint accepted")
	}
}

func TestConfigRaftRoutes(t *testing.T) {
	cfg, err := loadConfig(withTLS("--node-id", "s1", "--data-dir", "d", "--peer", peers, "--raft-route", "s2=127.0.0.1:17002,s3=127.0.0.1:17003"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RaftRoutes["s3"] != "127.0.0.1:17003" || len(cfg.RaftRoutes) != 2 {
		t.Fatalf("routes %v", cfg.RaftRoutes)
	}
	if _, err := loadConfig(withTLS("--node-id", "s1", "--data-dir", "d", "--peer", peers, "--raft-route", "s2"), env(nil)); err == nil {
		t.Fatal("malformed route accepted")
	}
}

func TestConfigSnapshotSettings(t *testing.T) {
	cfg, err := loadConfig(withTLS("--node-id", "s1", "--data-dir", "d", "--peer", peers, "--snapshot-threshold", "16",
		"--snapshot-interval", "200ms", "--trailing-logs", "4"), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SnapshotThreshold != 16 || cfg.SnapshotInterval != 200*time.Millisecond || cfg.TrailingLogs != 4 {
		t.Fatalf("%+v", cfg)
	}
}

func TestConfigForwardRoutes(t *testing.T) {
	cfg, err := loadConfig(withTLS("--node-id", "s1", "--data-dir", "d", "--peer", peers, "--forward-route", "s2=127.0.0.1:18002"),
		env(map[string]string{"AUTHORITYD_RAFT_ROUTE": "s3=127.0.0.1:17003"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ForwardRoutes["s2"] != "127.0.0.1:18002" || len(cfg.ForwardRoutes) != 1 || cfg.RaftRoutes["s3"] != "127.0.0.1:17003" {
		t.Fatalf("forward %v raft %v", cfg.ForwardRoutes, cfg.RaftRoutes)
	}
	cfg, err = loadConfig(withTLS("--node-id", "s1", "--data-dir", "d", "--peer", peers), env(map[string]string{"AUTHORITYD_FORWARD_ROUTE": "s3=127.0.0.1:18003"}))
	if err != nil || cfg.ForwardRoutes["s3"] != "127.0.0.1:18003" {
		t.Fatalf("env forward route: %v %v", cfg.ForwardRoutes, err)
	}
	if _, err := loadConfig(withTLS("--node-id", "s1", "--data-dir", "d", "--peer", peers, "--forward-route", "s2=nohostport"), env(nil)); err == nil ||
		!strings.Contains(err.Error(), "forward-route") {
		t.Fatalf("malformed forward route: %v", err)
	}
}

// Mutual TLS is the default: the three certificate flags together, or
// --insecure alone; from flags, environment or the file alike.
func TestConfigSecurity(t *testing.T) {
	base := []string{"--node-id", "s1", "--data-dir", "d", "--peer", peers}
	ok := func(name string, args []string, vars map[string]string) Config {
		t.Helper()
		cfg, err := loadConfig(args, env(vars))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return cfg
	}
	cfg := ok("certificate flags", withTLS(base...), nil)
	if cfg.Insecure || cfg.CACert != "ca.crt" || cfg.Cert != "server-s1.crt" || cfg.Key != "server-s1.key" {
		t.Fatalf("certificate flags: %+v", cfg)
	}
	cfg = ok("certificate env", base, map[string]string{"AUTHORITYD_CACERT": "/e/ca.crt", "AUTHORITYD_CERT": "/e/s1.crt", "AUTHORITYD_KEY": "/e/s1.key",
		"AUTHORITYD_TRUST_DOMAIN": "example.org", "AUTHORITYD_CLUSTER_TOKEN": "blue"})
	if cfg.CACert != "/e/ca.crt" || cfg.Cert != "/e/s1.crt" || cfg.Key != "/e/s1.key" || cfg.TrustDomain != "example.org" || cfg.ClusterToken != "blue" {
		t.Fatalf("certificate env: %+v", cfg)
	}
	if cfg = ok("--insecure", append(base, "--insecure"), nil); !cfg.Insecure {
		t.Fatal("--insecure not set")
	}
	if cfg = ok("AUTHORITYD_INSECURE", base, map[string]string{"AUTHORITYD_INSECURE": "true"}); !cfg.Insecure {
		t.Fatal("AUTHORITYD_INSECURE=true not applied")
	}
	file := filepath.Join(t.TempDir(), "insecure.yaml")
	if err := os.WriteFile(file, []byte("insecure: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfg = ok("insecure in the file", append(base, "--config", file), nil); !cfg.Insecure {
		t.Fatal("insecure: true in the file not applied")
	}

	const missing = "give --cacert, --cert and --key"
	for _, tc := range []struct {
		name string
		args []string
		vars map[string]string
		want string
	}{
		{"no certificates, no --insecure", base, nil, missing},
		{"only --cert", append(append([]string{}, base...), "--cert", "s1.crt"), nil, missing},
		{"--cacert and --key", append(append([]string{}, base...), "--cacert", "ca.crt", "--key", "s1.key"), nil, missing},
		{"only some from env", base, map[string]string{"AUTHORITYD_CACERT": "ca.crt", "AUTHORITYD_CERT": "s1.crt"}, missing},
		{"--insecure with certificate flags", withTLS(append(base, "--insecure")...), nil, "--insecure excludes --cacert, --cert and --key"},
		{"--insecure with --cacert", append(append([]string{}, base...), "--insecure", "--cacert", "ca.crt"), nil, "--insecure excludes"},
		{"AUTHORITYD_INSECURE with certificate flags", withTLS(base...), map[string]string{"AUTHORITYD_INSECURE": "1"}, "--insecure excludes"},
		{"malformed AUTHORITYD_INSECURE", withTLS(base...), map[string]string{"AUTHORITYD_INSECURE": "perhaps"}, "AUTHORITYD_INSECURE"},
	} {
		_, err := loadConfig(tc.args, env(tc.vars))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

// --metrics-addr: a host:port, from the flag or the environment.
func TestConfigMetricsAddr(t *testing.T) {
	base := withTLS("--node-id", "s1", "--data-dir", "d", "--peer", peers)
	cfg, err := loadConfig(append(base, "--metrics-addr", "127.0.0.1:9101"), env(nil))
	if err != nil || cfg.MetricsAddr != "127.0.0.1:9101" {
		t.Fatalf("--metrics-addr: %q %v", cfg.MetricsAddr, err)
	}
	cfg, err = loadConfig(base, env(map[string]string{"AUTHORITYD_METRICS_ADDR": ":9102"}))
	if err != nil || cfg.MetricsAddr != ":9102" {
		t.Fatalf("AUTHORITYD_METRICS_ADDR: %q %v", cfg.MetricsAddr, err)
	}
	if cfg, err = loadConfig(base, env(nil)); err != nil || cfg.MetricsAddr != "" {
		t.Fatalf("default: %q %v (off unless asked for)", cfg.MetricsAddr, err)
	}
	for _, bad := range []string{"nonsense", "127.0.0.1", "9101"} {
		_, err := loadConfig(append(append([]string{}, base...), "--metrics-addr", bad), env(nil))
		if err == nil || !strings.Contains(err.Error(), `metrics-addr "`+bad+`"`) {
			t.Errorf("--metrics-addr %q: %v", bad, err)
		}
	}
}

// --force-new-cluster recovers an existing data dir: it needs no peer list
// and excludes --bootstrap and --join.
func TestConfigForceNewCluster(t *testing.T) {
	cfg, err := loadConfig(withTLS("--node-id", "s1", "--data-dir", "d", "--force-new-cluster"), env(nil))
	if err != nil || !cfg.ForceNewCluster {
		t.Fatalf("--force-new-cluster alone: %+v %v", cfg, err)
	}
	cfg, err = loadConfig(withTLS("--node-id", "s1", "--data-dir", "d", "--peer", peers), env(map[string]string{"AUTHORITYD_FORCE_NEW_CLUSTER": "true"}))
	if err != nil || !cfg.ForceNewCluster {
		t.Fatalf("AUTHORITYD_FORCE_NEW_CLUSTER with the old peer list: %+v %v", cfg, err)
	}
	const want = "--force-new-cluster recovers an existing data dir"
	for name, args := range map[string][]string{
		"with --bootstrap":      withTLS("--node-id", "s1", "--data-dir", "d", "--peer", peers, "--bootstrap", "--force-new-cluster"),
		"with --join":           withTLS("--node-id", "s1", "--data-dir", "d", "--join", "127.0.0.1:8002", "--force-new-cluster"),
		"with bootstrap in env": withTLS("--node-id", "s1", "--data-dir", "d", "--peer", peers, "--force-new-cluster"),
	} {
		vars := map[string]string{}
		if name == "with bootstrap in env" {
			vars["AUTHORITYD_BOOTSTRAP"] = "true"
		}
		if _, err := loadConfig(args, env(vars)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--force-new-cluster %s: %v", name, err)
		}
	}
}

// Every resource limit has a default, a flag, an AUTHORITYD_* variable and
// a YAML key, and Validate refuses values outside its bounds, naming them.
func TestConfigLimits(t *testing.T) {
	cfg, err := loadConfig(withTLS("--node-id", "s1", "--data-dir", "d", "--peer", peers), env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Limits != defaultLimits() || cfg.Limits.GRPCMaxRecvBytes != 4<<20 || cfg.Limits.HTTPMaxConnections != 256 {
		t.Fatalf("defaults: %+v", cfg.Limits)
	}
	file := filepath.Join(t.TempDir(), "authorityd.yaml")
	if err := os.WriteFile(file, []byte("grpc_max_streams: 7\nhttp_idle_timeout: 3s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err = loadConfig(withTLS("--config", file, "--node-id", "s1", "--data-dir", "d", "--peer", peers,
		"--grpc-max-recv-bytes", "1048576", "--http-max-connections", "64", "--grpc-keepalive-min-time", "30s"),
		env(map[string]string{"AUTHORITYD_HTTP_READ_HEADER_TIMEOUT": "2s", "AUTHORITYD_GRPC_MAX_CONNECTIONS": "99",
			"AUTHORITYD_HTTP_MAX_CONNECTIONS": "1000"}))
	if err != nil {
		t.Fatal(err)
	}
	l := cfg.Limits
	if l.GRPCMaxRecvBytes != 1<<20 || l.HTTPMaxConnections != 64 || l.GRPCKeepaliveMinTime != 30*time.Second ||
		l.HTTPReadHeaderTimeout != 2*time.Second || l.GRPCMaxConnections != 99 || l.GRPCMaxStreams != 7 || l.HTTPIdleTimeout != 3*time.Second {
		t.Fatalf("flag > env > file: %+v", l)
	}
	if len(limitFlags) != 18 {
		t.Fatalf("%d limit flags; docs/LIMITS.md lists 18", len(limitFlags))
	}
	_, err = loadConfig(withTLS("--node-id", "s1", "--data-dir", "d", "--peer", peers, "--grpc-max-recv-bytes", "100",
		"--grpc-max-streams", "0", "--http-max-header-bytes", "99999999", "--http-read-timeout", "0s"), env(nil))
	if err == nil {
		t.Fatal("absurd limits accepted")
	}
	for _, want := range []string{"grpc-max-recv-bytes 100: want 65536..67108864", "grpc-max-streams 0: want 1..1048576",
		"http-max-header-bytes 99999999: want 1024..1048576", "http-read-timeout 0s: want 1ms..10m0s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if _, err := loadConfig(withTLS("--node-id", "s1", "--data-dir", "d", "--peer", peers), env(map[string]string{"AUTHORITYD_GRPC_MAX_STREAMS": "many"})); err == nil ||
		!strings.Contains(err.Error(), "AUTHORITYD_GRPC_MAX_STREAMS") {
		t.Fatalf("bad env value: %v", err)
	}
}

func TestConfigPolicySettings(t *testing.T) {
	base := withTLS("--node-id", "s1", "--data-dir", "d", "--peer", peers)
	cfg, err := loadConfig(base, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PolicyDwell != 10*time.Second || cfg.PolicyBackoffMin != 500*time.Millisecond || cfg.PolicyBackoffMax != 30*time.Second {
		t.Fatalf("defaults %v %v %v", cfg.PolicyDwell, cfg.PolicyBackoffMin, cfg.PolicyBackoffMax)
	}
	cfg, err = loadConfig(append(base, "--policy-dwell", "1m", "--policy-backoff-max", "5s"),
		env(map[string]string{"AUTHORITYD_POLICY_BACKOFF_MIN": "100ms", "AUTHORITYD_POLICY_DWELL": "2s"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PolicyDwell != time.Minute || cfg.PolicyBackoffMin != 100*time.Millisecond || cfg.PolicyBackoffMax != 5*time.Second {
		t.Fatalf("flags/env %v %v %v", cfg.PolicyDwell, cfg.PolicyBackoffMin, cfg.PolicyBackoffMax)
	}
	if _, err := loadConfig(append(base, "--policy-backoff-min", "2s", "--policy-backoff-max", "1s"), env(nil)); err == nil ||
		!strings.Contains(err.Error(), "policy-backoff-min") {
		t.Fatalf("min > max accepted: %v", err)
	}
}

// The raft tuning settings: measured defaults, each settable by flag,
// environment and file, and bounded.
func TestConfigRaftTuning(t *testing.T) {
	base := withTLS("--node-id", "s1", "--data-dir", "d", "--peer", peers, "--bootstrap")
	cfg, err := loadConfig(base, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RaftMaxAppendEntries != 64 || cfg.RaftCommitTimeout != 50*time.Millisecond || cfg.RaftLogCache != 512 ||
		cfg.RaftBatchApply || !cfg.RaftBatchFSM || !cfg.RaftPreVote || !cfg.WatermarkMerge {
		t.Fatalf("defaults: %+v", cfg)
	}
	file := filepath.Join(t.TempDir(), "authorityd.yaml")
	if err := os.WriteFile(file, []byte("raft_log_cache: 2048\nraft_pre_vote: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err = loadConfig(append(base, "--config", file, "--raft-max-append-entries", "256", "--raft-batch-fsm=false", "--watermark-merge=false"),
		env(map[string]string{"AUTHORITYD_RAFT_COMMIT_TIMEOUT": "5ms", "AUTHORITYD_RAFT_BATCH_APPLY": "true"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RaftMaxAppendEntries != 256 || cfg.RaftCommitTimeout != 5*time.Millisecond || cfg.RaftLogCache != 2048 ||
		!cfg.RaftBatchApply || cfg.RaftBatchFSM || cfg.RaftPreVote || cfg.WatermarkMerge {
		t.Fatalf("set: %+v", cfg)
	}
	_, err = loadConfig(append(base, "--raft-max-append-entries", "2000", "--raft-commit-timeout", "0s", "--raft-log-cache", "0"), env(nil))
	for _, want := range []string{"raft-max-append-entries 2000", "raft-commit-timeout 0s", "raft-log-cache 0"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %q", err, want)
		}
	}
}
