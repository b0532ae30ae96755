// Package failpoint provides named crash points for tests: kill the process
// with SIGKILL (no deferred code runs), sleep, or return an error, at the
// promotion boundaries and around raft storage and apply.
//
// Failpoints exist only in binaries built with the `failpoints` build tag
// (the process tests build authorityd that way). In every other build Eval
// is an empty function the compiler removes, and nothing can arm a point.
//
// Arming: the environment variable AUTHORITY_FAILPOINTS at start, e.g.
//
//	AUTHORITY_FAILPOINTS='promote/before-propose=kill;raftlog/before-store=sleep(200)'
//
// or the loopback-only admin endpoint (see Handler). Actions: kill,
// sleep(MS), error, off. A point may fire only after N hits: `3*kill`
// passes twice and kills on the third hit.
package failpoint

import "errors"

// The named points. Each is evaluated where its name says.
const (
	PromoteReceived       = "promote/received"       // request durable (intent committed), before validation
	PromoteValidating     = "promote/validating"     // during validation
	PromoteBeforePropose  = "promote/before-propose" // validated, attempt not yet proposed
	RaftLogBeforeStore    = "raftlog/before-store"   // before raft writes entries to the log store
	RaftLogAfterStore     = "raftlog/after-store"    // after raft wrote them
	FSMBeforeApplyPromote = "fsm/before-apply-promotion"
	FSMAfterApplyPromote  = "fsm/after-apply-promotion"
	PromoteAfterCommit    = "promote/after-commit-before-reply" // committed and applied, reply not yet sent
	SnapshotBeforePersist = "snapshot/before-persist"
	// PromoteAfterPrepare: a replica-quorum promotion's fence is committed,
	// its decision not yet proposed (docs/DURABILITY.md).
	PromoteAfterPrepare = "promote/after-prepare"
	// RaftLogBeforeStoreIntent: before raft writes an entry batch carrying
	// a PromotionIntent (the request's durable intent) to the log store.
	RaftLogBeforeStoreIntent = "raftlog/before-store-intent"
	// PromoteBeforeAbort: a new leader found an undecided intent and is
	// about to propose its PromotionAbort (aborted_on_crash).
	PromoteBeforeAbort = "promote/before-abort"
	// PromoteAfterAbort: that PromotionAbort is committed and applied, the
	// new leader does not serve yet.
	PromoteAfterAbort = "promote/after-abort"
	// PromoteQueued: a pipelined promotion has queued its intent and its
	// attempt and waits for neither yet (either, both or none may commit).
	PromoteQueued = "promote/queued"
)

// All lists every point (documentation, admin endpoint, tests).
var All = []string{PromoteReceived, PromoteValidating, PromoteBeforePropose, RaftLogBeforeStore, RaftLogAfterStore,
	FSMBeforeApplyPromote, FSMAfterApplyPromote, PromoteAfterCommit, SnapshotBeforePersist}

// Quorum lists the points only replica-quorum promotions reach; the crash
// matrix over All runs on authority-gated domains, which never reach them
// (crashmatrix/quorum_test.go covers them).
var Quorum = []string{PromoteAfterPrepare}

// Recovery lists the points around the intent and the abort: the intent's
// write, a pipelined promotion with both entries in flight, and a new
// leader's recording of an abort. Each has its own cell
// (crashmatrix/additions_test.go), not one per role and outcome.
var Recovery = []string{RaftLogBeforeStoreIntent, PromoteBeforeAbort, PromoteAfterAbort, PromoteQueued}

// ErrInjected is returned by Eval for the `error` action.
var ErrInjected = errors.New("failpoint: injected error")
