package crashmatrix_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/aerodb/authority/failpoint"
	"github.com/aerodb/authority/internal/testcluster"
)

// Snapshot boundaries, on a cluster started with --snapshot-threshold 16:
// crashes around snapshot persist and restore lose nothing and never roll
// an epoch back.
//
// raft checks the threshold only every SnapshotInterval (120 s to 240 s,
// raft's default; authorityd has no flag for it), so within a test the
// snapshots are forced through the Cluster.Snapshot RPC: the same
// FSM.Snapshot → Persist → file store path, at a moment the test chooses.
func TestSnapshotBoundaries(t *testing.T) {
	t.Parallel()
	r := newRig(t, "snapshots", "--snapshot-threshold", "16")
	n := 0
	promoteSome := func(t *testing.T, k int) {
		for range k {
			dom := fmt.Sprintf("s%02d", n)
			n++
			r.setupDomain(t, dom, time.Minute, true)
			r.report(t, dom, "n2", 1, 100)
			ctx, cancel := ctxT(20 * time.Second)
			resp, err := r.cli.Promote(ctx, request(dom))
			cancel()
			if err != nil || !resp.Record.Decision.Allowed {
				t.Fatalf("promotion in %s: %v", dom, errOrOK(resp, err))
			}
			r.setExpect(dom, authority{Epoch: 2, Holder: "n2"})
		}
		r.converge(t)
		r.checkEpochsGrew(t)
	}
	// verify: nothing lost, nothing rolled back, same state everywhere.
	verify := func(t *testing.T) {
		r.converge(t)
		r.checkExpected(t)
		r.checkEpochsGrew(t)
		r.checkEvents(t)
	}

	t.Run("restore-after-snapshot/follower", func(t *testing.T) {
		promoteSome(t, 3) // > 16 entries since the start
		f := r.followers(r.ready(t))[0]
		idx := r.snapshotOn(t, f)
		off := logSize(f)
		r.cl.WithT(t).Kill(f) // right after the snapshot
		r.restart(t, f)
		r.ready(t)
		verify(t)
		wantRestored(t, f, off, idx)
	})
	t.Run("restore-after-snapshot/leader", func(t *testing.T) {
		promoteSome(t, 2)
		l := r.ready(t)
		idx := r.snapshotOn(t, l)
		off := logSize(l)
		r.cl.WithT(t).Kill(l)
		r.ready(t) // the survivors elect
		r.restart(t, l)
		r.ready(t)
		verify(t)
		wantRestored(t, l, off, idx)
	})
	for _, role := range []string{roleFollower, roleLeader} {
		t.Run("crash-in-persist/"+role, func(t *testing.T) {
			promoteSome(t, 2)
			l := r.ready(t)
			target := l
			if role == roleFollower {
				target = r.followers(l)[0]
			}
			off := logSize(target)
			r.arm(t, target, failpoint.SnapshotBeforePersist+"=kill")
			t.Cleanup(func() { r.disarm(target, failpoint.SnapshotBeforePersist) })
			ctx, cancel := ctxT(rpcTimeout)
			_, err := r.cli.Snapshot(ctx, target.GRPCAddr)
			cancel()
			if err == nil {
				t.Fatalf("%s took a snapshot although it was armed to die first", target.ID)
			}
			r.awaitKilledAt(t, target, failpoint.SnapshotBeforePersist, off)
			if role == roleLeader {
				r.ready(t)
			}
			r.restart(t, target)
			r.ready(t)
			verify(t)
			promoteSome(t, 1) // and the restarted node takes part in new commits
			verify(t)
		})
	}
	t.Run("kill-all-after-snapshots", func(t *testing.T) {
		promoteSome(t, 2)
		for _, s := range r.cl.Servers {
			r.snapshotOn(t, s)
		}
		promoteSome(t, 1) // entries after the snapshots, replayed from the log
		offs := map[string]int64{}
		for _, s := range r.cl.Servers {
			offs[s.ID] = logSize(s)
		}
		r.killAll(t)
		r.heal(t)
		verify(t)
		for _, s := range r.cl.Servers {
			wantRestored(t, s, offs[s.ID], 0)
		}
	})
	t.Run("replay", func(t *testing.T) { r.stopAndReplay(t) })
}

// wantRestored checks that s's log, after offset, shows raft restoring a
// snapshot at start (at index idx when idx > 0): proof that the restart
// took the restore path.
func wantRestored(t *testing.T, s *testcluster.Server, offset int64, idx uint64) {
	t.Helper()
	f, err := os.Open(s.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Seek(offset, io.SeekStart)
	b, _ := io.ReadAll(f)
	want := []byte("restored from snapshot")
	if !bytes.Contains(b, want) {
		t.Fatalf("%s: restart did not restore a snapshot:\n%s", s.ID, tail(b, 2048))
	}
	if idx > 0 && !bytes.Contains(b, []byte(fmt.Sprintf("-%d-", idx))) {
		t.Fatalf("%s: restart did not restore the snapshot at index %d:\n%s", s.ID, idx, tail(b, 2048))
	}
}
