package promotion

import (
	"errors"
	"hash/maphash"
	"strconv"
	"sync"
	"time"
)

// Clock gives monotonic time. Production passes a wall clock (time.Now
// carries a monotonic reading, so wall-clock steps do not move deadlines);
// tests pass a fake and never sleep.
type Clock interface{ Now() time.Time }

// Sentinels callers branch on with errors.Is.
var (
	ErrNotLeader    = errors.New("promotion: not the leader")
	ErrFenced       = errors.New("promotion: fenced: stale epoch or holder")
	ErrLeaseExpired = errors.New("promotion: lease expired on the leader; acquire again through the log")
	ErrNoLease      = errors.New("promotion: no lease for this domain")
	// ErrKindNotAllowed: the caller's role may not act on the domain's kind
	// (a batched renewal checks it per lease; see authz.MayActOn).
	ErrKindNotAllowed = errors.New("promotion: permission denied: this identity's role may not act on the domain's kind")
)

// Grant is a lease as committed in the log: the holder of domain at epoch,
// renewable for TTL at a time.
type Grant struct {
	Domain, Holder string
	Epoch          uint64
	TTL            time.Duration
}

// LeaseStatus is what the leader sees of a domain's lease.
type LeaseStatus int

// Lease statuses. LeaseNone is the zero value: an unknown domain has no lease.
const (
	LeaseNone LeaseStatus = iota
	LeaseHeld
	LeaseExpired
	LeaseReleased
)

var leaseStatusNames = [...]string{
	LeaseNone:     "None",
	LeaseHeld:     "Held",
	LeaseExpired:  "Expired",
	LeaseReleased: "Released",
}

// String gives a stable name for explanations and logs.
func (s LeaseStatus) String() string {
	if s >= 0 && int(s) < len(leaseStatusNames) {
		return leaseStatusNames[s]
	}
	return "LeaseStatus(" + strconv.Itoa(int(s)) + ")"
}

// Observation is the leader's view of one lease at one instant. A promotion
// copies it into its log entry, so apply never reads a clock.
type Observation struct {
	Domain, Holder string
	Epoch          uint64
	Status         LeaseStatus
	Remaining      time.Duration
	// ExpiredFor: how long ago an expired lease expired (the failure
	// detection time a deploy failover reports).
	ExpiredFor time.Duration
}

type lease struct {
	holder   string
	epoch    uint64
	ttl      time.Duration
	expiry   time.Time
	released bool
	// reported: the expiry was already reported to onExpire.
	reported bool
	// handover: an operator asked this holder to hand over to candidate
	// until handoverUntil (planned switchover). Leader-local, like the
	// expiry: a new grant (new lease struct) or a leader change drops it.
	candidate     string
	handoverUntil time.Time
}

// expired uses !Before so a renewal arriving exactly at the deadline fails:
// the holder's own deadline is earlier still (send time + TTL - margin).
func (l *lease) expired(now time.Time) bool { return !now.Before(l.expiry) }

// LeaseTable is the leader-local lease table, after etcd's lessor: grants,
// releases and epochs come from committed log entries, renewals only touch
// this memory. Expiry is evaluated when asked, so there are no timers or
// goroutines. It is safe for concurrent use.
//
// The table is split into leaseShards shards by a hash of the domain, each
// with its own lock, so renewals of different domains (a batch from one
// holder, or many holders' streams) do not queue behind one lock. Each
// shard carries its own copy of the leader flag, set and cleared with every
// shard locked (Promote, Demote), so a method that locks one shard sees a
// consistent view of leadership and of that shard's leases.
type LeaseTable struct {
	clock  Clock
	seed   maphash.Seed
	shards [leaseShards]leaseShard
	// onExpire is told once per lease when the table first finds it
	// expired (metrics); nil for none. Called with a shard locked: keep it
	// cheap.
	onExpire func(domain string)
}

// leaseShards is the number of lock shards of a LeaseTable.
const leaseShards = 64

type leaseShard struct {
	mu     sync.Mutex
	leader bool
	leases map[string]*lease // by domain; nil while demoted
	_      [40]byte          // keeps neighbouring shards' locks off one cache line
}

// shard returns the shard of domain.
func (t *LeaseTable) shard(domain string) *leaseShard {
	return &t.shards[maphash.String(t.seed, domain)%leaseShards]
}

