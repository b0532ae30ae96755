// Package workload runs the logical clients of a fault-injection run: each
// is sequential, gives every write a unique request id, bounds every
// operation by a deadline and records invoke / ok / fail / info into the
// run's history. Clients talk to the servers through raw gRPC stubs (no
// client-library retries), so a timeout or reset after send is recorded as
// info (unknown), and the client then continues under a new process id and
// a new holder name (so the checker can resolve the unknown op by holder
// against the nodes' logs).
//
// Domains: lock domains take read, acquire (compare-and-set on the epoch
// last read) and release of the client's own grant; aerodb domains take
// read and promote (compare-and-set on the epoch last read — or, one time
// in four, on an older epoch the client saw, as a client with a stale view
// would — a random member as candidate, a unique request id; every
// decision is a committed record). An aerodb domain's Primary client acts
// as its current holder: it reads (epoch, holder, watermark) and advances
// the watermark by one lsn at that epoch, fenced by the epoch like a real
// primary's acknowledgements. A reporter sends every member's replica
// progress (holding the domain's current watermark, at the current epoch)
// to the leader every 100 ms, so a promotion is allowed whenever the
// holder's lease has expired on the leader and its compare-and-set holds.
//
// Identities (Config.Creds gives each its mutual-TLS credentials): a lock
// client acts, and reads, as node:<its holder name> (a new certificate for
// every new process); promotion clients are the operator; the primary
// reads as the reader and advances (or re-acquires) as node:<the holder it
// read>; the reporter reports each member's progress as node:<member>;
// read-only clients are the reader.
package workload

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/jepsen-like/history"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// The watermark of the aerodb domains (the runner advances it once): every
// member reports a WAL that contains it.
const (
	WatermarkLsn    = 100
	VisibleCommitID = 7
)

// WatermarkHash is the chain hash at WatermarkLsn.
var WatermarkHash = []byte{0xca, 0xfe, 0x01, 0x00}

// Node is one server's gRPC endpoint.
type Node struct {
	ID   string
	Addr string
}

// Domain a workload drives.
type Domain struct {
	Name    string
	Kind    pb.DomainKind
	Members []string // aerodb: promotion candidates
	Clients int      // logical clients (≤ 8)
	// ReadOnly clients only read (a domain other processes write, e.g.
	// the agents' lock).
	ReadOnly bool
	// Primary adds a client advancing an aerodb domain's watermark as its
	// current holder.
	Primary bool
	// Quorum (K > 0) makes the domain replica-quorum: its database is
	// simulated (quorum.go) — a primary acknowledging writes K replicas
	// hold, and a reporter carrying fences — instead of Primary and the
	// watermark reporter.
	Quorum int
	// PromoteEvery, if set, spaces each promotion client's promotions by at
	// least this much (it reads in between).
	PromoteEvery time.Duration
}

// Config of a workload.
type Config struct {
	Nodes     []Node
	Domains   []Domain
	History   *history.Writer
	Seed      uint64
	OpTimeout time.Duration // per-op deadline (default 1 s)
	Rate      time.Duration // pause between a client's ops (default 20 ms)
	// Creds gives an identity's transport credentials (nil, or a nil
	// result: plaintext, for --insecure servers).
	Creds func(identity.Identity) credentials.TransportCredentials
	// Operator promotes; Reader reads the domains its client does not act
	// on (defaults operator:jepsen and reader:jepsen).
	Operator, Reader identity.Identity
	// StaleOneIn: a promotion uses an older epoch the client saw (a stale
	// view, which compare-and-set must deny) once in this many (default 4).
	StaleOneIn int
	// DBMutant names a negative control of the simulated database (only
	// with the jepsen_mutants build tag; "" none).
	DBMutant string
}

// Workload is a running workload.
type Workload struct {
	cfg     Config
	mu      sync.Mutex
	shared  map[identity.Identity][]*grpc.ClientConn // one per node, by identity
	nextPID atomic.Int64
	leader  atomic.Int64 // index of the node believed to lead
	wg      sync.WaitGroup
	cancel  context.CancelFunc
	OKs     atomic.Int64
	// stalled: a Primary domain's client does nothing until this
	// (UnixNano; StallPrimary).
	stalled map[string]*atomic.Int64
	// quorum are the replica-quorum domains' simulated databases.
	quorum map[string]*quorumDB
}

