// Package identity names who is calling: a role and a name, carried in an
// X.509 certificate as one SPIFFE-style URI SAN,
//
//	spiffe://<trust domain>/<role>/<name>
//
// e.g. spiffe://aerodb-authority/node/n1 for the database node n1. The roles
// are server (an authorityd), operator, node:<id> (acts only as itself),
// deployer:<runner group>, releaser:<controller> and reader. What each role
// may call is the authz package's table; this package only names callers.
package identity

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// DefaultTrustDomain is the trust domain certificates use unless a
// deployment chooses its own (authorityd --trust-domain).
const DefaultTrustDomain = "aerodb-authority"

// Role is what a certificate may do; see the authz table.
type Role string

// The roles. Every role carries a name: the server id, the node id, the
// runner group, the controller, or a person's or tool's name for operator
// and reader.
const (
	Server   Role = "server"
	Operator Role = "operator"
	Node     Role = "node"
	Deployer Role = "deployer"
	Releaser Role = "releaser"
	Reader   Role = "reader"
)

// Roles lists every role in a fixed order (tables and tests walk it).
var Roles = []Role{Server, Operator, Node, Deployer, Releaser, Reader}

// Identity is one caller: a role and a name.
type Identity struct {
	Role Role
	Name string
}

// String is "role:name", the form flags and logs use.
func (id Identity) String() string { return string(id.Role) + ":" + id.Name }

// IsZero reports an empty identity (no certificate).
func (id Identity) IsZero() bool { return id.Role == "" }

// maxNameBytes bounds names (they reach logs and metric labels' neighbours).
const maxNameBytes = 128

// Parse reads "role:name" (or "role/name").
func Parse(s string) (Identity, error) {
	role, name, ok := strings.Cut(s, ":")
	if !ok {
		role, name, ok = strings.Cut(s, "/")
	}
	if !ok {
		return Identity{}, fmt.Errorf("identity %q: want role:name (roles: %s)", clip(s), roleList())
	}
	id := Identity{Role: Role(role), Name: name}
	return id, id.Validate()
}

// Validate checks the role is known and the name well-formed
// (1..128 of [A-Za-z0-9._-]).
func (id Identity) Validate() error {
	known := false
	for _, r := range Roles {
		known = known || r == id.Role
	}
	if !known {
		return fmt.Errorf("identity: unknown role %q (roles: %s)", clip(string(id.Role)), roleList())
	}
	if id.Name == "" || len(id.Name) > maxNameBytes {
		return fmt.Errorf("identity %s: name must be 1..%d bytes", clip(id.String()), maxNameBytes)
	}
	for _, c := range id.Name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("identity %s: name may hold only [A-Za-z0-9._-]", clip(id.String()))
		}
	}
	return nil
}

// URI is the identity's SPIFFE-style URI in a trust domain.
func (id Identity) URI(trustDomain string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: trustDomain, Path: "/" + string(id.Role) + "/" + id.Name}
}

// FromURI reads an identity from its URI, which must be in trustDomain.
func FromURI(u *url.URL, trustDomain string) (Identity, error) {
	if u.Scheme != "spiffe" {
		return Identity{}, fmt.Errorf("identity URI %s: scheme is not spiffe", clip(u.String()))
	}
	if u.Host != trustDomain {
		return Identity{}, fmt.Errorf("identity URI %s: trust domain %q, want %q", clip(u.String()), clip(u.Host), trustDomain)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 2 || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return Identity{}, fmt.Errorf("identity URI %s: want spiffe://%s/<role>/<name>", clip(u.String()), trustDomain)
	}
	id := Identity{Role: Role(parts[0]), Name: parts[1]}
	return id, id.Validate()
}

// ErrNoIdentity: a certificate without exactly one spiffe URI SAN.
var ErrNoIdentity = errors.New("identity: certificate has no spiffe URI SAN")

// FromCertificate reads the identity of a verified certificate: exactly one
// spiffe URI SAN in the trust domain.
func FromCertificate(c *x509.Certificate, trustDomain string) (Identity, error) {
	var found []*url.URL
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" {
			found = append(found, u)
		}
	}
	switch len(found) {
	case 0:
		return Identity{}, fmt.Errorf("%w (subject %q)", ErrNoIdentity, clip(c.Subject.CommonName))
	case 1:
		return FromURI(found[0], trustDomain)
	default:
		return Identity{}, fmt.Errorf("identity: certificate %q has %d spiffe URI SANs, want one", clip(c.Subject.CommonName), len(found))
	}
}

func roleList() string {
	s := make([]string, len(Roles))
	for i, r := range Roles {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}

// clip bounds attacker-controlled text before it reaches an error message.
func clip(s string) string {
	if len(s) > 160 {
		return s[:160] + "…"
	}
	return s
}
