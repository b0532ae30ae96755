package fsm_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"google.golang.org/protobuf/proto"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/validator"
)

// TestDatadriven runs every script in testdata/ against a real fsm.New(),
// in the style of etcd-io/raft's interaction tests: one handler per script
// command, outputs rendered by the same Describe* functions the CLI and the
// logs use. Regenerate the expected outputs with
//
//	go test ./fsm/ -run TestDatadriven -rewrite
//
// and review the diff: the outputs are the rules, written down.
//
// Each file starts from an empty state machine. See the header of
// testdata/promotion_rules.txt for the command reference.
func TestDatadriven(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		env := newDDEnv()
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			return env.handle(t, d)
		})
	})
}

// ddEnv is the harness: the replicated state machine plus the leader-local
// soft state (progress reports and lease observations) that a real leader
// keeps in memory and copies into a PromotionAttempt entry as evidence.
type ddEnv struct {
	fsm   *fsm.FSM
	index uint64 // last log index handed to ApplyCommand
	term  uint64 // current leader term, stamped into every entry
	// reports[domain][member] is the latest progress report the leader has.
	reports map[string]map[string]ddReport
	// leases[domain] is the leader's current observation of the holder's lease.
	leases map[string]*pb.LeaseObservation
	// log is every entry applied so far, as the raft log holds it.
	log []ddEntry
}

// ddEntry is one log entry: its index, term and encoded command.
type ddEntry struct {
	index, term uint64
	data        []byte
}

// ddReport is a stored progress report and its age as the leader sees it.
type ddReport struct {
	report *pb.ProgressReport
	ageMs  uint64
}

func newDDEnv() *ddEnv {
	return &ddEnv{
		fsm:     fsm.New(),
		term:    1,
		reports: map[string]map[string]ddReport{},
		leases:  map[string]*pb.LeaseObservation{},
	}
}

// handle is the one dispatch table of the script language.
func (e *ddEnv) handle(t *testing.T, d *datadriven.TestData) string {
	switch d.Cmd {
	case "domain":
		return e.handleDomain(t, d)
	case "policy":
		return e.handlePolicy(t, d)
	case "member":
		return e.handleMember(t, d)
	case "assign":
		return e.handleAssign(t, d)
	case "acquire":
		return e.handleAcquire(t, d)
	case "release":
		return e.handleRelease(t, d)
	case "complete":
		return e.handleFinish(t, d, false)
	case "abort":
		return e.handleFinish(t, d, true)
	case "watermark":
		return e.handleWatermark(t, d)
	case "report":
		return e.handleReport(t, d)
	case "lease":
		return e.handleLease(t, d)
	case "leader-change":
		return e.handleLeaderChange(t, d)
	case "promote":
		return e.handlePromote(t, d)
	case "prepare":
		return e.handlePrepare(t, d)
	case "explain":
		return e.handleExplain(t, d)
	case "deploy":
		return e.handleDeploy(t, d)
	case "show":
		return e.handleShow(t, d)
	case "hash":
		return e.handleHash(t, d)
	case "restore":
		return e.handleRestore(t, d)
	case "replay":
		return e.handleReplay(t, d)
	}
	d.Fatalf(t, "unknown command %q (want domain, policy, member, assign, acquire, release, complete, abort, "+
		"watermark, report, lease, leader-change, promote, prepare, deploy, explain, show, hash, restore or replay)", d.Cmd)
	return ""
}

// apply appends one entry to the log at the next index.
func (e *ddEnv) apply(cmd *pb.Command) *fsm.Result {
	e.index++
	cmd.Term = e.term
	cmd.Proposer = "leader"
	cmd.StampedUnixMs = 1_700_000_000_000 + int64(e.index) // audit only, never decides
	b, err := proto.Marshal(cmd)
	if err != nil {
		panic(err) // a command the harness built itself
	}
	e.log = append(e.log, ddEntry{index: e.index, term: e.term, data: b})
	return e.fsm.ApplyCommand(e.index, e.term, cmd)
}

