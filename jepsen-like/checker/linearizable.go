package checker

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aerodb/authority/jepsen-like/history"
	"github.com/aerodb/authority/observability"
	"github.com/anishathalye/porcupine"
)

// DefaultLinearizabilityTimeout bounds porcupine per domain.
const DefaultLinearizabilityTimeout = 10 * time.Second

// MaxClientsPerDomain is the concurrency porcupine handles comfortably
// (TESTING.md: 8 per domain check in ~0.1 s, 32 blow up); the details
// mention domains above it.
const MaxClientsPerDomain = 16

// Domain kinds as authority.domain.created names them.
const (
	kindAeroDB = "aerodb"
	kindLock   = "lock"
)

// linState is one domain's authority as the model sees it. Set is false
// until an operation pins it: the domain's state when the history starts
// is whatever setup left, so the first linearized operation chooses it
// (linearizable iff some initial state and some order explain the history).
type linState struct {
	Set      bool
	Epoch    uint64
	Holder   string
	Released bool
	RelKnown bool // Released is known (false after a pinning read)
}

// linInput is an operation's arguments.
type linInput struct {
	F        string
	Kind     string // domain kind ("" unknown)
	Holder   string // promote candidate, acquire/release holder
	Expected uint64 // promote/acquire expected epoch (0 = none)
	Epoch    uint64 // release epoch
}

// linOutput is an operation's result. Unknown: the outcome was never
// learned (info, unresolved), so the operation may or may not have taken
// effect.
type linOutput struct {
	Unknown bool
	Outcome string // promote: allowed | denied
	Epoch   uint64 // read/promote/acquire result
	Holder  string // read result
}

// linMeta is shown in the visualisation's tooltips.
type linMeta struct {
	Process   int
	RequestID string
	Node      string
	Note      string
}

// Step semantics. Operations whose output is unknown take effect when
// they can and are no-ops otherwise: their return time is +∞, so an
// operation that never happened can always be linearized after everything
// else, where whether it "applies" changes nothing observable. A
// deterministic step is therefore exact.
func linStep(state, input, output interface{}) (bool, interface{}) {
	s := state.(linState)
	in := input.(linInput)
	out := output.(linOutput)
	switch in.F {
	case history.FRead:
		if out.Unknown {
			return true, s
		}
		if !s.Set {
			return true, linState{Set: true, Epoch: out.Epoch, Holder: out.Holder}
		}
		return s.Epoch == out.Epoch && s.Holder == out.Holder, s
	case history.FPromote:
		if out.Unknown {
			switch {
			case s.Set && (in.Expected == 0 || in.Expected == s.Epoch):
				return true, granted(s.Epoch+1, in.Holder)
			case !s.Set && in.Expected != 0:
				return true, granted(in.Expected+1, in.Holder)
			}
			return true, s
		}
		if out.Outcome != history.OutcomeAllowed {
			return true, s // a denial is possible in any state
		}
		if !s.Set {
			e := out.Epoch
			if in.Expected != 0 {
				if e != 0 && e != in.Expected+1 {
					return false, s
				}
				e = in.Expected + 1
			}
			if e == 0 {
				return true, s // nothing pins the epoch
			}
			return true, granted(e, in.Holder)
		}
		if in.Expected != 0 && in.Expected != s.Epoch {
			return false, s
		}
		if out.Epoch != 0 && out.Epoch != s.Epoch+1 {
			return false, s
		}
		return true, granted(s.Epoch+1, in.Holder)
	case history.FAcquire:
		if out.Unknown {
			if s.Set && in.Kind != kindAeroDB && (in.Expected == 0 || in.Expected == s.Epoch) {
				return true, granted(s.Epoch+1, in.Holder)
			}
			return true, s
		}
		if !s.Set {
			if out.Epoch == 0 {
				return true, s
			}
			if in.Kind != kindAeroDB && in.Expected != 0 && out.Epoch != in.Expected+1 {
				return false, s
			}
			return true, granted(out.Epoch, in.Holder)
		}
		// Lock domains: a grant at the next epoch.
		if in.Kind != kindAeroDB && (in.Expected == 0 || in.Expected == s.Epoch) &&
			(out.Epoch == 0 || out.Epoch == s.Epoch+1) {
			return true, granted(s.Epoch+1, in.Holder)
		}
		// AeroDB domains: only the current holder re-acquires, same epoch.
		if in.Kind != kindLock && (in.Expected == 0 || in.Expected == s.Epoch) &&
			(out.Epoch == 0 || out.Epoch == s.Epoch) && s.Holder == in.Holder && !(s.RelKnown && s.Released) {
			return true, linState{Set: true, Epoch: s.Epoch, Holder: s.Holder, RelKnown: true}
		}
		return false, s
	case history.FRelease:
		if !s.Set {
			if out.Unknown {
				return true, s
			}
			return true, linState{Set: true, Epoch: in.Epoch, Holder: in.Holder, Released: true, RelKnown: true}
		}
		match := s.Epoch == in.Epoch && s.Holder == in.Holder && !(s.RelKnown && s.Released)
		if out.Unknown {
			if match {
				return true, linState{Set: true, Epoch: s.Epoch, Holder: s.Holder, Released: true, RelKnown: true}
			}
			return true, s
		}
		if !match {
			return false, s
		}
		return true, linState{Set: true, Epoch: s.Epoch, Holder: s.Holder, Released: true, RelKnown: true}
	}
	return true, s // not a state change for this model
}

