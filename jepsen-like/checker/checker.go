// Package checker decides whether a fault-injection run kept AeroDB
// Authority's guarantees. It reads a run's history (client operations,
// nemesis windows, lease-holder agent beliefs, fenced-resource
// accepts/rejects, applied states read after restarts) and every node's
// final applied event log, and runs nine checkers (TESTING.md,
// "Checkers"):
//
//  1. Linearizable: per domain, with porcupine;
//  2. OneHolderPerEpoch: no (domain, epoch) names two holders, across
//     responses, agents, fenced accepts and every node's log (AU-1);
//  3. EpochsMonotonic: grant epochs strictly increase along every log, all
//     nodes agree on the grant sequence, and no node's state goes back
//     after a restart (AU-1, AU-10);
//  4. NoLostAcknowledgedWrites: every acknowledged write is in every node's
//     final log, with the acknowledged outcome (AU-2, AU-4);
//  5. NoOverlappingPrimaries: no holder believes in an epoch after a newer
//     one was granted and returned, and the fenced resource accepted only
//     non-decreasing epochs (AU-12);
//  6. Liveness: the run did something before and after its faults, every
//     armed failpoint fired (a fault test that injected nothing proves
//     nothing), and, with a handover bound, a holder that stopped renewing
//     lost its lease to another holder within the bound;
//  7. IdenticalPrefixes: every node's log is a prefix of the longest one;
//  8. PolicyAntiFlapping: the automatic policy's promotions respect the
//     dwell and are all allowed by the validator with every
//     check (AU-8);
//  9. NoLostAcknowledgedDBWrites: every database write a replica-quorum
//     domain's simulated holder acknowledged is in the WAL of every later
//     holder when it took over (AU-4 for replica-quorum).
//
// Every checker returns a Result; none panics on a malformed history (it
// reports it).
package checker

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aerodb/authority/jepsen-like/history"
	"github.com/aerodb/authority/observability"
)

// Input is everything the checkers look at.
type Input struct {
	// History is the run's records (any order; the checkers sort by Time).
	History []history.Record
	// NodeLogs is each node's final applied event log, by node name.
	NodeLogs map[string][]observability.EventJSON
	// ArmedFailpoints are the failpoints the run armed; FailpointHits how
	// often each fired.
	ArmedFailpoints []string
	FailpointHits   map[string]int
	// MinOpsAroundFaults is the minimum number of ok operations before the
	// first fault and after the last one is healed.
	MinOpsAroundFaults int
	// ExpectStaleRejections: a pause-holder run, which must show at least
	// one rejected stale write at the fenced resource.
	ExpectStaleRejections bool

	// RequireHealedOpsPerDomain: after the last fault is healed, every
	// domain with operations must have at least one ok read and one ok
	// write (TESTING.md, workload).
	RequireHealedOpsPerDomain bool
	// HandoverBound, if set, makes Liveness check every pause-holder fault
	// longer than it: the paused holder, which held its domain when the
	// pause began, must have lost the domain to another holder (an agent's
	// holds, an ok acquire) within HandoverBound of the pause's start — its
	// lease expired (TTL) and was granted again. At least one such fault
	// must have been checked.
	HandoverBound time.Duration
	// PolicyDwell is the servers' automatic-policy dwell PolicyAntiFlapping
	// checks (0: not checked); PolicyClockSlack how far two servers' clocks
	// may differ (a skewed test clock), allowed between promotions of
	// different terms.
	PolicyDwell, PolicyClockSlack time.Duration
	// LinearizabilityTimeout bounds porcupine per domain (0: 10 s). A
	// timeout fails the check.
	LinearizabilityTimeout time.Duration
	// VizDir, if set, makes Linearizable write porcupine's visualisation of
	// every domain to VizDir/linearizability-<domain>.html.
	VizDir string
}

// Result is one checker's verdict.
type Result struct {
	Name    string         `json:"name"`
	Valid   bool           `json:"valid"`
	Details string         `json:"details"`
	Counts  map[string]int `json:"counts,omitempty"`
}

// Checker names, in CheckAll's order.
const (
	NameLinearizable      = "linearizable"
	NameOneHolderPerEpoch = "one-holder-per-epoch"
	NameEpochsMonotonic   = "epochs-monotonic"
	NameNoLostWrites      = "no-lost-acknowledged-writes"
	NameNoOverlap         = "no-overlapping-primaries"
	NameLiveness          = "liveness"
	NameIdenticalPrefixes = "identical-prefixes"
	// NamePolicyAntiFlapping is the eighth: PolicyAntiFlapping.
	NamePolicyAntiFlapping = "policy-anti-flapping"
)