// handleRestore swaps the state machine for one restored from its
// snapshot, as a restarted server or a new follower gets it; the state
// hash must not move. The leader-local soft state (reports, leases) stays.
func (e *ddEnv) handleRestore(t *testing.T, d *datadriven.TestData) string {
	newDDArgs(t, d, d.CmdArgs).done()
	before, err := e.fsm.StateHash()
	if err != nil {
		d.Fatalf(t, "StateHash: %v", err)
	}
	snap, err := e.fsm.Snapshot()
	if err != nil {
		d.Fatalf(t, "Snapshot: %v", err)
	}
	g := fsm.New()
	if err := g.Restore(bytes.NewReader(snap)); err != nil {
		d.Fatalf(t, "Restore: %v", err)
	}
	return e.swap(t, d, g, before, fmt.Sprintf("restored from a snapshot at index=%d", g.LastIndex()))
}

// handleReplay swaps the state machine for a fresh one that applied every
// logged entry again, as a server replaying its log does; the state hash
// must not move.
func (e *ddEnv) handleReplay(t *testing.T, d *datadriven.TestData) string {
	newDDArgs(t, d, d.CmdArgs).done()
	before, err := e.fsm.StateHash()
	if err != nil {
		d.Fatalf(t, "StateHash: %v", err)
	}
	g := fsm.New()
	for _, en := range e.log {
		g.Apply(en.index, en.term, en.data)
	}
	return e.swap(t, d, g, before, fmt.Sprintf("replayed %d entries", len(e.log)))
}

func (e *ddEnv) swap(t *testing.T, d *datadriven.TestData, g *fsm.FSM, before [32]byte, what string) string {
	after, err := g.StateHash()
	if err != nil {
		d.Fatalf(t, "StateHash: %v", err)
	}
	if after != before {
		d.Fatalf(t, "%s: state hash %x, was %x", what, after[:8], before[:8])
	}
	e.fsm = g
	return what + " (state hash unchanged)\n"
}

// ddOutcome renders the plain result of an entry.
func ddOutcome(res *fsm.Result) string {
	if res.Err != nil {
		return "error: " + res.Err.Error() + "\n"
	}
	if res.Holder == "" {
		return fmt.Sprintf("ok epoch=%d\n", res.Epoch)
	}
	return fmt.Sprintf("ok epoch=%d holder=%s\n", res.Epoch, res.Holder)
}

func (e *ddEnv) handleDomain(t *testing.T, d *datadriven.TestData) string {
	a := newDDArgs(t, d, d.CmdArgs)
	name := a.str("name")
	kind := ddEnum(a, "kind", pb.DomainKind_value, "DOMAIN_KIND_", "")
	policy := ddPolicy(a)
	a.done()
	return ddOutcome(e.apply(&pb.Command{Body: &pb.Command_CreateDomain{CreateDomain: &pb.CreateDomain{
		Name: name, Kind: pb.DomainKind(kind), Policy: policy,
	}}}))
}

// handlePolicy replaces the whole policy: omitted fields take the same
// defaults as the domain command.
func (e *ddEnv) handlePolicy(t *testing.T, d *datadriven.TestData) string {
	a := newDDArgs(t, d, d.CmdArgs)
	name := a.str("name")
	policy := ddPolicy(a)
	a.done()
	return ddOutcome(e.apply(&pb.Command{Body: &pb.Command_UpdateDomainPolicy{UpdateDomainPolicy: &pb.UpdateDomainPolicy{
		Name: name, Policy: policy,
	}}}))
}

// ddPolicy reads the policy arguments shared by domain and policy.
func ddPolicy(a *ddArgs) *pb.Policy {
	return &pb.Policy{
		Mode:                pb.PromotionMode(ddEnum(a, "mode", pb.PromotionMode_value, "PROMOTION_MODE_", "manual")),
		LeaseTtlMs:          a.u64Or("ttl", 10_000),
		PromotionDisabled:   a.flag("disabled"),
		ReportMaxAgeMs:      a.u64Or("max-age", 30_000),
		MinSyncReplicas:     uint32(a.u64Or("min-sync", 1)),
		Durability:          pb.Durability(ddEnum(a, "durability", pb.Durability_value, "DURABILITY_", "unspecified")),
		WatermarkIntervalMs: a.u64Or("wm-interval", 0),
		WaiverMode:          pb.WaiverMode(ddEnum(a, "waivers", pb.WaiverMode_value, "WAIVER_MODE_", "unspecified")),
		WaiverReason:        a.strOr("waiver-reason", ""),
	}
}

