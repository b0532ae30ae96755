package cluster

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/promotion"
	"github.com/aerodb/authority/validator"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
)

// manualClock is the services' clock: lease expiry is driven by the test,
// never by waiting.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// member is one server of the in-process cluster: a real raft node with
// its wal/ and raft.db in a temp dir, its service and its leadership goroutine.
type member struct {
	node   *Node
	svc    *promotion.Service
	cancel context.CancelFunc
	done   chan struct{}
}

type testCluster struct {
	t       *testing.T
	dirs    []string
	members []*member // nil when stopped
	clock   *manualClock
	tune    func(*Config) // optional: adjusts every server's config
}

func nodeID(i int) string { return fmt.Sprintf("s%d", i+1) }

// newTestCluster starts n servers on raft's in-memory transport (so a
// restarted server keeps its address) and bootstraps them.
func newTestCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	return newTunedTestCluster(t, n, nil)
}

func newTunedTestCluster(t *testing.T, n int, tune func(*Config)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, clock: &manualClock{now: time.Unix(1_800_000_000, 0)}, tune: tune}
	root := t.TempDir()
	for i := range n {
		c.dirs = append(c.dirs, filepath.Join(root, nodeID(i)))
	}
	c.members = make([]*member, n)
	c.startAll()
	peers := make([]Peer, n)
	for i := range n {
		peers[i] = Peer{ID: nodeID(i), Address: nodeID(i)}
	}
	if err := c.members[0].node.Bootstrap(peers); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stopAll)
	return c
}

func (c *testCluster) startAll() {
	transports := make([]*raft.InmemTransport, len(c.dirs))
	for i := range c.dirs {
		_, transports[i] = raft.NewInmemTransport(raft.ServerAddress(nodeID(i)))
	}
	for i, a := range transports {
		for j, b := range transports {
			if i != j {
				a.Connect(b.LocalAddr(), b)
			}
		}
	}
	for i := range c.dirs {
		c.start(i, transports[i])
	}
}

