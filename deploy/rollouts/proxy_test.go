package rollouts

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/internal/testcluster"
	"github.com/aerodb/authority/release/verdict"
)

const haproxyBin = "/usr/sbin/haproxy"

type testPKI struct {
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caPEM  []byte
	serial int64
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	return &testPKI{ca: ca, caKey: key, caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), serial: 1}
}

// issue returns a certificate and key (PEM) for name, for servers
// (DNS name) or clients.
func (p *testPKI) issue(t *testing.T, name string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.DNSNames, tmpl.ExtKeyUsage = []string{name}, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

// freeAddr is a free loopback port below the ephemeral range (outgoing
// connections draw their source ports from that range).
func freeAddr(t *testing.T) string { return testcluster.FreeAddr(t) }

// The shipped verdict proxy (verdict-proxy.cfg) on a real HAProxy, in
// front of a mutual-TLS server with the authority's verdict routes: Argo's
// and Flagger's plain requests reach the verdict and the gates (with the
// reader's client certificate), every other path and method is refused at
// the proxy.
func TestVerdictProxy(t *testing.T) {
	if _, err := os.Stat(haproxyBin); err != nil {
		t.Fatalf("%s not found (install the Debian package haproxy; .ci/run does): %v", haproxyBin, err)
	}
	pki := newTestPKI(t)
	dir := t.TempDir()
	srvCert, srvKey := pki.issue(t, "authority.test", true)
	cliCert, cliKey := pki.issue(t, "reader", false)
	write := func(name string, b ...[]byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(strings.Join(func() []string {
			var s []string
			for _, x := range b {
				s = append(s, string(x))
			}
			return s
		}(), "")), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile, clientFile := write("ca.pem", pki.caPEM), write("reader.pem", cliCert, cliKey)

	// The authority side: the verdict routes behind mutual TLS; everything
	// else 404 (as authorityd's status page would answer it, if reached).
	var withCert atomic.Int64
	mux := http.NewServeMux()
	(&verdict.Handler{Lookup: func(name string) (*pb.Domain, bool) {
		return &pb.Domain{Name: name, Kind: pb.DomainKind_DOMAIN_KIND_RELEASE,
			Release: &pb.ReleaseState{Stable: "sha256:" + strings.Repeat("a", 64), Phase: pb.ReleasePhase_RELEASE_PHASE_PROMOTED}}, name == "rel.web-api"
	}}).Register(mux)
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 && r.TLS.PeerCertificates[0].Subject.CommonName == "reader" {
			withCert.Add(1)
		}
		mux.ServeHTTP(w, r)
	}))
	pair, err := tls.X509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	backend.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	backend.StartTLS()
	defer backend.Close()

	bind := freeAddr(t)
	env := append(os.Environ(), "VERDICT_BIND="+bind, "AUTHORITY_SERVER="+strings.TrimPrefix(backend.URL, "https://"),
		"AUTHORITY_NAME=authority.test", "TLS_CA="+caFile, "TLS_CLIENT="+clientFile)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	check := exec.CommandContext(ctx, haproxyBin, "-c", "-f", "verdict-proxy.cfg")
	check.Env = env
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	logf, err := os.Create(filepath.Join(dir, "haproxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(haproxyBin, "-db", "-f", "verdict-proxy.cfg")
	cmd.Env, cmd.Stdout, cmd.Stderr = env, logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("haproxy pid %d did not exit", cmd.Process.Pid)
		}
	}()

	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	do := func(method, path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, "http://"+bind+path, strings.NewReader(`{"name":"web-api","namespace":"production","phase":"Progressing"}`))
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		return resp.StatusCode, string(b)
	}
	// Wait (bounded) until the proxy listens.
	for {
		if code, _ := do("GET", "/v1/releases/rel.web-api/verdict"); code != 0 {
			break
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("haproxy exited (%v): %s", err, b)
		default:
		}
		if ctx.Err() != nil {
			t.Fatal("the verdict proxy never answered")
		}
		time.Sleep(20 * time.Millisecond) // polling an observable condition, bounded above
	}
	for _, c := range []struct {
		method, path string
		code         int
		body         string
	}{
		{"GET", "/v1/releases/rel.web-api/verdict", 200, `"verdict":"pass"`},
		{"GET", "/v1/releases/rel.web-api/verdict?digest=sha256:" + strings.Repeat("a", 64), 200, `"verdict":"pass"`},
		{"POST", "/v1/releases/rel.web-api/gates/confirm-promotion", 200, `"open":true`},
		{"POST", "/v1/releases/rel.web-api/gates/rollback", 412, `"open":false`},
		{"GET", "/v1/releases/nope/verdict", 404, ""},
		{"GET", "/v1/domains", 403, ""},
		{"GET", "/v1/domains/rel.web-api", 403, ""},
		{"GET", "/metrics", 403, ""},
		{"GET", "/v1/releases/rel.web-api/../../metrics", 403, ""},
		{"POST", "/v1/releases/rel.web-api/verdict", 405, ""},
		{"DELETE", "/v1/releases/rel.web-api/gates/rollback", 405, ""},
	} {
		code, body := do(c.method, c.path)
		if code != c.code || !strings.Contains(body, c.body) {
			t.Errorf("%s %s: %d %.200s, want %d with %q", c.method, c.path, code, body, c.code, c.body)
		}
	}
	if n := withCert.Load(); n < 5 {
		t.Errorf("the backend saw %d requests with the reader's client certificate, want every forwarded one (5)", n)
	}
	t.Logf("backend requests with the reader's certificate: %d", withCert.Load())
}
