package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/internal/testcluster"
)

// metricLine finds "name value" in a Prometheus text exposition.
func metricLine(body, name, value string) bool {
	return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` ` + regexp.QuoteMeta(value) + `$`).MatchString(body)
}

// --metrics-addr serves /metrics, /healthz and /readyz in plaintext (for
// scrapers without certificates) and nothing else; the main HTTP port
// stays mutual TLS: a plaintext request and a TLS request without a client
// certificate get nothing from it, a reader's certificate gets the page.
func TestMetricsAddrPlaintext(t *testing.T) {
	metricsAddr := testcluster.FreeAddr(t)
	c := testcluster.Start(t, 1, "--metrics-addr", metricsAddr)
	s := c.Servers[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	plain := &http.Client{Timeout: 10 * time.Second}

	code, body := get(t, ctx, plain, "http://"+metricsAddr+"/metrics")
	if code != http.StatusOK || !metricLine(body, "authority_insecure", "0") || !strings.Contains(body, "authority_raft_term") {
		t.Fatalf("plaintext /metrics: %d\n%s", code, truncate(body))
	}
	if code, body := get(t, ctx, plain, "http://"+metricsAddr+"/healthz"); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
		t.Fatalf("plaintext /healthz: %d %q", code, body)
	}
	if code, body := get(t, ctx, plain, "http://"+metricsAddr+"/readyz"); code != http.StatusOK || !strings.Contains(body, "leader="+s.ID) {
		t.Fatalf("plaintext /readyz: %d %q", code, body)
	}
	// Nothing that reveals domain state on the plaintext listener.
	for _, p := range []string{"/", "/v1/domains", "/v1/domains/x", "/v1/releases/x/verdict"} {
		if code, body := get(t, ctx, plain, "http://"+metricsAddr+p); code != http.StatusNotFound {
			t.Errorf("plaintext %s: %d, want 404\n%s", p, code, truncate(body))
		}
	}

	// The main port: plaintext is refused.
	for _, p := range []string{"/metrics", "/", "/healthz"} {
		if code, body := get(t, ctx, plain, "http://"+s.HTTPAddr+p); code == http.StatusOK || strings.Contains(body, "authority_") {
			t.Errorf("plaintext request to the main HTTP port %s: %d\n%s", p, code, truncate(body))
		}
	}
	// TLS that trusts the server but presents no client certificate: the
	// handshake (or the first read after it) fails.
	caPEM, err := os.ReadFile(testcluster.Files(t, testcluster.Reader).CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("test CA bundle holds no certificate")
	}
	noCert := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	for _, p := range []string{"/metrics", "/"} {
		if code, body := get(t, ctx, noCert, "https://"+s.HTTPAddr+p); code != 0 || strings.Contains(body, "authority_") {
			t.Errorf("TLS request without a client certificate to %s: %d, want a refused connection\n%s", p, code, truncate(body))
		}
	}
	// A reader's certificate: the page and the metrics.
	reader := c.HTTPClient(testcluster.Reader)
	if code, body := get(t, ctx, reader, c.URL(s, "/metrics")); code != http.StatusOK || !metricLine(body, "authority_insecure", "0") {
		t.Fatalf("mutual-TLS /metrics: %d\n%s", code, truncate(body))
	}
	if code, body := get(t, ctx, reader, c.URL(s, "/")); code != http.StatusOK || strings.Contains(body, "INSECURE") {
		t.Fatalf("mutual-TLS status page: %d (INSECURE badge: %t)", code, strings.Contains(body, "INSECURE"))
	}
}

// --insecure: the status page carries the INSECURE badge, /metrics has
// authority_insecure 1, and every caller may do everything (a reader's
// client creates a domain).
func TestInsecureModeShown(t *testing.T) {
	c := testcluster.Start(t, 1, "--insecure")
	if !c.Insecure() {
		t.Fatal("cluster not insecure")
	}
	s := c.Servers[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	hc := c.HTTPClient(testcluster.Reader)
	if !strings.HasPrefix(c.URL(s, "/"), "http://") {
		t.Fatalf("insecure URL %s", c.URL(s, "/"))
	}
	code, page := get(t, ctx, hc, c.URL(s, "/"))
	if code != http.StatusOK || !strings.Contains(page, "INSECURE: plaintext, no authorization (--insecure)") {
		t.Fatalf("status page: %d, want the INSECURE badge\n%s", code, truncate(page))
	}
	code, body := get(t, ctx, hc, c.URL(s, "/metrics"))
	if code != http.StatusOK || !metricLine(body, "authority_insecure", "1") {
		t.Fatalf("/metrics: %d, want authority_insecure 1\n%s", code, truncate(body))
	}
	if _, err := c.Dial(testcluster.Reader).CreateDomain(ctx, "anyone", pb.DomainKind_DOMAIN_KIND_LOCK, nil); err != nil {
		t.Fatalf("an insecure server refused a call: %v", err)
	}
}

func truncate(s string) string {
	if len(s) > 2000 {
		return s[:2000] + "…"
	}
	return s
}