// lockAll locks every shard in order (Promote, Demote, Len).
func (t *LeaseTable) lockAll() {
	for i := range t.shards {
		t.shards[i].mu.Lock()
	}
}

func (t *LeaseTable) unlockAll() {
	for i := range t.shards {
		t.shards[i].mu.Unlock()
	}
}

// expiredNow reports whether l is expired at now, telling onExpire the
// first time.
func (t *LeaseTable) expiredNow(domain string, l *lease, now time.Time) bool {
	if !l.expired(now) {
		return false
	}
	if !l.reported && t.onExpire != nil {
		l.reported = true
		t.onExpire(domain)
	}
	return true
}

// NewLeaseTable returns a demoted table: until Promote, every method reports
// ErrNotLeader (or a zero value), because only the leader may judge leases.
func NewLeaseTable(clock Clock) *LeaseTable {
	return &LeaseTable{clock: clock, seed: maphash.MakeSeed()}
}

// Promote is called when this node becomes leader, after its barrier applied
// every entry of earlier terms (otherwise an old leader's committed promotion
// could land after we accepted a renewal from the holder it replaced).
//
// Every given lease gets a full TTL from now: a new leader cannot know the
// last renewal, so a leader change never shortens a lease. This holds even
// for a lease that had already expired on the old leader, and that is safe:
// the holder measures its own deadline from the send time of its last
// successful renewal, so it has already stopped acting and must acquire again;
// and a promotion needs an "expired" observation made by the current leader,
// which this reset only delays by at most one TTL. Grants with a lower epoch
// than another grant of the same domain are ignored, as in Grant.
func (t *LeaseTable) Promote(grants []Grant) {
	t.lockAll()
	defer t.unlockAll()
	now := t.clock.Now()
	for i := range t.shards {
		t.shards[i].leader = true
		t.shards[i].leases = make(map[string]*lease, len(grants)/leaseShards+1)
	}
	for _, g := range grants {
		t.shard(g.Domain).record(g, now)
	}
}

// Demote drops every lease; it is called on losing leadership, after which
// another node is the only judge of expiry.
func (t *LeaseTable) Demote() {
	t.lockAll()
	defer t.unlockAll()
	for i := range t.shards {
		t.shards[i].leader = false
		t.shards[i].leases = nil
	}
}

// Grant records a lease granted by a committed entry (initial assignment,
// acquire, promotion) with expiry now + TTL. It replaces a lease of an older
// epoch. A lower epoch is ignored, so a late entry never rolls a domain back.
// The same epoch for the same holder is a committed re-acquire (an aerodb
// holder whose lease expired takes it back through the log without a
// promotion): it starts a fresh lease. The same epoch for another holder is
// ignored: an epoch names one holder.
func (t *LeaseTable) Grant(g Grant) error {
	sh := t.shard(g.Domain)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if !sh.leader {
		return ErrNotLeader
	}
	sh.record(g, t.clock.Now())
	return nil
}

func (sh *leaseShard) record(g Grant, now time.Time) {
	if cur, ok := sh.leases[g.Domain]; ok && (g.Epoch < cur.epoch || g.Epoch == cur.epoch && g.Holder != cur.holder) {
		return
	}
	sh.leases[g.Domain] = &lease{holder: g.Holder, epoch: g.Epoch, ttl: g.TTL, expiry: now.Add(g.TTL)}
}

// Renew extends the holder's lease to now + TTL and returns the new
// remaining time. It fails with ErrNotLeader when demoted, ErrNoLease when the
// domain has no lease, ErrFenced when (holder, epoch) is not the recorded
// lease or the lease was released, and ErrLeaseExpired once the lease expired
// here: an expired lease is never renewed, the holder must acquire again
// through the log, where the epoch fences any promotion that raced it.
func (t *LeaseTable) Renew(domain, holder string, epoch uint64) (time.Duration, error) {
	sh := t.shard(domain)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return t.renewLocked(sh, domain, holder, epoch)
}

// renewLocked is Renew with domain's shard sh locked.
func (t *LeaseTable) renewLocked(sh *leaseShard, domain, holder string, epoch uint64) (time.Duration, error) {
	if !sh.leader {
		return 0, ErrNotLeader
	}
	l, ok := sh.leases[domain]
	if !ok {
		return 0, ErrNoLease
	}
	return t.renewLease(domain, l, holder, epoch)
}

