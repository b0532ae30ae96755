// Package tlsfiles builds TLS 1.3 configurations from a CA bundle, a
// certificate and a key on disk, and keeps them current: files are
// re-read when they change (checked at most once a second, on handshakes)
// and on Reload (authorityd calls it on SIGHUP), so certificates and CAs
// rotate without a restart. A reload that fails (a half-copied file, a key
// that does not match) keeps the previous material and reports the error.
//
// Verification is done here, against the current CA bundle, rather than by
// crypto/tls's static RootCAs/ClientCAs, so a rotated bundle applies to the
// next handshake. Every verified peer yields its identity (identity
// package); peers without one are refused.
package tlsfiles

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/aerodb/authority/identity"
	"google.golang.org/grpc/credentials"
)

// Files names the PEM files of one identity.
type Files struct {
	CA   string // CA bundle: every CA trusted for peers (one or more certificates)
	Cert string // this identity's certificate (chain)
	Key  string // its private key
}

// Source holds the current material of Files.
type Source struct {
	files       Files
	trustDomain string
	now         func() time.Time

	mu        sync.Mutex
	cert      *tls.Certificate
	pool      *x509.CertPool
	self      identity.Identity
	stamps    [3]time.Time // mod times of CA, cert, key at the last load
	lastCheck time.Time
	onReload  func(error)
}

// Options for Load.
type Options struct {
	// TrustDomain of identities (default identity.DefaultTrustDomain).
	TrustDomain string
	// OnReload, when set, is told about every reload after the first
	// (nil: success) — the server logs it.
	OnReload func(error)
}

// Load reads the files once; it fails when any is missing or invalid.
func Load(f Files, o Options) (*Source, error) {
	if f.CA == "" || f.Cert == "" || f.Key == "" {
		return nil, errors.New("tls: a CA bundle, a certificate and a key are all required")
	}
	if o.TrustDomain == "" {
		o.TrustDomain = identity.DefaultTrustDomain
	}
	s := &Source{files: f, trustDomain: o.TrustDomain, now: time.Now, onReload: o.OnReload}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// TrustDomain of the identities this source accepts.
func (s *Source) TrustDomain() string { return s.trustDomain }

// Self is the identity in this source's own certificate.
func (s *Source) Self() identity.Identity {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.self
}

// Reload re-reads the files now.
func (s *Source) Reload() error {
	err := s.load()
	if s.onReload != nil {
		s.onReload(err)
	}
	return err
}

func (s *Source) load() error {
	stamps, err := s.stat()
	if err != nil {
		return err
	}
	caPEM, err := os.ReadFile(s.files.CA)
	if err != nil {
		return fmt.Errorf("tls: CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("tls: CA bundle %s holds no PEM certificate", s.files.CA)
	}
	cert, err := tls.LoadX509KeyPair(s.files.Cert, s.files.Key)
	if err != nil {
		return fmt.Errorf("tls: certificate %s / key %s: %w", s.files.Cert, s.files.Key, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return fmt.Errorf("tls: certificate %s: %w", s.files.Cert, err)
	}
	self, err := identity.FromCertificate(leaf, s.trustDomain)
	if err != nil {
		return fmt.Errorf("tls: certificate %s: %w", s.files.Cert, err)
	}
	cert.Leaf = leaf
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cert, s.pool, s.self, s.stamps, s.lastCheck = &cert, pool, self, stamps, s.now()
	return nil
}

func (s *Source) stat() ([3]time.Time, error) {
	var out [3]time.Time
	for i, p := range []string{s.files.CA, s.files.Cert, s.files.Key} {
		fi, err := os.Stat(p)
		if err != nil {
			return out, fmt.Errorf("tls: %w", err)
		}
		out[i] = fi.ModTime()
	}
	return out, nil
}

// refresh reloads when a file changed since the last load (checked at
// most once a second).
func (s *Source) refresh() {
	s.mu.Lock()
	due := s.now().Sub(s.lastCheck) >= time.Second
	if due {
		s.lastCheck = s.now()
	}
	old := s.stamps
	s.mu.Unlock()
	if !due {
		return
	}
	if cur, err := s.stat(); err == nil && cur == old {
		return
	}
	s.Reload()
}

func (s *Source) current() (*tls.Certificate, *x509.CertPool) {
	s.refresh()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cert, s.pool
}

// Verify checks a presented chain against the current CA bundle for the
// given use and returns the leaf's identity.
func (s *Source) Verify(rawCerts [][]byte, usage x509.ExtKeyUsage, dnsName string) (identity.Identity, *x509.Certificate, error) {
	if len(rawCerts) == 0 {
		return identity.Identity{}, nil, errors.New("no certificate presented")
	}
	certs := make([]*x509.Certificate, len(rawCerts))
	for i, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return identity.Identity{}, nil, fmt.Errorf("certificate %d: %w", i, err)
		}
		certs[i] = c
	}
	_, pool := s.current()
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	leaf := certs[0]
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage},
		DNSName: dnsName, CurrentTime: s.now()}); err != nil {
		return identity.Identity{}, leaf, err
	}
	id, err := identity.FromCertificate(leaf, s.trustDomain)
	return id, leaf, err
}

