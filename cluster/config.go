package cluster

import (
	"errors"
	"fmt"
	"time"

	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/tlsfiles"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// Config of one node. Zero durations take the defaults below.
type Config struct {
	// NodeID is the raft server id; stable across restarts.
	NodeID string
	// DataDir holds raft.db (stable store, bbolt), wal/ (the log,
	// raft-wal; in raft.db for data dirs made before wal/ existed) and
	// snapshots/.
	DataDir string
	// LogStore picks where a new data dir keeps its log: LogStoreAuto
	// (wal/), LogStoreWAL or LogStoreBolt. An existing data dir keeps its
	// own; naming another one is an error.
	LogStore string
	// WALSegmentSize is the size of one wal/ segment file (default
	// DefaultWALSegmentSize).
	WALSegmentSize int
	// HistoryInMemory keeps the FSM's whole attempt history in the heap.
	// By default its cold segments are spilled to unlinked files in the
	// data dir (fsm/spill.go), which the server rebuilds at every start.
	HistoryInMemory bool
	// RaftAddr is the TCP bind/advertise address for raft traffic
	// (ignored when Transport is set).
	RaftAddr string
	// Transport overrides the TCP transport (tests use raft's in-memory one).
	Transport raft.Transport
	Logger    hclog.Logger
	// RaftRoutes overrides where this node dials each peer's raft traffic
	// (server id → address), e.g. through a per-link proxy that a fault
	// test can hold or reset to partition exactly one direction of one link.
	// Peers not listed are dialled at their configured address.
	RaftRoutes map[string]string
	// TLS secures raft traffic (mutual TLS 1.3, server identities only);
	// nil runs it in plaintext (authorityd --insecure).
	TLS *tlsfiles.Source
	// ClusterID is presented and checked on every raft connection: a peer
	// of another cluster is refused. authorityd binds it to the data dir
	// (BindDataDir).
	ClusterID string
	// RejectPeer is told about every refused raft connection (the server
	// logs it, rate-limited).
	RejectPeer func(peer string, err error)
	// FSM is the state machine to drive; nil creates a new one.
	FSM *fsm.FSM
	// Hooks observe apply and snapshot durations (metrics); nil for none.
	Hooks Hooks
	// OnCorruption is called (once) when a log entry read back from
	// raft.db fails its checksum, before the read returns an error: the
	// entry is never applied. The server must stop there (raft panics on a
	// log it cannot read): authorityd logs the one-line *DamageError and
	// exits with status 3. Nil leaves it to raft.
	OnCorruption func(error)
	// Evidence keeps the evidence of applied release transitions by digest
	// (evidence.Store under the data dir); nil keeps none.
	Evidence EvidenceKeeper

	// HeartbeatTimeout is raft's follower timeout: a follower that hears no
	// leader for this long starts an election (raft's name is misleading).
	HeartbeatTimeout time.Duration
	// ElectionTimeout bounds a candidate's wait for votes.
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout: a leader that cannot reach a quorum for this long
	// steps down.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout: how long an idle leader waits before sending an
	// empty AppendEntries that carries its commit index to followers.
	CommitTimeout time.Duration
	// PreVoteDisabled turns off raft's pre-vote (on by default in
	// hashicorp/raft v1.7: a partitioned server that rejoins does not
	// depose a healthy leader with a higher term).
	PreVoteDisabled bool

	// Throughput tuning (docs/OPERATIONS.md, "Raft tuning"); zero values
	// take the measured defaults.
	//
	// MaxAppendEntries bounds the entries of one AppendEntries RPC and
	// of one leader group commit (raft: 1..1024).
	MaxAppendEntries int
	// BatchApplyCh is raft's option of that name: proposals hand over to
	// the leader loop through a buffer of MaxAppendEntries instead of one
	// at a time. Off (raft's default): measured no gain, as raft's leader
	// loop already takes every waiting proposal into one group commit.
	BatchApplyCh bool
	// LogCacheSize is the number of recent entries raft keeps in memory
	// (replication and apply read them without touching raft.db).
	LogCacheSize int
	// ApplyOneByOne hides the FSM adapter's ApplyBatch from raft, so raft
	// applies committed entries one call each (for A/B measurement).
	ApplyOneByOne bool
	// SnapshotThreshold is the number of new log entries that triggers a
	// snapshot; SnapshotInterval how often raft checks.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	// TrailingLogs kept after a snapshot, so slow followers catch up from
	// the log instead of a snapshot install.
	TrailingLogs   uint64
	SnapshotRetain int
	// ApplyTimeout bounds a proposal when the caller's context has no deadline.
	ApplyTimeout time.Duration
}

// Validate returns every problem at once; it never mutates or logs.
func (c Config) Validate() error {
	var errs []error
	if c.NodeID == "" {
		errs = append(errs, errors.New("cluster: node id is empty"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("cluster: data dir is empty"))
	}
	if c.Transport == nil && c.RaftAddr == "" {
		errs = append(errs, errors.New("cluster: raft address is empty"))
	}
	if c.HeartbeatTimeout != 0 && c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		errs = append(errs, fmt.Errorf("cluster: leader lease timeout %v exceeds heartbeat timeout %v", c.LeaderLeaseTimeout, c.HeartbeatTimeout))
	}
	if c.MaxAppendEntries < 0 || c.MaxAppendEntries > 1024 {
		errs = append(errs, fmt.Errorf("cluster: max append entries %d: want 1..1024", c.MaxAppendEntries))
	}
	if c.LogStore != LogStoreAuto && c.LogStore != LogStoreWAL && c.LogStore != LogStoreBolt {
		errs = append(errs, fmt.Errorf("cluster: log store %q: want %q, %q or empty", clipLine(c.LogStore), LogStoreWAL, LogStoreBolt))
	}
	if c.WALSegmentSize != 0 && (c.WALSegmentSize < 1<<20 || c.WALSegmentSize > 1<<30) {
		errs = append(errs, fmt.Errorf("cluster: wal segment size %d: want 1 MiB..1 GiB", c.WALSegmentSize))
	}
	if c.LogCacheSize < 0 || c.LogCacheSize > 1<<16 {
		errs = append(errs, fmt.Errorf("cluster: log cache size %d: want 1..65536", c.LogCacheSize))
	}
	if c.ElectionTimeout != 0 && c.HeartbeatTimeout != 0 && c.ElectionTimeout < c.HeartbeatTimeout {
		errs = append(errs, fmt.Errorf("cluster: election timeout %v is below heartbeat timeout %v", c.ElectionTimeout, c.HeartbeatTimeout))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	def := raft.DefaultConfig()
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.Hooks == nil {
		c.Hooks = noHooks{}
	}
	c.HeartbeatTimeout = or(c.HeartbeatTimeout, def.HeartbeatTimeout)
	c.ElectionTimeout = or(c.ElectionTimeout, def.ElectionTimeout)
	c.LeaderLeaseTimeout = or(c.LeaderLeaseTimeout, def.LeaderLeaseTimeout)
	c.CommitTimeout = or(c.CommitTimeout, DefaultCommitTimeout)
	c.SnapshotInterval = or(c.SnapshotInterval, def.SnapshotInterval)
	c.ApplyTimeout = or(c.ApplyTimeout, 10*time.Second)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = def.SnapshotThreshold
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = def.TrailingLogs
	}
	if c.MaxAppendEntries == 0 {
		c.MaxAppendEntries = DefaultMaxAppendEntries
	}
	if c.LogCacheSize == 0 {
		c.LogCacheSize = DefaultLogCacheSize
	}
	if c.SnapshotRetain == 0 {
		c.SnapshotRetain = 2
	}
	return c
}

// Measured defaults of the throughput settings (docs/OPERATIONS.md).
const (
	DefaultMaxAppendEntries = 64
	DefaultLogCacheSize     = 512
	DefaultCommitTimeout    = 50 * time.Millisecond
)

func or(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

// Hooks observe the node's apply and snapshot work.
type Hooks interface {
	Applied(time.Duration)
	Snapshotted(time.Duration)
}

type noHooks struct{}

func (noHooks) Applied(time.Duration)     {}
func (noHooks) Snapshotted(time.Duration) {}
