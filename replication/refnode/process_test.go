package refnode

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	rpb "github.com/aerodb/authority/api/refnode/v1"
	"github.com/aerodb/authority/replication"
)

// defaultTestSeed is the process tests' fixed seed: every run draws the
// same schedule (kill points, writes), so a failure replays exactly.
// REFNODE_TEST_SEED overrides it (explore other schedules; a failing seed
// is printed and replayable the same way).
const defaultTestSeed = 1

func testSeed(t *testing.T) uint64 { return seedOr(t, defaultTestSeed) }

// seedOr is REFNODE_TEST_SEED when set, else def; it is always printed.
func seedOr(t *testing.T, def uint64) uint64 {
	seed := def
	if s := os.Getenv("REFNODE_TEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seed = v
	}
	t.Logf("seed=%d (rerun with REFNODE_TEST_SEED=%d)", seed, seed)
	return seed
}

// failover runs one acceptance scenario on a fresh domain: writers (and
// optionally a reader) against n1, kill -9 of n1 after killAfter, an
// operator promotion of the most advanced replica, and the checks: every
// acknowledged write is on the new primary with its value; the reader
// never sees a commit go backwards.
func failover(t *testing.T, rc *refCluster, killAfter time.Duration, withReader bool) {
	rc.startAll()
	n1 := rc.node("n1")
	rc.waitRole(n1, RolePrimary, 1)
	for _, p := range rc.nodes[1:] {
		rc.waitRole(p, RoleReplica, 1)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var log ackLog
	wg := runWriters(ctx, n1, 8, rc.domain, &log)
	var rd *reader
	if withReader {
		rd = startReader(ctx, n1, &log)
	}
	// The random moment is counted from the first acknowledged write, so a
	// slow start (the primary's first watermark, replicas connecting) cannot
	// leave a run with nothing to check.
	for deadline := time.Now().Add(15 * time.Second); len(log.all()) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("no write acknowledged within 15 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(killAfter) // the random moment; not a synchronisation
	rc.kill(n1)
	stop()
	wg.Wait()
	if rd != nil {
		rd.stop()
	}
	acks := log.all()
	t.Logf("%d writes acknowledged before kill -9 at %v (%d failed)", len(acks), killAfter, log.fails)
	if len(acks) == 0 {
		t.Fatal("no write was acknowledged")
	}
	best := rc.mostAdvanced(n1)
	rc.promote(best, 1)
	st := rc.waitRole(best, RolePrimary, 2)
	t.Logf("%s promoted: last %s, visible commit %d", best.id, posOf(st.GetLast()), st.VisibleCommitId)
	checkAcked(t, best, acks)
	if rd != nil {
		rd.checkAfter(t, best)
	}
	// The new primary accepts writes at epoch 2 once a replica follows it.
	pctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	r, err := best.rpc().Put(pctx, &rpb.PutRequest{Key: []byte("after"), Value: []byte("failover")})
	if err != nil || r.Epoch != 2 || r.CommitId <= maxCommit(acks) {
		t.Fatalf("write on the new primary: %v %v (commit ids must continue above %d)", r, err, maxCommit(acks))
	}
}

func maxCommit(acks []ack) uint64 {
	var m uint64
	for _, a := range acks {
		m = max(m, a.commitID)
	}
	return m
}

// Acceptance 1: kill -9 the primary at random moments (≥ 5 runs), promote
// the most advanced replica like an operator, and find every acknowledged
// write with its value.
func TestKillPrimaryNoAcknowledgedWriteLost(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 1))
	auth, ac := startAuthority(t)
	for run := 1; run <= 5; run++ {
		killAfter := time.Duration(150+rng.IntN(1200)) * time.Millisecond
		t.Run(fmt.Sprintf("run%d", run), func(t *testing.T) {
			rc := newRefCluster(t, auth.WithT(t), ac, fmt.Sprintf("kill-%d", run), 3, nil)
			failover(t, rc, killAfter, false)
		})
	}
}

// reader reads acknowledged keys from the primary at its visible bound and
// remembers what it saw.
type reader struct {
	cancel   context.CancelFunc
	done     chan struct{}
	maxBound uint64
	seen     map[string]uint64 // key → commit id observed
	reads    int
}