func granted(epoch uint64, holder string) linState {
	return linState{Set: true, Epoch: epoch, Holder: holder, RelKnown: true}
}

// linModel is the per-domain authority model.
var linModel = porcupine.Model{
	Init: func() interface{} { return linState{} },
	Step: linStep,
	Hash: func(state interface{}) uint64 {
		s := state.(linState)
		h := uint64(14695981039346656037) // FNV-1a over the holder, then the rest
		for i := 0; i < len(s.Holder); i++ {
			h = (h ^ uint64(s.Holder[i])) * 1099511628211
		}
		flags := uint64(0)
		for i, b := range []bool{s.Set, s.Released, s.RelKnown} {
			if b {
				flags |= 1 << i
			}
		}
		return (h^s.Epoch*0x9E3779B97F4A7C15)*1099511628211 ^ flags
	},
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(linInput), output.(linOutput)
		var call string
		switch in.F {
		case history.FRead:
			call = "read()"
		case history.FPromote:
			call = fmt.Sprintf("promote(%s, expected %d)", in.Holder, in.Expected)
		case history.FAcquire:
			call = fmt.Sprintf("acquire(%s, expected %d)", in.Holder, in.Expected)
		case history.FRelease:
			call = fmt.Sprintf("release(%s, e%d)", in.Holder, in.Epoch)
		default:
			call = in.F + "()"
		}
		switch {
		case out.Unknown:
			return call + " -> ?"
		case in.F == history.FRead:
			return fmt.Sprintf("%s -> e%d %s", call, out.Epoch, orNone(out.Holder))
		case in.F == history.FPromote && out.Outcome != history.OutcomeAllowed:
			return call + " -> denied"
		case in.F == history.FPromote || in.F == history.FAcquire:
			return fmt.Sprintf("%s -> e%d", call, out.Epoch)
		}
		return call + " -> ok"
	},
	DescribeState: func(state interface{}) string {
		s := state.(linState)
		if !s.Set {
			return "unknown (not yet observed)"
		}
		d := fmt.Sprintf("e%d %s", s.Epoch, orNone(s.Holder))
		if s.Released {
			d += " released"
		}
		return d
	},
	DescribeOperationMetadata: func(info interface{}) string {
		m, ok := info.(linMeta)
		if !ok {
			return ""
		}
		s := fmt.Sprintf("process %d", m.Process)
		if m.RequestID != "" {
			s += ", request " + m.RequestID
		}
		if m.Node != "" {
			s += ", node " + m.Node
		}
		if m.Note != "" {
			s += ", " + m.Note
		}
		return s
	},
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// domainOps is one domain's porcupine history and what it took to build.
type domainOps struct {
	Domain string
	Ops    []porcupine.Operation
	Counts map[string]int
}

