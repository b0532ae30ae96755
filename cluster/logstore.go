package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// Where a data dir keeps its raft log.
//
// raft-boltdb commits every append as a bbolt transaction: dirty B+tree
// pages, an fsync, the meta page, a second fsync. hashicorp/raft-wal
// appends the batch to a preallocated segment file and fsyncs once; its
// index moves to a bbolt meta file only when a segment fills. With
// hashicorp/raft persisting on the leader before it replicates, a commit
// waits for the leader's append and then a follower's, so the store's cost
// is paid twice per commit (docs/OPERATIONS.md, "Log store"). The stable
// store (current term, vote, this package's own keys) stays in raft.db
// either way: it changes on elections only.
const (
	// LogStoreAuto (the default) keeps an existing data dir's log where it
	// is and puts a new data dir's log in wal/.
	LogStoreAuto = ""
	// LogStoreWAL keeps the log in wal/ (hashicorp/raft-wal segments).
	LogStoreWAL = "wal"
	// LogStoreBolt keeps the log in raft.db next to the stable store
	// (raft-boltdb, the layout of data dirs made before wal/ existed).
	LogStoreBolt = "bolt"
)

// WALDir is the directory under the data dir holding raft-wal's segment
// files and its meta file.
const WALDir = "wal"

// DefaultWALSegmentSize: raft-wal preallocates each segment file; 16 MiB
// holds about 60,000 promotion entries and keeps a test cluster's three
// data dirs small (raft-wal's own default is 64 MiB).
const DefaultWALSegmentSize = 16 << 20

var (
	// logStoreKey records in raft.db which log store the data dir uses, so
	// a data dir never silently switches (and forgets its log).
	logStoreKey = []byte("authority-log-store")
	// walDurableKey records an index up to which every entry was durable
	// in wal/ (see walStore).
	walDurableKey = []byte("authority-wal-durable")
)

// stores are a data dir's open raft stores.
type stores struct {
	stable     *raftboltdb.BoltStore // raft.db: term, vote, this package's keys; the log too when kind is bolt
	stablePath string
	logs       *checksumLogStore
	wal        *walStore // nil unless kind is wal
	kind       string
}

// Close closes the log store, then raft.db.
func (s *stores) Close() error {
	var err error
	if s.wal != nil {
		err = s.wal.Close()
	}
	return errors.Join(err, s.stable.Close())
}

// openStores opens raft.db and the data dir's log store, and checks
// everything in them (checkDataDir) before anyone reads them.
func openStores(cfg Config) (*stores, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: data dir: %w", err)
	}
	path := filepath.Join(cfg.DataDir, "raft.db")
	stable, err := withFaultPanicsStore(path)
	if err != nil {
		return nil, err
	}
	st := &stores{stable: stable, stablePath: path}
	if err := st.openLog(cfg); err != nil {
		st.Close()
		return nil, err
	}
	if err := checkDataDir(cfg.DataDir, st); err != nil {
		st.Close()
		return nil, err
	}
	// Recorded only once the data dir passed its checks, so that a damaged
	// raft.db is never rewritten on the way to refusing it.
	if err := stable.Set(logStoreKey, []byte(st.kind)); err != nil {
		st.Close()
		return nil, fmt.Errorf("cluster: %s: record %s: %w", path, logStoreKey, err)
	}
	return st, nil
}

func (st *stores) openLog(cfg Config) error {
	path := filepath.Join(cfg.DataDir, "raft.db")
	kind, err := chooseLogStore(cfg, st.stable)
	if err != nil {
		return err
	}
	st.kind = kind
	if kind == LogStoreBolt {
		st.logs, err = newChecksumLogStore(st.stable, path, cfg.OnCorruption)
		return err
	}
	dir := filepath.Join(cfg.DataDir, WALDir)
	w, err := openWAL(dir, st.stable, cfg.WALSegmentSize, cfg.Logger)
	if err != nil {
		return err
	}
	st.wal = w
	st.logs = &checksumLogStore{LogStore: w, read: w.WAL.GetLog, path: dir, onCorrupt: cfg.OnCorruption}
	return nil
}

