package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
)

// RestoreFile records in a data dir which backup it was restored from, so
// that a restart with the same --restore-from is a no-op.
const RestoreFile = "restored-from.json"

// RestoreInfo is the content of RestoreFile.
type RestoreInfo struct {
	SHA256    string `json:"sha256"`
	LastIndex uint64 `json:"last_index"`
}

// ErrNotFresh: a restore needs a data dir without raft state.
var ErrNotFresh = errors.New("data dir is not fresh")

// Restored reports whether dir was restored from the backup with this
// SHA-256 (a restart of a restored server).
func Restored(dir, sha256 string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, RestoreFile))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var ri RestoreInfo
	if len(b) > 4096 || json.Unmarshal(b, &ri) != nil {
		return false, fmt.Errorf("%s in %s is damaged", RestoreFile, dir)
	}
	return ri.SHA256 == sha256, nil
}

// RestoreSnapshot makes a fresh data dir start a new cluster from a saved
// state (like etcdutl snapshot restore): it writes data (fsm snapshot
// format, at lastIndex) as a raft snapshot at lastIndex, term 1, whose
// configuration is peers, sets the current term to 1 and records
// RestoreFile. Every server of the new cluster is restored from the same
// backup with the same peers; raft then starts from the snapshot on each
// (Bootstrap is a no-op on them) and elects a leader whose log continues
// at lastIndex+1. A data dir holding any raft state is refused
// (ErrNotFresh); so is a crash half-way (wipe the data dir and restore
// again).
func RestoreSnapshot(cfg Config, peers []Peer, lastIndex uint64, sha256 string, data io.Reader) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	if len(peers) == 0 {
		return errors.New("restore: no peers")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("restore: data dir: %w", err)
	}
	for _, name := range []string{"raft.db", WALDir, "snapshots"} {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, name)); err == nil {
			return fmt.Errorf("%w: %s already holds %s (a restore starts from an empty data dir: move it away first)", ErrNotFresh, cfg.DataDir, name)
		}
	}
	store, err := withFaultPanicsStore(filepath.Join(cfg.DataDir, "raft.db"))
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer store.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, cfg.SnapshotRetain, cfg.Logger.Named("snapshot"))
	if err != nil {
		return fmt.Errorf("restore: snapshot store: %w", err)
	}
	conf := raft.Configuration{}
	for _, p := range peers {
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Address)})
	}
	_, trans := raft.NewInmemTransport("")
	sink, err := snaps.Create(raft.SnapshotVersionMax, lastIndex, 1, conf, lastIndex, trans)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if _, err := io.Copy(sink, data); err != nil {
		sink.Cancel()
		return fmt.Errorf("restore: write snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("restore: write snapshot: %w", err)
	}
	if err := store.SetUint64([]byte("CurrentTerm"), 1); err != nil {
		return fmt.Errorf("restore: current term: %w", err)
	}
	b, _ := json.Marshal(RestoreInfo{SHA256: sha256, LastIndex: lastIndex})
	tmp := filepath.Join(cfg.DataDir, RestoreFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(cfg.DataDir, RestoreFile))
}
