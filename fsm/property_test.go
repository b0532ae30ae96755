package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/validator"
	"google.golang.org/protobuf/proto"
)

// Determinism (AU-9): random command streams are applied twice, through the
// decoded and the wire path, and once with a snapshot + restore at a random
// point; states and results (explanations included) must be byte-identical.
//
// Reproduce a failure with: go test ./fsm -run TestProperty -seed=N
// Run more seeds with:      go test ./fsm -run TestProperty -seeds=2000

var (
	seedFlag  = flag.Uint64("seed", 0, "run the property and model tests with this one seed")
	seedsFlag = flag.Int("seeds", 50, "number of seeds the property and model tests run (seeds 1..N)")
)

const streamLen = 300

func propertySeeds() []uint64 {
	if *seedFlag != 0 {
		return []uint64{*seedFlag}
	}
	seeds := make([]uint64, *seedsFlag)
	for i := range seeds {
		seeds[i] = uint64(i + 1)
	}
	return seeds
}

// step is one log entry of a generated stream.
type step struct {
	index, term uint64
	data        []byte      // the entry as replicated
	cmd         *pb.Command // decoded from data; nil when undecodable
}

// The generator's world: four domains of all kinds, a few members and
// lock holders.
var (
	genDomains = []struct {
		name string
		kind pb.DomainKind
	}{
		{"db-a", pb.DomainKind_DOMAIN_KIND_AERODB},
		{"db-b", pb.DomainKind_DOMAIN_KIND_AERODB},
		{"lock-c", pb.DomainKind_DOMAIN_KIND_LOCK},
		{"rel-d", pb.DomainKind_DOMAIN_KIND_RELEASE},
	}
	genMembers = []string{"n1", "n2", "n3", "n4"}
	badNames   = []string{"", "-x", "a b", "é", strings.Repeat("z", MaxNameLen+1)}
)

// chainHash is the hash every honest node has at (domain, lsn): history is
// shared across epochs, so the same lsn keeps its hash.
func chainHash(domain string, lsn uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], lsn)
	sum := sha256.Sum256(append([]byte(domain), b[:]...))
	return sum[:8]
}

// gen builds a stream against a live FSM, reading its state so that valid
// commands (and allowed promotions) are common, and mixing in stale,
// contradictory and malformed ones.
type gen struct {
	r     *rand.Rand
	f     *FSM
	index uint64
	term  uint64
	reqs  map[string][]string // request ids used per domain
	next  int
}

func newGen(seed uint64, f *FSM) *gen {
	return &gen{r: rand.New(rand.NewPCG(seed, 0x5eed)), f: f, term: 1, reqs: map[string][]string{}}
}

func (g *gen) chance(p float64) bool { return g.r.Float64() < p }

func pick[T any](g *gen, xs []T) T { return xs[g.r.IntN(len(xs))] }

// stream generates n entries, applying each to g.f as it goes, and returns
// them with g.f's results.
func (g *gen) stream(n int) ([]step, []*Result) {
	steps := make([]step, 0, n)
	results := make([]*Result, 0, n)
	for range n {
		g.index++
		if g.chance(0.02) {
			g.term++
		}
		data := g.entry()
		s := step{index: g.index, term: g.term, data: data}
		var cmd pb.Command
		if proto.Unmarshal(data, &cmd) == nil {
			s.cmd = &cmd
		}
		steps = append(steps, s)
		results = append(results, g.f.Apply(s.index, s.term, s.data))
	}
	return steps, results
}

func (g *gen) entry() []byte {
	if g.chance(0.03) {
		return g.garbage()
	}
	cmd := g.command()
	cmd.StampedUnixMs = 1_700_000_000_000 + int64(g.index)*37
	cmd.Term = g.term
	cmd.Proposer = pick(g, []string{"s1", "s2", "s3"})
	data, err := marshal.Marshal(cmd)
	if err != nil {
		panic(err)
	}
	return data
}