// StallPrimary makes the domain's Primary client (its holder) do nothing
// for d — no reads, no advances, no renewals — as a primary that hangs
// would: its lease expires on the leader. Unknown domains are ignored.
func (w *Workload) StallPrimary(domain string, d time.Duration) {
	if s := w.stalled[domain]; s != nil {
		s.Store(time.Now().Add(d).UnixNano())
	}
}

// promoteEveryRead is how often a client of a Domain.PromoteEvery domain
// reads between its promotions.
const promoteEveryRead = 250 * time.Millisecond

// Start launches every logical client.
func Start(cfg Config) (*Workload, error) {
	if cfg.StaleOneIn <= 0 {
		cfg.StaleOneIn = 4
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = time.Second
	}
	if cfg.Rate <= 0 {
		cfg.Rate = 20 * time.Millisecond
	}
	if cfg.Operator.IsZero() {
		cfg.Operator = identity.Identity{Role: identity.Operator, Name: "jepsen"}
	}
	if cfg.Reader.IsZero() {
		cfg.Reader = identity.Identity{Role: identity.Reader, Name: "jepsen"}
	}
	mutant, ok := dbMutants[cfg.DBMutant]
	if !ok && cfg.DBMutant != "" {
		return nil, fmt.Errorf("workload: no database mutant %q in this build (build tag jepsen_mutants)", cfg.DBMutant)
	}
	w := &Workload{cfg: cfg, shared: map[identity.Identity][]*grpc.ClientConn{}, stalled: map[string]*atomic.Int64{},
		quorum: map[string]*quorumDB{}}
	for _, d := range cfg.Domains {
		if d.Primary {
			w.stalled[d.Name] = new(atomic.Int64)
		}
	}
	// Fail early on credentials that cannot be had.
	if _, err := w.sharedConns(cfg.Reader); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	for di, d := range cfg.Domains {
		switch {
		case d.Kind == pb.DomainKind_DOMAIN_KIND_AERODB && d.Quorum > 0 && len(d.Members) > 0:
			q := newQuorumDB(w, d, cfg.Seed^uint64(di), mutant)
			w.quorum[d.Name] = q
			w.wg.Add(2)
			go q.runReporter(ctx)
			go q.runPrimary(ctx)
		case d.Kind == pb.DomainKind_DOMAIN_KIND_AERODB && len(d.Members) > 0:
			w.wg.Add(1)
			go w.report(ctx, d)
		}
	}
	for di, d := range cfg.Domains {
		n := d.Clients
		if d.Primary {
			n++
		}
		for i := range n {
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(di*100+i)))
			base := fmt.Sprintf("w%d-%d", di, i)
			c := &logical{w: w, d: d, base: base, holder: base, rng: rng, primary: i == d.Clients}
			w.wg.Add(1)
			go c.run(ctx)
		}
	}
	return w, nil
}

// Stop ends the clients (each finishes its current operation) and waits.
func (w *Workload) Stop() {
	w.cancel()
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, cs := range w.shared {
		closeAll(cs)
	}
}

// creds is id's dial option.
func (w *Workload) creds(id identity.Identity) grpc.DialOption {
	if w.cfg.Creds != nil {
		if c := w.cfg.Creds(id); c != nil {
			return grpc.WithTransportCredentials(c)
		}
	}
	return grpc.WithTransportCredentials(insecure.NewCredentials())
}

// dial connects to every node as id (connections are made on first use).
func (w *Workload) dial(id identity.Identity) ([]*grpc.ClientConn, error) {
	opt := w.creds(id)
	var out []*grpc.ClientConn
	for _, n := range w.cfg.Nodes {
		conn, err := grpc.NewClient(n.Addr, opt)
		if err != nil {
			closeAll(out)
			return nil, err
		}
		out = append(out, conn)
	}
	return out, nil
}

