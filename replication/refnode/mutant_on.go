//go:build jepsen_mutants

package refnode

import "os"

// Negative-control mutants (replica-quorum), compiled only into binaries
// and tests built with the jepsen_mutants tag, chosen by REFNODE_MUTANT
// (or set by an in-process test):
//
//	ack-k-minus-1      the primary acknowledges once K−1 synchronous
//	                   replicas flushed (at least one)
//	accept-fenced-wal  a replica accepts WAL (and ship streams) of an
//	                   epoch below its fence
//
// The tests must catch each (mutant_test.go).
var mutant = os.Getenv("REFNODE_MUTANT")