// garbage is an entry that is undecodable or has no body. It never carries
// unknown fields without a body: that entry panics by design.
func (g *gen) garbage() []byte {
	switch g.r.IntN(4) {
	case 0:
		return pick(g, [][]byte{{0xff}, {0x08}, {0x52, 0x05, 0x01}, {0x0f, 0x00}, {0x82, 0x01, 0x80}})
	case 1:
		data, _ := marshal.Marshal(&pb.Command{StampedUnixMs: 1, Term: g.term})
		return data
	default: // a valid entry cut short: undecodable, or a prefix with known fields only
		data, _ := marshal.Marshal(g.command())
		return data[:g.r.IntN(len(data)+1)]
	}
}

func (g *gen) domainName() string {
	if g.chance(0.03) {
		return pick(g, []string{"nope", ""})
	}
	return pick(g, genDomains).name
}

// aerodbName prefers database domains, for the commands that need one.
func (g *gen) aerodbName() string {
	if g.chance(0.85) {
		return genDomains[g.r.IntN(2)].name
	}
	return g.domainName()
}

func (g *gen) policy() *pb.Policy {
	p := &pb.Policy{
		Mode:           pick(g, []pb.PromotionMode{pb.PromotionMode_PROMOTION_MODE_MANUAL, pb.PromotionMode_PROMOTION_MODE_AUTOMATIC}),
		LeaseTtlMs:     pick(g, []uint64{MinLeaseTTLms, 5000, MaxLeaseTTLms}),
		ReportMaxAgeMs: 30_000,
	}
	if g.chance(0.05) {
		p.PromotionDisabled = true
	}
	if g.chance(0.3) {
		p.ReportMaxAgeMs = 1000
	}
	if g.chance(0.3) {
		p.Durability, p.MinSyncReplicas = pb.Durability_DURABILITY_REPLICA_QUORUM, uint32(g.r.IntN(3))
	}
	if g.chance(0.1) {
		switch g.r.IntN(4) {
		case 0:
			p.Mode = pb.PromotionMode_PROMOTION_MODE_UNSPECIFIED
		case 3:
			p.ReportMaxAgeMs = 0
		case 1:
			p.LeaseTtlMs = MinLeaseTTLms - 1
		default:
			return nil
		}
	}
	return p
}

func (g *gen) holderName() string {
	if g.chance(0.03) {
		return pick(g, badNames)
	}
	return pick(g, append([]string{"runner-a", "runner-b"}, genMembers...))
}

// state returns the live domain (or an empty one when it does not exist).
func (g *gen) state(name string) *pb.Domain {
	if d := g.f.dom(name); d != nil {
		return d
	}
	return &pb.Domain{Name: name}
}

func (g *gen) maybeEpoch(cur uint64) *uint64 {
	switch x := g.r.IntN(10); {
	case x < 5:
		return nil
	case x < 8:
		return u64p(cur)
	default:
		return u64p(cur + 1 - uint64(g.r.IntN(3)))
	}
}

func (g *gen) command() *pb.Command {
	// Bring domains to life first: create, register, assign.
	if spec := pick(g, genDomains); g.chance(0.5) {
		d := g.f.dom(spec.name)
		ok := d != nil
		switch {
		case !ok:
			return createCmd(spec.name, spec.kind, g.policy())
		case d.Kind == pb.DomainKind_DOMAIN_KIND_AERODB && len(d.Members) < 3:
			return registerCmd(d.Name, pick(g, genMembers))
		case d.Epoch == 0 && d.Kind != pb.DomainKind_DOMAIN_KIND_AERODB:
			return assignCmd(d.Name, g.holderName())
		case d.Epoch == 0 && g.chance(0.5):
			return assignCmd(d.Name, pick(g, d.Members).Id)
		}
	}
	switch x := g.r.IntN(100); {
	case x < 5:
		return g.create()
	case x < 8:
		return updatePolicyCmd(g.domainName(), g.policy())
	case x < 16:
		return g.register()
	case x < 21:
		d := g.state(g.domainName())
		holder := g.holderName()
		if d.Kind == pb.DomainKind_DOMAIN_KIND_AERODB && g.chance(0.8) && len(d.Members) > 0 {
			holder = pick(g, d.Members).Id
		}
		return assignCmd(d.Name, holder)
	case x < 30:
		return g.acquire()
	case x < 37:
		return g.release()
	case x < 60:
		return g.advance()
	case x < 90:
		return g.promote()
	case x < 95:
		return g.prepare()
	default:
		return g.finish()
	}
}