func startReader(ctx context.Context, p *proc, log *ackLog) *reader {
	ctx, cancel := context.WithCancel(ctx)
	r := &reader{cancel: cancel, done: make(chan struct{}), seen: map[string]uint64{}}
	go func() {
		defer close(r.done)
		for i := 0; ctx.Err() == nil; i++ {
			acks := log.all()
			if len(acks) == 0 {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			a := acks[len(acks)-1-i%len(acks)]
			resp, err := p.rpc().Get(ctx, &rpb.GetRequest{Key: []byte(a.key)})
			if err != nil {
				continue
			}
			r.reads++
			r.maxBound = max(r.maxBound, resp.ReadBound)
			if resp.Found {
				r.seen[a.key] = resp.CommitId
			}
		}
	}()
	return r
}

func (r *reader) stop() { r.cancel(); <-r.done }

// checkAfter: on the new primary no read bound is below one observed
// before the failover, and every commit observed before is still there.
func (r *reader) checkAfter(t *testing.T, p *proc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	t.Logf("reader: %d reads before the failover, %d commits seen, highest bound %d", r.reads, len(r.seen), r.maxBound)
	if len(r.seen) == 0 {
		t.Fatal("the reader observed nothing before the failover")
	}
	for key, cid := range r.seen {
		resp, err := p.rpc().Get(ctx, &rpb.GetRequest{Key: []byte(key)})
		if err != nil {
			t.Fatal(err)
		}
		if resp.ReadBound < r.maxBound {
			t.Fatalf("read bound went backwards: %d on the new primary, %d before", resp.ReadBound, r.maxBound)
		}
		if !resp.Found || resp.CommitId != cid {
			t.Fatalf("PHANTOM commit: %s was visible at commit %d before the failover; now found=%v commit %d", key, cid, resp.Found, resp.CommitId)
		}
	}
}

// Acceptance 4: a reader never sees a commit on the new primary go
// backwards compared with what it read before the failover.
// Readiness: P6-S3, AU-6; docs/READINESS.md.
func TestNoPhantomCommitsAcrossFailover(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 4))
	auth, ac := startAuthority(t)
	rc := newRefCluster(t, auth, ac, "phantom", 3, nil)
	failover(t, rc, time.Duration(300+rng.IntN(700))*time.Millisecond, true)
}

// forgeLast rewrites a stopped node's WAL so that its last record is a
// validly chained but different record at the same lsn (a forged record).
func forgeLast(t *testing.T, dir string) replication.Position {
	path := filepath.Join(dir, walFile)
	w, rep, err := OpenWAL(path)
	if err != nil {
		t.Fatal(err)
	}
	recs := w.Records(1, rep.Records)
	w.Close()
	last := recs[len(recs)-1]
	prev := replication.Zero
	if len(recs) > 1 {
		prev = PositionOf(recs[len(recs)-2])
	}
	forged := NewRecord(prev, last.Epoch, last.CommitId, last.Key, []byte("forged"))
	var buf []byte
	for _, r := range append(recs[:len(recs)-1], forged) {
		buf = append(buf, EncodeFrame(r)...)
	}
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	return PositionOf(forged)
}

