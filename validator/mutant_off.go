//go:build !jepsen_mutants

package validator

// skipEpochCAS is always off outside jepsen_mutants builds (see
// mutant_on.go).
const skipEpochCAS = false

// fenceQuorumShort is always off outside jepsen_mutants builds.
const fenceQuorumShort = false
