package main

import (
	"errors"
	"strings"
	"testing"
)

func TestRestoreFromAndVersionFlags(t *testing.T) {
	base := []string{"--node-id", "s1", "--data-dir", "/d", "--peer", peers}
	cfg, err := loadConfig(withTLS(append(base, "--bootstrap", "--restore-from", "/b.snap", "--cluster-token", "restored")...), env(nil))
	if err != nil || cfg.RestoreFrom != "/b.snap" {
		t.Fatalf("%+v %v", cfg.RestoreFrom, err)
	}
	cfg, err = loadConfig(withTLS(append(base, "--bootstrap")...), env(map[string]string{"AUTHORITYD_RESTORE_FROM": "/e.snap"}))
	if err != nil || cfg.RestoreFrom != "/e.snap" {
		t.Fatalf("env: %+v %v", cfg.RestoreFrom, err)
	}
	for _, bad := range [][]string{
		append(base, "--restore-from", "/b.snap"), // no --bootstrap
		{"--node-id", "s1", "--data-dir", "/d", "--join", "127.0.0.1:8001", "--restore-from", "/b.snap"},
	} {
		if _, err := loadConfig(withTLS(bad...), env(nil)); err == nil || !strings.Contains(err.Error(), "--restore-from starts a new cluster") {
			t.Errorf("%v: %v", bad, err)
		}
	}
	if _, err := loadConfig([]string{"--version"}, env(nil)); !errors.Is(err, errShowVersion) {
		t.Fatalf("--version: %v", err)
	}
}

// deploy/systemd/authorityd.yaml, the example configuration, loads with
// the real keys (unknown keys fail) and validates.
func TestExampleConfig(t *testing.T) {
	cfg, err := loadConfig([]string{"--config", "../../deploy/systemd/authorityd.yaml"}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NodeID != "s1" || len(cfg.Peers) != 3 || !cfg.Bootstrap || cfg.DataDir != "/var/lib/authority" || cfg.MetricsAddr == "" || cfg.CACert == "" {
		t.Fatalf("%+v", cfg)
	}
}