// sharedConns are the connections of an identity several clients use (the
// operator, the reader, an aerodb member).
func (w *Workload) sharedConns(id identity.Identity) ([]*grpc.ClientConn, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if cs, ok := w.shared[id]; ok {
		return cs, nil
	}
	cs, err := w.dial(id)
	if err != nil {
		return nil, err
	}
	w.shared[id] = cs
	return cs, nil
}

func closeAll(cs []*grpc.ClientConn) {
	for _, c := range cs {
		c.Close()
	}
}

// clientCreds is id's credentials for the client library (nil: plaintext).
func (w *Workload) clientCreds(id identity.Identity) credentials.TransportCredentials {
	if w.cfg.Creds == nil {
		return nil
	}
	return w.cfg.Creds(id)
}

// report sends every member's progress for d to the leader every 100 ms,
// for the epoch just read (reports are the leader's soft state and must
// name the current epoch), each as node:<member>. Reports are evidence,
// not operations of the history.
func (w *Workload) report(ctx context.Context, d Domain) {
	defer w.wg.Done()
	var addrs []string
	for _, n := range w.cfg.Nodes {
		addrs = append(addrs, n.Addr)
	}
	members := map[string]*client.Client{}
	var reader *client.Client // any member reads
	for _, m := range d.Members {
		c, err := client.DialConfig(ctx, client.Config{Endpoints: addrs, PinEndpoints: true, RequestTimeout: 500 * time.Millisecond,
			MaxRetryDelay: 100 * time.Millisecond, Credentials: w.clientCreds(identity.Identity{Role: identity.Node, Name: m})})
		if err != nil {
			continue
		}
		defer c.Close()
		members[m] = c
		if reader == nil {
			reader = c
		}
	}
	if reader == nil {
		return
	}
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		if dom, err := reader.GetDomain(rctx, d.Name); err == nil && dom.Watermark != nil {
			wm := dom.Watermark
			for _, m := range d.Members {
				c := members[m]
				if c == nil {
					continue
				}
				c.ReportProgress(rctx, d.Name, &pb.ProgressReport{MemberId: m, Epoch: dom.Epoch,
					FlushedLsn: wm.Lsn, FlushedHash: wm.Hash, WatermarkLsn: wm.Lsn, HashAtWatermark: wm.Hash,
					AppliedCommitId: wm.VisibleCommitId, ReadSafe: true, State: pb.ReplicaState_REPLICA_STATE_STREAMING})
			}
		}
		cancel()
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type logical struct {
	w      *Workload
	d      Domain
	base   string // holder names are base.p<process>
	holder string
	rng    *rand.Rand
	pid    int
	node   int
	lastEp uint64
	oldEp  uint64 // an epoch seen before lastEp (0: none)
	held   uint64 // epoch of our last ok acquire (0: none)
	// primary: advances the watermark as the holder last read
	// (lastHolder at lastEp, from lastLsn).
	primary    bool
	lastHolder string
	lastLsn    uint64
	reacquire  bool // the holder's lease expired: acquire it again first
	lastPromo  time.Time
	lastRead   time.Time // of the last ok read
	reqSeq     int
	// own are the connections as node:<holder> (lock clients; replaced
	// with every new process).
	own []*grpc.ClientConn
}

func (c *logical) run(ctx context.Context) {
	defer c.w.wg.Done()
	c.newProcess()
	c.node = int(c.w.leader.Load())
	for ctx.Err() == nil {
		c.step()
		time.Sleep(c.w.cfg.Rate)
	}
	closeAll(c.own)
}

// actor is the identity of the client's reads and of its writes (except
// the primary's, which act as the holder it read).
func (c *logical) actor() identity.Identity {
	switch {
	case c.d.ReadOnly || c.primary:
		return c.w.cfg.Reader
	case c.d.Kind == pb.DomainKind_DOMAIN_KIND_AERODB:
		return c.w.cfg.Operator
	}
	return identity.Identity{Role: identity.Node, Name: c.holder}
}

// conn is the connection to the current node as id (nil when it cannot be
// had: the step is skipped).
func (c *logical) conn(id identity.Identity) *grpc.ClientConn {
	if id.Role == identity.Node && id.Name == c.holder {
		if c.own == nil {
			own, err := c.w.dial(id)
			if err != nil {
				return nil
			}
			c.own = own
		}
		return c.own[c.node]
	}
	cs, err := c.w.sharedConns(id)
	if err != nil {
		return nil
	}
	return cs[c.node]
}

// outcome classifies an error: fail when nothing happened for sure, info
// otherwise; notLeader asks for another node.
func outcome(err error) (typ string, notLeader bool) {
	st, ok := status.FromError(err)
	if !ok {
		return history.Info, false
	}
	// A dial or a TLS handshake that failed (ours, or a follower's forward
	// to the leader: the server reports the latter as OUTCOME_UNKNOWN
	// although nothing was sent) certainly did not deliver the request: a
	// call is sent only on an established connection.
	if m := st.Message(); strings.Contains(m, "Error while dialing") || strings.Contains(m, "authentication handshake failed") {
		return history.Fail, true
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			switch ei.Reason {
			case pb.ReasonNotLeader:
				return history.Fail, true
			case pb.ReasonOutcomeUnknown, pb.ReasonInternal:
				return history.Info, false
			case "":
			default:
				return history.Fail, false
			}
		}
	}
	return history.Info, false
}

