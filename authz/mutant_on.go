//go:build jepsen_mutants

package authz

import "os"

// skipKeepAliveIdentity is a negative-control mutant for the fault-injection
// harness: with AUTHORITY_MUTANT=no-node-identity, a KeepAlive renewal is
// allowed whatever holder it names (a holder role renewing someone else's
// lease), so a hostile node can keep a dead holder's lease alive. Only
// binaries built with the jepsen_mutants tag contain it; the jepsen-like
// liveness checker's handover bound must catch it.
var skipKeepAliveIdentity = os.Getenv("AUTHORITY_MUTANT") == "no-node-identity"
