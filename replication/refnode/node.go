package refnode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	rpb "github.com/aerodb/authority/api/refnode/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/replication"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Roles as reported by Status.
const (
	RoleStarting     = "starting"
	RolePrimary      = "primary"
	RoleReplica      = "replica"
	RoleSteppingDown = "stepping-down"
	RoleDiverged     = "diverged"
)

// Files in the data dir.
const (
	walFile      = "wal"
	epochFile    = "epoch"
	divergedFile = "DIVERGED"
)

// Node is one reference node. Its goroutines: the gRPC server (Run), the
// role loop (Run), and while primary the ack gate's committer and one
// shipper per peer, while replica the progress reporter and the divergence
// check; each role's goroutines stop when the role ends.
type Node struct {
	cfg   Config
	log   hclog.Logger
	wal   *WAL
	store *Store
	fence *replication.FenceGuard
	hooks testHooks
	lis   net.Listener
	ac    *client.Client

	mu             sync.Mutex
	role           string
	holder         string
	holderAddr     string
	primary        *primaryState
	reporter       *replication.Reporter
	inbound        *inboundStream
	lastCommit     uint64 // highest commit id in the WAL
	appliedLSN     uint64 // records up to here are applied to the store
	knownVisible   uint64 // replica read bound (the watermark's visible commit id)
	domainEpoch    uint64 // highest domain epoch read from the authority
	fencedRejects  uint64
	divergedReason string
	diverged       chan struct{}
	walChanged     chan struct{} // closed and replaced after every local flush
	peerConns      map[string]*grpc.ClientConn
}

// Open opens the node's data dir: the WAL (verified, torn tail
// truncated), the MVCC state replayed from it, and the fence. A node
// marked diverged returns an error wrapping ErrDiverged: it must be
// rebuilt. It does not listen or contact anyone yet.
func Open(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, err
	}
	if reason, err := os.ReadFile(filepath.Join(cfg.DataDir, divergedFile)); err == nil {
		return nil, fmt.Errorf("%w: %s", ErrDiverged, strings.TrimSpace(string(reason)))
	}
	w, rep, err := OpenWAL(filepath.Join(cfg.DataDir, walFile))
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger, wal: w, store: NewStore(), hooks: loadTestHooks(), role: RoleStarting,
		diverged: make(chan struct{}), walChanged: make(chan struct{}), peerConns: map[string]*grpc.ClientConn{}}
	if rep.TruncatedTail > 0 {
		n.log.Warn("truncated a torn wal tail", "bytes", rep.TruncatedTail)
	}
	var highest uint64
	for _, r := range w.Records(1, rep.Records) {
		n.store.Apply(r.CommitId, r.Key, r.Value)
		n.lastCommit, highest, n.appliedLSN = r.CommitId, max(highest, r.Epoch), r.Lsn
	}
	if b, err := os.ReadFile(filepath.Join(cfg.DataDir, epochFile)); err == nil {
		e, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if perr != nil {
			w.Close()
			return nil, fmt.Errorf("fence file: %w", perr)
		}
		highest = max(highest, e)
	}
	n.fence = replication.NewFenceGuard(highest, n.persistFence)
	n.log.Info("opened", "records", rep.Records, "last", w.Last().String(), "fence_epoch", highest)
	return n, nil
}

// persistFence writes the fence epoch durably (temp file, fsync, rename).
func (n *Node) persistFence(epoch uint64) error {
	return writeFileSync(filepath.Join(n.cfg.DataDir, epochFile), []byte(strconv.FormatUint(epoch, 10)+"\n"))
}

