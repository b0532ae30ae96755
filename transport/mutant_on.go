//go:build jepsen_mutants

package transport

import "os"

// staleReads is a negative-control mutant for the fault-injection harness:
// with AUTHORITY_MUTANT=stale-reads, non-stale reads are served from this
// node's applied state without forwarding or leader verification. Only
// binaries built with the jepsen_mutants tag contain it; the linearizability
// checker must catch it.
var staleReads = os.Getenv("AUTHORITY_MUTANT") == "stale-reads"
