// Package pki issues the certificates a deployment needs for local use and
// tests, with crypto/x509 only (no downloads, no external tool): a CA, and
// leaf certificates carrying one identity each (identity package) as a
// SPIFFE-style URI SAN. Server certificates are valid for both TLS server
// and client authentication (servers call each other); every other role
// gets client authentication only, so a node's certificate can never pose
// as a server.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/aerodb/authority/identity"
)

// CA is a certificate authority: its certificate and signing key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewCA creates a self-signed CA valid from now-1h for validFor.
func NewCA(commonName string, validFor time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: commonName},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(validFor),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// CertPEM is the CA certificate in PEM.
func (ca *CA) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// KeyPEM is the CA key in PEM (PKCS#8).
func (ca *CA) KeyPEM() ([]byte, error) { return keyPEM(ca.Key) }

// Leaf is an issued certificate and its key, in PEM.
type Leaf struct {
	CertPEM []byte
	KeyPEM  []byte
}

// LeafOptions describe one certificate.
type LeafOptions struct {
	Identity    identity.Identity
	TrustDomain string // default identity.DefaultTrustDomain
	// Hosts are DNS names or IP addresses the certificate serves (server
	// certificates; default 127.0.0.1, ::1, localhost).
	Hosts []string
	// NotBefore and NotAfter default to now-1h and now+validity.
	NotBefore, NotAfter time.Time
}

// DefaultValidity of issued certificates.
const DefaultValidity = 365 * 24 * time.Hour

// Issue signs a leaf certificate for o.Identity.
func (ca *CA) Issue(o LeafOptions) (Leaf, error) {
	if err := o.Identity.Validate(); err != nil {
		return Leaf{}, err
	}
	if o.TrustDomain == "" {
		o.TrustDomain = identity.DefaultTrustDomain
	}
	now := time.Now()
	if o.NotBefore.IsZero() {
		o.NotBefore = now.Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = now.Add(DefaultValidity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Leaf{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: o.Identity.String()},
		NotBefore: o.NotBefore, NotAfter: o.NotAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{o.Identity.URI(o.TrustDomain)},
	}
	if o.Identity.Role == identity.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		hosts := o.Hosts
		if len(hosts) == 0 {
			hosts = []string{"127.0.0.1", "::1", "localhost"}
		}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return Leaf{}, err
	}
	kp, err := keyPEM(key)
	if err != nil {
		return Leaf{}, err
	}
	return Leaf{CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), KeyPEM: kp}, nil
}

func keyPEM(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n
}

// File names in a certificate directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// CertFile and KeyFile name an identity's files: "<role>-<name>.crt|.key".
func CertFile(id identity.Identity) string { return string(id.Role) + "-" + id.Name + ".crt" }
func KeyFile(id identity.Identity) string  { return string(id.Role) + "-" + id.Name + ".key" }

// LoadCA reads ca.crt and ca.key from dir.
func LoadCA(dir string) (*CA, error) {
	cb, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, err
	}
	kb, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, err
	}
	cblk, _ := pem.Decode(cb)
	kblk, _ := pem.Decode(kb)
	if cblk == nil || kblk == nil {
		return nil, fmt.Errorf("pki: %s: not PEM", dir)
	}
	cert, err := x509.ParseCertificate(cblk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", CACertFile, err)
	}
	key, err := x509.ParsePKCS8PrivateKey(kblk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", CAKeyFile, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok || !cert.IsCA {
		return nil, fmt.Errorf("pki: %s does not hold a CA", dir)
	}
	return &CA{Cert: cert, Key: signer}, nil
}

// WriteCA writes ca.crt and ca.key (0600) into dir.
func (ca *CA) Write(dir string) error {
	kp, err := ca.KeyPEM()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, CACertFile), ca.CertPEM(), 0o644); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, CAKeyFile), kp, 0o600)
}

// WriteLeaf writes an identity's certificate and key into dir and returns
// their paths.
func (ca *CA) WriteLeaf(dir string, o LeafOptions) (certPath, keyPath string, err error) {
	l, err := ca.Issue(o)
	if err != nil {
		return "", "", err
	}
	certPath, keyPath = filepath.Join(dir, CertFile(o.Identity)), filepath.Join(dir, KeyFile(o.Identity))
	if err := writeFile(keyPath, l.KeyPEM, 0o600); err != nil {
		return "", "", err
	}
	return certPath, keyPath, writeFile(certPath, l.CertPEM, 0o644)
}

// writeFile replaces path atomically (write aside, fsync, rename), so a
// server reloading its certificates never reads half a file.
func writeFile(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	err = errors.Join(err, f.Sync(), f.Close())
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}

// InitOptions for Init.
type InitOptions struct {
	TrustDomain string
	// Servers are server ids (default s1, s2, s3); Nodes node ids (default
	// n1, n2, n3); Operators and Readers names (default admin, viewer).
	Servers, Nodes, Operators, Readers []string
	// Deployers and Releasers: runner groups and controllers (default none).
	Deployers, Releasers []string
	// Hosts for the server certificates (default 127.0.0.1, ::1, localhost).
	Hosts []string
}

// Init writes a CA (reusing one already in dir) and a certificate per
// listed identity into dir, and returns the identities written.
func Init(dir string, o InitOptions) ([]identity.Identity, error) {
	ca, err := LoadCA(dir)
	if errors.Is(err, os.ErrNotExist) {
		ca, err = NewCA("AeroDB Authority local CA", 5*DefaultValidity)
		if err == nil {
			err = ca.Write(dir)
		}
	}
	if err != nil {
		return nil, err
	}
	or := func(v, def []string) []string {
		if len(v) == 0 {
			return def
		}
		return v
	}
	var ids []identity.Identity
	add := func(role identity.Role, names []string) {
		for _, n := range names {
			ids = append(ids, identity.Identity{Role: role, Name: n})
		}
	}
	add(identity.Server, or(o.Servers, []string{"s1", "s2", "s3"}))
	add(identity.Operator, or(o.Operators, []string{"admin"}))
	add(identity.Reader, or(o.Readers, []string{"viewer"}))
	add(identity.Node, or(o.Nodes, []string{"n1", "n2", "n3"}))
	add(identity.Deployer, o.Deployers)
	add(identity.Releaser, o.Releasers)
	for _, id := range ids {
		if _, _, err := ca.WriteLeaf(dir, LeafOptions{Identity: id, TrustDomain: o.TrustDomain, Hosts: o.Hosts}); err != nil {
			return nil, err
		}
	}
	return ids, nil
}
