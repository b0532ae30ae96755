//go:build failpoints

package refnode

import "os"

// testHooks are test seams compiled only into `failpoints` builds (the
// process tests build refnode that way):
//
//	REFNODE_TEST_HOLD_APPLY=1  a replica flushes and acknowledges shipped
//	                           records but does not apply them (an MVCC
//	                           lag the validator must refuse to promote).
//	REFNODE_TEST_HANDOVER_NO_RELEASE=1
//	                           a primary asked to hand over drains but
//	                           never releases (it resumes writes).
type testHooks struct {
	holdApply         bool
	handoverNoRelease bool
}

func loadTestHooks() testHooks {
	return testHooks{holdApply: os.Getenv("REFNODE_TEST_HOLD_APPLY") == "1",
		handoverNoRelease: os.Getenv("REFNODE_TEST_HANDOVER_NO_RELEASE") == "1"}
}