// CheckAll runs all nine checkers in a fixed order.
func CheckAll(in Input) []Result {
	return []Result{
		Linearizable(in),
		OneHolderPerEpoch(in),
		EpochsMonotonic(in),
		NoLostAcknowledgedWrites(in),
		NoOverlappingPrimaries(in),
		Liveness(in),
		IdenticalPrefixes(in),
		PolicyAntiFlapping(in),
		NoLostAcknowledgedDBWrites(in),
	}
}

// Valid reports whether every result is valid.
func Valid(rs []Result) bool {
	for _, r := range rs {
		if !r.Valid {
			return false
		}
	}
	return true
}

// LoadInput reads a history (JSON lines) and every node's event log in
// nodeLogDir: files named <node>.events (JSON lines of EventJSON). An empty
// nodeLogDir loads no logs.
func LoadInput(historyPath, nodeLogDir string) (Input, error) {
	recs, err := history.ReadFile(historyPath)
	if err != nil {
		return Input{}, err
	}
	in := Input{History: recs, NodeLogs: map[string][]observability.EventJSON{}}
	if nodeLogDir == "" {
		return in, nil
	}
	paths, err := filepath.Glob(filepath.Join(nodeLogDir, "*.events"))
	if err != nil {
		return Input{}, err
	}
	for _, p := range paths {
		evs, err := ReadEventLog(p)
		if err != nil {
			return Input{}, err
		}
		in.NodeLogs[strings.TrimSuffix(filepath.Base(p), ".events")] = evs
	}
	return in, nil
}

// ReadEventLog parses one node's JSON-lines event log.
func ReadEventLog(path string) ([]observability.EventJSON, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []observability.EventJSON
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var ev observability.EventJSON
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, n, err)
		}
		out = append(out, ev)
	}
	return out, sc.Err()
}

// ---- shared plumbing ----

// Event types the checkers read (fsm/events.go, fsm/servers.go).
const (
	evDomainCreated       = "authority.domain.created"
	evInitialAssignment   = "authority.assignment.initial"
	evLeaseAcquired       = "authority.lease.acquired"
	evLeaseReleased       = "authority.lease.released"
	evWatermarkAdvanced   = "authority.watermark.advanced"
	evValidationFailed    = "replication.promotion.validation_failed"
	evValidationSucceeded = "replication.promotion.validation_succeeded"
	evTransitionCompleted = "replication.promotion.transition_completed"
)

// never is the return time of an operation whose outcome is unknown.
const never = math.MaxInt64

// op is a client operation: an invoke paired with its completion.
type op struct {
	Process   int
	F         string
	Domain    string
	RequestID string
	Node      string
	Type      string        // ok | fail | info (info also when never completed)
	Args      history.Value // the invoke's value
	Res       history.Value // the completion's value
	Error     string
	Call      int64
	Return    int64 // never for info
}

func (o op) String() string {
	ret := "∞"
	if o.Return != never {
		ret = strconv.FormatInt(o.Return, 10)
	}
	s := fmt.Sprintf("%s %s process %d [%d, %s]", o.Type, o.F, o.Process, o.Call, ret)
	if o.RequestID != "" {
		s += " request " + o.RequestID
	}
	return s
}

// sortedHistory returns the records stably sorted by time.
func sortedHistory(recs []history.Record) []history.Record {
	out := slices.Clone(recs)
	slices.SortStableFunc(out, func(a, b history.Record) int { return cmp.Compare(a.Time, b.Time) })
	return out
}

// pairOps pairs each process's invoke with its next completion. An invoke
// never completed is info (unknown). Problems: completions without an
// invoke, invokes while one is outstanding.
func pairOps(recs []history.Record) (ops []op, problems []string) {
	open := map[int]int{} // process -> index in ops
	for _, r := range sortedHistory(recs) {
		if r.Kind != history.KindOp {
			continue
		}
		switch r.Type {
		case history.Invoke:
			if i, ok := open[r.Process]; ok {
				problems = append(problems, fmt.Sprintf("process %d invoked %s at %d with %s outstanding", r.Process, r.F, r.Time, ops[i].F))
			}
			open[r.Process] = len(ops)
			ops = append(ops, op{Process: r.Process, F: r.F, Domain: r.Domain, RequestID: r.RequestID, Node: r.Node,
				Type: history.Info, Args: r.Value, Call: r.Time, Return: never})
		case history.OK, history.Fail, history.Info:
			i, ok := open[r.Process]
			if !ok {
				problems = append(problems, fmt.Sprintf("process %d completed %s (%s) at %d without an invoke", r.Process, r.F, r.Type, r.Time))
				continue
			}
			delete(open, r.Process)
			o := &ops[i]
			o.Type, o.Res, o.Error = r.Type, r.Value, r.Error
			if r.Node != "" {
				o.Node = r.Node
			}
			if r.Type != history.Info {
				o.Return = r.Time
			}
		}
	}
	return ops, problems
}

