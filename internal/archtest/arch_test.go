// Package archtest checks the import rules docs/ARCHITECTURE.md states, so
// the docs fail a test when they stop being true.
package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/aerodb/authority"

// deps lists every package pkg links (go list -deps), test-free.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", module+"/"+pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

func forbid(t *testing.T, pkg string, bad func(dep string) bool) {
	t.Helper()
	for _, d := range deps(t, pkg) {
		if bad(d) {
			t.Errorf("%s imports %s, which docs/ARCHITECTURE.md rules out", pkg, d)
		}
	}
}

// imports lists what pkg imports itself (not its dependencies).
func imports(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-f", `{{join .Imports "\n"}}`, module+"/"+pkg).Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

// The core is pure: fsm and validator import no network, OS, RPC, metrics
// or raft package of their own, and no package of this module but the API
// and each other. (The API package holds the generated gRPC stubs beside
// the messages, so "go list -deps" of the core still lists grpc: see
// docs/ARCHITECTURE.md.)
func TestCoreIsPure(t *testing.T) {
	for _, pkg := range []string{"fsm", "validator"} {
		for _, d := range imports(t, pkg) {
			bad := d == "net" || d == "os" || d == "time" || d == "math/rand" || d == "math/rand/v2" || strings.HasPrefix(d, "net/") ||
				strings.HasPrefix(d, "google.golang.org/grpc") || strings.HasPrefix(d, "github.com/prometheus/") ||
				strings.HasPrefix(d, "github.com/hashicorp/") ||
				(strings.HasPrefix(d, module+"/") && d != module+"/api/authority/v1" && d != module+"/validator")
			if bad {
				t.Errorf("%s imports %s, which docs/ARCHITECTURE.md rules out", pkg, d)
			}
		}
	}
}

// hashicorp/raft is assembled in cluster only.
func TestRaftOnlyInCluster(t *testing.T) {
	for _, pkg := range []string{"promotion", "fsm", "validator", "client", "authz", "tlsfiles", "identity", "pki", "cmd/authorityctl"} {
		forbid(t, pkg, func(d string) bool { return strings.HasPrefix(d, "github.com/hashicorp/raft") })
	}
}

// The client library imports only the API of this module, and the
// identity, certificate and TLS packages link no server package.
func TestClientsLinkNoServerPackage(t *testing.T) {
	server := []string{"/cluster", "/transport", "/promotion", "/authz", "/observability", "/cmd/authorityd"}
	isServer := func(d string) bool {
		for _, s := range server {
			if d == module+s {
				return true
			}
		}
		return false
	}
	forbid(t, "client", func(d string) bool {
		return strings.HasPrefix(d, module+"/") && !strings.HasPrefix(d, module+"/api/") && d != module+"/client"
	})
	for _, pkg := range []string{"identity", "pki", "tlsfiles", "cmd/jepsen-agent"} {
		forbid(t, pkg, isServer)
	}
	forbid(t, "identity", func(d string) bool { return strings.HasPrefix(d, module+"/") && d != module+"/identity" })
}

// The probe service is a client of nothing but its targets: probe/... and
// cmd/probed link no other package of this module.
func TestProbeLinksOnlyItself(t *testing.T) {
	for _, pkg := range []string{"probe/service", "probe/run", "probe/flow", "probe/slo", "probe/verdict", "cmd/probed"} {
		forbid(t, pkg, func(d string) bool {
			return strings.HasPrefix(d, module+"/") && !strings.HasPrefix(d, module+"/probe/") && d != module+"/cmd/probed"
		})
	}
}

// The deploy pipeline's runner checks (pipeline/...) gather evidence on
// runners: they link no package of this module at all (the authority
// decides, they only measure), so authorityctl can run them anywhere.
func TestPipelineChecksLinkNothingOfTheModule(t *testing.T) {
	for _, pkg := range []string{"pipeline/preflight", "pipeline/gate", "pipeline/alert"} {
		forbid(t, pkg, func(d string) bool {
			return strings.HasPrefix(d, module+"/") && !strings.HasPrefix(d, module+"/pipeline/")
		})
	}
}

// The release controller's parts are clients: release/... links no server
// package of this module (the API, the client library and the validator's
// evidence types only).
func TestReleaseControllerIsAClient(t *testing.T) {
	for _, pkg := range []string{"release/analysis", "release/actuator", "release/webhook", "release/controller", "release/burnrate", "release/verdict"} {
		forbid(t, pkg, func(d string) bool {
			if !strings.HasPrefix(d, module+"/") {
				return false
			}
			for _, ok := range []string{"/api/", "/client", "/validator", "/release/"} {
				if strings.HasPrefix(d, module+ok) {
					return false
				}
			}
			return true
		})
	}
}
