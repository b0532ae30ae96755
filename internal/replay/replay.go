// Package replay rebuilds a node's state from its data directory alone: it
// opens the log (wal/, or raft.db read-only for a data dir that keeps its
// log there), replays every command entry of the log into a
// fresh fsm.FSM and returns the state hash and every stored attempt record
// (the explanations). Process tests compare the result with what the node
// reported while it ran (determinism, AU-9 / P6-D1, P6-D2).
//
// Use it only while the node's process is stopped: bbolt takes a file lock
// and raft would keep writing under a live process. Opening wal/ does what
// the server does when it starts: a batch torn by a crash at the end of
// the newest segment is dropped.
package replay

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	bolt "go.etcd.io/bbolt"
)

// Result of replaying one data directory.
type Result struct {
	// StateHash is fsm.FSM.StateHash of the rebuilt state.
	StateHash [32]byte
	// Records lists every stored attempt record: per domain (sorted by
	// name), the allowed records then the denied ones, each in log order.
	Records []*pb.AttemptRecord
	// FirstIndex and LastIndex are the log's bounds.
	FirstIndex, LastIndex uint64
	// Applied counts the LogCommand entries replayed from the log.
	Applied int
	// SnapshotIndex is the index of the snapshot restored first, 0 when the
	// log was complete from index 1 and no snapshot was used.
	SnapshotIndex uint64
	// FSM is the rebuilt state machine, for further reads.
	FSM *fsm.FSM
}

// FromSnapshot reports whether the replay had to start from a snapshot
// because the log was compacted (FirstIndex > 1).
func (r *Result) FromSnapshot() bool { return r.SnapshotIndex > 0 }

// Dir replays the data directory of a stopped node.
//
// When the log starts at index 1, every LogCommand entry is applied in
// order to an empty FSM and no snapshot is read. When the log was compacted
// (FirstIndex > 1), the newest snapshot in snapshots/ is restored first and
// the entries after its index are replayed; the result then depends on
// that snapshot too (SnapshotIndex says so).
//
// Every entry in the log is replayed, up to LastIndex: the commit index is
// not stored on disk, so on a node whose log ends in entries that were never
// committed the result includes them. After a cluster has converged and
// been stopped, every node's log holds committed entries only.
func Dir(dataDir string) (*Result, error) {
	store, err := openLog(dataDir)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	first, err := store.FirstIndex()
	if err != nil {
		return nil, fmt.Errorf("replay: first index: %w", err)
	}
	last, err := store.LastIndex()
	if err != nil {
		return nil, fmt.Errorf("replay: last index: %w", err)
	}
	res := &Result{FirstIndex: first, LastIndex: last, FSM: fsm.New()}
	from := uint64(1)
	if first > 1 {
		idx, err := restoreSnapshot(dataDir, res.FSM, first)
		if err != nil {
			return nil, err
		}
		res.SnapshotIndex = idx
		from = idx + 1
	}
	for i := from; i <= last && last > 0; i++ {
		var l raft.Log
		if err := store.GetLog(i, &l); err != nil {
			return nil, fmt.Errorf("replay: log entry %d (log %d..%d): %w", i, first, last, err)
		}
		if l.Type != raft.LogCommand {
			continue
		}
		// A rejected command changes nothing here, exactly as on the node.
		res.FSM.Apply(l.Index, l.Term, l.Data)
		res.Applied++
	}
	if res.StateHash, err = res.FSM.StateHash(); err != nil {
		return nil, fmt.Errorf("replay: state hash: %w", err)
	}
	res.Records = Records(res.FSM)
	return res, nil
}

// openLog opens wal/ when the data dir has one, else raft.db read-only.
func openLog(dataDir string) (interface {
	raft.LogStore
	Close() error
}, error) {
	if dir := filepath.Join(dataDir, "wal"); isDir(dir) {
		w, err := wal.Open(dir)
		if err != nil {
			return nil, fmt.Errorf("replay: open %s: %w", dir, err)
		}
		return w, nil
	}
	path := filepath.Join(dataDir, "raft.db")
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	store, err := raftboltdb.New(raftboltdb.Options{Path: path,
		BoltOptions: &bolt.Options{ReadOnly: true, Timeout: time.Second}})
	if err != nil {
		return nil, fmt.Errorf("replay: open %s read-only (is the node still running?): %w", path, err)
	}
	return store, nil
}

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

// restoreSnapshot restores the newest snapshot of dataDir into f; it must
// reach the log's first index (else the log has a gap).
//
// raft.NewFileSnapshotStore checks that it may write by creating and
// removing a temporary file in snapshots/: the only write this package
// makes, and only for a compacted log.
func restoreSnapshot(dataDir string, f *fsm.FSM, first uint64) (uint64, error) {
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dataDir, 2, hclog.NewNullLogger())
	if err != nil {
		return 0, fmt.Errorf("replay: snapshot store: %w", err)
	}
	list, err := snaps.List()
	if err != nil {
		return 0, fmt.Errorf("replay: list snapshots: %w", err)
	}
	if len(list) == 0 {
		return 0, fmt.Errorf("replay: the log starts at index %d but there is no snapshot", first)
	}
	meta := list[0] // newest first
	if meta.Index+1 < first {
		return 0, fmt.Errorf("replay: newest snapshot ends at index %d but the log starts at %d", meta.Index, first)
	}
	_, rc, err := snaps.Open(meta.ID)
	if err != nil {
		return 0, fmt.Errorf("replay: open snapshot %s: %w", meta.ID, err)
	}
	defer rc.Close()
	// Open has verified the snapshot's CRC-64; Restore checks the FSM's own
	// CRC-32C trailer.
	if err := f.Restore(rc); err != nil {
		return 0, fmt.Errorf("replay: restore snapshot %s: %w", meta.ID, err)
	}
	return meta.Index, nil
}

// Records lists every attempt record stored in f: per domain (sorted by
// name), allowed and kept denied ones in log order.
func Records(f *fsm.FSM) []*pb.AttemptRecord {
	var out []*pb.AttemptRecord
	for _, name := range f.DomainNames() {
		for after := uint64(0); ; {
			page, ok := f.History(name, after, fsm.MaxHistoryPage, true)
			if !ok {
				break
			}
			out = append(out, page.Records...)
			if !page.More {
				break
			}
			after = page.Next
		}
	}
	return out
}
