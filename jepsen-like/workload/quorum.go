package workload

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/jepsen-like/dbsim"
	"github.com/aerodb/authority/jepsen-like/history"
	"google.golang.org/grpc"
)

// A replica-quorum domain (Domain.Quorum = K > 0; docs/DURABILITY.md) runs
// its database simulated in memory (dbsim): every member has a WAL and a
// fence epoch. Its holder — the primary, acting as node:<holder> — appends
// one record per step at its epoch, ships its WAL to each other member
// (each shipment is dropped, i.e. delayed to a later step, one time in
// four, seeded), and acknowledges a write (a KindDB ack record) once K of
// the other members hold it, never while it knows its lease is lost. It
// renews its lease by KeepAlive every 150 ms, re-acquires a lapsed lease,
// and stops renewing once a replica refused it as fenced or a read showed
// a prepared promotion (so the promotion can proceed); it advances the
// watermark at most once per 500 ms, to its last write K replicas hold. In
// seeded gaps of 0.7–1.2 s (about one every 3 s), and on CutOffDBPrimary,
// it is cut off from the authority but still reaches its replicas.
//
// Its own reporter sends each member's progress except the holder's every
// 200 ms (at once again after a fence changed a member), as node:<member>. A ReportProgress response with a fence makes
// the member raise its fence first (from then on it refuses the old
// holder's WAL) and report fenced_epoch, its final position, and its chain
// hashes at the lsns the leader asked for in the next report.
//
// When a read shows a new epoch and holder, that member takes over from
// its own WAL (a KindDB takeover record with the WAL's segments), writing
// after a seeded 100–300 ms of recovery; the old
// primary keeps writing until its cut-off ends or for a seeded 0–400 ms (it
// learns late), or until its own member is fenced or follows the newer
// epoch.
// Checker NoLostAcknowledgedDBWrites then requires every acknowledged write
// in the WAL of every later holder at its takeover.

// Tunables of the simulated database.
const (
	dbReadEvery     = 200 * time.Millisecond
	dbRenewEvery    = 150 * time.Millisecond // TTL 500 ms
	dbReportEvery   = 200 * time.Millisecond // at once after a fence changed a member
	dbAdvanceEvery  = 500 * time.Millisecond // the domain's watermark_interval_ms
	dbShipDropOneIn = 4
	dbGapOneIn      = 150 // per step: about one renewal gap every 3 s
	dbGapMin        = 700 * time.Millisecond
	dbGapSpread     = 500 * time.Millisecond
	dbZombieMax     = 400 * time.Millisecond
	dbRecoverMin    = 100 * time.Millisecond
	dbRecoverSpread = 200 * time.Millisecond
	// quorumPromoteTimeout bounds a replica-quorum promotion: above the
	// leader's wait for fenced reports (promotion.DefaultFenceWait, 5 s),
	// which a candidate behind the others always waits out, and which a
	// cancelled call ends without a decision.
	quorumPromoteTimeout = 6 * time.Second
)

// DBGenesis is the first record of every member's WAL (epoch 1, lsn 1):
// the runner commits it as the domain's first watermark, so promotions have
// one before the primary's first acknowledgement (an aerodb promotion needs
// a known watermark).
var DBGenesis = dbsim.Record{Epoch: 1, Lsn: 1, Hash: dbsim.ChainHash(nil, 1, 1)}

// DBAdvanceInterval is the watermark interval the workload's replica-quorum
// primary keeps (the runner sets the domain's policy to it).
const DBAdvanceInterval = dbAdvanceEvery

// dbMutant is a negative control of the simulated database (compiled in
// only with the jepsen_mutants build tag: mutant.go).
type dbMutant struct {
	ignoreFence bool // replicas accept WAL of an epoch below their fence
	ackShort    bool // the primary acknowledges after K − 1 replicas
}

// dbMutants are the known negative controls by name (Config.DBMutant).
var dbMutants = map[string]dbMutant{}

// DBStats are a replica-quorum domain's counters (QuorumStats).
type DBStats struct {
	Acks, Takeovers, Reports, ReportsRefused, Refusals, RenewErrors int64
	// LastReportRefusal is the last ReportProgress refusal (reason: message);
	// LastRenewError the last KeepAlive error other than an expired or
	// fenced lease.
	LastReportRefusal, LastRenewError string
}

