package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// IdentityFile binds a data dir to one server id and one cluster id. It is
// written when a data dir is first used and checked on every start: a data
// dir opened under another --node-id, or with another cluster's id, refuses
// to start (raft would otherwise start, look healthy and never find a
// leader, or merge two clusters' logs).
const IdentityFile = "server-identity.json"

// DataDirIdentity is the content of IdentityFile.
type DataDirIdentity struct {
	Version   int    `json:"version"`
	NodeID    string `json:"node_id"`
	ClusterID string `json:"cluster_id"`
}

// ErrWrongDataDir: the data dir belongs to another server or cluster.
var ErrWrongDataDir = errors.New("data dir belongs to another server")

// ReadDataDirIdentity returns the data dir's identity; ok is false when the
// data dir has none yet.
func ReadDataDirIdentity(dir string) (id DataDirIdentity, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, IdentityFile))
	if errors.Is(err, os.ErrNotExist) {
		return id, false, nil
	}
	if err != nil {
		return id, false, err
	}
	if len(b) > 4096 {
		return id, false, fmt.Errorf("%s: %d bytes, not an identity file", IdentityFile, len(b))
	}
	if err := json.Unmarshal(b, &id); err != nil {
		return id, false, fmt.Errorf("%s in %s is damaged: %w", IdentityFile, dir, err)
	}
	if id.Version != 1 || id.NodeID == "" || id.ClusterID == "" {
		return id, false, fmt.Errorf("%s in %s is damaged or of an unknown version: %+v", IdentityFile, dir, id)
	}
	return id, true, nil
}

// BindDataDir checks that dir belongs to nodeID (and, when the caller
// knows it, clusterID), writing the binding when the data dir has none. It
// returns the data dir's cluster id, which wins over a derived one: a
// cluster keeps the id it was bootstrapped with through membership changes.
func BindDataDir(dir, nodeID, clusterID string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("data dir: %w", err)
	}
	have, ok, err := ReadDataDirIdentity(dir)
	if err != nil {
		return "", err
	}
	if ok {
		if have.NodeID != nodeID {
			return "", fmt.Errorf("%w: %s was created for server %q, not %q (use the right --node-id or another --data-dir)",
				ErrWrongDataDir, dir, have.NodeID, nodeID)
		}
		return have.ClusterID, nil
	}
	if clusterID == "" {
		return "", errors.New("data dir has no cluster id yet and none was given")
	}
	b, _ := json.Marshal(DataDirIdentity{Version: 1, NodeID: nodeID, ClusterID: clusterID})
	tmp := filepath.Join(dir, IdentityFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return "", err
	}
	_, err = f.Write(append(b, '\n'))
	if err = errors.Join(err, f.Sync(), f.Close()); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, filepath.Join(dir, IdentityFile)); err != nil {
		return "", err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return clusterID, nil
}
