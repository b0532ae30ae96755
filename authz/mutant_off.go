//go:build !jepsen_mutants

package authz

// skipKeepAliveIdentity is always off outside jepsen_mutants builds (see
// mutant_on.go).
const skipKeepAliveIdentity = false