// dbTerm is one holder's primary at one epoch.
type dbTerm struct {
	member      *dbsim.Member
	epoch       uint64
	acked       uint64 // highest lsn acknowledged (or held at takeover)
	ackedOwn    uint64 // highest lsn this term acknowledged (0: none)
	durable     uint64 // highest lsn of this term K replicas hold (0: none)
	advanced    uint64 // watermark lsn this term advanced to
	leaseLost   bool   // a renewal, advance or acquire said so
	steppedDown bool   // fenced (a refusal, or a prepare read): no more renewals
	// cutOff: until then the primary reaches its replicas but not the
	// authority (no renewal, advance, acquire; it sees no fence).
	cutOff time.Time
	until  time.Time // a zombie: writes until then
	// startAt: a promoted primary first recovers (replays its WAL) and
	// writes from then on.
	startAt time.Time
}

type quorumDB struct {
	w      *Workload
	d      Domain
	rng    *rand.Rand // the primary goroutine's
	mutant dbMutant

	mu        sync.Mutex // members, chainLsns
	members   map[string]*dbsim.Member
	chainLsns map[string][]uint64

	// The primary goroutine's state.
	cur                              *dbTerm
	zombies                          []*dbTerm
	pid, node                        int
	lastRead, lastRenew, lastAdvance time.Time
	needRead                         bool

	cutOffFor                                                atomic.Int64 // CutOffDBPrimary's request (ns)
	acks, takeovers, reports, refused, refusals, renewErrors atomic.Int64
	lastRefusal, lastRenewError                              atomic.Value // string
}

func newQuorumDB(w *Workload, d Domain, seed uint64, mutant dbMutant) *quorumDB {
	q := &quorumDB{w: w, d: d, rng: rand.New(rand.NewPCG(seed, 0xdb)), mutant: mutant,
		members: map[string]*dbsim.Member{}, chainLsns: map[string][]uint64{}}
	for _, m := range d.Members {
		q.members[m] = &dbsim.Member{ID: m, WAL: []dbsim.Record{DBGenesis}}
	}
	q.pid = int(w.nextPID.Add(1))
	return q
}

// QuorumStats returns the replica-quorum domain's counters (false: no such
// domain).
func (w *Workload) QuorumStats(domain string) (DBStats, bool) {
	q := w.quorum[domain]
	if q == nil {
		return DBStats{}, false
	}
	s := DBStats{Acks: q.acks.Load(), Takeovers: q.takeovers.Load(), Reports: q.reports.Load(),
		ReportsRefused: q.refused.Load(), Refusals: q.refusals.Load(), RenewErrors: q.renewErrors.Load()}
	s.LastReportRefusal, _ = q.lastRefusal.Load().(string)
	s.LastRenewError, _ = q.lastRenewError.Load().(string)
	return s, true
}

// CutOffDBPrimary cuts the replica-quorum domain's current primary off from
// the authority for d (a nemesis): it keeps writing to its replicas and
// acknowledging what K of them hold, but renews nothing, advances nothing
// and sees no fence, so its lease lapses and a promotion may complete while
// it still writes; only the replicas' fences keep it from acknowledging.
// The cut-off starts once the primary holds its lease. Unknown domains are
// ignored.
func (w *Workload) CutOffDBPrimary(domain string, d time.Duration) {
	if q := w.quorum[domain]; q != nil {
		q.cutOffFor.Store(int64(d))
	}
}

// mostAdvanced is the replica (a member acting as no primary) with the
// most advanced position (last record's epoch, then lsn; "" when none) — the
// one an operator would promote.
func (q *quorumDB) mostAdvanced() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	best, bl := "", dbsim.Record{}
	for _, id := range q.d.Members {
		m := q.members[id]
		if l := m.Last(); !m.Primary && (best == "" || l.Epoch > bl.Epoch || l.Epoch == bl.Epoch && l.Lsn > bl.Lsn) {
			best, bl = id, l
		}
	}
	return best
}

// runPrimary is the primary goroutine.
func (q *quorumDB) runPrimary(ctx context.Context) {
	defer q.w.wg.Done()
	q.node = int(q.w.leader.Load())
	for ctx.Err() == nil {
		q.step()
		time.Sleep(q.w.cfg.Rate)
	}
}

