// Package cluster assembles one authority server's consensus stack:
// hashicorp/raft with hashicorp/raft-wal as log store (raft-boltdb/v2 for
// data dirs made before wal/), raft-boltdb/v2 as stable store, a file
// snapshot store and a TCP (or injected) transport, all under one data
// directory, driving the fsm package's state machine.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/failpoint"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/internal/spillfile"
	"github.com/aerodb/authority/promotion"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
)

// Node is one member of the raft cluster with its state machine.
type Node struct {
	id        string
	raft      *raft.Raft
	fsm       *fsm.FSM
	stores    *stores
	logs      *checksumLogStore
	transport raft.Transport
	notify    chan bool
	cfg       Config
}

// Open creates or reopens a node from its data directory. A node with
// existing raft state rejoins its cluster from disk; a fresh one waits to be
// bootstrapped (Bootstrap) or added by the leader.
func Open(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: data dir: %w", err)
	}
	st, err := openStores(cfg)
	if err != nil {
		return nil, err
	}
	f := cfg.FSM
	if f == nil {
		f = fsm.New()
	}
	if !cfg.HistoryInMemory {
		if err := spillfile.Sweep(cfg.DataDir); err != nil {
			st.Close()
			return nil, fmt.Errorf("cluster: data dir: %w", err)
		}
		dir := cfg.DataDir
		f.SetSpill(func() (fsm.SpillFile, error) {
			file, err := spillfile.New(dir)
			if err != nil {
				return nil, err // not a typed nil in the interface
			}
			return file, nil
		})
	}
	n := &Node{id: cfg.NodeID, fsm: f, stores: st, logs: st.logs, notify: make(chan bool, 1), cfg: cfg}
	if err := n.start(); err != nil {
		st.Close()
		return nil, err
	}
	return n, nil
}

func (n *Node) start() error {
	cfg := n.cfg
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, cfg.SnapshotRetain, cfg.Logger.Named("snapshot"))
	if err != nil {
		return fmt.Errorf("cluster: snapshot store: %w", err)
	}
	n.transport = cfg.Transport
	if n.transport == nil {
		tc := &raft.NetworkTransportConfig{MaxPool: 3, Timeout: 10 * time.Second, Logger: cfg.Logger.Named("transport")}
		if len(cfg.RaftRoutes) > 0 {
			tc.ServerAddressProvider = routes(cfg.RaftRoutes)
		}
		layer, err := newStreamLayer(cfg.RaftAddr, cfg.TLS, cfg.ClusterID, cfg.RejectPeer)
		if err != nil {
			return fmt.Errorf("cluster: raft transport on %s: %w", cfg.RaftAddr, err)
		}
		tc.Stream = layer
		n.transport = raft.NewNetworkTransportWithConfig(tc)
	}
	n.transport = clampCommits(n.transport)
	logs, err := raft.NewLogCache(cfg.LogCacheSize, failpointLogStore{n.logs})
	if err != nil {
		return err
	}
	rf := &raftFSM{f: n.fsm, hooks: cfg.Hooks, path: n.logs.path, onCorrupt: cfg.OnCorruption, evidence: cfg.Evidence,
		onEvidenceError: func(index uint64, err error) { cfg.Logger.Warn("evidence store", "index", index, "error", err) }}
	var fsmOf raft.FSM = rf
	if cfg.ApplyOneByOne {
		fsmOf = oneByOne{rf}
	}
	r, err := raft.NewRaft(n.raftConfig(), fsmOf, logs, n.stores.stable, snaps, n.transport)
	if err != nil {
		closeTransport(n.transport)
		return fmt.Errorf("cluster: start raft: %w", err)
	}
	n.raft = r
	return nil
}

func (n *Node) raftConfig() *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = raft.ServerID(n.cfg.NodeID)
	c.Logger = n.cfg.Logger.Named("raft")
	c.HeartbeatTimeout = n.cfg.HeartbeatTimeout
	c.ElectionTimeout = n.cfg.ElectionTimeout
	c.LeaderLeaseTimeout = n.cfg.LeaderLeaseTimeout
	c.CommitTimeout = n.cfg.CommitTimeout
	c.MaxAppendEntries = n.cfg.MaxAppendEntries
	c.BatchApplyCh = n.cfg.BatchApplyCh
	c.PreVoteDisabled = n.cfg.PreVoteDisabled
	c.SnapshotThreshold = n.cfg.SnapshotThreshold
	c.SnapshotInterval = n.cfg.SnapshotInterval
	c.TrailingLogs = n.cfg.TrailingLogs
	c.NotifyCh = n.notify
	return c
}

