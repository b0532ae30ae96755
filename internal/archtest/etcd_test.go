package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

// etcd is measured side by side with authorityd in bench/compare, its own
// Go module; its server, client and raft must never become a dependency of
// the product module (not even an indirect one in its module graph).
//
// One package of etcd 3.3 is linked, and only that one:
// hashicorp/raft-wal (the log store) preallocates its segment files with
// github.com/coreos/etcd/pkg/fileutil, so the old monolithic module
// github.com/coreos/etcd is in the graph. TestOnlyEtcdFileutilIsLinked
// keeps it to that package.
func TestProductModuleHasNoEtcd(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "all").Output()
	if err != nil {
		t.Fatalf("go list -m all: %v", err)
	}
	for line := range strings.Lines(string(out)) {
		if strings.HasPrefix(line, "go.etcd.io/etcd/") {
			t.Errorf("the product module's graph has %s: etcd belongs to bench/compare's go.mod only", strings.TrimSpace(line))
		}
		if strings.HasPrefix(line, module+"/bench/compare") {
			t.Errorf("the product module requires %s", strings.TrimSpace(line))
		}
	}
}

// TestOnlyEtcdFileutilIsLinked: of the old etcd module that raft-wal
// requires, the binaries link pkg/fileutil and nothing else (no server,
// client, raft or wal code of etcd).
func TestOnlyEtcdFileutilIsLinked(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", module+"/cmd/...").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	found := false
	for line := range strings.Lines(string(out)) {
		pkg := strings.TrimSpace(line)
		if !strings.HasPrefix(pkg, "github.com/coreos/etcd/") && !strings.HasPrefix(pkg, "go.etcd.io/") {
			continue
		}
		switch pkg {
		case "github.com/coreos/etcd/pkg/fileutil":
			found = true
		case "go.etcd.io/bbolt":
			// bbolt is its own project (raft-boltdb's store), not etcd.
		default:
			t.Errorf("the product links %s: only github.com/coreos/etcd/pkg/fileutil (through hashicorp/raft-wal) may come from etcd", pkg)
		}
	}
	if !found {
		t.Log("github.com/coreos/etcd/pkg/fileutil is no longer linked: drop the exception from TestProductModuleHasNoEtcd's comment")
	}
}
