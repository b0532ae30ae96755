package refnode

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/internal/testcluster"
)

// A refnode acts at the authority as node:<its id>: it refuses to start
// with another identity's certificate or without TLS settings, and the
// administration a node's certificate may not do (create the domain,
// register itself) stops it with the command an operator runs instead.
func TestServeNodeIdentity(t *testing.T) {
	auth, ac := startAuthority(t)
	bin := filepath.Join(testcluster.Binaries(t), "refnode")
	serve := func(id string, tls []string, extra ...string) (string, int) {
		t.Helper()
		args := append([]string{"serve", "--authority", strings.Join(auth.Endpoints(), ","), "--domain", "ident", "--id", id,
			"--data-dir", filepath.Join(t.TempDir(), id), "--listen", freeAddr(t)}, tls...)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append(args, extra...)...)
		cmd.Env = []string{"PATH=/usr/bin:/bin"} // no AUTHORITY_* from the test's environment
		out, err := cmd.CombinedOutput()
		if ctx.Err() != nil {
			t.Fatalf("serve %s %v kept running:\n%s", id, extra, out)
		}
		if err == nil {
			t.Fatalf("serve %s %v exited 0:\n%s", id, extra, out)
		}
		return string(out), cmd.ProcessState.ExitCode()
	}
	tlsOf := func(id string) []string {
		f := testcluster.Files(t, testcluster.Node(id))
		return []string{"--authority-cacert", f.CA, "--authority-cert", f.Cert, "--authority-key", f.Key}
	}

	if out, code := serve("n1", nil); code != 2 || !strings.Contains(out, "--authority-insecure") {
		t.Fatalf("no TLS settings: exit %d, want 2 (usage) naming --authority-insecure:\n%s", code, out)
	}
	if out, code := serve("n1", tlsOf("n2")); code != 2 || !strings.Contains(out, "node:n2") || !strings.Contains(out, "node:n1") {
		t.Fatalf("n2's certificate for n1: exit %d, want 2 (usage) naming both identities:\n%s", code, out)
	}
	if out, code := serve("n1", tlsOf("n1"), "--create-domain"); code != 1 || !strings.Contains(out, "authorityctl domain create ident") {
		t.Fatalf("--create-domain as node:n1: exit %d, want 1 naming the operator's command:\n%s", code, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := ac.CreateDomain(ctx, "ident", pb.DomainKind_DOMAIN_KIND_AERODB, DomainPolicy(testTTL, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if out, code := serve("n1", tlsOf("n1")); code != 1 || !strings.Contains(out, "authorityctl member register ident n1 --address") {
		t.Fatalf("an unregistered node: exit %d, want 1 naming the operator's command:\n%s", code, out)
	}
	// Nothing a refused node tried reached the domain.
	d, err := ac.GetDomain(ctx, "ident")
	if err != nil || len(d.GetMembers()) != 0 || d.GetEpoch() != 0 {
		t.Fatalf("domain after the refusals: %v %v", d, err)
	}
}