// nemesisWindow is one fault, from start to stop (never if not healed).
// Domain and Holder are the start record's, when it names them (a paused
// holder).
type nemesisWindow struct {
	Fault, Info    string
	Domain, Holder string
	Start, Stop    int64
}

// nemesisWindows pairs nemesis start/stop records by fault name.
func nemesisWindows(recs []history.Record) []nemesisWindow {
	var out []nemesisWindow
	open := map[string]int{}
	for _, r := range sortedHistory(recs) {
		if r.Kind != history.KindNemesis {
			continue
		}
		switch r.Type {
		case history.NemesisStart:
			open[r.Fault] = len(out)
			out = append(out, nemesisWindow{Fault: r.Fault, Info: r.Info, Domain: r.Domain, Holder: r.Value.Holder, Start: r.Time, Stop: never})
		case history.NemesisStop:
			if i, ok := open[r.Fault]; ok {
				out[i].Stop = r.Time
				delete(open, r.Fault)
			} else {
				out = append(out, nemesisWindow{Fault: r.Fault, Info: r.Info, Start: r.Time, Stop: r.Time})
			}
		}
	}
	return out
}

// belief is an agent's belief interval [Start, End) in (Domain, Epoch);
// End is never when the agent still believed it at the end of the run.
type belief struct {
	Domain, Holder string
	Process        int
	Epoch          uint64
	Start, End     int64
}

// beliefs turns agent holds/lost records into intervals, per (domain,
// holder): holds(e) starts (or continues) a belief in e and ends a belief in
// another epoch; lost ends it.
func beliefs(recs []history.Record) []belief {
	type key struct{ domain, holder string }
	var out []belief
	cur := map[key]int{}
	for _, r := range sortedHistory(recs) {
		if r.Kind != history.KindAgent {
			continue
		}
		k := key{r.Domain, r.Value.Holder}
		i, believing := cur[k]
		switch r.Type {
		case history.AgentHolds:
			if believing && out[i].Epoch == r.Value.Epoch {
				continue
			}
			if believing {
				out[i].End = r.Time
			}
			cur[k] = len(out)
			out = append(out, belief{Domain: r.Domain, Holder: r.Value.Holder, Process: r.Process, Epoch: r.Value.Epoch, Start: r.Time, End: never})
		case history.AgentLost:
			if believing {
				out[i].End = r.Time
				delete(cur, k)
			}
		}
	}
	return out
}

// field returns an event field's value.
func field(ev observability.EventJSON, key string) (string, bool) {
	for _, kv := range ev.Fields {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return "", false
}

func fieldUint(ev observability.EventJSON, key string) (uint64, bool) {
	s, ok := field(ev, key)
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 10, 64)
	return v, err == nil
}

// isGrant: the event records authority granted at a new epoch.
func isGrant(ev observability.EventJSON) bool {
	switch ev.Type {
	case evInitialAssignment, evTransitionCompleted:
		return true
	case evLeaseAcquired:
		r, _ := field(ev, "reacquire")
		return r != "true"
	}
	return false
}

// grantHolder is the holder a grant event names (the event's holder, or
// its holder / new_primary_id field).
func grantHolder(ev observability.EventJSON) string {
	if ev.Holder != "" {
		return ev.Holder
	}
	if h, ok := field(ev, "new_primary_id"); ok {
		return h
	}
	h, _ := field(ev, "holder")
	return h
}

func grantEpoch(ev observability.EventJSON) uint64 {
	if ev.Epoch != 0 {
		return ev.Epoch
	}
	e, _ := fieldUint(ev, "epoch")
	return e
}

func evString(ev observability.EventJSON) string {
	var fs []string
	for _, kv := range ev.Fields {
		fs = append(fs, kv.Key+"="+kv.Value)
	}
	return fmt.Sprintf("#%d.%d %s domain=%q epoch=%d holder=%q {%s}", ev.Index, ev.Seq, ev.Type, ev.Domain, ev.Epoch, ev.Holder, strings.Join(fs, " "))
}

