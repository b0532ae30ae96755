package cluster

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/aerodb/authority/fsm"
	"github.com/hashicorp/raft"
)

// ForceNewCluster is the lost-quorum recovery (etcd's --force-new-cluster,
// Consul's peers.json): with the other voters gone for good, it rewrites
// this server's raft configuration to itself alone, at raftAddr. It keeps
// every entry in this server's log and snapshots: raft.RecoverCluster
// applies them all to a fresh state machine, takes a snapshot of the result
// and records the new configuration, so every entry this server had —
// committed or not — survives. Run it on a stopped server's data dir
// (authorityd --force-new-cluster does it before starting); afterwards the
// server leads a one-server cluster and new servers join it (--join).
//
// Use it only when a quorum can never come back: a server recovered this
// way and the old majority, if it returned, would be two clusters.
func ForceNewCluster(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = cfg.withDefaults()
	path := filepath.Join(cfg.DataDir, "raft.db")
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("force new cluster: %w", err)
	}
	st, err := openStores(cfg)
	if err != nil {
		return fmt.Errorf("force new cluster: %w", err)
	}
	defer st.Close()
	logs, store := st.logs, st.stable
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, cfg.SnapshotRetain, cfg.Logger.Named("snapshot"))
	if err != nil {
		return err
	}
	has, err := raft.HasExistingState(store, store, snaps)
	if err != nil {
		return err
	}
	if !has {
		return errors.New("force new cluster: the data dir holds no raft state to recover")
	}
	n := &Node{id: cfg.NodeID, cfg: cfg}
	rc := n.raftConfig()
	rc.NotifyCh = nil
	_, trans := raft.NewInmemTransport(raft.ServerAddress(cfg.RaftAddr))
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(cfg.NodeID), Address: raft.ServerAddress(cfg.RaftAddr)}}}
	if err := raft.RecoverCluster(rc, &raftFSM{f: fsm.New(), hooks: cfg.Hooks}, logs, store, snaps, trans, conf); err != nil {
		return fmt.Errorf("force new cluster: %w", err)
	}
	return nil
}
