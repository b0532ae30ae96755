// Package refnode is the AeroDB reference node: a small but real key-value
// node that uses the authority correctly.
//
//   - WAL (wal.go): records [len u32][crc32c u32][payload], payload a
//     refnode.v1.WalRecord whose hash chains over the previous record's;
//     appended and fsynced in groups (concurrent writers share an fsync);
//     a torn tail is truncated on open, anything else that does not verify
//     refuses to open.
//   - MVCC (mvcc.go): key → versions by commit id; a read sees the newest
//     version with commit id ≤ its bound.
//   - Roles (node.go): the domain's holder is the primary, every other
//     member a replica. The primary keeps its lease with the client library,
//     ships its WAL to the replicas (primary.go), and advances the watermark
//     only to positions K synchronous replicas flushed (K = the policy's
//     min_sync_replicas). The domain's durability mode decides when a write
//     is acknowledged (and made visible): authority-gated, once a watermark
//     covering it is committed (replication.Gate); replica-quorum, once it
//     is flushed locally and by K synchronous replicas of the primary's
//     epoch (replication.QuorumGate), the watermark following lazily, at
//     most once per the policy's watermark interval. It stops writing the
//     moment the lease is lost or the epoch moved. Replicas (replica.go)
//     fence by epoch, verify order, checksum and chain before appending,
//     apply, and report progress.
//   - Replica-quorum fence: when the authority prepared a promotion (the
//     domain's fence, also named in the replies to progress reports), a
//     replica first durably raises its fence to the fence's epoch, so it
//     accepts no WAL of the old primary's epoch (which can then gather no
//     K acknowledgements), and then reports its final position marked
//     fenced, with its chain hashes at the lsns the leader asked for.
//   - Divergence: a node whose history is not a prefix of the holder's
//     (a former primary with unreplicated records) marks itself diverged on
//     disk and refuses to serve until `refnode rebuild` copies the holder's
//     WAL (rebuild.go). It never heals silently.
package refnode