func (c *logical) step() {
	if c.primary && time.Now().UnixNano() < c.w.stalled[c.d.Name].Load() {
		return
	}
	h := c.w.cfg.History
	nodes := c.w.cfg.Nodes
	conn := c.conn(c.actor())
	if conn == nil {
		return
	}
	node := nodes[c.node].ID
	ctx, cancel := context.WithTimeout(context.Background(), c.w.cfg.OpTimeout)
	defer cancel()
	rec := func(typ, f string, v history.Value, reqID string, err error) {
		r := history.Record{Kind: history.KindOp, Type: typ, Process: c.pid, F: f, Domain: c.d.Name, Node: node, RequestID: reqID, Value: v}
		if err != nil {
			r.Error = err.Error()
		}
		h.Add(r)
	}
	// finish records the completion of a failed op and adapts.
	finish := func(f string, v history.Value, reqID string, err error, write bool) {
		typ, notLeader := outcome(err)
		if !write {
			typ = history.Fail // a read changes nothing
		}
		rec(typ, f, v, reqID, err)
		if notLeader || typ == history.Info || !write {
			c.node = (c.node + 1) % len(nodes)
		}
		if typ == history.Info {
			c.newProcess()
		}
	}
	p := c.rng.Float64()
	if c.d.PromoteEvery > 0 && time.Since(c.lastPromo) < c.d.PromoteEvery && c.lastHolder != "" {
		// Between promotions, read only every 250 ms (the domain's load
		// stays small beside the others').
		if time.Since(c.lastRead) < promoteEveryRead {
			return
		}
		p = 0
	}
	if c.d.ReadOnly || (c.primary && c.lastHolder == "") || (c.d.Quorum > 0 && c.lastHolder == "") {
		p = 0
	}
	switch {
	case p < 0.45:
		rec(history.Invoke, history.FRead, history.Value{}, "", nil)
		resp, err := pbgrpc.NewDomainsClient(conn).GetDomain(ctx, &pb.GetDomainRequest{Name: c.d.Name})
		if err != nil {
			finish(history.FRead, history.Value{}, "", err, false)
			return
		}
		d := resp.GetDomain()
		c.lastRead = time.Now()
		c.saw(d.GetEpoch())
		c.lastHolder, c.lastLsn = d.GetHolder(), d.GetWatermark().GetLsn()
		c.w.leader.Store(int64(c.node))
		c.w.OKs.Add(1)
		rec(history.OK, history.FRead, history.Value{Epoch: d.GetEpoch(), Holder: d.GetHolder()}, "", nil)
	case c.primary && c.reacquire:
		if conn = c.conn(identity.Identity{Role: identity.Node, Name: c.lastHolder}); conn != nil {
			c.reacquireLease(ctx, conn, rec, finish)
		}
	case c.primary:
		if conn = c.conn(identity.Identity{Role: identity.Node, Name: c.lastHolder}); conn != nil {
			c.advance(ctx, conn, rec, finish)
		}
	case c.d.Kind == pb.DomainKind_DOMAIN_KIND_AERODB:
		c.reqSeq++
		c.lastPromo = time.Now()
		id := fmt.Sprintf("%s-%d", c.holder, c.reqSeq)
		cand := c.d.Members[c.rng.IntN(len(c.d.Members))]
		if q := c.w.quorum[c.d.Name]; q != nil && c.rng.IntN(4) != 0 {
			// Three times in four the replica an operator would pick: a behind
			// candidate costs the leader's whole fence wait (5 s).
			if best := q.mostAdvanced(); best != "" {
				cand = best
			}
		}
		for c.d.Quorum > 0 && cand == c.lastHolder && len(c.d.Members) > 1 {
			// A replica-quorum promotion fences, then waits (up to 5 s)
			// for the candidate's fenced report, which the holder never
			// sends: promote a replica.
			cand = c.d.Members[c.rng.IntN(len(c.d.Members))]
		}
		exp := c.lastEp
		if c.oldEp != 0 && c.rng.IntN(c.w.cfg.StaleOneIn) == 0 {
			exp = c.oldEp // a stale view: must be denied EpochStale
		}
		args := history.Value{Holder: cand, ExpectedEpoch: exp}
		rec(history.Invoke, history.FPromote, args, id, nil)
		req := &pb.PromotionRequest{RequestId: id, Domain: c.d.Name, Candidate: cand, Reason: "jepsen"}
		if exp != 0 {
			req.ExpectedEpoch = &exp
		}
		if c.d.Quorum > 0 {
			// The leader waits for the replicas' fenced reports before it
			// decides (up to 5 s; usually a few report rounds).
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(context.Background(), max(c.w.cfg.OpTimeout, quorumPromoteTimeout))
			defer cancel()
		}
		resp, err := pbgrpc.NewPromotionClient(conn).Promote(ctx, &pb.PromoteRequest{Request: req})
		if err != nil {
			if typ, _ := outcome(err); typ == history.Fail {
				c.lastPromo = time.Time{} // nothing was decided: try again soon
			}
			finish(history.FPromote, args, id, err, true)
			return
		}
		res := args
		if resp.GetRecord().GetDecision().GetAllowed() {
			res.Outcome, res.Epoch = history.OutcomeAllowed, resp.GetRecord().GetEpochAfter()
			c.saw(res.Epoch)
		} else {
			res.Outcome = history.OutcomeDenied
		}
		c.w.leader.Store(int64(c.node))
		c.w.OKs.Add(1)
		rec(history.OK, history.FPromote, res, id, nil)
	case p < 0.8 || c.held == 0:
		exp := c.lastEp
		args := history.Value{Holder: c.holder, ExpectedEpoch: exp}
		rec(history.Invoke, history.FAcquire, args, "", nil)
		req := &pb.AcquireRequest{Domain: c.d.Name, Holder: c.holder}
		if exp != 0 {
			req.ExpectedEpoch = &exp
		}
		resp, err := pbgrpc.NewLeasesClient(conn).Acquire(ctx, req)
		if err != nil {
			finish(history.FAcquire, args, "", err, true)
			return
		}
		c.held = resp.GetEpoch()
		c.saw(resp.GetEpoch())
		c.w.leader.Store(int64(c.node))
		c.w.OKs.Add(1)
		args.Epoch = resp.GetEpoch()
		rec(history.OK, history.FAcquire, args, "", nil)
	default:
		args := history.Value{Holder: c.holder, Epoch: c.held}
		c.held = 0
		rec(history.Invoke, history.FRelease, args, "", nil)
		_, err := pbgrpc.NewLeasesClient(conn).Release(ctx, &pb.ReleaseRequest{Domain: c.d.Name, Holder: c.holder, Epoch: args.Epoch})
		if err != nil {
			finish(history.FRelease, args, "", err, true)
			return
		}
		c.w.leader.Store(int64(c.node))
		c.w.OKs.Add(1)
		rec(history.OK, history.FRelease, args, "", nil)
	}
}