func (q *quorumDB) step() {
	now := time.Now()
	if q.cur == nil || q.needRead || now.Sub(q.lastRead) >= dbReadEvery {
		q.read(now)
	}
	if d := q.cutOffFor.Load(); d > 0 && q.cur != nil && !q.cur.leaseLost && q.cutOffFor.CompareAndSwap(d, 0) {
		// (Once the primary holds its lease: a cut-off of a primary that
		// already knows it lost its lease would show nothing.)
		q.cur.cutOff = now.Add(time.Duration(d))
	}
	live := q.zombies[:0]
	for _, z := range q.zombies {
		if now.Before(z.until) && q.write(z) {
			live = append(live, z)
			continue
		}
		q.mu.Lock()
		z.member.Primary = z.member == q.cur.member // it learnt: a replica again
		q.mu.Unlock()
	}
	q.zombies = live
	if q.cur == nil {
		return
	}
	q.renew(now)
	if !q.write(q.cur) {
		q.needRead = true
	}
	q.advance(now)
}

// rec records an op of the primary's process.
func (q *quorumDB) rec(typ, f string, v history.Value, err error) {
	r := history.Record{Kind: history.KindOp, Type: typ, Process: q.pid, F: f, Domain: q.d.Name, Node: q.w.cfg.Nodes[q.node].ID, Value: v}
	if err != nil {
		r.Error = err.Error()
	}
	q.w.cfg.History.Add(r)
}

// failed records a failed or unknown completion and adapts (as the
// logical clients do: another node, a new process after an unknown).
func (q *quorumDB) failed(f string, v history.Value, err error, write bool) {
	typ, notLeader := outcome(err)
	if !write {
		typ = history.Fail
	}
	q.rec(typ, f, v, err)
	if notLeader || typ == history.Info || !write {
		q.node = (q.node + 1) % len(q.w.cfg.Nodes)
	}
	if typ == history.Info {
		q.pid = int(q.w.nextPID.Add(1))
	}
}

func (q *quorumDB) conn(id identity.Identity) *grpc.ClientConn {
	cs, err := q.w.sharedConns(id)
	if err != nil {
		return nil
	}
	return cs[q.node]
}

func (q *quorumDB) read(now time.Time) {
	conn := q.conn(q.w.cfg.Reader)
	if conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), q.w.cfg.OpTimeout)
	defer cancel()
	q.rec(history.Invoke, history.FRead, history.Value{}, nil)
	resp, err := pbgrpc.NewDomainsClient(conn).GetDomain(ctx, &pb.GetDomainRequest{Name: q.d.Name})
	if err != nil {
		q.failed(history.FRead, history.Value{}, err, false)
		return
	}
	d := resp.GetDomain()
	q.lastRead, q.needRead = now, false
	q.w.leader.Store(int64(q.node))
	q.w.OKs.Add(1)
	q.rec(history.OK, history.FRead, history.Value{Epoch: d.GetEpoch(), Holder: d.GetHolder()}, nil)
	if q.cur == nil || d.GetEpoch() > q.cur.epoch {
		q.takeover(now, d.GetEpoch(), d.GetHolder())
	}
	if fc := d.GetFence(); fc != nil && q.cur != nil && fc.GetEpoch() == q.cur.epoch+1 && !now.Before(q.cur.cutOff) {
		// A promotion prepared: the primary hands over (stops renewing)
		// but, not knowing its lease is lost, keeps writing — only the
		// replicas' fence keeps it from acknowledging.
		q.cur.steppedDown = true
	}
}