// sameEvent compares what replication must make identical: index, seq,
// type, domain, epoch, holder and fields.
func sameEvent(a, b observability.EventJSON) bool {
	return a.Index == b.Index && a.Seq == b.Seq && a.Type == b.Type && a.Domain == b.Domain &&
		a.Epoch == b.Epoch && a.Holder == b.Holder &&
		slices.Equal(a.Fields, b.Fields)
}

func evBefore(a, b observability.EventJSON) bool {
	return a.Index < b.Index || a.Index == b.Index && a.Seq < b.Seq
}

// normalizeLog drops exact duplicates of an (index, seq) already seen (a
// sink that re-delivered events after a restart) and reports events out of
// (index, seq) order and conflicting duplicates.
func normalizeLog(evs []observability.EventJSON) (out []observability.EventJSON, problems []string) {
	for _, ev := range evs {
		if n := len(out); n > 0 && !evBefore(out[n-1], ev) {
			// A duplicate of an earlier (index, seq)?
			j := sort.Search(n, func(i int) bool { return !evBefore(out[i], ev) })
			if j < n && out[j].Index == ev.Index && out[j].Seq == ev.Seq {
				if !sameEvent(out[j], ev) {
					problems = append(problems, fmt.Sprintf("event %d.%d appears twice and differs: %s vs %s", ev.Index, ev.Seq, evString(out[j]), evString(ev)))
				}
				continue
			}
			problems = append(problems, fmt.Sprintf("event %s is out of order after %s", evString(ev), evString(out[n-1])))
			continue
		}
		out = append(out, ev)
	}
	return out, problems
}

// nodeNames returns the node names sorted.
func nodeNames(m map[string][]observability.EventJSON) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// normalizedLogs normalizes every node log.
func normalizedLogs(in Input) (map[string][]observability.EventJSON, map[string][]string) {
	logs := map[string][]observability.EventJSON{}
	problems := map[string][]string{}
	for n, evs := range in.NodeLogs {
		logs[n], problems[n] = normalizeLog(evs)
	}
	return logs, problems
}

// decision is a promotion request's decided outcome in a node's log.
type decision struct {
	Allowed bool
	Epoch   uint64 // new epoch, when allowed
	Holder  string // new holder, when allowed
	Node    string
	Index   uint64
}

type reqKey struct{ domain, id string }

// decisions returns each node's decided promotion requests.
func decisions(logs map[string][]observability.EventJSON) map[string]map[reqKey]decision {
	out := map[string]map[reqKey]decision{}
	for n, evs := range logs {
		m := map[reqKey]decision{}
		for _, ev := range evs {
			id, ok := field(ev, "request_id")
			if !ok || id == "" {
				continue
			}
			k := reqKey{ev.Domain, id}
			d := m[k]
			d.Node, d.Index = n, ev.Index
			switch ev.Type {
			case evValidationSucceeded:
				d.Allowed = true
			case evValidationFailed:
				d.Allowed = false
			case evTransitionCompleted:
				d.Allowed = true
				d.Epoch, d.Holder = grantEpoch(ev), grantHolder(ev)
			default:
				continue
			}
			m[k] = d
		}
		out[n] = m
	}
	return out
}

// resolve looks a request up in every node's decisions (sorted by node).
func resolve(dec map[string]map[reqKey]decision, domain, id string) (decision, bool) {
	names := make([]string, 0, len(dec))
	for n := range dec {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if d, ok := dec[n][reqKey{domain, id}]; ok {
			return d, true
		}
	}
	return decision{}, false
}

// domainKinds reads each domain's kind from authority.domain.created.
func domainKinds(logs map[string][]observability.EventJSON) map[string]string {
	out := map[string]string{}
	for _, evs := range logs {
		for _, ev := range evs {
			if ev.Type == evDomainCreated {
				if k, ok := field(ev, "kind"); ok {
					out[ev.Domain] = k
				}
			}
		}
	}
	return out
}

// details joins the first few problems.
func details(problems []string, max int) string {
	if len(problems) <= max {
		return strings.Join(problems, "; ")
	}
	return strings.Join(problems[:max], "; ") + fmt.Sprintf("; … and %d more", len(problems)-max)
}

func timeString(t int64) string {
	if t == never {
		return "∞"
	}
	return strconv.FormatInt(t, 10)
}