func (e *ddEnv) handleMember(t *testing.T, d *datadriven.TestData) string {
	a := newDDArgs(t, d, d.CmdArgs)
	m := &pb.RegisterMember{
		Domain:   a.str("domain"),
		MemberId: a.str("id"),
		Address:  a.strOr("address", ""),
		Priority: uint32(a.u64Or("priority", 1)),
		State:    pb.MemberState(ddEnum(a, "state", pb.MemberState_value, "MEMBER_STATE_", "active")),
	}
	a.done()
	return ddOutcome(e.apply(&pb.Command{Body: &pb.Command_RegisterMember{RegisterMember: m}}))
}

func (e *ddEnv) handleAssign(t *testing.T, d *datadriven.TestData) string {
	a := newDDArgs(t, d, d.CmdArgs)
	c := &pb.AssignInitial{Domain: a.str("domain"), Holder: a.str("holder")}
	a.done()
	return ddOutcome(e.apply(&pb.Command{Body: &pb.Command_AssignInitial{AssignInitial: c}}))
}

// handleAcquire builds the leader's lease observation from the arguments:
// lease=STATE observes the current holder at the current epoch unless
// lease-holder / lease-epoch say otherwise; without lease= there is none.
func (e *ddEnv) handleAcquire(t *testing.T, d *datadriven.TestData) string {
	a := newDDArgs(t, d, d.CmdArgs)
	c := &pb.Acquire{Domain: a.str("domain"), Holder: a.str("holder"), ExpectedEpoch: a.optU64("expected")}
	cur, _ := e.fsm.AuthorityOf(c.Domain)
	if a.has("lease") {
		c.Lease = &pb.LeaseObservation{
			State:        pb.LeaseState(ddEnum(a, "lease", pb.LeaseState_value, "LEASE_STATE_", "")),
			Holder:       a.strOr("lease-holder", cur.Holder),
			Epoch:        a.u64Or("lease-epoch", cur.Epoch),
			RemainingMs:  a.u64Or("remaining", 0),
			LeaderTerm:   e.term,
			LeaderId:     "leader",
			ExpiredForMs: a.u64Or("expired-for", 0),
		}
	}
	a.done()
	return ddOutcome(e.apply(&pb.Command{Body: &pb.Command_Acquire{Acquire: c}}))
}

func (e *ddEnv) handleRelease(t *testing.T, d *datadriven.TestData) string {
	a := newDDArgs(t, d, d.CmdArgs)
	c := &pb.Release{Domain: a.str("domain"), Holder: a.str("holder"), Epoch: a.u64("epoch")}
	a.done()
	return ddOutcome(e.apply(&pb.Command{Body: &pb.Command_Release{Release: c}}))
}

func (e *ddEnv) handleFinish(t *testing.T, d *datadriven.TestData, abort bool) string {
	a := newDDArgs(t, d, d.CmdArgs)
	domain, holder, epoch := a.str("domain"), a.str("holder"), a.u64("epoch")
	work, detail := a.strOr("work", ""), a.strOr("detail", "")
	a.done()
	if abort {
		return ddOutcome(e.apply(&pb.Command{Body: &pb.Command_Abort{Abort: &pb.Abort{
			Domain: domain, Holder: holder, Epoch: epoch, WorkId: work, Detail: detail}}}))
	}
	return ddOutcome(e.apply(&pb.Command{Body: &pb.Command_Complete{Complete: &pb.Complete{
		Domain: domain, Holder: holder, Epoch: epoch, WorkId: work, Detail: detail}}}))
}