// saw notes an epoch the client learnt, keeping the one before it.
func (c *logical) saw(epoch uint64) {
	if epoch != c.lastEp {
		c.oldEp, c.lastEp = c.lastEp, epoch
	}
}

// newProcess continues the client under a new process id and a new holder
// name (holding nothing), so every holder's operations are sequential and an
// unknown outcome is its holder's last operation: the checker resolves
// unknown acquires and releases against the logs by holder. A lock client
// then acts as node:<new holder>, over new connections.
func (c *logical) newProcess() {
	closeAll(c.own)
	c.own = nil
	c.pid = int(c.w.nextPID.Add(1))
	c.holder = fmt.Sprintf("%s.p%d", c.base, c.pid)
	c.held = 0
}

// advance moves the watermark one lsn past the last one read, as the holder
// at the epoch last read (fenced if either changed since).
func (c *logical) advance(ctx context.Context, conn *grpc.ClientConn, rec func(typ, f string, v history.Value, reqID string, err error),
	finish func(f string, v history.Value, reqID string, err error, write bool)) {
	lsn := c.lastLsn + 1
	args := history.Value{Epoch: c.lastEp, Holder: c.lastHolder, Lsn: lsn}
	rec(history.Invoke, history.FAdvance, args, "", nil)
	resp, err := pbgrpc.NewWatermarksClient(conn).Advance(ctx, &pb.AdvanceRequest{Advances: []*pb.WatermarkAdvance{{
		Domain: c.d.Name, Epoch: c.lastEp, Holder: c.lastHolder, Lsn: lsn, Hash: ChainHash(c.d.Name, lsn), VisibleCommitId: lsn}}})
	if err != nil {
		finish(history.FAdvance, args, "", err, true)
		return
	}
	c.w.leader.Store(int64(c.node))
	if r := resp.GetResults(); len(r) != 1 || !r[0].GetOk() {
		// Decided and refused (fenced, behind the watermark): certain.
		msg := "no result"
		if len(r) == 1 {
			msg = r[0].GetErrorReason() + ": " + r[0].GetErrorMessage()
		}
		rec(history.Fail, history.FAdvance, args, "", fmt.Errorf("%s", msg))
		c.reacquire = len(r) == 1 && r[0].GetErrorReason() == pb.ReasonLeaseExpired
		return
	}
	c.lastLsn = lsn
	c.w.OKs.Add(1)
	rec(history.OK, history.FAdvance, args, "", nil)
}