// linearizabilityOps builds each domain's porcupine operations: reads,
// promotes, acquires and releases (renew and advance do not change this
// model's state). Failed operations are dropped (they did not happen).
// Attempts sharing a promote request id are one operation (the server
// decides a request id once): called at the first invoke, returned at the
// first ok. An unknown promote is resolved by its request id against the
// nodes' logs: decided there, or never committed (in no node's log) and
// dropped. Unknown acquires and releases are resolved against the logs'
// lease events by holder on lock domains (see leaseResolver); the rest
// stay open (+∞, any
// outcome). Unknown reads, denials and promotes resolved as denied
// constrain nothing and are dropped.
func linearizabilityOps(in Input) []domainOps {
	ops, _ := pairOps(in.History)
	ops = append(ops, policyOps(ops, in.History)...)
	logs, _ := normalizedLogs(in)
	dec := decisions(logs)
	kinds := domainKinds(logs)
	leases := newLeaseResolver(ops, logs, kinds)

	byDomain := map[string]*domainOps{}
	get := func(d string) *domainOps {
		if byDomain[d] == nil {
			byDomain[d] = &domainOps{Domain: d, Counts: map[string]int{}}
		}
		return byDomain[d]
	}
	lanes := map[string]map[int]int{}
	lane := func(d string, p int) int {
		if lanes[d] == nil {
			lanes[d] = map[int]int{}
		}
		if l, ok := lanes[d][p]; ok {
			return l
		}
		lanes[d][p] = len(lanes[d])
		return lanes[d][p]
	}

	// Group promote attempts by request id.
	type group struct{ attempts []op }
	groups := map[reqKey]*group{}
	var order []reqKey
	for _, o := range ops {
		if o.F == history.FPromote && o.RequestID != "" {
			k := reqKey{o.Domain, o.RequestID}
			if groups[k] == nil {
				groups[k] = &group{}
				order = append(order, k)
			}
			groups[k].attempts = append(groups[k].attempts, o)
		}
	}
	emitted := map[reqKey]bool{}

	for _, o := range ops {
		switch o.F {
		case history.FRead, history.FPromote, history.FAcquire, history.FRelease:
		default:
			continue
		}
		d := get(o.Domain)
		input := linInput{F: o.F, Kind: kinds[o.Domain], Holder: o.Args.Holder, Expected: o.Args.ExpectedEpoch, Epoch: o.Args.Epoch}
		meta := linMeta{Process: o.Process, RequestID: o.RequestID, Node: o.Node}
		call, ret := o.Call, o.Return
		var out linOutput
		typ := o.Type
		if o.F == history.FPromote && o.RequestID != "" {
			k := reqKey{o.Domain, o.RequestID}
			if emitted[k] {
				continue
			}
			emitted[k] = true
			g := groups[k]
			typ = history.Fail
			for _, a := range g.attempts {
				call = min(call, a.Call)
				switch {
				case a.Type == history.OK && (typ != history.OK || a.Return < ret):
					typ, ret, out.Outcome, out.Epoch = history.OK, a.Return, a.Res.Outcome, a.Res.Epoch
					meta.Process, meta.Node = a.Process, a.Node
				case a.Type == history.Info && typ == history.Fail:
					typ = history.Info
				}
			}
			if len(g.attempts) > 1 {
				meta.Note = fmt.Sprintf("%d attempts", len(g.attempts))
				d.Counts["retried_requests"]++
			}
			if typ == history.Info {
				ret = never
				dd, ok := resolve(dec, o.Domain, o.RequestID)
				switch {
				case !ok && len(dec) > 0:
					// Every committed attempt is decided in every node's
					// final log (identical-prefixes checks they agree):
					// an attempt in none of them never happened.
					d.Counts["unknown_never_committed"]++
					continue
				case ok && !dd.Allowed:
					d.Counts["resolved_from_logs"]++
					d.Counts["dropped_unknown"]++
					continue
				case ok:
					d.Counts["resolved_from_logs"]++
					typ = "resolved"
					out = linOutput{Outcome: history.OutcomeAllowed, Epoch: dd.Epoch}
					meta.Note = strings.TrimPrefix(meta.Note+", resolved from "+dd.Node+"'s log", ", ")
				}
			}
		} else if typ == history.OK {
			out = linOutput{Outcome: o.Res.Outcome, Epoch: o.Res.Epoch, Holder: o.Res.Holder}
		} else if typ == history.Info && (o.F == history.FAcquire || o.F == history.FRelease) {
			switch epoch, r := leases.resolve(o); r {
			case leaseNeverHappened:
				d.Counts["unknown_never_committed"]++
				continue
			case leaseHappened:
				d.Counts["resolved_from_logs"]++
				typ, ret = "resolved", never
				out = linOutput{Epoch: epoch}
				meta.Note = "resolved from the logs' lease events"
			}
		}
		if o.F == history.FPromote && typ == history.OK && out.Outcome != history.OutcomeAllowed {
			// A denial is legal in every state and changes none (the
			// model's step for it is (true, state)), so leaving it out
			// cannot change the verdict; it only widens porcupine's
			// search. (An ok without outcome constrains nothing either.)
			d.Counts["denied_unconstrained"]++
			continue
		}
		switch typ {
		case history.Fail:
			d.Counts["dropped_failed"]++
			continue
		case history.Info:
			if o.F == history.FRead {
				d.Counts["dropped_unknown"]++
				continue
			}
			out = linOutput{Unknown: true}
			ret = never
			d.Counts["open_unknown"]++
		}
		d.Ops = append(d.Ops, porcupine.Operation{ClientId: lane(o.Domain, meta.Process), Input: input, Call: call,
			Output: out, Return: ret, Metadata: meta})
		d.Counts["ops"]++
	}
	var out []domainOps
	for _, d := range byDomain {
		d.Counts["clients"] = len(lanes[d.Domain])
		d.Counts["max_concurrency"] = maxConcurrency(d.Ops)
		out = append(out, *d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Domain < out[j].Domain })
	return out
}