// handleWatermark applies one AdvanceWatermark entry: either one advance
// from the arguments, or a batch with one advance per input line (each line
// takes the same arguments). A batch prints one outcome per advance.
func (e *ddEnv) handleWatermark(t *testing.T, d *datadriven.TestData) string {
	if d.Input == "" {
		adv := ddAdvance(newDDArgs(t, d, d.CmdArgs))
		return ddOutcome(e.apply(&pb.Command{Body: &pb.Command_AdvanceWatermark{AdvanceWatermark: &pb.AdvanceWatermark{
			Advances: []*pb.WatermarkAdvance{adv}}}}))
	}
	if len(d.CmdArgs) > 0 {
		d.Fatalf(t, "watermark takes either arguments (one advance) or an input block (a batch), not both")
	}
	var batch []*pb.WatermarkAdvance
	for _, line := range strings.Split(d.Input, "\n") {
		_, args, err := datadriven.ParseLine("advance " + line)
		if err != nil {
			d.Fatalf(t, "watermark batch line %q: %v", line, err)
		}
		batch = append(batch, ddAdvance(newDDArgs(t, d, args)))
	}
	res := e.apply(&pb.Command{Body: &pb.Command_AdvanceWatermark{AdvanceWatermark: &pb.AdvanceWatermark{Advances: batch}}})
	if res.Err != nil && len(res.Watermarks) == 0 {
		return ddOutcome(res)
	}
	var b strings.Builder
	for i, w := range res.Watermarks {
		if w.Err != nil {
			fmt.Fprintf(&b, "%d %s: error: %v\n", i, w.Domain, w.Err)
		} else {
			fmt.Fprintf(&b, "%d %s: ok\n", i, w.Domain)
		}
	}
	return b.String()
}

func ddAdvance(a *ddArgs) *pb.WatermarkAdvance {
	adv := &pb.WatermarkAdvance{
		Domain:          a.str("domain"),
		Epoch:           a.u64("epoch"),
		Holder:          a.str("holder"),
		Lsn:             a.u64("lsn"),
		Hash:            ddHash(a.str("hash")),
		VisibleCommitId: a.u64("visible"),
	}
	a.done()
	return adv
}

// ddHash turns a word into a chain hash: the first 8 bytes of its SHA-256,
// so h100 always renders as the same 16 hex digits. "none" is no hash.
func ddHash(word string) []byte {
	if word == "none" {
		return nil
	}
	sum := sha256.Sum256([]byte(word))
	return sum[:8]
}

func ddHex(b []byte) string {
	if len(b) == 0 {
		return "none"
	}
	return hex.EncodeToString(b)
}

// handleReport stores a replica's progress report in the harness, as the
// leader holds it in memory (it is never a log entry).
func (e *ddEnv) handleReport(t *testing.T, d *datadriven.TestData) string {
	a := newDDArgs(t, d, d.CmdArgs)
	domain := a.str("domain")
	r := &pb.ProgressReport{
		MemberId:        a.str("member"),
		Epoch:           a.u64("epoch"),
		FlushedLsn:      a.u64("flushed"),
		FlushedHash:     ddHash(a.str("flushed-hash")),
		WatermarkLsn:    a.u64("wm-lsn"),
		HashAtWatermark: ddHash(a.str("wm-hash")),
		AppliedCommitId: a.u64("applied"),
		ReadSafe:        a.boolOr("read-safe", true),
		State:           pb.ReplicaState(ddEnum(a, "state", pb.ReplicaState_value, "REPLICA_STATE_", "streaming")),
		FencedEpoch:     a.u64Or("fenced", 0),
		FlushedEpoch:    a.u64Or("flushed-epoch", 0),
	}
	for _, p := range a.list("chain") {
		lsn, word, ok := strings.Cut(p, ":")
		if !ok {
			d.Fatalf(t, "report: chain point %q is not lsn:hash", p)
		}
		r.Chain = append(r.Chain, &pb.ChainPoint{Lsn: a.parseU64("chain", lsn), Hash: ddHash(word)})
	}
	age := a.u64Or("age", 0)
	a.done()
	if e.reports[domain] == nil {
		e.reports[domain] = map[string]ddReport{}
	}
	e.reports[domain][r.MemberId] = ddReport{report: r, ageMs: age}
	out := fmt.Sprintf("stored report %s/%s epoch=%d flushed=%d@%s wm=%d@%s applied=%d read_safe=%t state=%s age_ms=%d\n",
		domain, r.MemberId, r.Epoch, r.FlushedLsn, ddHex(r.FlushedHash), r.WatermarkLsn, ddHex(r.HashAtWatermark),
		r.AppliedCommitId, r.ReadSafe, strings.TrimPrefix(r.State.String(), "REPLICA_STATE_"), age)
	if r.FencedEpoch > 0 {
		out += "  fenced " + fsm.DescribeFencedReport(r) + "\n"
	}
	return out
}

