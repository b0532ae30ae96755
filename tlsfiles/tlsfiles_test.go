package tlsfiles_test

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/pki"
	"github.com/aerodb/authority/tlsfiles"
)

var (
	srvID  = identity.Identity{Role: identity.Server, Name: "s1"}
	nodeID = identity.Identity{Role: identity.Node, Name: "n1"}
)

// issue writes id's files signed by ca into dir and returns them, with the
// CA bundle at bundle.
func issue(t *testing.T, ca *pki.CA, dir, bundle string, o pki.LeafOptions) tlsfiles.Files {
	t.Helper()
	cert, key, err := ca.WriteLeaf(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	return tlsfiles.Files{CA: bundle, Cert: cert, Key: key}
}

func newCA(t *testing.T, dir string) (*pki.CA, string) {
	t.Helper()
	ca, err := pki.NewCA("test CA "+filepath.Base(dir), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Write(dir); err != nil {
		t.Fatal(err)
	}
	return ca, filepath.Join(dir, pki.CACertFile)
}

func load(t *testing.T, f tlsfiles.Files) *tlsfiles.Source {
	t.Helper()
	s, err := tlsfiles.Load(f, tlsfiles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// serve accepts TLS connections with src and reports each handshake's
// peer identity or error.
func serve(t *testing.T, src *tlsfiles.Source, rejected chan<- error) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", src.ServerConfig(nil, nil, func(_ string, err error) { rejected <- err }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if err := c.(*tls.Conn).Handshake(); err == nil {
					c.Write([]byte("ok"))
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// dial completes a handshake and reads the server's "ok" (a refused client
// certificate shows as an error on the read in TLS 1.3).
func dial(addr string, cfg *tls.Config) error {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2)
	_, err = c.Read(buf)
	return err
}

func TestMutualTLSRefusesWrongCAExpiredAndWrongHost(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	ca, bundle := newCA(t, dir)
	otherCA, otherBundle := newCA(t, other)
	server := load(t, issue(t, ca, dir, bundle, pki.LeafOptions{Identity: srvID}))
	rejected := make(chan error, 10)
	addr := serve(t, server, rejected)

	good := load(t, issue(t, ca, dir, bundle, pki.LeafOptions{Identity: nodeID}))
	if err := dial(addr, good.ClientConfig("127.0.0.1")); err != nil {
		t.Fatalf("good client: %v", err)
	}
	if got := good.Self(); got != nodeID {
		t.Fatalf("Self = %v", got)
	}

	foreign := load(t, issue(t, otherCA, other, otherBundle, pki.LeafOptions{Identity: nodeID}))
	if err := dial(addr, foreign.ClientConfig("")); err == nil {
		t.Error("a client of another CA was accepted (and it accepted our server)")
	}
	expiredFiles := issue(t, ca, t.TempDir(), bundle, pki.LeafOptions{Identity: identity.Identity{Role: identity.Node, Name: "old"},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	expired := load(t, expiredFiles)
	if err := dial(addr, expired.ClientConfig("127.0.0.1")); err == nil {
		t.Error("an expired client certificate was accepted")
	}
	select {
	case err := <-rejected:
		if !strings.Contains(err.Error(), "refused") {
			t.Errorf("reject reason %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("no refusal reported")
	}
	if err := dial(addr, good.ClientConfig("db.example.com")); err == nil {
		t.Error("a server certificate not valid for the dialled host was accepted")
	}
}

// A node certificate (client authentication only) cannot pose as a
// server, even from the right CA.
func TestNodeCertificateCannotServe(t *testing.T) {
	dir := t.TempDir()
	ca, bundle := newCA(t, dir)
	impostor := load(t, issue(t, ca, dir, bundle, pki.LeafOptions{Identity: identity.Identity{Role: identity.Node, Name: "n9"}}))
	addr := serve(t, impostor, make(chan error, 10))
	client := load(t, issue(t, ca, dir, bundle, pki.LeafOptions{Identity: nodeID}))
	if err := dial(addr, client.ClientConfig("")); err == nil {
		t.Fatal("a node certificate served as a server")
	}
}

// Rotation: new files are picked up without a restart, and after the CA
// bundle drops the old CA, old certificates are refused.
func TestRotationFollowsFiles(t *testing.T) {
	dir := t.TempDir()
	oldCA, bundle := newCA(t, dir)
	newCADir := t.TempDir()
	newCA, newBundle := newCA(t, newCADir)
	serverFiles := issue(t, oldCA, dir, bundle, pki.LeafOptions{Identity: srvID})
	server := load(t, serverFiles)
	addr := serve(t, server, make(chan error, 100))
	oldClientFiles := issue(t, oldCA, t.TempDir(), bundle, pki.LeafOptions{Identity: nodeID})
	oldClient := load(t, oldClientFiles)
	if err := dial(addr, oldClient.ClientConfig("127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	// Step 1: trust both CAs; the server's certificate is reissued by the new CA.
	both := append(must(os.ReadFile(bundle)), must(os.ReadFile(newBundle))...)
	writeAtomic(t, serverFiles.CA, both)
	newLeaf, err := newCA.Issue(pki.LeafOptions{Identity: srvID})
	if err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, serverFiles.Key, newLeaf.KeyPEM)
	writeAtomic(t, serverFiles.Cert, newLeaf.CertPEM)
	if err := server.Reload(); err != nil {
		t.Fatal(err)
	}
	newClientFiles := issue(t, newCA, t.TempDir(), newBundle, pki.LeafOptions{Identity: nodeID})
	newClient := load(t, newClientFiles)
	if err := dial(addr, newClient.ClientConfig("127.0.0.1")); err != nil {
		t.Fatalf("new client during the overlap: %v", err)
	}
	if err := dial(addr, oldClient.ClientConfig("")); err == nil {
		// The old client trusts only the old CA: it must refuse the new server cert.
		t.Error("old client accepted a server certificate of a CA it does not trust")
	}
	// Step 2: drop the old CA.
	writeAtomic(t, serverFiles.CA, must(os.ReadFile(newBundle)))
	if err := server.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := dial(addr, newClient.ClientConfig("127.0.0.1")); err != nil {
		t.Fatalf("new client after the rotation: %v", err)
	}
	// The old client certificate, offered by a client that trusts the new
	// server, is refused now.
	oldCertNewTrust := load(t, tlsfiles.Files{CA: newBundle, Cert: oldClientFiles.Cert, Key: oldClientFiles.Key})
	if err := dial(addr, oldCertNewTrust.ClientConfig("127.0.0.1")); err == nil {
		t.Fatal("an old-CA client certificate was accepted after the old CA left the bundle")
	}
}

func writeAtomic(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestLoadRefusesCertificateWithoutIdentity(t *testing.T) {
	dir := t.TempDir()
	ca, bundle := newCA(t, dir)
	f := issue(t, ca, dir, bundle, pki.LeafOptions{Identity: nodeID, TrustDomain: "elsewhere"})
	_, err := tlsfiles.Load(f, tlsfiles.Options{})
	if err == nil || !strings.Contains(err.Error(), "trust domain") {
		t.Fatalf("got %v, want a trust-domain error", err)
	}
	if _, err := tlsfiles.Load(tlsfiles.Files{CA: bundle}, tlsfiles.Options{}); err == nil {
		t.Fatal("missing certificate accepted")
	}
	if !errors.Is(must2(tlsfiles.Load(tlsfiles.Files{CA: bundle, Cert: "/nonexistent", Key: "/nonexistent"}, tlsfiles.Options{})), os.ErrNotExist) {
		t.Fatal("missing files not reported as such")
	}
}

func must2(_ *tlsfiles.Source, err error) error { return err }