// chooseLogStore: the kind raft.db records; else bolt for a raft.db that
// already holds log entries (made by a build before wal/), wal when wal/
// exists, and the configured kind (wal by default) for a new data dir.
func chooseLogStore(cfg Config, stable *raftboltdb.BoltStore) (string, error) {
	path := filepath.Join(cfg.DataDir, "raft.db")
	walDir := filepath.Join(cfg.DataDir, WALDir)
	_, statErr := os.Stat(walDir)
	hasWAL := statErr == nil
	rec, err := stable.Get(logStoreKey)
	switch {
	case err == nil && (string(rec) == LogStoreWAL || string(rec) == LogStoreBolt):
		kind := string(rec)
		if kind == LogStoreWAL && !hasWAL {
			return "", damaged(walDir, 0, "missing, but raft.db records that this data dir keeps its log there")
		}
		if cfg.LogStore != LogStoreAuto && cfg.LogStore != kind {
			return "", fmt.Errorf("cluster: %s keeps its raft log in %s, not %s: a data dir does not change log stores (rebuild the server from its peers on a new data dir instead: %s)", cfg.DataDir, kind, cfg.LogStore, RebuildDoc)
		}
		return kind, nil
	case err == nil:
		return "", damaged(path, 0, "stable key %s holds %q, not a log store this build knows", logStoreKey, clipLine(string(rec)))
	case !isNotFound(err):
		return "", damaged(path, 0, "stable key %s unreadable: %v", logStoreKey, err)
	}
	last, err := stable.LastIndex()
	if err != nil {
		return "", damaged(path, 0, "last index unreadable: %v", err)
	}
	switch {
	case last > 0 && hasWAL:
		return "", damaged(path, 0, "holds log entries, and so does %s: one of them is left over from another data dir", walDir)
	case last > 0:
		if cfg.LogStore == LogStoreWAL {
			return "", fmt.Errorf("cluster: %s keeps its raft log in raft.db (made by an earlier build): it cannot be moved to %s (rebuild the server from its peers on a new data dir instead: %s)", cfg.DataDir, WALDir, RebuildDoc)
		}
		return LogStoreBolt, nil
	case hasWAL:
		return LogStoreWAL, nil
	case cfg.LogStore == LogStoreBolt:
		return LogStoreBolt, nil
	}
	return LogStoreWAL, nil
}

func isNotFound(err error) bool {
	return errors.Is(err, raftboltdb.ErrKeyNotFound) || err.Error() == "not found"
}