// prepare fences a domain's replicas for its next epoch (a replica-quorum
// domain most of the time; the others refuse it).
func (g *gen) prepare() *pb.Command {
	d := g.state(g.aerodbName())
	cand := pick(g, genMembers)
	if g.chance(0.7) && len(d.Members) > 0 {
		cand = pick(g, d.Members).Id
	}
	g.next++
	epoch := d.Epoch
	if g.chance(0.1) {
		epoch++
	}
	return &pb.Command{Body: &pb.Command_PreparePromotion{PreparePromotion: &pb.PreparePromotion{
		RequestId: fmt.Sprintf("prep-%d", g.next), Domain: d.Name, Candidate: cand, ExpectedEpoch: epoch}}}
}

// fenceReports are fenced final positions of some members, mostly at the
// domain's pending fence, sometimes at another epoch, with chain points.
func (g *gen) fenceReports(d *pb.Domain) []*pb.ProgressReport {
	var out []*pb.ProgressReport
	for _, m := range d.GetMembers() {
		if g.chance(0.25) {
			continue
		}
		r := g.report(d, m.GetId())
		if r == nil {
			continue
		}
		r.FencedEpoch, r.FlushedEpoch = d.Epoch+1, d.Epoch
		if g.chance(0.1) {
			r.FencedEpoch = d.Epoch
		}
		for range d.GetMembers() {
			if g.chance(0.5) {
				lsn := d.GetWatermark().GetLsn() + uint64(g.r.IntN(10))
				r.Chain = append(r.Chain, &pb.ChainPoint{Lsn: lsn, Hash: chainHash(d.Name, lsn)})
			}
		}
		out = append(out, r)
	}
	return out
}

func (g *gen) create() *pb.Command {
	spec := pick(g, genDomains)
	c := createCmd(spec.name, spec.kind, g.policy())
	if g.chance(0.08) {
		c.GetCreateDomain().Name = pick(g, badNames)
	}
	if g.chance(0.05) {
		c.GetCreateDomain().Kind = pb.DomainKind(g.r.IntN(5))
	}
	return c
}

func (g *gen) register() *pb.Command {
	c := &pb.RegisterMember{Domain: g.aerodbName(), MemberId: pick(g, genMembers), Address: "10.0.0.1:7000", Priority: uint32(g.r.IntN(3))}
	switch x := g.r.IntN(20); {
	case x < 2:
		c.State = pb.MemberState_MEMBER_STATE_DECOMMISSIONED
	case x < 5:
		c.State = pb.MemberState_MEMBER_STATE_ACTIVE
	case x < 6:
		c.MemberId = pick(g, badNames)
	}
	return &pb.Command{Body: &pb.Command_RegisterMember{RegisterMember: c}}
}

// observation is the leader's view of the holder's lease: usually expired
// for the current (holder, epoch), sometimes held, stale or absent.
func (g *gen) observation(d *pb.Domain) *pb.LeaseObservation {
	obs := leaseObs(d.Holder, d.Epoch, pb.LeaseState_LEASE_STATE_EXPIRED)
	obs.LeaderTerm = g.term
	switch x := g.r.IntN(20); {
	case x < 13:
	case x < 15:
		obs.State = pb.LeaseState_LEASE_STATE_HELD
		obs.RemainingMs = uint64(g.r.IntN(5000))
	case x < 17:
		obs.Epoch = d.Epoch - min(d.Epoch, 1)
	case x < 18:
		obs.Holder = pick(g, genMembers)
	default:
		return nil
	}
	return obs
}

func (g *gen) acquire() *pb.Command {
	d := g.state(g.domainName())
	holder := g.holderName()
	if d.Kind == pb.DomainKind_DOMAIN_KIND_AERODB && g.chance(0.5) {
		holder = d.Holder
	}
	return acquireCmd(d.Name, holder, g.observation(d), g.maybeEpoch(d.Epoch))
}

