package tlsfiles

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/pki"
)

// Changed files are picked up on the next handshake once a second has
// passed since the last check, without Reload; a half-written pair (new
// certificate, old key) keeps the previous material.
func TestRefreshFollowsChangedFilesAtMostOnceASecond(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("t", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Write(dir); err != nil {
		t.Fatal(err)
	}
	n1 := identity.Identity{Role: identity.Node, Name: "n1"}
	cert, key, err := ca.WriteLeaf(dir, pki.LeafOptions{Identity: n1})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	var reloads []error
	s, err := Load(Files{CA: filepath.Join(dir, pki.CACertFile), Cert: cert, Key: key}, Options{OnReload: func(err error) { reloads = append(reloads, err) }})
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return now }
	s.lastCheck = now
	first, _ := s.current()

	// A new certificate under the old key: the pair does not match.
	n2, err := ca.Issue(pki.LeafOptions{Identity: identity.Identity{Role: identity.Node, Name: "n2"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cert, n2.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.current(); c != first {
		t.Fatal("reloaded before a second passed")
	}
	now = now.Add(time.Second)
	if c, _ := s.current(); c != first || len(reloads) != 1 || reloads[0] == nil {
		t.Fatalf("a mismatched pair replaced the certificate (reloads %v)", reloads)
	}
	// The key follows: the next check loads the new pair.
	if err := os.WriteFile(key, n2.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Second)
	s.current()
	if s.Self().Name != "n2" || len(reloads) != 2 || reloads[1] != nil {
		t.Fatalf("self %v, reloads %v", s.Self(), reloads)
	}
}
