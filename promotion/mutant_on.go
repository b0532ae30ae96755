//go:build jepsen_mutants

package promotion

import "os"

// policyIgnoresAntiFlapping is a negative-control mutant for the
// fault-injection harness: with AUTHORITY_MUTANT=policy-no-dwell, the
// automatic policy neither waits out the dwell after a promotion nor the
// backoff between attempts, so a holder that keeps losing its lease is
// promoted away again and again. Only binaries built with the
// jepsen_mutants tag contain it; the jepsen-like policy-anti-flapping
// checker must catch it.
var policyIgnoresAntiFlapping = os.Getenv("AUTHORITY_MUTANT") == "policy-no-dwell"