// takeover starts the holder's primary at epoch from its own WAL; the
// previous primary becomes a zombie for a seeded while.
func (q *quorumDB) takeover(now time.Time, epoch uint64, holder string) {
	q.mu.Lock()
	m := q.members[holder]
	if m == nil {
		q.mu.Unlock()
		return
	}
	m.Fence = max(m.Fence, epoch) // it follows its own epoch from now
	m.Primary = true
	last, segs := m.Last(), dbsim.Segments(m.WAL)
	q.mu.Unlock()
	if q.cur != nil {
		// The old primary learns late: when it reaches the authority again,
		// or a seeded while after the new holder started.
		q.cur.until = now.Add(time.Duration(q.rng.Int64N(int64(dbZombieMax))))
		if q.cur.cutOff.After(q.cur.until) {
			q.cur.until = q.cur.cutOff
		}
		q.zombies = append(q.zombies, q.cur)
	}
	q.cur = &dbTerm{member: m, epoch: epoch, acked: last.Lsn}
	if len(q.zombies) > 0 {
		q.cur.startAt = now.Add(dbRecoverMin + time.Duration(q.rng.Int64N(int64(dbRecoverSpread))))
	}
	q.takeovers.Add(1)
	q.w.cfg.History.Add(history.Record{Kind: history.KindDB, Type: history.DBTakeover, Domain: q.d.Name, Process: q.pid, Info: segs,
		Value: history.Value{Epoch: epoch, Holder: holder, Lsn: last.Lsn, Hash: dbsim.Hex(last.Hash)}})
}

// write appends one record as t's primary, ships, and acknowledges what K
// replicas hold. It returns false when t can write no more (its member is
// fenced past its epoch or follows a newer one).
func (q *quorumDB) write(t *dbTerm) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if t.member.Fence > t.epoch || t.member.Last().Epoch > t.epoch {
		return false
	}
	if time.Now().Before(t.startAt) {
		return true // it writes nothing until it has recovered
	}
	if !t.leaseLost {
		// Without its lease it accepts no new write, but still ships what
		// it has (and acknowledges nothing).
		t.member.Append(t.epoch)
	}
	for _, id := range q.d.Members {
		if id == t.member.ID || q.rng.IntN(dbShipDropOneIn) == 0 {
			continue
		}
		if err := q.members[id].Accept(t.epoch, t.member.WAL, q.mutant.ignoreFence); errors.Is(err, dbsim.ErrFenced) || errors.Is(err, dbsim.ErrNewerHistory) {
			q.refusals.Add(1)
			t.steppedDown = true // fenced: a promotion is under way
		}
	}
	held := func(r dbsim.Record) int {
		n := 0
		for _, id := range q.d.Members {
			if id != t.member.ID && q.members[id].Holds(r) {
				n++
			}
		}
		return n
	}
	for lsn := max(t.durable, t.acked) + 1; lsn <= uint64(len(t.member.WAL)) && held(t.member.WAL[lsn-1]) >= q.d.Quorum; lsn++ {
		t.durable = lsn // what the watermark may cover, whatever a mutant acknowledges
	}
	need := q.d.Quorum
	if q.mutant.ackShort {
		need--
	}
	for lsn := t.acked + 1; !t.leaseLost && lsn <= uint64(len(t.member.WAL)); lsn++ {
		r := t.member.WAL[lsn-1]
		if held(r) < need {
			break
		}
		t.acked, t.ackedOwn = lsn, lsn
		q.acks.Add(1)
		q.w.cfg.History.Add(history.Record{Kind: history.KindDB, Type: history.DBAck, Domain: q.d.Name, Process: q.pid,
			Value: history.Value{Epoch: r.Epoch, Holder: t.member.ID, Lsn: r.Lsn, Hash: dbsim.Hex(r.Hash)}})
	}
	return true
}

// renew keeps the primary's lease (KeepAlive every 150 ms), except in a
// seeded gap or once stepped down; a lapsed lease is re-acquired.
func (q *quorumDB) renew(now time.Time) {
	t := q.cur
	if t.steppedDown || now.Before(t.cutOff) {
		return
	}
	if q.rng.IntN(dbGapOneIn) == 0 {
		t.cutOff = now.Add(dbGapMin + time.Duration(q.rng.Int64N(int64(dbGapSpread))))
		return
	}
	if t.leaseLost {
		q.reacquire(t)
		return
	}
	if now.Sub(q.lastRenew) < dbRenewEvery {
		return
	}
	q.lastRenew = now
	conn := q.conn(identity.Identity{Role: identity.Node, Name: t.member.ID})
	if conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), q.w.cfg.OpTimeout)
	defer cancel()
	s, err := pbgrpc.NewLeasesClient(conn).KeepAlive(ctx)
	if err == nil {
		err = s.Send(&pb.KeepAliveRequest{Domain: q.d.Name, Holder: t.member.ID, Epoch: t.epoch, Seq: 1})
	}
	var resp *pb.KeepAliveResponse
	if err == nil {
		resp, err = s.Recv()
		_ = s.CloseSend()
	}
	switch {
	case err != nil:
		q.node = (q.node + 1) % len(q.w.cfg.Nodes)
	case resp.GetErrorReason() == pb.ReasonLeaseExpired:
		t.leaseLost = true
	case resp.GetErrorReason() == pb.ReasonFenced:
		t.leaseLost, q.needRead = true, true
	case resp.GetErrorReason() != "":
		q.renewErrors.Add(1)
		q.lastRenewError.Store(resp.GetErrorReason() + ": " + resp.GetErrorMessage())
		q.node = (q.node + 1) % len(q.w.cfg.Nodes)
	default:
		q.w.leader.Store(int64(q.node))
	}
}