// walStore is raft-wal with a durable mark kept in raft.db.
//
// raft-wal checks the checksum of only the last batch in its newest
// segment when it opens (a batch torn by a crash is dropped, which is
// right: it was never acknowledged); past a damaged frame header it reads
// the rest of the segment as unwritten, so damage in the middle of the
// newest segment would silently drop every later entry — entries this
// server acknowledged. walStore therefore records, off the write path and
// at most every 250 ms, an index up to which every entry was durable
// (walDurableKey), and checkDataDir refuses a wal/ that ends before it and
// before the newest snapshot. Deleting a suffix lowers the mark first.
// What is lost this way in the last 250 ms before a crash is what a torn
// write would lose; damage to older entries is found by their checksums.
type walStore struct {
	*wal.WAL
	meta   *metadb.BoltMetaDB
	stable *raftboltdb.BoltStore

	stored atomic.Uint64 // last index a StoreLogs call made durable

	mu      sync.Mutex // serialises mark writes with suffix deletes
	written uint64     // the mark last written (under mu)
	markErr error      // the last failure writing it (under mu)

	kick      chan struct{}
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// markInterval bounds how often the durable mark is written (one bbolt
// commit each, in the background).
const markInterval = 250 * time.Millisecond

func openWAL(dir string, stable *raftboltdb.BoltStore, segmentSize int, logger hclog.Logger) (ws *walStore, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: %s: %w", dir, err)
	}
	if segmentSize == 0 {
		segmentSize = DefaultWALSegmentSize
	}
	// raft-wal deletes every segment file its meta file does not list: a
	// lost meta file would cost the whole log.
	metaPath := filepath.Join(dir, metadb.FileName)
	if segs, _ := filepath.Glob(filepath.Join(dir, "*.wal")); len(segs) > 0 {
		if _, err := os.Stat(metaPath); errors.Is(err, os.ErrNotExist) {
			return nil, damaged(metaPath, 0, "missing while segment files remain (%d)", len(segs))
		}
	}
	// raft-wal's Close leaves its meta file open (and locked): the store
	// owns it and closes it after the WAL.
	meta := &metadb.BoltMetaDB{}
	var w *wal.WAL
	err = withFaultPanics(func() (err error) {
		defer guard(dir, &err)
		w, err = wal.Open(dir, wal.WithSegmentSize(segmentSize), wal.WithMetaStore(meta), wal.WithLogger(logger.Named("wal")))
		return err
	})
	if err != nil {
		meta.Close()
		if !errors.Is(err, ErrDamaged) {
			err = damaged(dir, 0, "cannot open: %v", err)
		}
		return nil, err
	}
	ws = &walStore{WAL: w, meta: meta, stable: stable, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	last, err := w.LastIndex()
	if err != nil {
		w.Close()
		meta.Close()
		return nil, damaged(dir, 0, "last index unreadable: %v", err)
	}
	ws.stored.Store(last)
	if v, err := stable.GetUint64(walDurableKey); err == nil {
		ws.written = v
	}
	go ws.markLoop()
	return ws, nil
}

// IsMonotonic tells raft that the store keeps consecutive indexes only, so
// that installing a snapshot deletes the whole log (raft.MonotonicLogStore).
func (w *walStore) IsMonotonic() bool { return true }

func (w *walStore) StoreLog(l *raft.Log) error { return w.StoreLogs([]*raft.Log{l}) }

func (w *walStore) StoreLogs(logs []*raft.Log) error {
	if err := w.WAL.StoreLogs(logs); err != nil {
		return err
	}
	if len(logs) > 0 {
		w.stored.Store(logs[len(logs)-1].Index)
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// DeleteRange lowers the durable mark below a deleted suffix before it
// deletes (raft truncates a follower's conflicting suffix; installing a
// snapshot deletes everything).
func (w *walStore) DeleteRange(min, max uint64) error {
	last, err := w.WAL.LastIndex()
	if err != nil {
		return err
	}
	if max >= last && min > 0 {
		w.mu.Lock()
		w.stored.Store(min - 1)
		err := w.writeMarkLocked(min - 1)
		w.mu.Unlock()
		if err != nil {
			return fmt.Errorf("cluster: lower %s before deleting entries %d..%d: %w", walDurableKey, min, max, err)
		}
	}
	return w.WAL.DeleteRange(min, max)
}

func (w *walStore) markLoop() {
	defer close(w.done)
	for {
		select {
		case <-w.stop:
			return
		case <-w.kick:
		}
		w.mu.Lock()
		w.writeMarkLocked(w.stored.Load())
		w.mu.Unlock()
		select {
		case <-w.stop:
			return
		case <-time.After(markInterval):
		}
	}
}

func (w *walStore) writeMarkLocked(v uint64) error {
	if v == w.written {
		return nil
	}
	if err := w.stable.SetUint64(walDurableKey, v); err != nil {
		w.markErr = err
		return err
	}
	w.written = v
	return nil
}

// Close stops the mark writer, records the final mark and closes the WAL.
func (w *walStore) Close() error {
	var err error
	w.closeOnce.Do(func() {
		close(w.stop)
		<-w.done
		w.mu.Lock()
		markErr := w.writeMarkLocked(w.stored.Load())
		w.mu.Unlock()
		err = errors.Join(markErr, w.WAL.Close(), w.meta.Close())
	})
	return err
}

// checkWALMark refuses a wal/ that ends before the durable mark while no
// snapshot reaches it either: entries this server stored are gone.
func checkWALMark(st *stores, last uint64, snaps []snapshotInfo) error {
	if st.wal == nil {
		return nil
	}
	mark, err := st.stable.GetUint64(walDurableKey)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return damaged(st.stablePath, 0, "stable key %s unreadable: %v", walDurableKey, err)
	}
	reach := last
	if len(snaps) > 0 {
		reach = max(reach, snaps[0].index)
	}
	if reach < mark {
		return damaged(st.logs.path, 0, "the log ends at entry %d, but entries up to %d were stored durably (a segment file truncated, removed or damaged)", last, mark)
	}
	return nil
}