// Bootstrap forms a new cluster from a peer list. It is a no-op on a node
// that already has raft state, so restarting with the same flags is safe.
func (n *Node) Bootstrap(peers []Peer) error {
	has, err := raft.HasExistingState(n.logs, n.stores.stable, mustSnapshots(n.cfg))
	if err != nil {
		return err
	}
	if has {
		return nil
	}
	servers := make([]raft.Server, len(peers))
	for i, p := range peers {
		servers[i] = raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Address)}
	}
	err = n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
	if errors.Is(err, raft.ErrCantBootstrap) {
		return nil
	}
	return err
}

func mustSnapshots(cfg Config) raft.SnapshotStore {
	s, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, cfg.SnapshotRetain, hclog.NewNullLogger())
	if err != nil {
		return raft.NewInmemSnapshotStore()
	}
	return s
}

// Peer names a voter for bootstrap.
type Peer struct{ ID, Address string }

// ID is this node's raft server id.
func (n *Node) ID() string { return n.id }

// ClusterID is the id every raft connection presents and checks.
func (n *Node) ClusterID() string { return n.cfg.ClusterID }

// Secure reports whether raft traffic runs over mutual TLS.
func (n *Node) Secure() bool { return n.cfg.TLS != nil }

// Address is this node's raft address.
func (n *Node) Address() string { return string(n.transport.LocalAddr()) }

// FSM gives read access to the replicated state applied on this node.
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// Raft exposes the raft instance for cluster administration (membership,
// leadership transfer, stats).
func (n *Node) Raft() *raft.Raft { return n.raft }

// LeadershipChanges delivers true when this node becomes leader and false
// when it stops being leader (latest value wins; buffered by one).
func (n *Node) LeadershipChanges() <-chan bool { return n.notify }

// IsLeader reports whether raft believes this node is leader right now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Term is the current raft term.
func (n *Node) Term() uint64 { return n.raft.CurrentTerm() }

// Leader returns the current leader's id and address, empty when unknown.
func (n *Node) Leader() (id, address string) {
	addr, sid := n.raft.LeaderWithID()
	return string(sid), string(addr)
}

// Propose replicates one command and waits until it is applied on this node.
// It implements promotion.Log.
//
// Errors: promotion.ErrNotLeader when this node is not the leader (nothing
// was proposed); promotion.ErrIndeterminate when the entry may or may not
// have committed (leadership lost or the wait timed out after proposing):
// resolve by retrying with the same request id or by reading the record.
func (n *Node) Propose(ctx context.Context, cmd *pb.Command) (*fsm.Result, error) {
	data, err := proto.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("cluster: encode command: %w", err)
	}
	f := n.raft.Apply(data, timeoutOf(ctx, n.cfg.ApplyTimeout))
	if err := wait(ctx, f); err != nil {
		return nil, err
	}
	res, ok := f.Response().(*fsm.Result)
	if !ok {
		return nil, fmt.Errorf("cluster: unexpected apply response %T", f.Response())
	}
	return res, nil
}

// Barrier waits until every entry committed before it is applied here. A
// new leader calls it before serving reads or renewals (DESIGN §5).
func (n *Node) Barrier(ctx context.Context) error {
	return wait(ctx, n.raft.Barrier(timeoutOf(ctx, n.cfg.ApplyTimeout)))
}

// wait waits for a raft future or the context, whichever ends first. raft's
// futures do not watch a context; a cancelled caller (a shutdown, a client
// that went away) must not stay blocked until raft's own timeout. An entry
// abandoned this way may still commit: ErrIndeterminate.
func wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return translate(err)
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", promotion.ErrIndeterminate, ctx.Err())
	}
}

// VerifyLeader confirms with a quorum that this node is still leader
// (linearizable reads).
func (n *Node) VerifyLeader(ctx context.Context) error {
	return translate(n.raft.VerifyLeader().Error())
}

func timeoutOf(ctx context.Context, def time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d > 0 {
			return d
		}
		return time.Millisecond
	}
	return def
}

// TranslateError maps raft's errors onto the sentinels callers branch on
// (promotion.ErrNotLeader, promotion.ErrIndeterminate); others pass through.
func TranslateError(err error) error { return translate(err) }

// translate maps raft's errors onto the sentinels callers branch on.
func translate(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %v", promotion.ErrNotLeader, err)
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrEnqueueTimeout),
		errors.Is(err, raft.ErrAbortedByRestore), errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %v", promotion.ErrIndeterminate, err)
	}
	return err
}

// Snapshot asks raft to take a snapshot now.
func (n *Node) Snapshot() error { return n.raft.Snapshot().Error() }

// Shutdown stops raft and closes the stores. Safe to call once.
func (n *Node) Shutdown() error {
	err := n.raft.Shutdown().Error()
	closeTransport(n.transport)
	return errors.Join(err, n.stores.Close())
}

