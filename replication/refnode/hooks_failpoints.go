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
//	REFNODE_BENCH_NO_AUTHORITY_WAIT=1
//	                           NOT SAFE, benchmarks only: the primary
//	                           acknowledges once K replicas flushed and
//	                           never advances the watermark, whatever the
//	                           domain's durability (BenchmarkAckGate's
//	                           no-authority baseline).
type testHooks struct {
	holdApply            bool
	handoverNoRelease    bool
	benchNoAuthorityWait bool
}

func loadTestHooks() testHooks {
	return testHooks{holdApply: os.Getenv("REFNODE_TEST_HOLD_APPLY") == "1",
		handoverNoRelease:    os.Getenv("REFNODE_TEST_HANDOVER_NO_RELEASE") == "1",
		benchNoAuthorityWait: os.Getenv("REFNODE_BENCH_NO_AUTHORITY_WAIT") == "1"}
}
