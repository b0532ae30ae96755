package authz

import (
	"fmt"
	"slices"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/identity"
)

// KindOf looks a domain's kind up in the local state; ok is false when the
// domain is unknown here (then the kind check is left to the server that
// serves the request, or the request fails NOT_FOUND).
type KindOf func(domain string) (kind pb.DomainKind, ok bool)

// Denied is why a call was refused.
type Denied struct {
	Method   string
	Identity identity.Identity
	Why      string
}

func (d *Denied) Error() string {
	return fmt.Sprintf("permission denied: %s may not call %s: %s", d.Identity, d.Method, d.Why)
}

// Decide applies the table to one request message. It is pure: the same
// identity, method, message and kinds give the same answer.
func Decide(id identity.Identity, method string, req any, kinds KindOf) error {
	rule, ok := Table[method]
	if !ok {
		return &Denied{Method: method, Identity: id, Why: "not an authority.v1 method"}
	}
	if id.IsZero() {
		return &Denied{Method: method, Identity: id, Why: "no identity"}
	}
	deny := func(format string, args ...any) error {
		return &Denied{Method: method, Identity: id, Why: fmt.Sprintf(format, args...)}
	}
	switch rule.Access {
	case Read:
		return nil
	case Admin:
		if id.Role == identity.Operator {
			return nil
		}
		return deny("needs the operator role")
	case Membership:
		if id.Role == identity.Operator {
			return nil
		}
		if id.Role == identity.Server {
			for s := range rule.Subjects(req) {
				if s.Holder != id.Name {
					return deny("a server may add only itself, not %q", clip(s.Holder))
				}
			}
			return nil
		}
		return deny("needs the operator role")
	case ActAsHolder:
		allowed, holderRole := kindsFor[id.Role]
		if !holderRole {
			return deny("only node, deployer and releaser identities act as holders")
		}
		n := 0
		for s := range rule.Subjects(req) {
			if n++; n > MaxSubjects {
				return &TooMany{Method: method, Max: MaxSubjects}
			}
			if s.Holder != id.Name && !(skipKeepAliveIdentity && method == svcLeases+"KeepAlive") {
				return deny("%s acts only as itself, not as %q in domain %q", id, clip(s.Holder), clip(s.Domain))
			}
			if kinds == nil || s.KindByHandler {
				continue
			}
			if k, ok := kinds(s.Domain); ok && !slices.Contains(allowed, k) {
				return deny("role %s may not act on %s domain %q", id.Role, k, clip(s.Domain))
			}
		}
		return nil
	}
	return deny("no rule")
}

// TooMany is a request naming more than Max subjects (a batch above every
// RPC's bound): refused as InvalidArgument before any per-subject check
// past Max.
type TooMany struct {
	Method string
	Max    int
}

func (e *TooMany) Error() string {
	return fmt.Sprintf("invalid argument: %s: more than %d subjects (leases, advances) in one request", e.Method, e.Max)
}

func clip(s string) string {
	if len(s) > 128 {
		return s[:128] + "…"
	}
	return s
}

// decideOpen authorizes opening a stream: the whole decision for streams
// whose messages name no subject (Watch), the role alone for streams whose
// every message is then decided (KeepAlive, ReportProgress).
func decideOpen(id identity.Identity, method string, kinds KindOf) error {
	rule, ok := Table[method]
	if !ok || rule.Subjects == nil {
		return Decide(id, method, nil, kinds)
	}
	if _, holderRole := kindsFor[id.Role]; rule.Access == ActAsHolder && !holderRole {
		return &Denied{Method: method, Identity: id, Why: "only node, deployer and releaser identities act as holders"}
	}
	return nil
}
