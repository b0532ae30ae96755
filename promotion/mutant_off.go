//go:build !jepsen_mutants

package promotion

// policyIgnoresAntiFlapping is always off outside jepsen_mutants builds
// (see mutant_on.go).
const policyIgnoresAntiFlapping = false
