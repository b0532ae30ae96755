//go:build jepsen_mutants

package testcluster

// mutantTags builds the servers with the negative-control mutants compiled
// in (each still off unless its AUTHORITY_MUTANT value is set) when the
// test binary itself is a jepsen_mutants build.
const mutantTags = ",jepsen_mutants"
