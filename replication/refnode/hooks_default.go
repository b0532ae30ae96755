//go:build !failpoints

package refnode

// testHooks are test seams; production builds have none.
type testHooks struct {
	holdApply         bool
	handoverNoRelease bool
}

func loadTestHooks() testHooks { return testHooks{} }
