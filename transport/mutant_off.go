//go:build !jepsen_mutants

package transport

// staleReads is always off outside jepsen_mutants builds (see mutant_on.go).
const staleReads = false