// reacquire takes t's lapsed lease back at its epoch (recorded as an
// acquire, like the other primaries').
func (q *quorumDB) reacquire(t *dbTerm) {
	conn := q.conn(identity.Identity{Role: identity.Node, Name: t.member.ID})
	if conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), q.w.cfg.OpTimeout)
	defer cancel()
	exp := t.epoch
	args := history.Value{Holder: t.member.ID, ExpectedEpoch: exp}
	q.rec(history.Invoke, history.FAcquire, args, nil)
	resp, err := pbgrpc.NewLeasesClient(conn).Acquire(ctx, &pb.AcquireRequest{Domain: q.d.Name, Holder: t.member.ID, ExpectedEpoch: &exp})
	if err != nil {
		q.failed(history.FAcquire, args, err, true)
		q.needRead = true
		return
	}
	q.w.leader.Store(int64(q.node))
	q.w.OKs.Add(1)
	args.Epoch = resp.GetEpoch()
	q.rec(history.OK, history.FAcquire, args, nil)
	if resp.GetEpoch() == t.epoch && resp.GetHolder() == t.member.ID {
		t.leaseLost = false
		q.lastRenew = time.Now()
	}
}

// advance moves the watermark, at most once per interval, to the last
// write of this term that K replicas hold.
func (q *quorumDB) advance(now time.Time) {
	t := q.cur
	if t.leaseLost || now.Before(t.cutOff) || now.Sub(q.lastAdvance) < dbAdvanceEvery || t.durable <= t.advanced {
		return
	}
	q.lastAdvance = now
	lsn := t.durable
	q.mu.Lock()
	h, ok := t.member.HashAt(lsn)
	q.mu.Unlock()
	if !ok {
		return
	}
	conn := q.conn(identity.Identity{Role: identity.Node, Name: t.member.ID})
	if conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), q.w.cfg.OpTimeout)
	defer cancel()
	args := history.Value{Epoch: t.epoch, Holder: t.member.ID, Lsn: lsn}
	q.rec(history.Invoke, history.FAdvance, args, nil)
	resp, err := pbgrpc.NewWatermarksClient(conn).Advance(ctx, &pb.AdvanceRequest{Advances: []*pb.WatermarkAdvance{{
		Domain: q.d.Name, Epoch: t.epoch, Holder: t.member.ID, Lsn: lsn, Hash: h, VisibleCommitId: lsn}}})
	if err != nil {
		q.failed(history.FAdvance, args, err, true)
		return
	}
	q.w.leader.Store(int64(q.node))
	if r := resp.GetResults(); len(r) != 1 || !r[0].GetOk() {
		msg := "no result"
		if len(r) == 1 {
			msg = r[0].GetErrorReason() + ": " + r[0].GetErrorMessage()
			switch r[0].GetErrorReason() {
			case pb.ReasonLeaseExpired:
				t.leaseLost = true
			case pb.ReasonFenced:
				t.leaseLost, q.needRead = true, true
			}
		}
		q.rec(history.Fail, history.FAdvance, args, errors.New(msg))
		return
	}
	t.advanced = lsn
	q.w.OKs.Add(1)
	q.rec(history.OK, history.FAdvance, args, nil)
}