// ChainHash stands in for a WAL chain hash at lsn: the same for every
// caller (WatermarkHash at WatermarkLsn).
func ChainHash(domain string, lsn uint64) []byte {
	if lsn == WatermarkLsn {
		return WatermarkHash
	}
	h := sha256.Sum256(fmt.Appendf(nil, "%s/%d", domain, lsn))
	return h[:8]
}

// reacquireLease takes the holder's expired lease back at the same epoch,
// as a primary whose lease lapsed on the leader does (an aerodb domain
// only re-grants its current holder; authority moves only by promotion).
func (c *logical) reacquireLease(ctx context.Context, conn *grpc.ClientConn, rec func(typ, f string, v history.Value, reqID string, err error),
	finish func(f string, v history.Value, reqID string, err error, write bool)) {
	exp := c.lastEp
	args := history.Value{Holder: c.lastHolder, ExpectedEpoch: exp}
	rec(history.Invoke, history.FAcquire, args, "", nil)
	resp, err := pbgrpc.NewLeasesClient(conn).Acquire(ctx, &pb.AcquireRequest{Domain: c.d.Name, Holder: c.lastHolder, ExpectedEpoch: &exp})
	c.reacquire = false
	if err != nil {
		finish(history.FAcquire, args, "", err, true)
		return
	}
	c.w.leader.Store(int64(c.node))
	c.w.OKs.Add(1)
	args.Epoch = resp.GetEpoch()
	rec(history.OK, history.FAcquire, args, "", nil)
}