// fenceStamp is (holder, epoch) of the current holder most of the time.
func (g *gen) fenceStamp(d *pb.Domain) (string, uint64) {
	if g.chance(0.75) {
		return d.Holder, d.Epoch
	}
	if g.chance(0.5) {
		return d.Holder, d.Epoch - min(d.Epoch, 1)
	}
	return pick(g, genMembers), d.Epoch
}

func (g *gen) release() *pb.Command {
	d := g.state(g.domainName())
	holder, epoch := g.fenceStamp(d)
	return releaseCmd(d.Name, holder, epoch)
}

func (g *gen) finish() *pb.Command {
	name := pick(g, genDomains[2:]).name
	if g.chance(0.1) {
		name = g.domainName()
	}
	d := g.state(name)
	holder, epoch := g.fenceStamp(d)
	id := fmt.Sprintf("work-%d", g.r.IntN(50))
	if g.chance(0.5) {
		return completeCmd(d.Name, holder, epoch, id)
	}
	return abortCmd(d.Name, holder, epoch, id)
}

func (g *gen) advance() *pb.Command {
	n := 1
	if g.chance(0.25) {
		n = 2 + g.r.IntN(3)
	}
	advs := make([]*pb.WatermarkAdvance, 0, n)
	for range n {
		d := g.state(g.aerodbName())
		holder, epoch := g.fenceStamp(d)
		var lsn, visible uint64
		if wm := d.Watermark; wm != nil && wm.Epoch == d.Epoch {
			lsn, visible = wm.Lsn, wm.VisibleCommitId
		} else if wm != nil {
			// A new epoch may restart a little below the old watermark.
			lsn, visible = wm.Lsn-min(wm.Lsn, uint64(g.r.IntN(5))), wm.VisibleCommitId
		}
		lsn += uint64(g.r.IntN(20))
		visible += uint64(g.r.IntN(4))
		a := wmAdv(d.Name, holder, epoch, lsn, chainHash(d.Name, lsn), visible)
		switch x := g.r.IntN(20); {
		case x < 1:
			a.Lsn -= min(a.Lsn, 3)
		case x < 2:
			a.Hash = []byte{byte(g.r.IntN(256))}
		case x < 3:
			a.VisibleCommitId -= min(a.VisibleCommitId, 5)
		case x < 4:
			a.Hash = nil
		}
		advs = append(advs, a)
	}
	if g.chance(0.01) {
		advs = nil
	}
	return advanceCmd(advs...)
}

// promote builds an attempt whose evidence is read from the current state
// most of the time (so promotions are often allowed), then perturbs it.
func (g *gen) promote() *pb.Command {
	d := g.state(g.aerodbName())
	cand := pick(g, genMembers)
	if g.chance(0.7) && len(d.Members) > 0 {
		cand = pick(g, d.Members).Id
	}
	req := &pb.PromotionRequest{Domain: d.Name, Candidate: cand, Reason: "test",
		ExpectedEpoch: g.maybeEpoch(d.Epoch), InitiatedBy: pb.Initiator(g.r.IntN(4))}
	used := g.reqs[d.Name]
	switch x := g.r.IntN(100); {
	case x < 12 && len(used) > 0:
		req.RequestId = pick(g, used)
	case x < 15:
		req.RequestId = pick(g, badNames)
	default:
		g.next++
		req.RequestId = fmt.Sprintf("req-%d", g.next)
		g.reqs[d.Name] = append(used, req.RequestId)
	}
	if g.chance(0.03) {
		req.DryRun = true
	}
	if g.chance(0.08) {
		req.Waivers = []string{pick(g, []string{validator.WaiverAllowDataLoss, validator.WaiverAllowVisibilityRegression, "bogus"})}
		if g.chance(0.3) {
			req.Reason = ""
		}
	}
	a := &pb.PromotionAttempt{Request: req, Lease: g.observation(d), CandidateReport: g.report(d, cand),
		ReportAgeMs: uint64(g.r.IntN(1500))}
	if ReplicaQuorum(d.GetPolicy()) || g.chance(0.05) {
		a.FenceReports = g.fenceReports(d)
	}
	if g.chance(0.01) {
		a.Request = nil
	}
	return attemptCmd(a)
}

