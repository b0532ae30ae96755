// Package replication is what an AeroDB node needs to use the authority
// correctly (DESIGN §6): WAL positions with chain hashes, the ack gate (a
// primary acknowledges a write, and makes a commit visible, only once the
// authority committed a watermark covering it; in replica-quorum mode the
// QuorumGate instead acknowledges once K synchronous replicas flushed and
// advances the watermark lazily), the synchronous-replica
// tracker that decides how far the watermark may go, the progress report a
// replica sends, and the fence guard that rejects anything stamped with an
// epoch below the highest seen.
//
// The gate talks to the authority through the Durability interface (a
// *client.AckGate satisfies it) and the tracker and report builder are
// pure, so each is unit-tested without a cluster; Reporter wraps the
// client's ProgressReporter.
// replication/refnode is a small reference node built on it.
package replication
