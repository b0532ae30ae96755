package cluster

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// A state saved from one cluster and restored into three fresh data dirs
// starts a new cluster: every server has the saved state hash at the
// saved index before anything new is written, the log continues after
// it (a write commits on all three), a restart from disk keeps it, and a
// second restore into a used data dir is refused.
func TestRestoreStartsNewCluster(t *testing.T) {
	old := newTestCluster(t, 3)
	ctx := context.Background()
	setup(t, old.leader().svc)
	old.converge()
	capture, savedHash, err := old.leader().node.FSM().CaptureWithHash()
	if err != nil {
		t.Fatal(err)
	}
	var data bytes.Buffer
	if _, err := capture.WriteTo(&data); err != nil {
		t.Fatal(err)
	}
	old.stopAll()

	c := &testCluster{t: t, clock: old.clock}
	root := t.TempDir()
	peers := make([]Peer, 3)
	for i := range 3 {
		c.dirs = append(c.dirs, filepath.Join(root, nodeID(i)))
		peers[i] = Peer{ID: nodeID(i), Address: nodeID(i)}
	}
	for i, dir := range c.dirs {
		if err := RestoreSnapshot(Config{NodeID: nodeID(i), DataDir: dir, RaftAddr: nodeID(i)}, peers, capture.LastIndex(), "sum",
			bytes.NewReader(data.Bytes())); err != nil {
			t.Fatal(err)
		}
	}
	c.members = make([]*member, 3)
	c.startAll()
	t.Cleanup(c.stopAll)
	for i, m := range c.members {
		h, err := m.node.FSM().StateHash()
		if err != nil || h != savedHash || m.node.FSM().LastIndex() != capture.LastIndex() {
			t.Fatalf("%s after restore: hash %x index %d (%v); saved %x at %d", nodeID(i), h, m.node.FSM().LastIndex(), err, savedHash, capture.LastIndex())
		}
	}
	l := c.leader()
	if d, ok := l.node.FSM().Domain("db1"); !ok || d.GetEpoch() != 1 {
		t.Fatalf("db1 after restore: %v", d)
	}
	check(t)(l.svc.CreateDomain(ctx, "after", pb.DomainKind_DOMAIN_KIND_LOCK, nil))
	c.converge()
	if l.node.FSM().LastIndex() <= capture.LastIndex() {
		t.Fatalf("index %d after a write; restored at %d", l.node.FSM().LastIndex(), capture.LastIndex())
	}
	c.stopAll()
	c.startAll()
	c.converge()
	if _, ok := c.leader().node.FSM().Domain("after"); !ok {
		t.Fatal("the write after the restore is lost on restart")
	}
	err = RestoreSnapshot(Config{NodeID: "s1", DataDir: c.dirs[0], RaftAddr: "s1"}, peers, capture.LastIndex(), "sum", bytes.NewReader(data.Bytes()))
	if !errors.Is(err, ErrNotFresh) {
		t.Fatalf("restore into a used data dir: %v", err)
	}
	if ok, err := Restored(c.dirs[0], "sum"); !ok || err != nil {
		t.Fatalf("restored marker: %v %v", ok, err)
	}
}