// handleLease stores the leader's observation of a domain's holder lease.
func (e *ddEnv) handleLease(t *testing.T, d *datadriven.TestData) string {
	a := newDDArgs(t, d, d.CmdArgs)
	domain := a.str("domain")
	obs := &pb.LeaseObservation{
		Holder:      a.str("holder"),
		Epoch:       a.u64("epoch"),
		State:       pb.LeaseState(ddEnum(a, "state", pb.LeaseState_value, "LEASE_STATE_", "")),
		RemainingMs: a.u64Or("remaining", 0),
		LeaderTerm:  e.term,
		LeaderId:    "leader",
	}
	a.done()
	e.leases[domain] = obs
	return fmt.Sprintf("stored lease %s holder=%s epoch=%d state=%s remaining_ms=%d leader_term=%d\n",
		domain, obs.Holder, obs.Epoch, strings.TrimPrefix(obs.State.String(), "LEASE_STATE_"), obs.RemainingMs, obs.LeaderTerm)
}

// handleLeaderChange models a new leader: the term grows and all soft state
// (reports, lease observations) is gone until replicas report again.
func (e *ddEnv) handleLeaderChange(t *testing.T, d *datadriven.TestData) string {
	newDDArgs(t, d, d.CmdArgs).done()
	n := 0
	for _, m := range e.reports {
		n += len(m)
	}
	dropped := fmt.Sprintf("term=%d dropped reports=%d leases=%d\n", e.term+1, n, len(e.leases))
	e.term++
	e.reports = map[string]map[string]ddReport{}
	e.leases = map[string]*pb.LeaseObservation{}
	return dropped
}

// handlePromote builds a PromotionAttempt from the stored evidence: the
// candidate's latest report (or report-from's, to model evidence naming
// another member) and the domain's lease observation. With dry-run it only
// evaluates against the current state; otherwise it is one log entry.
func (e *ddEnv) handlePromote(t *testing.T, d *datadriven.TestData) string {
	a := newDDArgs(t, d, d.CmdArgs)
	req := &pb.PromotionRequest{
		RequestId:     a.str("id"),
		Domain:        a.str("domain"),
		Candidate:     a.str("candidate"),
		ExpectedEpoch: a.optU64("expected"),
		Reason:        a.strOr("reason", ""),
		Waivers:       a.list("waive"),
		DryRun:        a.flag("dry-run"),
		InitiatedBy:   pb.Initiator(ddEnum(a, "by", pb.Initiator_value, "INITIATOR_", "operator")),
	}
	from := a.strOr("report-from", req.Candidate)
	a.done()
	attempt := &pb.PromotionAttempt{Request: req}
	if obs, ok := e.leases[req.Domain]; ok {
		attempt.Lease = proto.Clone(obs).(*pb.LeaseObservation)
	}
	if r, ok := e.reports[req.Domain][from]; ok {
		attempt.CandidateReport = proto.Clone(r.report).(*pb.ProgressReport)
		attempt.ReportAgeMs = r.ageMs
	}
	for _, m := range slices.Sorted(maps.Keys(e.reports[req.Domain])) {
		if r := e.reports[req.Domain][m].report; r.FencedEpoch > 0 {
			attempt.FenceReports = append(attempt.FenceReports, proto.Clone(r).(*pb.ProgressReport))
		}
	}
	if req.DryRun {
		dom, ok := e.fsm.Domain(req.Domain)
		if !ok {
			return fmt.Sprintf("error: domain %q not found\n", req.Domain)
		}
		return "dry run (no log entry)\n" + validator.Describe(validator.Evaluate(validator.Input{Domain: dom, Attempt: attempt}))
	}
	res := e.apply(&pb.Command{Body: &pb.Command_PromotionAttempt{PromotionAttempt: attempt}})
	if res.Err != nil {
		return ddOutcome(res)
	}
	out := fsm.DescribeAttempt(res.Attempt)
	if res.Duplicate {
		out = fmt.Sprintf("duplicate at index %d: recorded outcome returned, nothing applied\n", e.index) + out
	}
	return out
}

