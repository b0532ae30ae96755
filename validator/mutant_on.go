//go:build jepsen_mutants

package validator

import "os"

// skipEpochCAS is a negative-control mutant for the fault-injection harness:
// with AUTHORITY_MUTANT=no-cas, a promotion's expected epoch is reported but
// never enforced (promotion without compare-and-set), at pre-validation and
// at apply alike. Only binaries built with the jepsen_mutants tag contain
// it; the linearizability checker must catch it.
var skipEpochCAS = os.Getenv("AUTHORITY_MUTANT") == "no-cas"

// fenceQuorumShort is the replica-quorum negative control: with
// AUTHORITY_MUTANT=fence-n-minus-k, FenceQuorum asks for N - K fenced
// reports instead of N - K + 1 (replication/refnode's mutant test shows it
// loses acknowledged writes).
var fenceQuorumShort = os.Getenv("AUTHORITY_MUTANT") == "fence-n-minus-k"