func (c *testCluster) start(i int, tr raft.Transport) {
	c.t.Helper()
	cfg := Config{
		NodeID: nodeID(i), DataDir: c.dirs[i], Transport: tr,
		HeartbeatTimeout: time.Second, ElectionTimeout: time.Second, // a starved leader keeps its term on a loaded machine
		LeaderLeaseTimeout: 500 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
	}
	if c.tune != nil {
		c.tune(&cfg)
	}
	n, err := Open(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	svc := promotion.NewService(promotion.Config{Log: n, FSM: n.FSM(), Clock: c.clock})
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{node: n, svc: svc, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		RunLeadership(ctx, n, svc, nil)
	}()
	c.members[i] = m
}

func (c *testCluster) stop(i int) {
	m := c.members[i]
	if m == nil {
		return
	}
	m.cancel()
	<-m.done
	if err := m.node.Shutdown(); err != nil {
		c.t.Errorf("shutdown %s: %v", nodeID(i), err)
	}
	c.members[i] = nil
}

func (c *testCluster) stopAll() {
	for i := range c.members {
		c.stop(i)
	}
}

// eventually polls cond until it holds or 10 s pass. It waits for a
// condition, never for a duration.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// leader waits for a ready leader (barrier done) and returns it.
func (c *testCluster) leader() *member {
	c.t.Helper()
	var l *member
	eventually(c.t, "a ready leader", func() bool {
		for _, m := range c.members {
			if m != nil && m.svc.Ready() && m.node.IsLeader() {
				l = m
				return true
			}
		}
		return false
	})
	return l
}

// converge waits until every running node applied the leader's last entry
// and checks their state hashes are equal.
func (c *testCluster) converge() [32]byte {
	c.t.Helper()
	l := c.leader()
	if err := l.node.Barrier(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	want := l.node.FSM().LastIndex()
	var hash [32]byte
	for i, m := range c.members {
		if m == nil {
			continue
		}
		eventually(c.t, nodeID(i)+" catching up", func() bool { return m.node.FSM().LastIndex() >= want })
		h, err := m.node.FSM().StateHash()
		if err != nil {
			c.t.Fatal(err)
		}
		if m != c.members[0] && hash != ([32]byte{}) && h != hash {
			c.t.Fatalf("%s state hash differs", nodeID(i))
		}
		hash = h
	}
	return hash
}

// check fails the test on an error and discards the value:
// check(t)(svc.CreateDomain(...)).
func check(t *testing.T) func(any, error) {
	return func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}

var hash100 = []byte{0xab, 0xcd, 0x01, 0x00}

// setup creates aerodb domain db1 with members n1..n3, n1 holding epoch 1,
// a watermark at lsn 100, and n2's and n3's reports containing it.
func setup(t *testing.T, svc *promotion.Service) {
	ctx := context.Background()
	check(t)(svc.CreateDomain(ctx, "db1", pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: 2000, Durability: pb.Durability_DURABILITY_AUTHORITY_GATED}))
	for _, id := range []string{"n1", "n2", "n3"} {
		check(t)(svc.RegisterMember(ctx, &pb.RegisterMember{Domain: "db1", MemberId: id}))
	}
	check(t)(svc.AssignInitial(ctx, "db1", "n1"))
	errs, err := svc.AdvanceWatermark(ctx, []*pb.WatermarkAdvance{{Domain: "db1", Epoch: 1, Holder: "n1", Lsn: 100, Hash: hash100, VisibleCommitId: 40}})
	if err != nil || errs[0] != nil {
		t.Fatal(err, errs)
	}
	for _, id := range []string{"n2", "n3"} {
		check(t)(svc.ReportProgress("db1", &pb.ProgressReport{MemberId: id, Epoch: 1, FlushedLsn: 100, FlushedHash: hash100,
			WatermarkLsn: 100, HashAtWatermark: hash100, AppliedCommitId: 40, ReadSafe: true, State: pb.ReplicaState_REPLICA_STATE_STREAMING}))
	}
}

func promoteReq(id, candidate string, expected uint64) *pb.PromotionRequest {
	return &pb.PromotionRequest{RequestId: id, Domain: "db1", Candidate: candidate, ExpectedEpoch: &expected, Reason: "primary n1 lost"}
}

// Acceptance: a promotion commits exactly once and bumps the epoch by one;
// the same request id retried returns the same outcome; a stale expected
// epoch is denied; after the leader is shut down and every node restarted
// from its data dir, all report the same epoch and holder.
func TestThreeNodePromotionSurvivesRestart(t *testing.T) {
	c := newTestCluster(t, 3)
	ctx := context.Background()
	l := c.leader()
	setup(t, l.svc)

	// While n1's lease is valid on the leader, the promotion is denied.
	_, err := l.svc.Promote(ctx, promoteReq("early", "n2", 1))
	var d *promotion.DeniedError
	if !errors.As(err, &d) || d.Reason != validator.ReasonPrimaryStillActive {
		t.Fatalf("promotion during a valid lease: %v", err)
	}

	c.clock.Advance(2 * time.Second) // n1's lease runs out on the leader
	out, err := l.svc.Promote(ctx, promoteReq("fail-over-1", "n2", 1))
	if err != nil {
		t.Fatal(err)
	}
	if out.Record.EpochBefore != 1 || out.Record.EpochAfter != 2 || out.Record.HolderAfter != "n2" {
		t.Fatalf("record = %v", out.Record)
	}
	last := l.node.Raft().LastIndex()
	again, err := l.svc.Promote(ctx, promoteReq("fail-over-1", "n2", 1))
	if err != nil || !again.Duplicate || !proto.Equal(again.Record, out.Record) {
		t.Fatalf("retry: %+v, %v", again, err)
	}
	if got := l.node.Raft().LastIndex(); got != last {
		t.Fatalf("retry appended %d log entries", got-last)
	}
	_, err = l.svc.Promote(ctx, promoteReq("late", "n3", 1))
	if !errors.As(err, &d) || d.Reason != validator.ReasonEpochStale {
		t.Fatalf("stale expected epoch: %v", err)
	}
	c.converge()
	before, _ := l.node.FSM().Domain("db1")
	for i, m := range c.members {
		dom, _ := m.node.FSM().Domain("db1")
		if dom.Epoch != 2 || dom.Holder != "n2" || dom.AllowedCount != 1 {
			t.Fatalf("%s: epoch %d holder %s allowed %d", nodeID(i), dom.Epoch, dom.Holder, dom.AllowedCount)
		}
	}

	// Shut the leader down; the other two elect a new one.
	for i, m := range c.members {
		if m == l {
			c.stop(i)
		}
	}
	nl := c.leader()
	if nl == l {
		t.Fatal("old leader still leads")
	}
	// Restart every node from its data dir.
	c.stopAll()
	c.startAll()
	c.leader()
	c.converge() // every node agrees on one state hash
	// The domain is exactly as before (the event log has grown: each new
	// leader notes its leadership).
	if after, _ := c.leader().node.FSM().Domain("db1"); !proto.Equal(after, before) {
		t.Fatalf("domain after restart differs:\n%v\nvs\n%v", after, before)
	}
	for i, m := range c.members {
		a, _ := m.node.FSM().AuthorityOf("db1")
		if a.Epoch != 2 || a.Holder != "n2" {
			t.Fatalf("%s after restart: epoch %d holder %s", nodeID(i), a.Epoch, a.Holder)
		}
		rec, ok := m.node.FSM().Attempt("db1", "fail-over-1")
		if !ok || !proto.Equal(rec, out.Record) {
			t.Fatalf("%s lost the attempt record", nodeID(i))
		}
	}
}

// Acceptance: fencing across the real log: after a promotion the old
// holder's watermark advance and renewal are rejected on the new leader too.
func TestFencingAcrossLeaderChange(t *testing.T) {
	c := newTestCluster(t, 3)
	ctx := context.Background()
	l := c.leader()
	setup(t, l.svc)
	c.clock.Advance(2 * time.Second)
	check(t)(l.svc.Promote(ctx, promoteReq("p1", "n2", 1)))
	if err := l.node.Raft().LeadershipTransfer().Error(); err != nil {
		t.Fatal(err)
	}
	var nl *member
	eventually(t, "a new ready leader", func() bool {
		for _, m := range c.members {
			if m != l && m.svc.Ready() && m.node.IsLeader() {
				nl = m
				return true
			}
		}
		return false
	})
	errs, err := nl.svc.AdvanceWatermark(ctx, []*pb.WatermarkAdvance{{Domain: "db1", Epoch: 1, Holder: "n1", Lsn: 101, Hash: []byte{1}}})
	if err != nil || !errors.Is(errs[0], fsm.ErrFenced) {
		t.Fatalf("old holder's advance on the new leader: %v", errs[0])
	}
	if _, err := nl.svc.Renew("db1", "n1", 1); !errors.Is(err, promotion.ErrFenced) {
		t.Fatalf("old holder's renewal on the new leader: %v", err)
	}
	// The new leader reset n2's lease to a full TTL; n2 renews.
	if _, err := nl.svc.Renew("db1", "n2", 2); err != nil {
		t.Fatalf("new holder's renewal: %v", err)
	}
	c.converge()
}

// Writes on a follower are refused with ErrNotLeader and change nothing.
func TestFollowerRefusesWrites(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	setup(t, l.svc)
	for _, m := range c.members {
		if m == l {
			continue
		}
		if _, err := m.svc.Promote(context.Background(), promoteReq("f", "n2", 1)); !errors.Is(err, promotion.ErrNotLeader) {
			t.Fatalf("promote on a follower: %v", err)
		}
		if _, err := m.node.Propose(context.Background(), &pb.Command{}); !errors.Is(err, promotion.ErrNotLeader) {
			t.Fatalf("propose on a follower: %v", err)
		}
	}
	c.converge()
}