// renewLease renews l, the lease of domain, with its shard locked.
func (t *LeaseTable) renewLease(domain string, l *lease, holder string, epoch uint64) (time.Duration, error) {
	if l.holder != holder || l.epoch != epoch || l.released {
		return 0, ErrFenced
	}
	now := t.clock.Now()
	if t.expiredNow(domain, l, now) {
		return 0, ErrLeaseExpired
	}
	l.expiry = now.Add(l.ttl)
	return l.ttl, nil
}

// Release marks the lease of (domain, epoch) released, after a committed
// Release entry. Releasing an older epoch is a no-op. A newer epoch than the
// recorded one (its grant was never seen here) still fences the recorded
// lease: the domain is known to have moved past it.
func (t *LeaseTable) Release(domain string, epoch uint64) {
	sh := t.shard(domain)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.release(domain, epoch)
}

func (sh *leaseShard) release(domain string, epoch uint64) {
	if l, ok := sh.leases[domain]; ok { // nil map while demoted: nothing to release
		l.release(epoch)
	}
}

func (l *lease) release(epoch uint64) {
	if epoch < l.epoch {
		return
	}
	if epoch > l.epoch {
		*l = lease{epoch: epoch}
	}
	l.released = true
}

// Observe reports what the leader sees now of domain's lease. An unknown
// domain reports LeaseNone. Remaining is zero unless the lease is held.
func (t *LeaseTable) Observe(domain string) (Observation, error) {
	sh := t.shard(domain)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if !sh.leader {
		return Observation{}, ErrNotLeader
	}
	obs := Observation{Domain: domain}
	l, ok := sh.leases[domain]
	if !ok {
		return obs, nil
	}
	obs.Holder, obs.Epoch = l.holder, l.epoch
	now := t.clock.Now()
	switch {
	case l.released:
		obs.Status = LeaseReleased
	case t.expiredNow(domain, l, now):
		obs.Status = LeaseExpired
		obs.ExpiredFor = max(0, now.Sub(l.expiry))
	default:
		obs.Status = LeaseHeld
		obs.Remaining = l.expiry.Sub(now)
	}
	return obs, nil
}

// Len returns how many leases are tracked (zero while demoted).
func (t *LeaseTable) Len() int {
	t.lockAll()
	defer t.unlockAll()
	n := 0
	for i := range t.shards {
		n += len(t.shards[i].leases)
	}
	return n
}

// Adopt records a committed grant the table has not seen (its proposer
// gave up waiting — the entry committed anyway — or it was applied some
// other way): a lease from now, only when the table holds no lease of that
// domain at this or a newer epoch. Unlike Grant it never refreshes an
// existing lease, so calling it on every request cannot keep a lease alive.
func (t *LeaseTable) Adopt(g Grant) {
	sh := t.shard(g.Domain)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t.adoptLocked(sh, g)
}

func (t *LeaseTable) adoptLocked(sh *leaseShard, g Grant) {
	if !sh.leader {
		return
	}
	if cur, ok := sh.leases[g.Domain]; ok && cur.epoch >= g.Epoch {
		return
	}
	sh.record(g, t.clock.Now())
}

// SyncRenew is, under one lock and with one lookup, what a renewal on the
// service does: bring the table in line with the replicated authority of
// the domain (a: its holder, epoch and TTL, and whether it is released; as
// Adopt and Release do), renew the lease of (holder, epoch) as Renew does,
// and, when renewed, report the standing handover request as Handover does.
// It allocates nothing (unless it adopts a grant it had not seen).
func (t *LeaseTable) SyncRenew(a Grant, released bool, holder string, epoch uint64) (time.Duration, Handover, bool, error) {
	sh := t.shard(a.Domain)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if !sh.leader {
		return 0, Handover{}, false, ErrNotLeader
	}
	l, ok := sh.leases[a.Domain]
	if a.Holder != "" && a.Epoch != 0 {
		switch {
		case released && ok:
			l.release(a.Epoch)
		case !released && (!ok || l.epoch < a.Epoch): // Adopt
			l = &lease{holder: a.Holder, epoch: a.Epoch, ttl: a.TTL, expiry: t.clock.Now().Add(a.TTL)}
			sh.leases[a.Domain], ok = l, true
		}
	}
	if !ok {
		return 0, Handover{}, false, ErrNoLease
	}
	d, err := t.renewLease(a.Domain, l, holder, epoch)
	if err != nil {
		return 0, Handover{}, false, err
	}
	h, hok := t.handoverOf(l)
	return d, h, hok, nil
}
