package main

import (
	"fmt"

	"github.com/aerodb/authority/backup"
	"github.com/aerodb/authority/cluster"
	"github.com/hashicorp/go-hclog"
)

// checkRestore verifies the --restore-from backup before anything is
// written to the data dir. It returns the backup's header when the data
// dir still has to be restored, nil when there is nothing to do (no
// --restore-from, or a restart of a server restored from this backup).
func checkRestore(cfg Config, logger hclog.Logger) (*backup.Header, error) {
	if cfg.RestoreFrom == "" {
		return nil, nil
	}
	h, err := backup.Verify(cfg.RestoreFrom)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	done, err := cluster.Restored(cfg.DataDir, h.SHA256)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if done {
		logger.Info("data dir already restored from this backup; starting from it", "backup", cfg.RestoreFrom, "index", h.LastIndex)
		return nil, nil
	}
	if _, ok, err := cluster.ReadDataDirIdentity(cfg.DataDir); err != nil {
		return nil, err
	} else if !ok && deriveClusterID(cfg.ClusterToken, cfg.Peers) == h.ClusterID {
		return nil, fmt.Errorf("restore: the new cluster would have the backup's cluster id %s (same peers and token): give a new --cluster-token, so that no server of the old cluster can talk to the new one", h.ClusterID)
	}
	return &h, nil
}

// restoreFrom writes the backup's state as the first raft snapshot of the
// new cluster into the (empty) data dir.
func restoreFrom(cfg Config, clusterCfg cluster.Config, h *backup.Header, logger hclog.Logger) error {
	data, _, err := backup.Data(cfg.RestoreFrom)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer data.Close()
	peers := make([]cluster.Peer, len(cfg.Peers))
	for i, p := range cfg.Peers {
		peers[i] = cluster.Peer{ID: p.ID, Address: p.RaftAddr}
	}
	if err := cluster.RestoreSnapshot(clusterCfg, peers, h.LastIndex, h.SHA256, data); err != nil {
		return err
	}
	logger.Warn("RESTORED: this data dir starts a new cluster from a backup", "backup", cfg.RestoreFrom, "index", h.LastIndex,
		"state_hash", h.StateHash, "from_cluster", h.ClusterID, "peers", len(peers))
	return nil
}
