package identity

import (
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestParseAndURIRoundTrip(t *testing.T) {
	for _, s := range []string{"server:s1", "operator:admin", "node:n1", "deployer:group-a", "releaser:ctl.1", "reader:viewer"} {
		id, err := Parse(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if id.String() != s {
			t.Errorf("%s: String %s", s, id)
		}
		back, err := FromURI(id.URI(DefaultTrustDomain), DefaultTrustDomain)
		if err != nil || back != id {
			t.Errorf("%s: URI %s → %v, %v", s, id.URI(DefaultTrustDomain), back, err)
		}
	}
}

func TestRefusals(t *testing.T) {
	for _, s := range []string{"", "node", "root:admin", "node:", "node:a/b", "node:" + strings.Repeat("x", 129), "node:a b"} {
		if _, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) accepted", s)
		}
	}
	for _, raw := range []string{
		"https://aerodb-authority/node/n1",       // not spiffe
		"spiffe://elsewhere/node/n1",             // another trust domain
		"spiffe://aerodb-authority/node",         // no name
		"spiffe://aerodb-authority/node/n1/x",    // too deep
		"spiffe://aerodb-authority/node/n1?x=1",  // query
		"spiffe://aerodb-authority/admin/n1",     // unknown role
		"spiffe://u@aerodb-authority/node/n1",    // user info
		"spiffe://aerodb-authority/node/n1#frag", // fragment
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := FromURI(u, DefaultTrustDomain); err == nil {
			t.Errorf("FromURI(%s) accepted", raw)
		}
	}
}

func TestFromCertificateWantsExactlyOneSpiffeURI(t *testing.T) {
	a := Identity{Role: Node, Name: "a"}.URI(DefaultTrustDomain)
	b := Identity{Role: Node, Name: "b"}.URI(DefaultTrustDomain)
	other, _ := url.Parse("https://example.com/x")
	if _, err := FromCertificate(&x509.Certificate{}, DefaultTrustDomain); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("no URI: %v", err)
	}
	if _, err := FromCertificate(&x509.Certificate{URIs: []*url.URL{a, b}}, DefaultTrustDomain); err == nil {
		t.Error("two identities accepted")
	}
	id, err := FromCertificate(&x509.Certificate{URIs: []*url.URL{other, a}}, DefaultTrustDomain)
	if err != nil || id.Name != "a" {
		t.Errorf("one spiffe URI among others: %v %v", id, err)
	}
}
