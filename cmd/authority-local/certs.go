package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/pki"
	"github.com/aerodb/authority/tlsfiles"
	"google.golang.org/grpc/credentials"
)

// The identities of the local cluster: pki.Init's defaults (servers s1-s3,
// operator admin, reader viewer, nodes n1-n3).
var (
	operator = identity.Identity{Role: identity.Operator, Name: "admin"}
	reader   = identity.Identity{Role: identity.Reader, Name: "viewer"}
)

func nodeID(name string) identity.Identity { return identity.Identity{Role: identity.Node, Name: name} }

func serverID(name string) identity.Identity {
	return identity.Identity{Role: identity.Server, Name: name}
}

// certs is the certificate directory of the local cluster.
type certs struct{ dir string }

// files are an identity's CA bundle, certificate and key.
func (c certs) files(id identity.Identity) tlsfiles.Files {
	return tlsfiles.Files{CA: filepath.Join(c.dir, pki.CACertFile), Cert: filepath.Join(c.dir, pki.CertFile(id)),
		Key: filepath.Join(c.dir, pki.KeyFile(id))}
}

// creds are gRPC client credentials for id (mutual TLS, the server checked
// against the CA and the host dialled).
func (c certs) creds(id identity.Identity) (credentials.TransportCredentials, error) {
	src, err := tlsfiles.Load(c.files(id), tlsfiles.Options{})
	if err != nil {
		return nil, err
	}
	return src.Credentials(true), nil
}

// ensureCerts writes a CA and the cluster's certificates into dir with
// pki.Init, or reuses those already there while they are valid for at least
// another day. It says which.
func ensureCerts(dir string) (certs, error) {
	c := certs{dir: dir}
	ids := []identity.Identity{serverID("s1"), serverID("s2"), serverID("s3"), operator, reader, nodeID("n1"), nodeID("n2"), nodeID("n3")}
	err := c.usable(ids, time.Now().Add(24*time.Hour))
	if err == nil {
		fmt.Printf("Certificates: reusing %s/ (CA and one certificate per identity)\n", dir)
		return c, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		fmt.Printf("Certificates in %s/ not usable (%v): issuing new ones\n", dir, err)
	}
	if _, err := pki.LoadCA(dir); err == nil && c.usable(nil, time.Now().Add(24*time.Hour)) != nil {
		// An expiring CA is replaced, and with it every certificate.
		os.Remove(filepath.Join(dir, pki.CACertFile))
		os.Remove(filepath.Join(dir, pki.CAKeyFile))
	}
	if _, err := pki.Init(dir, pki.InitOptions{}); err != nil {
		return certs{}, fmt.Errorf("certificates in %s: %w", dir, err)
	}
	fmt.Printf("Certificates: wrote a local CA and one certificate per identity to %s/\n", dir)
	return c, nil
}

// usable checks that the CA and every identity's files exist, that each
// certificate chains to the CA and names its identity, and that all are
// valid until until.
func (c certs) usable(ids []identity.Identity, until time.Time) error {
	caCert, err := readCert(filepath.Join(c.dir, pki.CACertFile))
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(c.dir, pki.CAKeyFile)); err != nil {
		return err
	}
	if until.After(caCert.NotAfter) {
		return fmt.Errorf("the CA expires at %s", caCert.NotAfter.Format(time.RFC3339))
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	for _, id := range ids {
		f := c.files(id)
		leaf, err := readCert(f.Cert)
		if err != nil {
			return err
		}
		if _, err := os.Stat(f.Key); err != nil {
			return err
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: until, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			return fmt.Errorf("%s: %w", f.Cert, err)
		}
		if got, err := identity.FromCertificate(leaf, identity.DefaultTrustDomain); err != nil || got != id {
			return fmt.Errorf("%s names %v (%v), not %s", f.Cert, got, err, id)
		}
	}
	return nil
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: not PEM", path)
	}
	return x509.ParseCertificate(blk.Bytes)
}
