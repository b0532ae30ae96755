package cluster

import (
	"errors"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
)

// restartSnapshotMin is the number of entries applied since the last
// snapshot above which SnapshotForRestart takes one.
const restartSnapshotMin = 1024

// SnapshotForRestart takes a snapshot before a graceful stop when at
// least restartSnapshotMin entries were applied since the last one, so the
// next start restores it instead of replaying those entries one by one
// through the state machine (raft snapshots on its own only every
// SnapshotInterval, 120–240 s by default: a follower stopped after a burst
// of writes otherwise replays the whole burst, e.g. 100,000 entries, about
// 4 s, where restoring their snapshot takes a fraction of that). A leader
// skips it: a stopping leader should hand over at once, not keep the
// cluster waiting. A failure is returned for the log and changes nothing
// (the entries stay in the log and are replayed as before). It returns the
// number of entries the snapshot covers beyond the previous one (0: none
// taken) and how long it took.
func (n *Node) SnapshotForRestart() (entries uint64, took time.Duration, err error) {
	if n.IsLeader() {
		return 0, 0, nil
	}
	stats := n.raft.Stats()
	applied, err1 := strconv.ParseUint(stats["applied_index"], 10, 64)
	last, err2 := strconv.ParseUint(stats["last_snapshot_index"], 10, 64)
	if err1 != nil || err2 != nil || applied < last+restartSnapshotMin {
		return 0, 0, nil
	}
	start := time.Now()
	err = n.raft.Snapshot().Error()
	if errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return 0, 0, nil
	}
	return applied - last, time.Since(start), err
}