// ServerConfig is for a listener that requires a client certificate from
// the CA bundle with an identity; accept, when set, may refuse a verified
// identity (e.g. raft accepts servers only). reject is told about every
// refused handshake with the peer's address (the server logs it,
// rate-limited). protos are the ALPN protocols served (gRPC: "h2").
func (s *Source) ServerConfig(protos []string, accept func(identity.Identity) error, reject func(peer string, err error)) *tls.Config {
	base := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: protos}
	base.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		peer := "unknown"
		if hello.Conn != nil {
			peer = hello.Conn.RemoteAddr().String()
		}
		cert, _ := s.current()
		return &tls.Config{
			MinVersion:   tls.VersionTLS13,
			NextProtos:   protos,
			ClientAuth:   tls.RequireAnyClientCert,
			Certificates: []tls.Certificate{*cert},
			VerifyConnection: func(cs tls.ConnectionState) error {
				var raw [][]byte
				for _, c := range cs.PeerCertificates {
					raw = append(raw, c.Raw)
				}
				id, leaf, err := s.Verify(raw, x509.ExtKeyUsageClientAuth, "")
				if err == nil && accept != nil {
					err = accept(id)
				}
				if err != nil {
					err = fmt.Errorf("client certificate %s refused: %w", describe(leaf), err)
					if reject != nil {
						reject(peer, err)
					}
				}
				return err
			},
		}, nil
	}
	return base
}

// ClientConfig is for dialling a server: its certificate must come from
// the CA bundle, carry a server identity, and, when host is not empty, be
// valid for that host name or IP (the usual check, for clients; servers
// calling each other at raft or forwarding addresses, which may be proxies,
// rely on the server identity alone). gRPC clients use Credentials, which
// fills in the host dialled.
func (s *Source) ClientConfig(host string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verified below against the current bundle
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, _ := s.current()
			return c, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			var raw [][]byte
			for _, c := range cs.PeerCertificates {
				raw = append(raw, c.Raw)
			}
			id, leaf, err := s.Verify(raw, x509.ExtKeyUsageServerAuth, host)
			if err == nil && id.Role != identity.Server {
				err = fmt.Errorf("identity %s is not a server", id)
			}
			if err != nil {
				return fmt.Errorf("server certificate %s refused: %w", describe(leaf), err)
			}
			return nil
		},
	}
}

// PeerIdentity is the identity of a connection's verified peer.
func (s *Source) PeerIdentity(cs tls.ConnectionState) (identity.Identity, error) {
	if len(cs.PeerCertificates) == 0 {
		return identity.Identity{}, errors.New("no peer certificate")
	}
	return identity.FromCertificate(cs.PeerCertificates[0], s.trustDomain)
}

func describe(c *x509.Certificate) string {
	if c == nil {
		return "(none)"
	}
	sub := c.Subject.CommonName
	if len(sub) > 80 {
		sub = sub[:80] + "…"
	}
	return fmt.Sprintf("%q (issuer %q, valid %s..%s)", sub, c.Issuer.CommonName,
		c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
}

// Credentials are gRPC transport credentials for dialling servers with
// this source; with verifyHost, each connection checks the server's
// certificate against the host it dials.
func (s *Source) Credentials(verifyHost bool) credentials.TransportCredentials {
	return &clientCreds{src: s, verifyHost: verifyHost}
}

type clientCreds struct {
	src        *Source
	verifyHost bool
}

func (c *clientCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	host := ""
	if c.verifyHost {
		host = authority
		if h, _, err := net.SplitHostPort(authority); err == nil {
			host = h
		}
	}
	return credentials.NewTLS(c.src.ClientConfig(host)).ClientHandshake(ctx, authority, raw)
}

func (c *clientCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("tlsfiles: client credentials cannot serve")
}

func (c *clientCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.3"}
}

func (c *clientCreds) Clone() credentials.TransportCredentials {
	cc := *c
	return &cc
}

func (c *clientCreds) OverrideServerName(string) error { return nil }