func closeTransport(t raft.Transport) {
	if c, ok := t.(io.Closer); ok {
		c.Close()
	}
}

// raftFSM adapts fsm.FSM to raft.FSM. It is the one place raft's untyped
// Apply response is produced: always a *fsm.Result.
type raftFSM struct {
	f     *fsm.FSM
	hooks Hooks
	// evidence keeps the evidence of applied release transitions (nil: not
	// kept). Beside apply, never part of it: the decision was taken.
	evidence EvidenceKeeper
	// path and onCorrupt report an entry whose checksum fails right
	// before apply (checkBeforeApply).
	path            string
	onCorrupt       func(error)
	onEvidenceError func(index uint64, err error)
}

func (a *raftFSM) Apply(l *raft.Log) interface{} {
	if l.Type != raft.LogCommand {
		return nil
	}
	start := time.Now()
	res := a.apply(l)
	a.hooks.Applied(time.Since(start))
	return res
}

// ApplyBatch implements raft.BatchingFSM: raft hands over every entry of
// one commit (up to MaxAppendEntries) in one call. Each entry is still
// verified against its checksum and applied on its own, in log order,
// exactly as Apply would (same results, same state); what the batch saves
// is raft's per-entry dispatch and one clock read and metric sample per
// entry (the Applied hook gets the batch's mean per command entry).
func (a *raftFSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	start := time.Now()
	n := 0
	for i, l := range logs {
		if l.Type != raft.LogCommand {
			continue // configuration entries: raft keeps them itself
		}
		out[i] = a.apply(l)
		n++
	}
	if n > 0 {
		per := time.Since(start) / time.Duration(n)
		for range n {
			a.hooks.Applied(per)
		}
	}
	return out
}

// apply applies one command entry after verifying its checksum.
func (a *raftFSM) apply(l *raft.Log) *fsm.Result {
	a.checkBeforeApply(l)
	promo := failpoint.Enabled && isPromotion(l)
	if promo {
		failpoint.Eval(failpoint.FSMBeforeApplyPromote)
	}
	res := a.f.Apply(l.Index, l.Term, l.Data)
	if res != nil && res.Release != nil && a.evidence != nil {
		a.keepEvidence(l)
	}
	if promo {
		failpoint.Eval(failpoint.FSMAfterApplyPromote)
	}
	return res
}

// oneByOne is the adapter without ApplyBatch (Config.ApplyOneByOne).
// It names its adapter instead of embedding it: embedding would promote
// ApplyBatch.
type oneByOne struct{ a *raftFSM }

func (o oneByOne) Apply(l *raft.Log) interface{}       { return o.a.Apply(l) }
func (o oneByOne) Snapshot() (raft.FSMSnapshot, error) { return o.a.Snapshot() }
func (o oneByOne) Restore(rc io.ReadCloser) error      { return o.a.Restore(rc) }

// EvidenceKeeper stores the evidence of release decisions by digest
// (evidence.Store).
type EvidenceKeeper interface {
	Put(b []byte) (string, error)
}

// keepEvidence stores the evidence a release transition was decided on.
// A failure is reported and changes nothing: the state records the digests.
func (a *raftFSM) keepEvidence(l *raft.Log) {
	var cmd pb.Command
	if err := proto.Unmarshal(l.Data, &cmd); err != nil {
		return
	}
	for _, ev := range cmd.GetReleaseTransition().GetEvidence() {
		if _, err := a.evidence.Put(ev.GetEnvelope()); err != nil && a.onEvidenceError != nil {
			a.onEvidenceError(l.Index, err)
		}
	}
}

func (a *raftFSM) Snapshot() (raft.FSMSnapshot, error) {
	start := time.Now()
	c, err := a.f.Capture()
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{capture: c, start: start, hooks: a.hooks}, nil
}

func (a *raftFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	return a.f.Restore(rc)
}

// fsmSnapshot writes a point-in-time capture while entries keep applying.
type fsmSnapshot struct {
	capture *fsm.Capture
	start   time.Time
	hooks   Hooks
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := failpoint.Eval(failpoint.SnapshotBeforePersist); err != nil {
		sink.Cancel()
		return err
	}
	if _, err := s.capture.WriteTo(sink); err != nil {
		sink.Cancel()
		return err
	}
	err := sink.Close()
	s.hooks.Snapshotted(time.Since(s.start))
	return err
}

func (s *fsmSnapshot) Release() {}

// routes is a raft.ServerAddressProvider from a fixed map; a peer without a
// route makes raft fall back to the configured address.
type routes map[string]string

func (r routes) ServerAddr(id raft.ServerID) (raft.ServerAddress, error) {
	if a, ok := r[string(id)]; ok {
		return raft.ServerAddress(a), nil
	}
	return "", fmt.Errorf("no route for %s", id)
}
