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

// The core is pure: fsm and validator import no network, OS, clock,
// randomness, RPC, metrics or raft package of their own, and no package of
// this module but the API messages and each other. (What they link is
// TestCoreLinksNoNetworkOrRPC's.)
func TestCoreIsPure(t *testing.T) {
	for _, pkg := range []string{"fsm", "validator"} {
		for _, d := range imports(t, pkg) {
			bad := d == "net" || d == "os" || d == "time" || d == "math/rand" || d == "math/rand/v2" || strings.HasPrefix(d, "net/") ||
				strings.HasPrefix(d, "google.golang.org/grpc") || strings.HasPrefix(d, "github.com/prometheus/") ||
				strings.HasPrefix(d, "github.com/hashicorp/") ||
				d == "crypto/rand" || d == "os/exec" || d == "syscall" ||
				(strings.HasPrefix(d, module+"/") && d != module+"/api/authority/v1" && d != module+"/validator")
			if bad {
				t.Errorf("%s imports %s, which docs/ARCHITECTURE.md rules out", pkg, d)
			}
		}
	}
}

// What the core links (go list -deps of fsm and validator): no network
// package, no module but the protobuf runtime, and no package of this
// module but the API messages (api/authority/v1, not the gRPC services of
// api/authority/v1/authorityv1grpc) and each other, so no grpc,
// prometheus, raft or go-securesystemslib. os, time, syscall and the
// random packages are linked, but only through the standard library (fmt
// imports os, crypto/ed25519 crypto/rand, math/big math/rand) and the
// protobuf runtime (its detrand imports os): never through a package that
// could do I/O for the core.
func TestCoreLinksNoNetworkOrRPC(t *testing.T) {
	args := []string{"list", "-deps", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, module + "/fsm", module + "/validator"}
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		t.Fatalf("go list -deps fsm validator: %v", err)
	}
	ownAPI := map[string]bool{module + "/api/authority/v1": true, module + "/fsm": true, module + "/validator": true}
	std := func(p string) bool { return !strings.Contains(strings.SplitN(p, "/", 2)[0], ".") }
	sensitive := map[string]bool{"os": true, "time": true, "syscall": true, "crypto/rand": true, "math/rand": true, "math/rand/v2": true}
	n := 0
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		pkg := f[0]
		n++
		switch {
		case pkg == "net" || strings.HasPrefix(pkg, "net/") || pkg == "os/exec" || pkg == "os/signal" || pkg == "crypto/tls":
			t.Errorf("the core links %s, which docs/ARCHITECTURE.md rules out", pkg)
		case strings.HasPrefix(pkg, module+"/") && !ownAPI[pkg]:
			t.Errorf("the core links %s; of this module only the API messages, fsm and validator are allowed", pkg)
		case !std(pkg) && !strings.HasPrefix(pkg, module+"/") && !strings.HasPrefix(pkg, "google.golang.org/protobuf/"):
			t.Errorf("the core links %s; of other modules only the protobuf runtime is allowed", pkg)
		}
		if std(pkg) || strings.HasPrefix(pkg, "google.golang.org/protobuf/") {
			continue
		}
		for _, imp := range f[1:] {
			if sensitive[imp] {
				t.Errorf("%s, linked by the core, imports %s", pkg, imp)
			}
		}
	}
	if n < 10 {
		t.Fatalf("go list -deps listed %d packages; the check checks nothing", n)
	}
	t.Logf("the core links %d packages", n)
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

// authorityctl links no server package: it renders explanations and
// events with package render (std and the API messages only), which the
// server shares, not with observability.
func TestCLILinksNoServerPackage(t *testing.T) {
	server := []string{"/cluster", "/transport", "/promotion", "/authz", "/observability", "/failpoint", "/evidence", "/cmd/authorityd"}
	forbid(t, "cmd/authorityctl", func(d string) bool {
		for _, s := range server {
			if d == module+s {
				return true
			}
		}
		return d == "github.com/hashicorp/go-hclog" || strings.HasPrefix(d, "github.com/prometheus/client_golang")
	})
	forbid(t, "render", func(d string) bool {
		return strings.HasPrefix(d, module+"/") && d != module+"/api/authority/v1" && d != module+"/render" ||
			d == "net" || strings.HasPrefix(d, "google.golang.org/grpc")
	})
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