// maxConcurrency is the most operations open at once.
func maxConcurrency(ops []porcupine.Operation) int {
	type pt struct {
		t     int64
		delta int
	}
	var pts []pt
	for _, o := range ops {
		pts = append(pts, pt{o.Call, 1}, pt{o.Return, -1})
	}
	sort.Slice(pts, func(i, j int) bool {
		return pts[i].t < pts[j].t || pts[i].t == pts[j].t && pts[i].delta > pts[j].delta
	})
	cur, best := 0, 0
	for _, p := range pts {
		cur += p.delta
		best = max(best, cur)
	}
	return best
}

// Linearizable checks every domain's operations for linearizability
// against the authority model (one porcupine partition per domain). A
// timeout fails the check. With in.VizDir set it also writes each domain's
// visualisation there.
func Linearizable(in Input) Result {
	res := Result{Name: NameLinearizable, Valid: true, Counts: map[string]int{}}
	timeout := in.LinearizabilityTimeout
	if timeout <= 0 {
		timeout = DefaultLinearizabilityTimeout
	}
	doms := linearizabilityOps(in)
	type verdict struct {
		result  porcupine.CheckResult
		info    porcupine.LinearizationInfo
		verbose bool
		elapsed time.Duration
	}
	verdicts := make([]verdict, len(doms))
	var wg sync.WaitGroup
	for i, d := range doms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			v := &verdicts[i]
			if in.VizDir != "" {
				v.result, v.info = porcupine.CheckOperationsVerbose(linModel, d.Ops, timeout)
				v.verbose = true
			} else {
				v.result = porcupine.CheckOperationsTimeout(linModel, d.Ops, timeout)
				if v.result == porcupine.Illegal { // again, for the explanation
					v.result, v.info = porcupine.CheckOperationsVerbose(linModel, d.Ops, timeout)
					v.verbose = true
				}
			}
			v.elapsed = time.Since(start)
		}()
	}
	wg.Wait()

	var problems, summary []string
	for i, d := range doms {
		v := verdicts[i]
		for k, n := range d.Counts {
			res.Counts[k] += n
		}
		res.Counts["domains"]++
		if d.Counts["max_concurrency"] > res.Counts["max_concurrency_any_domain"] {
			res.Counts["max_concurrency_any_domain"] = d.Counts["max_concurrency"]
		}
		line := fmt.Sprintf("%s: %d ops, %s in %v", d.Domain, len(d.Ops), v.result, v.elapsed.Round(time.Microsecond))
		if c := d.Counts["max_concurrency"]; c > MaxClientsPerDomain {
			line += fmt.Sprintf(" (up to %d ops open at once; above %d porcupine may blow up)", c, MaxClientsPerDomain)
		}
		summary = append(summary, line)
		switch v.result {
		case porcupine.Ok:
		case porcupine.Unknown:
			res.Valid = false
			problems = append(problems, fmt.Sprintf("domain %q: porcupine timed out after %v (%d ops, %d clients): not proven linearizable",
				d.Domain, timeout, len(d.Ops), d.Counts["clients"]))
		default:
			res.Valid = false
			res.Counts["non_linearizable_domains"]++
			problems = append(problems, fmt.Sprintf("domain %q is not linearizable: %s", d.Domain, explainIllegal(d, v.info)))
		}
		if in.VizDir != "" && v.verbose {
			if err := writeViz(in, d, v.info); err != nil {
				problems = append(problems, fmt.Sprintf("domain %q: visualisation: %v", d.Domain, err))
			}
		}
	}
	if res.Valid {
		res.Details = "all domains linearizable (" + strings.Join(summary, "; ") + ")"
	} else {
		res.Details = details(problems, 4) + " [" + strings.Join(summary, "; ") + "]"
	}
	return res
}