func (g *gen) report(d *pb.Domain, cand string) *pb.ProgressReport {
	wm := d.Watermark
	flushed := wm.GetLsn() + uint64(g.r.IntN(10))
	r := &pb.ProgressReport{MemberId: cand, Epoch: d.Epoch, FlushedLsn: flushed, FlushedHash: chainHash(d.Name, flushed),
		WatermarkLsn: wm.GetLsn(), HashAtWatermark: bytes.Clone(wm.GetHash()), AppliedCommitId: wm.GetVisibleCommitId() + uint64(g.r.IntN(3)),
		ReadSafe: true, State: pb.ReplicaState_REPLICA_STATE_STREAMING}
	if flushed == wm.GetLsn() {
		r.FlushedHash = bytes.Clone(wm.GetHash())
	}
	switch x := g.r.IntN(40); {
	case x < 3:
		return nil
	case x < 5:
		r.Epoch -= min(r.Epoch, 1)
	case x < 7:
		r.FlushedLsn = wm.GetLsn() - min(wm.GetLsn(), 1)
		r.HashAtWatermark = nil
	case x < 9:
		r.HashAtWatermark = []byte{0xde, 0xad}
	case x < 10:
		r.AppliedCommitId = 0
	case x < 11:
		r.ReadSafe = false
	case x < 12:
		r.State = pb.ReplicaState_REPLICA_STATE_DIVERGED
	case x < 13:
		r.MemberId = "n9"
	}
	return r
}

// resultString renders a result completely and deterministically: the
// error text, the authority, every watermark outcome, and the attempt
// record's deterministic bytes (which hold the explanation: every check
// with its observed values).
func resultString(r *Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "index=%d epoch=%d holder=%q dup=%t err=%v\n", r.Index, r.Epoch, r.Holder, r.Duplicate, r.Err)
	for _, w := range r.Watermarks {
		fmt.Fprintf(&b, "  watermark %s: %v\n", w.Domain, w.Err)
	}
	if r.Attempt != nil {
		data, err := marshal.Marshal(r.Attempt)
		if err != nil {
			panic(err)
		}
		fmt.Fprintf(&b, "  record %s\n", hex.EncodeToString(data))
	}
	return b.String()
}

func resultStrings(rs []*Result) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = resultString(r)
	}
	return out
}

func describeStep(s step) string {
	if s.cmd == nil {
		return fmt.Sprintf("index %d: undecodable %x", s.index, s.data)
	}
	return fmt.Sprintf("index %d term %d: %v", s.index, s.term, s.cmd)
}

// compareResults fails at the first result that differs from want (the
// rendered results of steps[offset:]), naming the seed and the command.
func compareResults(t *testing.T, seed uint64, what string, steps []step, offset int, want []string, got []*Result) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("seed=%d %s: %d results, want %d", seed, what, len(got), len(want))
	}
	for i := range want {
		if g := resultString(got[i]); g != want[i] {
			logStream(t, seed, steps, offset+i)
			explain := ""
			if got[i].Attempt != nil {
				explain = DescribeAttempt(got[i].Attempt)
			}
			t.Fatalf("seed=%d %s: first difference at command %d (%s):\ngot  %s%s\nwant %s",
				seed, what, offset+i, describeStep(steps[offset+i]), g, explain, want[i])
		}
	}
}

// logStream logs the stream up to and including command last (its tail
// when long) and how to reproduce it.
func logStream(t *testing.T, seed uint64, steps []step, last int) {
	t.Helper()
	first := max(0, last-40)
	var b strings.Builder
	fmt.Fprintf(&b, "seed=%d: reproduce with go test ./fsm -run %s -seed=%d; commands %d..%d:\n", seed, t.Name(), seed, first, last)
	for i := first; i <= last && i < len(steps); i++ {
		fmt.Fprintf(&b, "  %3d %s\n", i, describeStep(steps[i]))
	}
	t.Log(b.String())
}

func replay(f *FSM, steps []step) []*Result {
	out := make([]*Result, len(steps))
	for i, s := range steps {
		out[i] = f.Apply(s.index, s.term, s.data)
	}
	return out
}