// handlePrepare applies a PreparePromotion (replica-quorum fence).
func (e *ddEnv) handlePrepare(t *testing.T, d *datadriven.TestData) string {
	a := newDDArgs(t, d, d.CmdArgs)
	c := &pb.PreparePromotion{RequestId: a.str("id"), Domain: a.str("domain"), Candidate: a.str("candidate"), ExpectedEpoch: a.u64("expected")}
	a.done()
	return ddOutcome(e.apply(&pb.Command{Body: &pb.Command_PreparePromotion{PreparePromotion: c}}))
}

func (e *ddEnv) handleExplain(t *testing.T, d *datadriven.TestData) string {
	a := newDDArgs(t, d, d.CmdArgs)
	domain, id := a.str("domain"), a.str("id")
	a.done()
	rec, ok := e.fsm.Attempt(domain, id)
	if !ok {
		return fmt.Sprintf("no attempt %s recorded in domain %s\n", id, domain)
	}
	return fsm.DescribeAttempt(rec)
}

func (e *ddEnv) handleShow(t *testing.T, d *datadriven.TestData) string {
	a := newDDArgs(t, d, d.CmdArgs)
	name := a.str("domain")
	a.done()
	dom, ok := e.fsm.Domain(name)
	if !ok {
		return fmt.Sprintf("domain %s not found\n", name)
	}
	return fsm.DescribeDomain(dom)
}

// handleHash prints the last applied index and the first 8 bytes of two
// hashes: state= is FSM.StateHash (domains and server directory, not the
// index or the event log),
// domains= covers only the domain records (deterministic protobuf, sorted
// by name). Both stay put when an entry changed nothing.
func (e *ddEnv) handleHash(t *testing.T, d *datadriven.TestData) string {
	newDDArgs(t, d, d.CmdArgs).done()
	state, err := e.fsm.StateHash()
	if err != nil {
		d.Fatalf(t, "StateHash: %v", err)
	}
	h := sha256.New()
	for _, name := range e.fsm.DomainNames() {
		dom, _ := e.fsm.Domain(name)
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(dom)
		if err != nil {
			d.Fatalf(t, "marshal domain %s: %v", name, err)
		}
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	return fmt.Sprintf("index=%d state=%s domains=%s\n", e.fsm.LastIndex(), hex.EncodeToString(state[:8]), hex.EncodeToString(h.Sum(nil)[:8]))
}

// ddArgs reads a command's arguments strictly: a missing required argument,
// a malformed value or an argument nobody read fails the test.
type ddArgs struct {
	t    *testing.T
	d    *datadriven.TestData
	args []datadriven.CmdArg
	used map[string]bool
}

func newDDArgs(t *testing.T, d *datadriven.TestData, args []datadriven.CmdArg) *ddArgs {
	seen := map[string]bool{}
	for _, arg := range args {
		if seen[arg.Key] {
			d.Fatalf(t, "%s: argument %q given twice", d.Cmd, arg.Key)
		}
		seen[arg.Key] = true
	}
	return &ddArgs{t: t, d: d, args: args, used: map[string]bool{}}
}

func (a *ddArgs) find(key string) (datadriven.CmdArg, bool) {
	a.used[key] = true
	for _, arg := range a.args {
		if arg.Key == key {
			return arg, true
		}
	}
	return datadriven.CmdArg{}, false
}

func (a *ddArgs) has(key string) bool {
	_, ok := a.find(key)
	return ok
}

func (a *ddArgs) single(arg datadriven.CmdArg) string {
	if len(arg.Vals) != 1 {
		a.d.Fatalf(a.t, "%s: argument %q needs exactly one value, has %d", a.d.Cmd, arg.Key, len(arg.Vals))
	}
	return arg.Vals[0]
}

func (a *ddArgs) str(key string) string {
	arg, ok := a.find(key)
	if !ok {
		a.d.Fatalf(a.t, "%s: missing required argument %s=", a.d.Cmd, key)
	}
	return a.single(arg)
}

func (a *ddArgs) strOr(key, def string) string {
	if arg, ok := a.find(key); ok {
		return a.single(arg)
	}
	return def
}

func (a *ddArgs) list(key string) []string {
	arg, ok := a.find(key)
	if !ok {
		return nil
	}
	if len(arg.Vals) == 0 {
		a.d.Fatalf(a.t, "%s: argument %q needs a value", a.d.Cmd, key)
	}
	return arg.Vals
}

func (a *ddArgs) parseU64(key, s string) uint64 {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		a.d.Fatalf(a.t, "%s: argument %s=%q is not an unsigned integer", a.d.Cmd, key, s)
	}
	return v
}