// LinearizableWithViz is Linearizable writing each domain's porcupine
// visualisation to dir/linearizability-<domain>.html.
func LinearizableWithViz(in Input, dir string) Result {
	in.VizDir = dir
	return Linearizable(in)
}

// explainIllegal names the longest partial linearization, its final state,
// and the operation it could not extend to.
func explainIllegal(d domainOps, info porcupine.LinearizationInfo) string {
	parts := info.PartialLinearizations()
	if len(parts) == 0 || len(parts[0]) == 0 {
		return "no linearization"
	}
	var longest []int
	for _, p := range parts[0] {
		if len(p) > len(longest) {
			longest = p
		}
	}
	in := make(map[int]bool, len(longest))
	for _, i := range longest {
		in[i] = true
	}
	state := linModel.Init()
	for _, i := range longest {
		_, state = linModel.Step(state, d.Ops[i].Input, d.Ops[i].Output)
	}
	// The search gets stuck at the un-linearized op that must take effect
	// first: the earliest to return.
	first := -1
	for i, o := range d.Ops {
		if in[i] {
			continue
		}
		if f := first; f < 0 || o.Return < d.Ops[f].Return || o.Return == d.Ops[f].Return && o.Call < d.Ops[f].Call {
			first = i
		}
	}
	if first < 0 {
		return fmt.Sprintf("longest partial linearization has %d of %d ops", len(longest), len(d.Ops))
	}
	o := d.Ops[first]
	m, _ := o.Metadata.(linMeta)
	return fmt.Sprintf("longest partial linearization covers %d of %d ops and ends in state %s; the first op it cannot place is %s [%d, %s] (%s)",
		len(longest), len(d.Ops), linModel.DescribeState(state), linModel.DescribeOperation(o.Input, o.Output),
		o.Call, timeString(o.Return), linModel.DescribeOperationMetadata(m))
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// VizPath is where LinearizableWithViz writes a domain's visualisation.
func VizPath(dir, domain string) string {
	return filepath.Join(dir, "linearizability-"+unsafeName.ReplaceAllString(domain, "_")+".html")
}

func writeViz(in Input, d domainOps, info porcupine.LinearizationInfo) error {
	if err := os.MkdirAll(in.VizDir, 0o755); err != nil {
		return err
	}
	info.AddAnnotations(annotations(in, d.Domain))
	return porcupine.VisualizePath(linModel, info, VizPath(in.VizDir, d.Domain))
}

// Visualize writes porcupine's visualisation of one domain, with nemesis
// windows, leaders, agent beliefs and fenced accepts/rejects as
// annotations. It checks the domain again (verbose).
func Visualize(w io.Writer, in Input, domain string) error {
	timeout := in.LinearizabilityTimeout
	if timeout <= 0 {
		timeout = DefaultLinearizabilityTimeout
	}
	for _, d := range linearizabilityOps(in) {
		if d.Domain != domain {
			continue
		}
		_, info := porcupine.CheckOperationsVerbose(linModel, d.Ops, timeout)
		info.AddAnnotations(annotations(in, domain))
		return porcupine.Visualize(linModel, info, w)
	}
	return fmt.Errorf("no operations on domain %q", domain)
}

// annotations renders the run's non-op records touching a domain.
func annotations(in Input, domain string) []porcupine.Annotation {
	var last int64
	for _, r := range in.History {
		last = max(last, r.Time)
	}
	end := func(t int64) int64 {
		if t == never {
			return last
		}
		return t
	}
	var out []porcupine.Annotation
	for _, w := range nemesisWindows(in.History) {
		out = append(out, porcupine.Annotation{Tag: "nemesis", Start: w.Start, End: end(w.Stop), Description: w.Fault,
			Details: fmt.Sprintf("%s [%d, %s] %s", w.Fault, w.Start, timeString(w.Stop), w.Info), BackgroundColor: "#f8d7da"})
	}
	for _, b := range beliefs(in.History) {
		if b.Domain != domain {
			continue
		}
		out = append(out, porcupine.Annotation{Tag: "agent " + b.Holder, Start: b.Start, End: end(b.End),
			Description: fmt.Sprintf("holds e%d", b.Epoch), Details: fmt.Sprintf("%s believes it holds e%d during [%d, %s)", b.Holder, b.Epoch, b.Start, timeString(b.End)),
			BackgroundColor: "#d1e7dd"})
	}
	for _, r := range in.History {
		switch {
		case r.Kind == history.KindFenced && r.Domain == domain:
			color := "#cfe2ff"
			if r.Type == history.FencedReject {
				color = "#ffe5b4"
			}
			out = append(out, porcupine.Annotation{Tag: "fenced", Start: r.Time, Description: fmt.Sprintf("%s e%d", r.Type, r.Value.Epoch),
				Details: fmt.Sprintf("%s write %s seq %d at e%d %s", r.Type, r.Value.Holder, r.Value.Seq, r.Value.Epoch, r.Error), BackgroundColor: color})
		case r.Kind == history.KindLeader:
			out = append(out, porcupine.Annotation{Tag: "leader", Start: r.Time, Description: fmt.Sprintf("%s t%d", r.Node, r.Value.Term),
				Details: fmt.Sprintf("%s leads term %d", r.Node, r.Value.Term)})
		}
	}
	return out
}

// leaseResolver resolves unknown acquires and releases against the nodes'
// lease events. It relies on what the workload guarantees: a logical
// client takes a new holder name whenever it continues under a new process
// (after an unknown outcome), so a holder's operations are sequential and
// an unknown one is its holder's last.
//
// For (domain, holder): the grants in the longest node log that no ok
// acquire returned are the unknown acquires' doing. One unknown acquire and
// no such grant: it never happened; one such grant: it happened, at that
// epoch; more unknowns: only "none happened" is certain. A release of
// (holder, epoch) happened exactly when the log has that release and no ok
// release returned it.
type leaseResolver struct {
	haveLogs  bool
	kinds     map[string]string
	grants    map[holderKey][]uint64 // unclaimed grant epochs
	unknowns  map[holderKey]int      // unknown acquires
	released  map[holderEpoch]bool   // release events
	okRelease map[holderEpoch]bool   // ok releases
}

type holderKey struct{ domain, holder string }

type holderEpoch struct {
	holderKey
	epoch uint64
}

type leaseResolution int

const (
	leaseOpen leaseResolution = iota
	leaseNeverHappened
	leaseHappened
)

func newLeaseResolver(ops []op, logs map[string][]observability.EventJSON, kinds map[string]string) *leaseResolver {
	r := &leaseResolver{kinds: kinds, grants: map[holderKey][]uint64{}, unknowns: map[holderKey]int{},
		released: map[holderEpoch]bool{}, okRelease: map[holderEpoch]bool{}}
	longest := ""
	for n, evs := range logs {
		if longest == "" || len(evs) > len(logs[longest]) || (len(evs) == len(logs[longest]) && n < longest) {
			longest = n
		}
	}
	r.haveLogs = longest != ""
	claimed := map[holderEpoch]bool{}
	for _, o := range ops {
		k := holderKey{o.Domain, o.Args.Holder}
		switch {
		case o.F == history.FAcquire && o.Type == history.OK:
			claimed[holderEpoch{k, o.Res.Epoch}] = true
		case o.F == history.FAcquire && o.Type == history.Info:
			r.unknowns[k]++
		case o.F == history.FRelease && o.Type == history.OK:
			r.okRelease[holderEpoch{k, o.Args.Epoch}] = true
		}
	}
	for _, ev := range logs[longest] {
		switch {
		case ev.Type == evLeaseAcquired && isGrant(ev):
			k := holderKey{ev.Domain, grantHolder(ev)}
			if e := grantEpoch(ev); !claimed[holderEpoch{k, e}] {
				r.grants[k] = append(r.grants[k], e)
			}
		case ev.Type == evLeaseReleased:
			r.released[holderEpoch{holderKey{ev.Domain, grantHolder(ev)}, grantEpoch(ev)}] = true
		}
	}
	return r
}

// resolve returns what the logs say about unknown op o (and the granted
// epoch of a resolved acquire).
func (r *leaseResolver) resolve(o op) (uint64, leaseResolution) {
	if !r.haveLogs || r.kinds[o.Domain] != kindLock {
		// (An aerodb domain's holders are its members, whose names are
		// not per process: their unknown re-acquires stay open.)
		return 0, leaseOpen
	}
	k := holderKey{o.Domain, o.Args.Holder}
	if o.F == history.FRelease {
		he := holderEpoch{k, o.Args.Epoch}
		if r.released[he] && !r.okRelease[he] {
			return 0, leaseHappened
		}
		return 0, leaseNeverHappened
	}
	switch g := r.grants[k]; {
	case len(g) == 0:
		return 0, leaseNeverHappened
	case len(g) == 1 && r.unknowns[k] == 1:
		return g[0], leaseHappened
	}
	return 0, leaseOpen
}

// policyOps models the automatic policy's allowed promotions (KindPolicy
// records) as promote operations of their own lanes. The policy is not a
// client and nobody waited for a reply, so the operation's interval comes
// from the clients' observations of the domain, not from the records'
// leader stamps (a skewed server clock would misplace them): it is invoked
// no earlier than the last ok operation that saw the epoch it expects (or
// an older one) was invoked, and returns no later than the first ok
// operation that saw its epoch (or a newer one) returned (never, if none
// did). Both bounds are sound, so the model only widens.
func policyOps(ops []op, recs []history.Record) []op {
	observed := func(o op) uint64 {
		if o.Type != history.OK {
			return 0
		}
		switch o.F {
		case history.FRead, history.FAcquire:
			return o.Res.Epoch
		case history.FPromote:
			if o.Res.Outcome == history.OutcomeAllowed {
				return o.Res.Epoch
			}
		}
		return 0
	}
	var out []op
	for _, r := range recs {
		if r.Kind != history.KindPolicy || r.Value.Outcome != history.OutcomeAllowed || r.RequestID == "" || r.Value.Epoch == 0 {
			continue
		}
		call, ret := int64(math.MinInt64), int64(never)
		for _, o := range ops {
			e := observed(o)
			if o.Domain != r.Domain || e == 0 {
				continue
			}
			if e <= r.Value.ExpectedEpoch {
				call = max(call, o.Call)
			}
			if e >= r.Value.Epoch {
				ret = min(ret, o.Return)
			}
		}
		if call == math.MinInt64 {
			call = 0
		}
		call = min(call, ret)
		out = append(out, op{Process: -1000 - len(out), F: history.FPromote, Domain: r.Domain, RequestID: r.RequestID,
			Type: history.OK, Args: history.Value{Holder: r.Value.Holder, ExpectedEpoch: r.Value.ExpectedEpoch},
			Res: history.Value{Outcome: history.OutcomeAllowed, Epoch: r.Value.Epoch}, Call: call, Return: ret})
	}
	return out
}
