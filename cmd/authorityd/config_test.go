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

func TestConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "authorityd.yaml")
	yaml := `node_id: s2
data_dir: /from/file
grpc_addr: 127.0.0.1:8002
heartbeat_timeout: 700ms
election_timeout: 900ms
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
	if cfg.LogFormat != "json" || cfg.LeaderLeaseTimeout != 250*time.Millisecond {
		t.Errorf("env/default values: %+v", cfg)
	}
}

func TestConfigFlagsAlone(t *testing.T) {
	cfg, err := loadConfig([]string{"--node-id", "s1", "--data-dir", "d", "--peer", peers, "--bootstrap"}, env(nil))
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
		"node not among peer": {"--node-id", "s7", "--data-dir", "d", "--peer", peers},
	}
	for name, args := range cases {
		if _, err := loadConfig(args, env(nil)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := loadConfig([]string{"--node-id", "s1", "--data-dir", "d", "--peer", peers},
		env(map[string]string{"AUTHORITYD_BOOTSTRAP": "maybe"})); err == nil || !strings.Contains(err.Error(), "AUTHORITYD_BOOTSTRAP") {
		t.Errorf("malformed env value: %v", err)
	}
}

func TestConfigJoin(t *testing.T) {
	cfg, err := loadConfig([]string{"--node-id", "s4", "--data-dir", "d", "--join", "127.0.0.1:8001, 127.0.0.1:8002"}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Join) != 2 || cfg.Join[1] != "127.0.0.1:8002" || cfg.Bootstrap {
		t.Fatalf("%+v", cfg)
	}
	if _, err := loadConfig([]string{"--node-id", "s4", "--data-dir", "d", "--join", "127.0.0.1:8001", "--bootstrap"}, env(nil)); err == nil ||
		!strings.Contains(err.Error(), "exclude each other") {
		t.Fatalf("join with bootstrap: %v", err)
	}
	if _, err := loadConfig([]string{"--node-id", "s4", "--data-dir", "d", "--join", "nonsense"}, env(nil)); err == nil {
		t.Fatal("malformed join endpoint accepted")
	}
}

func TestConfigRaftRoutes(t *testing.T) {
	cfg, err := loadConfig([]string{"--node-id", "s1", "--data-dir", "d", "--peer", peers, "--raft-route", "s2=127.0.0.1:17002,s3=127.0.0.1:17003"}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RaftRoutes["s3"] != "127.0.0.1:17003" || len(cfg.RaftRoutes) != 2 {
		t.Fatalf("routes %v", cfg.RaftRoutes)
	}
	if _, err := loadConfig([]string{"--node-id", "s1", "--data-dir", "d", "--peer", peers, "--raft-route", "s2"}, env(nil)); err == nil {
		t.Fatal("malformed route accepted")
	}
}

func TestConfigSnapshotSettings(t *testing.T) {
	cfg, err := loadConfig([]string{"--node-id", "s1", "--data-dir", "d", "--peer", peers, "--snapshot-threshold", "16",
		"--snapshot-interval", "200ms", "--trailing-logs", "4"}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SnapshotThreshold != 16 || cfg.SnapshotInterval != 200*time.Millisecond || cfg.TrailingLogs != 4 {
		t.Fatalf("%+v", cfg)
	}
}

func TestConfigForwardRoutes(t *testing.T) {
	cfg, err := loadConfig([]string{"--node-id", "s1", "--data-dir", "d", "--peer", peers, "--forward-route", "s2=127.0.0.1:18002"},
		env(map[string]string{"AUTHORITYD_RAFT_ROUTE": "s3=127.0.0.1:17003"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ForwardRoutes["s2"] != "127.0.0.1:18002" || len(cfg.ForwardRoutes) != 1 || cfg.RaftRoutes["s3"] != "127.0.0.1:17003" {
		t.Fatalf("forward %v raft %v", cfg.ForwardRoutes, cfg.RaftRoutes)
	}
	cfg, err = loadConfig([]string{"--node-id", "s1", "--data-dir", "d", "--peer", peers}, env(map[string]string{"AUTHORITYD_FORWARD_ROUTE": "s3=127.0.0.1:18003"}))
	if err != nil || cfg.ForwardRoutes["s3"] != "127.0.0.1:18003" {
		t.Fatalf("env forward route: %v %v", cfg.ForwardRoutes, err)
	}
	if _, err := loadConfig([]string{"--node-id", "s1", "--data-dir", "d", "--peer", peers, "--forward-route", "s2=nohostport"}, env(nil)); err == nil ||
		!strings.Contains(err.Error(), "forward-route") {
		t.Fatalf("malformed forward route: %v", err)
	}
}