// runReporter sends every member's progress but the holder's every 200 ms.
func (q *quorumDB) runReporter(ctx context.Context) {
	defer q.w.wg.Done()
	node := int(q.w.leader.Load())
	for ctx.Err() == nil {
		ok, again := q.reportRound(ctx, node)
		if !ok {
			node = (node + 1) % len(q.w.cfg.Nodes)
		}
		if again {
			continue // a fence changed a member: report its final position at once
		}
		select {
		case <-ctx.Done():
		case <-time.After(dbReportEvery):
		}
	}
}

// reportRound reads the domain and reports each replica once through node;
// ok false asks for another node, again true for another round at once (a
// fence or the chain lsns asked for changed).
func (q *quorumDB) reportRound(ctx context.Context, node int) (ok, again bool) {
	readers, err := q.w.sharedConns(q.w.cfg.Reader)
	if err != nil {
		return false, false
	}
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := pbgrpc.NewDomainsClient(readers[node]).GetDomain(rctx, &pb.GetDomainRequest{Name: q.d.Name})
	if err != nil {
		return false, false
	}
	d := resp.GetDomain()
	for _, id := range q.d.Members {
		q.mu.Lock()
		primary := q.members[id].Primary
		q.mu.Unlock()
		if id == d.GetHolder() || primary {
			continue // a primary (or an old one still acting) is no replica
		}
		cs, err := q.w.sharedConns(identity.Identity{Role: identity.Node, Name: id})
		if err != nil {
			return false, again
		}
		r, err := sendReport(rctx, cs[node], q.d.Name, q.progress(id, d.GetEpoch(), d.GetWatermark()))
		if err != nil || r.GetErrorReason() == pb.ReasonNotLeader {
			return false, again
		}
		q.reports.Add(1)
		if r.GetErrorReason() != "" {
			q.refused.Add(1)
			q.lastRefusal.Store(fmt.Sprintf("report of %s at epoch %d: %s: %s", id, d.GetEpoch(), r.GetErrorReason(), r.GetErrorMessage()))
			continue
		}
		q.mu.Lock()
		if fc := r.GetFence(); fc != nil {
			// Fence first: from here the member refuses the old holder's
			// WAL, so the position its next report carries is final.
			m := q.members[id]
			again = again || m.Fence < fc.GetEpoch() || !slices.Equal(q.chainLsns[id], r.GetChainLsns())
			m.Fence = max(m.Fence, fc.GetEpoch())
			q.chainLsns[id] = r.GetChainLsns()
		} else {
			q.chainLsns[id] = nil
		}
		q.mu.Unlock()
	}
	return true, again
}

// progress is member id's report: its last record, its fence, its hash at
// the watermark and at the lsns the leader asked for.
func (q *quorumDB) progress(id string, epoch uint64, wm *pb.Watermark) *pb.ProgressReport {
	q.mu.Lock()
	defer q.mu.Unlock()
	m := q.members[id]
	last := m.Last()
	r := &pb.ProgressReport{MemberId: id, Epoch: epoch, FlushedLsn: last.Lsn, FlushedHash: last.Hash, FlushedEpoch: last.Epoch,
		AppliedCommitId: last.Lsn, ReadSafe: true, State: pb.ReplicaState_REPLICA_STATE_STREAMING, FencedEpoch: m.Fence}
	if wm != nil {
		r.WatermarkLsn = wm.GetLsn()
		if h, ok := m.HashAt(wm.GetLsn()); ok {
			r.HashAtWatermark = h
		}
	}
	for _, lsn := range q.chainLsns[id] {
		if h, ok := m.HashAt(lsn); ok && lsn > 0 {
			r.Chain = append(r.Chain, &pb.ChainPoint{Lsn: lsn, Hash: h})
		}
	}
	return r
}

// sendReport sends one report on a new ReportProgress stream and returns
// the leader's response.
func sendReport(ctx context.Context, conn *grpc.ClientConn, domain string, r *pb.ProgressReport) (*pb.ProgressReportResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := pbgrpc.NewWatermarksClient(conn).ReportProgress(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.Send(&pb.ProgressReportRequest{Domain: domain, Report: r}); err != nil {
		if _, rerr := s.Recv(); rerr != nil {
			return nil, rerr
		}
		return nil, err
	}
	resp, err := s.Recv()
	if err != nil {
		return nil, err
	}
	_ = s.CloseSend()
	return resp, nil
}