func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Run serves until ctx ends or the node diverges (an error wrapping
// ErrDiverged, with the rebuild command in its message).
func (n *Node) Run(ctx context.Context) error {
	defer n.wal.Close()
	lis, err := net.Listen("tcp", n.cfg.Listen)
	if err != nil {
		return err
	}
	// The node's own listener (Put/Get, WAL shipping between refnodes) is
	// the database's traffic, not an authority listener: plaintext in this
	// reference node (see peerConn).
	srv := grpc.NewServer()
	rpb.RegisterRefNodeServer(srv, &service{n: n})
	go srv.Serve(lis)
	defer srv.Stop()
	ac, err := client.DialConfig(ctx, client.Config{Endpoints: n.cfg.Authority, Credentials: n.cfg.Credentials})
	if err != nil {
		return fmt.Errorf("dial authority: %w", err)
	}
	defer ac.Close()
	n.ac = ac
	defer n.closePeers()
	if err := n.bootstrap(ctx); err != nil {
		return err
	}
	for ctx.Err() == nil {
		d, err := n.readDomain(ctx)
		if err != nil {
			break
		}
		n.observeDomain(d)
		if f := d.GetFence(); f.GetEpoch() > d.GetEpoch() {
			// replica-quorum: a promotion was prepared; every node stops
			// accepting WAL below it, the holder included.
			if err := n.raiseFence(f); err != nil {
				n.log.Error("fence", "error", err)
			}
		}
		if d.GetHolder() == n.cfg.ID && !d.GetReleased() && n.fence.Highest() <= d.GetEpoch() {
			err = n.runPrimary(ctx, d)
		} else {
			err = n.runReplica(ctx, d)
		}
		if err != nil && ctx.Err() == nil {
			return err
		}
	}
	return nil
}

// bootstrap creates the domain (when asked and it does not exist),
// registers this node as a member with its address (unless it already is),
// and assigns the first holder (only the node named InitialPrimary, only
// at epoch 0). These are administrative calls: over mutual TLS a node's
// certificate (node:<ID>) may not make them, so each is made only when
// needed, and a refusal says what an operator must do (see Provision).
func (n *Node) bootstrap(ctx context.Context) error {
	if n.cfg.CreateDomain {
		if _, err := n.ac.GetDomain(ctx, n.cfg.Domain); errors.Is(err, client.ErrNotFound) {
			policy := DomainPolicy(n.cfg.LeaseTTL, n.cfg.ReportMaxAge)
			SetDurability(policy, n.cfg.Durability, 1, n.cfg.WatermarkInterval)
			_, err := n.ac.CreateDomain(ctx, n.cfg.Domain, pb.DomainKind_DOMAIN_KIND_AERODB, policy)
			if err != nil && !errors.Is(err, client.ErrAlreadyExists) {
				return fmt.Errorf("create domain %q: %w", n.cfg.Domain, n.needsOperator(err,
					fmt.Sprintf("authorityctl domain create %s --kind aerodb", n.cfg.Domain)))
			}
		}
	}
	d, err := n.readDomain(ctx)
	if err != nil {
		return err
	}
	if m := memberOf(d, n.cfg.ID); m == nil || m.GetAddress() != n.cfg.Advertise {
		d, err = n.ac.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: n.cfg.Domain, MemberId: n.cfg.ID,
			Address: n.cfg.Advertise, State: pb.MemberState_MEMBER_STATE_ACTIVE})
		if err != nil {
			return fmt.Errorf("register member %q at %s: %w", n.cfg.ID, n.cfg.Advertise, n.needsOperator(err,
				fmt.Sprintf("authorityctl member register %s %s --address %s", n.cfg.Domain, n.cfg.ID, n.cfg.Advertise)))
		}
	}
	if d.GetEpoch() == 0 && n.cfg.InitialPrimary == n.cfg.ID {
		if _, err := n.ac.AssignInitial(ctx, n.cfg.Domain, n.cfg.ID); err != nil && !errors.Is(err, client.ErrFailedPrecondition) {
			return fmt.Errorf("assign initial holder: %w", n.needsOperator(err, fmt.Sprintf("authorityctl assign %s %s", n.cfg.Domain, n.cfg.ID)))
		}
		n.log.Info("assigned as the first holder")
	}
	return nil
}

// needsOperator adds, to an administrative call the authority refused for
// this node's identity, the command an operator runs instead.
func (n *Node) needsOperator(err error, command string) error {
	if !errors.Is(err, client.ErrPermissionDenied) {
		return err
	}
	return fmt.Errorf("%w (node:%s may act only as its own holder; an operator runs `%s`)", err, n.cfg.ID, command)
}

// readDomain reads the domain (linearizable), retrying until it exists
// or ctx ends.
func (n *Node) readDomain(ctx context.Context) (*pb.Domain, error) {
	for {
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		d, err := n.ac.GetDomain(rctx, n.cfg.Domain)
		cancel()
		if err == nil {
			return d, nil
		}
		n.log.Debug("read domain", "error", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(n.cfg.PollInterval):
		}
	}
}

