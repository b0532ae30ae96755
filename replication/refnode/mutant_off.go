//go:build !jepsen_mutants

package refnode

// mutant is always off outside jepsen_mutants builds (see mutant_on.go).
const mutant = ""
