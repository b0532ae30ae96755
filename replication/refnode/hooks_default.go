//go:build !failpoints

package refnode

// testHooks are test seams; production builds have none.
type testHooks struct {
	holdApply         bool
	handoverNoRelease bool
	// benchNoAuthorityWait: see hooks_failpoints.go.
	benchNoAuthorityWait bool
}

func loadTestHooks() testHooks { return testHooks{} }