// Acceptance 2: unsafe candidates are denied with the right reason — a
// replica behind the watermark (ReplicaBehindWal), one with a forged record
// at the watermark lsn (HistoryDivergence), one that flushed but did not
// apply up to the visible commit id (MvccVisibilityViolation) — while the
// healthy replica is allowed.
func TestPromotionDeniedForUnsafeReplicas(t *testing.T) {
	auth, ac := startAuthority(t)
	rc := newRefCluster(t, auth, ac, "unsafe", 5, map[string][]string{"n5": {"REFNODE_TEST_HOLD_APPLY=1"}})
	rc.startAll()
	n1, n2, n3, n4, n5 := rc.node("n1"), rc.node("n2"), rc.node("n3"), rc.node("n4"), rc.node("n5")
	rc.waitRole(n1, RolePrimary, 1)
	for _, p := range []*proc{n2, n3, n4, n5} {
		rc.waitRole(p, RoleReplica, 1)
	}
	put := func(prefix string, n int) {
		for i := range n {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := n1.rpc().Put(ctx, &rpb.PutRequest{Key: fmt.Appendf(nil, "%s%d", prefix, i), Value: []byte("v")})
			cancel()
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	put("a", 20)
	rc.waitCaughtUp(n1)
	rc.kill(n3) // n3 stops here: it will be behind
	put("b", 20)
	rc.waitCaughtUp(n1)
	d, err := rc.domainState()
	if err != nil {
		t.Fatal(err)
	}
	wm := d.GetWatermark()
	t.Logf("watermark lsn %d visible %d", wm.GetLsn(), wm.GetVisibleCommitId())
	rc.kill(n1)
	rc.kill(n4)
	forged := forgeLast(t, n4.dir)
	if forged.LSN != wm.GetLsn() {
		t.Fatalf("forged lsn %d, watermark lsn %d", forged.LSN, wm.GetLsn())
	}
	rc.start(n4)
	rc.start(n3)
	if st, _ := rc.status(n5); st.GetAppliedCommitId() >= wm.GetVisibleCommitId() || st.GetLast().GetLsn() != wm.GetLsn() {
		t.Fatalf("n5 should have flushed %d but not applied: %v", wm.GetLsn(), st)
	}

	// The healthy replica is allowed once n1's lease expired.
	if reason, rec := rc.settledDenial("n2", 1); reason != "" {
		t.Fatalf("n2 denied: %s %v", reason, rec.GetDecision())
	}
	for _, tc := range []struct {
		cand, want string
	}{{"n3", "ReplicaBehindWal"}, {"n4", "HistoryDivergence"}, {"n5", "MvccVisibilityViolation"}} {
		reason, rec := rc.settledDenial(tc.cand, 1)
		if reason != tc.want {
			t.Errorf("%s: denied %q, want %q\n%v", tc.cand, reason, tc.want, rec.GetDecision())
			continue
		}
		t.Logf("%s denied: %s (%s)", tc.cand, reason, rec.GetDecision().GetFailedInvariant())
	}
	rc.promote(n2, 1)
	rc.waitRole(n2, RolePrimary, 2)
}

// Acceptance 3: the old primary paused past its lease (SIGSTOP), then
// resumed after the promotion, cannot acknowledge a single write, and
// replicas reject WAL stamped with its epoch.
func TestPausedOldPrimaryIsFenced(t *testing.T) {
	pausedOldPrimary(t, Setup{Domain: "paused", LeaseTTL: testTTL, InitialPrimary: "n1", Durability: pb.Durability_DURABILITY_AUTHORITY_GATED})
}

// The same in replica-quorum mode: the old primary acknowledges without
// the authority, so what stops it is the lease and, above all, its
// replicas' fence.
func TestReplicaQuorumPausedOldPrimaryIsFenced(t *testing.T) {
	pausedOldPrimary(t, Setup{Domain: "paused-rq", LeaseTTL: testTTL, InitialPrimary: "n1", Durability: pb.Durability_DURABILITY_REPLICA_QUORUM, MinSyncReplicas: 1})
}

func pausedOldPrimary(t *testing.T, setup Setup) {
	auth, ac := startAuthority(t)
	rc := newRefClusterWith(t, auth, ac, setup, 3, nil)
	rc.startAll()
	n1 := rc.node("n1")
	rc.waitRole(n1, RolePrimary, 1)
	rc.waitRole(rc.node("n2"), RoleReplica, 1)
	rc.waitRole(rc.node("n3"), RoleReplica, 1)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var log ackLog
	wg := runWriters(ctx, n1, 4, "p", &log)
	eventually(t, 10*time.Second, "some acknowledged writes", func() (bool, string) { return len(log.all()) >= 20, "" })

	rc.pause(n1)
	best := rc.mostAdvanced(n1)
	rc.promote(best, 1)
	promotedAt := time.Now()
	rc.waitRole(best, RolePrimary, 2)
	var other *proc
	for _, p := range rc.nodes[1:] {
		if p != best {
			other = p
		}
	}
	rc.waitRole(other, RoleReplica, 2)

	rc.resume(n1)
	// Writes sent to the old primary after the promotion: none may be
	// acknowledged.
	var late ackLog
	lctx, lstop := context.WithTimeout(context.Background(), 2*time.Second)
	lwg := runWriters(lctx, n1, 4, "late", &late)
	lwg.Wait()
	lstop()
	stop()
	wg.Wait()
	if got := late.all(); len(got) > 0 {
		t.Fatalf("the fenced old primary acknowledged %d writes after the promotion, e.g. %+v", len(got), got[0])
	}
	for _, a := range log.all() {
		if a.sent.After(promotedAt) {
			t.Fatalf("write %s sent after the promotion was acknowledged by %s", a.key, a.node)
		}
	}
	t.Logf("old primary: %d acknowledged before the pause, %d late writes all refused", len(log.all()), late.fails)

	// WAL stamped with the old epoch is rejected by the replica.
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	st, err := other.rpc().Ship(sctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&rpb.ShipRequest{Body: &rpb.ShipRequest_Hello{Hello: &rpb.ShipHello{PrimaryId: "n1", Epoch: 1, Domain: rc.domain}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); ReasonOf(err) != ReasonFenced {
		t.Fatalf("replica accepted a ship stream at epoch 1 after the promotion: %v", err)
	}
	if s, _ := rc.status(other); s.GetFencedRejections() == 0 {
		t.Fatal("the replica counted no fenced rejection")
	}
	// The old primary is no longer primary: a replica of the new history,
	// or diverged (exit 4) when it had unreplicated records.
	eventually(t, 15*time.Second, "n1 to step down", func() (bool, string) {
		if !n1.running() {
			return n1.cmd.ProcessState.ExitCode() == 4, fmt.Sprintf("exit %d", n1.cmd.ProcessState.ExitCode())
		}
		s, err := rc.status(n1)
		if err != nil {
			return false, err.Error()
		}
		return s.Role == RoleReplica && s.Epoch == 2 || s.Role == RoleDiverged, s.Role
	})
	checkAcked(t, best, log.all())
}

// A former primary with records the promoted history does not have
// refuses to rejoin (exit 4, on every restart) until `refnode rebuild`,
// after which it follows the new primary.
func TestFormerPrimaryDivergedRefusesUntilRebuilt(t *testing.T) {
	auth, ac := startAuthority(t)
	rc := newRefCluster(t, auth, ac, "diverge", 3, nil)
	rc.startAll()
	n1, n2, n3 := rc.node("n1"), rc.node("n2"), rc.node("n3")
	rc.waitRole(n1, RolePrimary, 1)
	rc.waitRole(n2, RoleReplica, 1)
	rc.waitRole(n3, RoleReplica, 1)
	var log ackLog
	ctx, stop := context.WithTimeout(context.Background(), 300*time.Millisecond)
	runWriters(ctx, n1, 2, "d", &log).Wait()
	stop()
	rc.waitCaughtUp(n1)
	rc.kill(n2)
	rc.kill(n3)
	// n1 appends and fsyncs these, but no replica flushes them: never
	// acknowledged, and not in the history n2 will continue.
	for i := range 3 {
		pctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		if _, err := n1.rpc().Put(pctx, &rpb.PutRequest{Key: fmt.Appendf(nil, "orphan%d", i), Value: []byte("x")}); err == nil {
			t.Fatal("a write was acknowledged with no replica")
		}
		cancel()
	}
	rc.kill(n1)
	rc.start(n2)
	rc.start(n3)
	rc.waitRole(n2, RoleReplica, 1)
	rc.promote(n2, 1)
	rc.waitRole(n2, RolePrimary, 2)
	ctx, stop = context.WithTimeout(context.Background(), 300*time.Millisecond)
	runWriters(ctx, n2, 2, "e", &log).Wait()
	stop()

	for attempt := 1; attempt <= 2; attempt++ {
		rc.start(n1)
		select {
		case <-n1.done:
		case <-time.After(20 * time.Second):
			t.Fatalf("attempt %d: the diverged former primary kept running", attempt)
		}
		if code := n1.cmd.ProcessState.ExitCode(); code != 4 {
			t.Fatalf("attempt %d: exit %d, want 4 (diverged)", attempt, code)
		}
	}
	logText, _ := os.ReadFile(n1.logPath)
	if !strings.Contains(string(logText), "refnode rebuild --from "+n2.addr) {
		t.Fatalf("the diverged node does not say how to rebuild:\n%s", tailBytes(logText, 2048))
	}
	out, err := exec.Command(filepath.Join(rc.bin, "refnode"), "rebuild", "--from", n2.addr, "--data-dir", n1.dir).CombinedOutput()
	if err != nil {
		t.Fatalf("rebuild: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	rc.start(n1)
	rc.waitRole(n1, RoleReplica, 2)
	ps, _ := rc.status(n2)
	eventually(t, 15*time.Second, "n1 to catch up with n2", func() (bool, string) {
		s, err := rc.status(n1)
		if err != nil {
			return false, err.Error()
		}
		return s.GetLast().GetLsn() >= ps.GetLast().GetLsn() && s.VisibleCommitId >= maxCommit(log.all()), fmt.Sprint(s.GetLast(), s.VisibleCommitId)
	})
	checkAcked(t, n1, log.all())
	gctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if r, err := n1.rpc().Get(gctx, &rpb.GetRequest{Key: []byte("orphan0")}); err != nil || r.Found {
		t.Fatalf("the never-acknowledged orphan record survived the rebuild: %v %v", r, err)
	}
	// Writes on a replica are refused with the holder's address.
	if _, err := n1.rpc().Put(gctx, &rpb.PutRequest{Key: []byte("x"), Value: []byte("y")}); ReasonOf(err) != ReasonNotPrimary ||
		InfoOf(err).GetMetadata()["address"] != n2.addr {
		t.Fatalf("put on a replica: %v", err)
	}
}
