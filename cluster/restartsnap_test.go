package cluster

import (
	"context"
	"fmt"
	"sync"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// A follower stopping after restartSnapshotMin or more entries since its
// last snapshot takes one (its next start restores it instead of replaying
// them); a second call finds nothing new, and a leader never takes one.
func TestSnapshotForRestart(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < restartSnapshotMin+16; i += 16 {
				if _, err := l.svc.CreateDomain(ctx, fmt.Sprintf("d%05d", i), pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: 60_000}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	c.converge()
	if n, _, err := l.node.SnapshotForRestart(); n != 0 || err != nil {
		t.Fatalf("leader: SnapshotForRestart = %d, %v; want none taken", n, err)
	}
	f := 0
	for i, m := range c.members {
		if m != l {
			f = i
			break
		}
	}
	fol := c.members[f].node
	applied := fol.FSM().LastIndex()
	n, _, err := fol.SnapshotForRestart()
	if err != nil || n < restartSnapshotMin {
		t.Fatalf("follower: SnapshotForRestart = %d, %v; want a snapshot of at least %d entries", n, err, restartSnapshotMin)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(c.dirs[f], 2, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	list, err := snaps.List()
	if err != nil || len(list) == 0 || list[0].Index < applied {
		t.Fatalf("snapshots %v (%v); want one at index %d or later", list, err, applied)
	}
	if n, _, err := fol.SnapshotForRestart(); n != 0 || err != nil {
		t.Fatalf("second call: SnapshotForRestart = %d, %v; want none taken", n, err)
	}
}
