//go:build jepsen_mutants

package workload

// Negative controls of the simulated database (Config.DBMutant), which
// checker NoLostAcknowledgedDBWrites must catch.
func init() {
	// A replica that accepts WAL of an epoch it was fenced past: the old
	// primary still gathers K acknowledgements after the fence.
	dbMutants["replica-ignores-fence"] = dbMutant{ignoreFence: true}
	// A primary that acknowledges after K − 1 replicas flushed a write.
	dbMutants["ack-short"] = dbMutant{ackShort: true}
}