func (a *ddArgs) u64(key string) uint64 { return a.parseU64(key, a.str(key)) }

func (a *ddArgs) u64Or(key string, def uint64) uint64 {
	if arg, ok := a.find(key); ok {
		return a.parseU64(key, a.single(arg))
	}
	return def
}

func (a *ddArgs) optU64(key string) *uint64 {
	arg, ok := a.find(key)
	if !ok {
		return nil
	}
	v := a.parseU64(key, a.single(arg))
	return &v
}

func (a *ddArgs) boolOr(key string, def bool) bool {
	arg, ok := a.find(key)
	if !ok {
		return def
	}
	v, err := strconv.ParseBool(a.single(arg))
	if err != nil {
		a.d.Fatalf(a.t, "%s: argument %s=%q is not true or false", a.d.Cmd, key, arg.Vals[0])
	}
	return v
}

// flag is a bare argument without a value, e.g. "disabled" or "dry-run".
func (a *ddArgs) flag(key string) bool {
	arg, ok := a.find(key)
	if ok && len(arg.Vals) != 0 {
		a.d.Fatalf(a.t, "%s: %q is a flag and takes no value", a.d.Cmd, key)
	}
	return ok
}

// done fails on any argument the handler did not read (a typo must not be
// silently ignored).
func (a *ddArgs) done() {
	for _, arg := range a.args {
		if !a.used[arg.Key] {
			a.d.Fatalf(a.t, "%s: unknown argument %q", a.d.Cmd, arg.Key)
		}
	}
}

// ddEnum parses a lower-case, dash-separated enum value name, e.g.
// state=catching-up for REPLICA_STATE_CATCHING_UP. An empty def makes the
// argument required. "unspecified" is accepted, to test the zero value.
func ddEnum(a *ddArgs, key string, values map[string]int32, prefix, def string) int32 {
	s := def
	if arg, ok := a.find(key); ok {
		s = a.single(arg)
	} else if def == "" {
		a.d.Fatalf(a.t, "%s: missing required argument %s=", a.d.Cmd, key)
	}
	v, ok := values[prefix+strings.ToUpper(strings.ReplaceAll(s, "-", "_"))]
	if !ok {
		var names []string
		for n := range values {
			names = append(names, strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(n, prefix), "_", "-")))
		}
		slices.Sort(names)
		a.d.Fatalf(a.t, "%s: %s=%q is not one of %v", a.d.Cmd, key, s, names)
	}
	return v
}

// handleDeploy applies one DeployStep and prints its outcome and the events
// the entry emitted (type and fields), so a script shows what operators and
// metrics see.
func (e *ddEnv) handleDeploy(t *testing.T, d *datadriven.TestData) string {
	a := newDDArgs(t, d, d.CmdArgs)
	c := &pb.DeployStep{
		Domain: a.str("domain"), Holder: a.str("holder"), Epoch: a.u64("epoch"),
		Action:      pb.DeployAction(ddEnum(a, "action", pb.DeployAction_value, "DEPLOY_ACTION_", "")),
		Environment: a.strOr("env", "prod"), Release: a.strOr("release", "sha256:aa"),
		RunnerGroup: a.strOr("group", "primary"), Role: a.strOr("role", "primary"),
		Reason: a.strOr("reason", ""), Retry: a.has("retry"), RollbackRequired: a.has("rollback"),
	}
	if a.has("checks") {
		c.FailedChecks = a.list("checks")
	}
	a.done()
	res := e.apply(&pb.Command{Body: &pb.Command_DeployStep{DeployStep: c}})
	out := ddOutcome(res)
	evs, _, _ := e.fsm.EventsFrom(res.Index, 16)
	for _, ev := range evs {
		if ev.Index != res.Index {
			break
		}
		out += "event " + ev.Type
		for _, f := range ev.Fields {
			out += " " + f.Key + "=" + f.Value
		}
		out += "\n"
	}
	return out
}
