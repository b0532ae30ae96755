//go:build !invariants

package fsm

// invariantChecker compiles to nothing in production builds; see
// invariants.go for the test build.
type invariantChecker struct{}

func (invariantChecker) reset(*FSM)                {}
func (invariantChecker) afterApply(*FSM, []string) {}

// verifyRestored: see invariants.go.
func verifyRestored(*restored) error { return nil }