// replayDecoded uses ApplyCommand for every decodable entry.
func replayDecoded(f *FSM, steps []step) []*Result {
	out := make([]*Result, len(steps))
	for i, s := range steps {
		if s.cmd == nil {
			out[i] = f.Apply(s.index, s.term, s.data)
			continue
		}
		out[i] = f.ApplyCommand(s.index, s.term, s.cmd)
	}
	return out
}

// genStats counts what the streams exercised, so that a generator that
// drifted into producing only rejections fails loudly.
type genStats struct {
	allowed, denied, duplicates, errs, ok, entries int
	reasons                                        map[string]int
}

func (s *genStats) add(results []*Result) {
	if s.reasons == nil {
		s.reasons = map[string]int{}
	}
	for _, r := range results {
		s.entries++
		switch {
		case r.Duplicate:
			s.duplicates++
		case r.Attempt != nil && r.Attempt.Decision.Allowed:
			s.allowed++
		case r.Attempt != nil:
			s.denied++
			s.reasons[r.Attempt.Decision.DenialReason]++
		case r.Err != nil:
			s.errs++
		default:
			s.ok++
		}
	}
}

// Readiness: P6-D1, AU-9; docs/READINESS.md.
//
// b and d spill their history (spill.go) with a compaction threshold and
// a tail cache small enough to reach: the snapshots stay byte-equal.
func TestPropertyDeterminism(t *testing.T) {
	smallSpill(t)
	var stats genStats
	for _, seed := range propertySeeds() {
		a := New()
		steps, resA := newGen(seed, a).stream(streamLen)
		stats.add(resA)
		snapA := mustSnapshot(t, a)
		wantA := resultStrings(resA)

		b := New()
		spillOn(b)
		compareResults(t, seed, "replay", steps, 0, wantA, replay(b, steps))
		if !bytes.Equal(mustSnapshot(t, b), snapA) {
			t.Fatalf("seed=%d replay: snapshots differ", seed)
		}

		e := New()
		compareResults(t, seed, "ApplyCommand vs Apply", steps, 0, wantA, replayDecoded(e, steps))
		if !bytes.Equal(mustSnapshot(t, e), snapA) {
			t.Fatalf("seed=%d ApplyCommand vs Apply: snapshots differ", seed)
		}

		// Snapshot after k entries, restore into a fresh FSM, apply the rest.
		k := rand.New(rand.NewPCG(seed, 0xc0ffee)).IntN(len(steps) + 1)
		t.Logf("seed=%d: %d entries, snapshot at %d", seed, len(steps), k)
		c := New()
		compareResults(t, seed, "prefix", steps, 0, wantA[:k], replay(c, steps[:k]))
		d := New()
		spillOn(d)
		if err := d.Restore(bytes.NewReader(mustSnapshot(t, c))); err != nil {
			t.Fatalf("seed=%d restore at %d: %v", seed, k, err)
		}
		compareResults(t, seed, fmt.Sprintf("after restore at %d", k), steps, k, wantA[k:], replay(d, steps[k:]))
		if !bytes.Equal(mustSnapshot(t, d), snapA) {
			t.Fatalf("seed=%d restore at %d: snapshots differ", seed, k)
		}
		// The snapshot did not disturb the FSM it was taken from.
		compareResults(t, seed, "continued after snapshot", steps, k, wantA[k:], replay(c, steps[k:]))
		for _, name := range a.DomainNames() {
			da, _ := a.Domain(name)
			dd, _ := d.Domain(name)
			if DescribeDomain(da) != DescribeDomain(dd) {
				t.Fatalf("seed=%d: domain %s describes differently after restore", seed, name)
			}
		}
	}
	t.Logf("seeds=%d entries=%d ok=%d errors=%d allowed=%d denied=%d duplicates=%d reasons=%v",
		len(propertySeeds()), stats.entries, stats.ok, stats.errs, stats.allowed, stats.denied, stats.duplicates, stats.reasons)
	if *seedFlag == 0 && (stats.allowed < len(propertySeeds()) || stats.denied < len(propertySeeds()) || stats.duplicates == 0) {
		t.Fatalf("the generator is not exercising promotions: %+v", stats)
	}
}
