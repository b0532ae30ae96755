package pki

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/aerodb/authority/identity"
)

func parse(t *testing.T, b []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Servers get server and client authentication and the hosts; every other
// role only client authentication (a node's certificate cannot serve).
func TestKeyUsagesByRole(t *testing.T) {
	ca, err := NewCA("t", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue(LeafOptions{Identity: identity.Identity{Role: identity.Server, Name: "s1"}, Hosts: []string{"db.example", "10.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	c := parse(t, srv.CertPEM)
	if !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Errorf("server usages %v", c.ExtKeyUsage)
	}
	if !slices.Equal(c.DNSNames, []string{"db.example"}) || len(c.IPAddresses) != 1 {
		t.Errorf("server hosts %v %v", c.DNSNames, c.IPAddresses)
	}
	node, err := ca.Issue(LeafOptions{Identity: identity.Identity{Role: identity.Node, Name: "n1"}})
	if err != nil {
		t.Fatal(err)
	}
	n := parse(t, node.CertPEM)
	if !slices.Equal(n.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || len(n.IPAddresses)+len(n.DNSNames) != 0 {
		t.Errorf("node usages %v, hosts %v %v", n.ExtKeyUsage, n.DNSNames, n.IPAddresses)
	}
	if id, err := identity.FromCertificate(n, identity.DefaultTrustDomain); err != nil || id.String() != "node:n1" {
		t.Errorf("node identity %v %v", id, err)
	}
	if _, err := ca.Issue(LeafOptions{Identity: identity.Identity{Role: "root", Name: "x"}}); err == nil {
		t.Error("unknown role issued")
	}
}

// Init reuses an existing CA and writes keys readable by the owner only.
func TestInitReusesTheCA(t *testing.T) {
	dir := t.TempDir()
	if _, err := Init(dir, InitOptions{}); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(filepath.Join(dir, CACertFile))
	ids, err := Init(dir, InitOptions{Nodes: []string{"n9"}})
	if err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(filepath.Join(dir, CACertFile))
	if string(first) != string(again) {
		t.Error("the CA was replaced")
	}
	if !slices.Contains(ids, identity.Identity{Role: identity.Node, Name: "n9"}) {
		t.Errorf("ids %v", ids)
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFile(identity.Identity{Role: identity.Node, Name: "n9"})))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v %v", fi.Mode(), err)
	}
}