// observeDomain raises the fence to the domain's epoch and remembers the
// holder and the watermark's visible commit id.
func (n *Node) observeDomain(d *pb.Domain) {
	if _, err := n.fence.Observe(d.GetEpoch()); err != nil {
		n.log.Error("fence", "error", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.domainEpoch = max(n.domainEpoch, d.GetEpoch())
	n.holder = d.GetHolder()
	n.holderAddr = memberOf(d, d.GetHolder()).GetAddress()
	if wm := d.GetWatermark(); wm != nil {
		n.knownVisible = max(n.knownVisible, wm.GetVisibleCommitId())
	}
	if in := n.inbound; in != nil && in.epoch < d.GetEpoch() {
		in.cancel() // a stream from a deposed primary
	}
}

func memberOf(d *pb.Domain, id string) *pb.Member {
	for _, m := range d.GetMembers() {
		if m.GetId() == id {
			return m
		}
	}
	return nil
}

// markDiverged records on disk that this node's history is not a prefix
// of the holder's: from now on it serves nothing, and a restart refuses
// until `refnode rebuild`.
func (n *Node) markDiverged(reason string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.role == RoleDiverged {
		return
	}
	full := fmt.Sprintf("%s; run `refnode rebuild --from %s --data-dir %s`", reason, orUnknown(n.holderAddr), n.cfg.DataDir)
	if err := writeFileSync(filepath.Join(n.cfg.DataDir, divergedFile), []byte(full+"\n")); err != nil {
		n.log.Error("cannot persist the diverged marker", "error", err)
	}
	n.role, n.divergedReason = RoleDiverged, full
	if n.inbound != nil {
		n.inbound.cancel()
	}
	close(n.diverged)
	n.log.Error("DIVERGED: " + full)
}

func orUnknown(s string) string {
	if s == "" {
		return "PRIMARY_ADDR"
	}
	return s
}

// notifyFlushed wakes the shippers after a local flush.
func (n *Node) notifyFlushed() {
	n.mu.Lock()
	close(n.walChanged)
	n.walChanged = make(chan struct{})
	n.mu.Unlock()
}

// waitFlushed blocks until the WAL is flushed beyond lsn or ctx ends.
func (n *Node) waitFlushed(ctx context.Context, lsn uint64) error {
	for {
		n.mu.Lock()
		ch := n.walChanged
		n.mu.Unlock()
		if n.wal.Flushed().LSN >= lsn {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// peerConn is a connection to another refnode. The refnode-to-refnode
// replication protocol (WAL shipping, status, rebuild) is the database's
// own traffic, not an authority listener, and stays plaintext in this
// reference node: only the connections to the authority (Config.Credentials)
// are mutual TLS.
func (n *Node) peerConn(addr string) (*grpc.ClientConn, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if c := n.peerConns[addr]; c != nil {
		return c, nil
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	n.peerConns[addr] = c
	return c, nil
}

func (n *Node) closePeers() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.peerConns {
		c.Close()
	}
	n.peerConns = map[string]*grpc.ClientConn{}
}

// status snapshots the node for Status.
func (n *Node) status() *rpb.StatusResponse {
	n.mu.Lock()
	defer n.mu.Unlock()
	last := n.wal.Flushed()
	applied := n.store.Applied()
	st := &rpb.StatusResponse{Id: n.cfg.ID, Domain: n.cfg.Domain, Role: n.role, Epoch: n.fence.Highest(),
		Last: posProto(last), AppliedCommitId: applied, FencedRejections: n.fencedRejects, Holder: n.holder,
		Detail: n.divergedReason}
	switch n.role {
	case RolePrimary:
		ps := n.primary
		d, vis := ps.gate.Durable()
		st.DurableLsn, st.VisibleCommitId, st.ReadSafe = d.LSN, vis, true
		st.Durability, st.WatermarkLsn = durabilityName(ps.mode), d.LSN
		if q, ok := ps.gate.(*replication.QuorumGate); ok {
			wm, _ := q.Watermark()
			st.WatermarkLsn = wm.LSN
		}
	case RoleReplica:
		st.VisibleCommitId = min(applied, n.knownVisible)
		st.ReadSafe = applied >= n.flushedCommitLocked()
	}
	return st
}

func (n *Node) flushedCommitLocked() uint64 {
	if r := n.wal.Record(n.wal.Flushed().LSN); r != nil {
		return r.CommitId
	}
	return 0
}

func posProto(p replication.Position) *rpb.Position {
	return &rpb.Position{Epoch: p.Epoch, Lsn: p.LSN, Hash: p.Hash}
}

func posOf(p *rpb.Position) replication.Position {
	return replication.Position{Epoch: p.GetEpoch(), LSN: p.GetLsn(), Hash: p.GetHash()}
}

// durabilityName is the mode as the Status and the flags spell it.
func durabilityName(d pb.Durability) string {
	if d == pb.Durability_DURABILITY_REPLICA_QUORUM {
		return "replica-quorum"
	}
	return "authority-gated"
}
