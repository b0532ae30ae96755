//go:build !jepsen_mutants

package testcluster

// mutantTags is empty in ordinary test builds (see tags_mutants.go).
const mutantTags = ""
