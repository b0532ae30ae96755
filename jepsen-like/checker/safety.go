package checker

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"

	"github.com/aerodb/authority/jepsen-like/history"
	"github.com/aerodb/authority/observability"
)

// OneHolderPerEpoch (AU-1): no (domain, epoch) maps to two holders, across
// ok responses (promote allowed, acquire, read), agent beliefs, fenced
// accepts, and every event of every node's log (each event carries the
// domain's (epoch, holder) after its entry; grants are among them).
func OneHolderPerEpoch(in Input) Result {
	res := Result{Name: NameOneHolderPerEpoch, Valid: true, Counts: map[string]int{}}
	type key struct {
		domain string
		epoch  uint64
	}
	type claim struct{ holder, source string }
	first := map[key]claim{}
	conflicts := map[key]bool{}
	var problems []string
	add := func(domain string, epoch uint64, holder, source, counter string) {
		if epoch == 0 || holder == "" {
			return
		}
		res.Counts[counter]++
		k := key{domain, epoch}
		c, ok := first[k]
		if !ok {
			first[k] = claim{holder, source}
			return
		}
		if c.holder != holder && !conflicts[k] {
			conflicts[k] = true
			problems = append(problems, fmt.Sprintf("domain %q epoch %d has two holders: %q (%s) and %q (%s)",
				domain, epoch, c.holder, c.source, holder, source))
		}
	}

	// Node logs first: the committed truth is named first in a conflict.
	logs, _ := normalizedLogs(in)
	for _, n := range nodeNames(logs) {
		for _, ev := range logs[n] {
			if ev.Domain == "" {
				continue
			}
			counter := "log_events"
			if isGrant(ev) {
				counter = "log_grants"
				add(ev.Domain, grantEpoch(ev), grantHolder(ev), fmt.Sprintf("node %s log %s", n, evString(ev)), counter)
				continue
			}
			add(ev.Domain, ev.Epoch, ev.Holder, fmt.Sprintf("node %s log %s", n, evString(ev)), counter)
		}
	}
	ops, _ := pairOps(in.History)
	for _, o := range ops {
		if o.Type != history.OK {
			continue
		}
		switch o.F {
		case history.FPromote:
			if o.Res.Outcome == history.OutcomeAllowed {
				add(o.Domain, o.Res.Epoch, o.Args.Holder, "ok "+o.String(), "responses")
			}
		case history.FAcquire:
			add(o.Domain, o.Res.Epoch, o.Args.Holder, "ok "+o.String(), "responses")
		case history.FRead:
			add(o.Domain, o.Res.Epoch, o.Res.Holder, "ok "+o.String(), "responses")
		}
	}
	for _, r := range sortedHistory(in.History) {
		switch {
		case r.Kind == history.KindAgent && r.Type == history.AgentHolds:
			add(r.Domain, r.Value.Epoch, r.Value.Holder, fmt.Sprintf("agent process %d holds at %d", r.Process, r.Time), "agent_beliefs")
		case r.Kind == history.KindFenced && r.Type == history.FencedAccept:
			add(r.Domain, r.Value.Epoch, r.Value.Holder, fmt.Sprintf("fenced accept seq %d at %d", r.Value.Seq, r.Time), "fenced_accepts")
		}
	}
	res.Counts["domain_epochs"] = len(first)
	res.Counts["conflicts"] = len(conflicts)
	if len(problems) > 0 {
		res.Valid = false
		res.Details = details(problems, 5)
	} else {
		res.Details = fmt.Sprintf("%d (domain, epoch) pairs, one holder each", len(first))
	}
	return res
}

// grant is one grant event of a node's log.
type grant struct {
	Index  uint64
	Epoch  uint64
	Holder string
}

// grantsByDomain lists a log's grants per domain, in log order.
func grantsByDomain(evs []observability.EventJSON) map[string][]grant {
	out := map[string][]grant{}
	for _, ev := range evs {
		if ev.Domain != "" && isGrant(ev) {
			out[ev.Domain] = append(out[ev.Domain], grant{ev.Index, grantEpoch(ev), grantHolder(ev)})
		}
	}
	return out
}

// EpochsMonotonic (AU-1, AU-10): along each node's log, per domain, grant
// epochs strictly increase (and no event's epoch goes down); all nodes'
// grant sequences per domain are prefixes of the longest; and a node's
// state read after a restart (KindApplied) never shows an epoch lower than
// one observed earlier for that node, nor higher than its final log's
// last grant.
func EpochsMonotonic(in Input) Result {
	res := Result{Name: NameEpochsMonotonic, Valid: true, Counts: map[string]int{}}
	var problems []string
	logs, _ := normalizedLogs(in)
	names := nodeNames(logs)
	grants := map[string]map[string][]grant{}
	for _, n := range names {
		grants[n] = grantsByDomain(logs[n])
		last := map[string]observability.EventJSON{}
		for _, ev := range logs[n] {
			if ev.Domain == "" {
				continue
			}
			if p, ok := last[ev.Domain]; ok && ev.Epoch < p.Epoch {
				problems = append(problems, fmt.Sprintf("node %s domain %q: epoch went down from %d (%s) to %d (%s)",
					n, ev.Domain, p.Epoch, evString(p), ev.Epoch, evString(ev)))
			}
			last[ev.Domain] = ev
		}
		for d, gs := range grants[n] {
			for i := 1; i < len(gs); i++ {
				if gs[i].Epoch <= gs[i-1].Epoch {
					problems = append(problems, fmt.Sprintf("node %s domain %q: grant at index %d has epoch %d (holder %q), not above the previous grant's %d (index %d, holder %q)",
						n, d, gs[i].Index, gs[i].Epoch, gs[i].Holder, gs[i-1].Epoch, gs[i-1].Index, gs[i-1].Holder))
				}
			}
			res.Counts["grants"] += len(gs)
		}
	}
	// Agreement: per domain, every node's grants are a prefix of the longest.
	domains := map[string]bool{}
	for _, n := range names {
		for d := range grants[n] {
			domains[d] = true
		}
	}
	for _, d := range sortedKeys(domains) {
		longestNode := ""
		for _, n := range names {
			if longestNode == "" || len(grants[n][d]) > len(grants[longestNode][d]) {
				longestNode = n
			}
		}
		ref := grants[longestNode][d]
		for _, n := range names {
			for i, g := range grants[n][d] {
				if g != ref[i] {
					problems = append(problems, fmt.Sprintf("domain %q: grant %d differs: node %s has (index %d, e%d, %q), node %s has (index %d, e%d, %q)",
						d, i+1, n, g.Index, g.Epoch, g.Holder, longestNode, ref[i].Index, ref[i].Epoch, ref[i].Holder))
					break
				}
			}
		}
	}
	res.Counts["domains"] = len(domains)

	// States read after restarts.
	seen := map[nodeDomain]history.Record{}
	for _, r := range sortedHistory(in.History) {
		if r.Kind != history.KindApplied {
			continue
		}
		res.Counts["applied_reads"]++
		k := nodeDomain{r.Node, r.Domain}
		if p, ok := seen[k]; ok && r.Value.Epoch < p.Value.Epoch {
			problems = append(problems, fmt.Sprintf("node %s domain %q: applied epoch %d at %d is below the %d observed at %d (went back after a restart)",
				r.Node, r.Domain, r.Value.Epoch, r.Time, p.Value.Epoch, p.Time))
			continue
		}
		if p, ok := seen[k]; !ok || r.Value.Epoch >= p.Value.Epoch {
			seen[k] = r
		}
	}
	for _, k := range sortedNodeDomains(seen) {
		r := seen[k]
		gs, ok := grants[k.node][k.domain]
		if !ok || len(gs) == 0 {
			continue
		}
		if lastEpoch := gs[len(gs)-1].Epoch; lastEpoch < r.Value.Epoch {
			problems = append(problems, fmt.Sprintf("node %s domain %q: applied epoch %d observed at %d, but its final log's last grant is epoch %d",
				k.node, k.domain, r.Value.Epoch, r.Time, lastEpoch))
		}
	}
	if len(problems) > 0 {
		res.Valid = false
		res.Details = details(problems, 5)
	} else {
		res.Details = fmt.Sprintf("%d grants over %d domains on %d nodes strictly increasing and in agreement; %d applied reads never went back",
			res.Counts["grants"], len(domains), len(names), res.Counts["applied_reads"])
	}
	return res
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// nodeDomain keys per-node, per-domain observations.
type nodeDomain struct{ node, domain string }

func sortedNodeDomains[V any](m map[nodeDomain]V) []nodeDomain {
	out := make([]nodeDomain, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b nodeDomain) int {
		return cmp.Or(cmp.Compare(a.node, b.node), cmp.Compare(a.domain, b.domain))
	})
	return out
}

// NoLostAcknowledgedWrites (AU-2, AU-4): every acknowledged write is in
// every node's final log, as acknowledged:
//   - ok promote: the request id's decision (validation_succeeded/failed)
//     matches the acknowledged outcome, and an allowed one's
//     transition_completed has the acknowledged epoch;
//   - ok acquire: a lease.acquired (or assignment.initial) of the holder at
//     the acknowledged epoch;
//   - ok release: a lease.released of (holder, epoch);
//   - ok advance (epoch e, lsn L): a watermark.advanced at epoch e with
//     lsn ≥ L (the acknowledged advance or a later one covering it), and if
//     the domain's final watermark is still at epoch e, its lsn ≥ L.
//
// Acknowledged writes with no node logs at all fail the check (it would
// pass vacuously).
func NoLostAcknowledgedWrites(in Input) Result {
	res := Result{Name: NameNoLostWrites, Valid: true, Counts: map[string]int{}}
	var problems []string
	logs, _ := normalizedLogs(in)
	names := nodeNames(logs)
	dec := decisions(logs)
	ops, _ := pairOps(in.History)
	lost := func(n string, o op, what string) {
		problems = append(problems, fmt.Sprintf("node %s: acknowledged %s: %s", n, o, what))
	}
	find := func(n string, pred func(observability.EventJSON) bool) (observability.EventJSON, bool) {
		for _, ev := range logs[n] {
			if pred(ev) {
				return ev, true
			}
		}
		return observability.EventJSON{}, false
	}
	acked := 0
	for _, o := range ops {
		if o.Type != history.OK {
			continue
		}
		switch o.F {
		case history.FPromote, history.FAcquire, history.FRelease, history.FAdvance:
		default:
			continue
		}
		acked++
		res.Counts["acked_"+o.F]++
		if o.F == history.FPromote && o.RequestID == "" {
			res.Counts["unchecked_promote_without_request_id"]++
			continue
		}
		for _, n := range names {
			switch o.F {
			case history.FPromote:
				d, ok := dec[n][reqKey{o.Domain, o.RequestID}]
				allowed := o.Res.Outcome == history.OutcomeAllowed
				switch {
				case !ok:
					lost(n, o, "no decision for the request id in the log")
				case d.Allowed != allowed:
					lost(n, o, fmt.Sprintf("acknowledged as %q but the log decided allowed=%t (index %d)", o.Res.Outcome, d.Allowed, d.Index))
				case allowed && o.Res.Epoch != 0 && d.Epoch != o.Res.Epoch:
					lost(n, o, fmt.Sprintf("acknowledged epoch %d but the log's transition_completed has epoch %d", o.Res.Epoch, d.Epoch))
				}
			case history.FAcquire:
				if _, ok := find(n, func(ev observability.EventJSON) bool {
					return ev.Domain == o.Domain && (ev.Type == evLeaseAcquired || ev.Type == evInitialAssignment) &&
						grantHolder(ev) == o.Args.Holder && (o.Res.Epoch == 0 || grantEpoch(ev) == o.Res.Epoch)
				}); !ok {
					lost(n, o, fmt.Sprintf("no lease.acquired of %q at epoch %d", o.Args.Holder, o.Res.Epoch))
				}
			case history.FRelease:
				if _, ok := find(n, func(ev observability.EventJSON) bool {
					h, _ := field(ev, "holder")
					e, _ := fieldUint(ev, "epoch")
					return ev.Domain == o.Domain && ev.Type == evLeaseReleased && h == o.Args.Holder && e == o.Args.Epoch
				}); !ok {
					lost(n, o, fmt.Sprintf("no lease.released of %q at epoch %d", o.Args.Holder, o.Args.Epoch))
				}
			case history.FAdvance:
				epoch, lsn := o.Args.Epoch, o.Args.Lsn
				if _, ok := find(n, func(ev observability.EventJSON) bool {
					l, _ := fieldUint(ev, "lsn")
					return ev.Domain == o.Domain && ev.Type == evWatermarkAdvanced && (epoch == 0 || ev.Epoch == epoch) && l >= lsn
				}); !ok {
					lost(n, o, fmt.Sprintf("no watermark.advanced at epoch %d with lsn ≥ %d", epoch, lsn))
					continue
				}
				var final observability.EventJSON
				for _, ev := range logs[n] {
					if ev.Domain == o.Domain && ev.Type == evWatermarkAdvanced {
						final = ev
					}
				}
				if l, _ := fieldUint(final, "lsn"); final.Epoch == epoch && l < lsn {
					lost(n, o, fmt.Sprintf("the final watermark (epoch %d, still current) is at lsn %d < %d", epoch, l, lsn))
				}
			}
		}
	}
	res.Counts["acknowledged"] = acked
	res.Counts["nodes"] = len(names)
	switch {
	case len(problems) > 0:
		res.Valid = false
		res.Details = details(problems, 5)
	case acked > 0 && len(names) == 0:
		res.Valid = false
		res.Details = fmt.Sprintf("%d acknowledged writes but no node logs to find them in", acked)
	default:
		res.Details = fmt.Sprintf("%d acknowledged writes present in all %d nodes' logs", acked, len(names))
	}
	return res
}

// NoOverlappingPrimaries (AU-12):
//
//	(a) no agent belief in epoch e (from its holds record to its lost
//	    record, or the end of the run) extends past the ok return of a
//	    promote/acquire that granted e' > e in that domain to another
//	    holder. No slack: the client library's lease margin must make the
//	    holder give up before anyone else can be granted the domain;
//	(b) the fenced resource accepted only non-decreasing epochs per domain
//	    (time order): an accept below the highest epoch accepted before it
//	    is a stale accept; a reject below it is a stale rejection. With
//	    ExpectStaleRejections, at least one stale rejection is required.
func NoOverlappingPrimaries(in Input) Result {
	res := Result{Name: NameNoOverlap, Valid: true, Counts: map[string]int{}}
	var problems []string
	type grantAck struct {
		epoch  uint64
		holder string
		at     int64
		what   string
	}
	ops, _ := pairOps(in.History)
	acks := map[string][]grantAck{}
	for _, o := range ops {
		if o.Type != history.OK || o.Res.Epoch == 0 {
			continue
		}
		if o.F == history.FAcquire || o.F == history.FPromote && o.Res.Outcome == history.OutcomeAllowed {
			acks[o.Domain] = append(acks[o.Domain], grantAck{o.Res.Epoch, o.Args.Holder, o.Return, o.String()})
		}
	}
	for _, b := range beliefs(in.History) {
		res.Counts["beliefs"]++
		for _, g := range acks[b.Domain] {
			if g.epoch > b.Epoch && g.holder != b.Holder && b.End > g.at {
				res.Counts["overlaps"]++
				problems = append(problems, fmt.Sprintf("domain %q: agent %q believed it held epoch %d during [%d, %s), past %d when %s granted epoch %d to %q (overlap %s ns)",
					b.Domain, b.Holder, b.Epoch, b.Start, timeString(b.End), g.at, g.what, g.epoch, g.holder, overlap(b, g.at)))
				break
			}
		}
	}

	highest := map[string]uint64{}
	for _, r := range sortedHistory(in.History) {
		if r.Kind != history.KindFenced {
			continue
		}
		h := highest[r.Domain]
		switch r.Type {
		case history.FencedAccept:
			res.Counts["fenced_accepts"]++
			if r.Value.Epoch < h {
				res.Counts["stale_accepts"]++
				problems = append(problems, fmt.Sprintf("domain %q: fenced resource accepted %q's write seq %d at epoch %d at %d after accepting epoch %d",
					r.Domain, r.Value.Holder, r.Value.Seq, r.Value.Epoch, r.Time, h))
			}
			highest[r.Domain] = max(h, r.Value.Epoch)
		case history.FencedReject:
			res.Counts["fenced_rejects"]++
			if r.Value.Epoch < h {
				res.Counts["stale_rejects"]++
			}
		}
	}
	if in.ExpectStaleRejections && res.Counts["stale_rejects"] == 0 {
		problems = append(problems, fmt.Sprintf("a paused-holder run must show ≥ 1 rejected stale write at the fenced resource; it shows none (%d accepts, %d rejects)",
			res.Counts["fenced_accepts"], res.Counts["fenced_rejects"]))
	}
	if len(problems) > 0 {
		res.Valid = false
		res.Details = details(problems, 5)
	} else {
		res.Details = fmt.Sprintf("%d agent beliefs, none past a newer grant; %d fenced accepts non-decreasing, %d stale writes rejected",
			res.Counts["beliefs"], res.Counts["fenced_accepts"], res.Counts["stale_rejects"])
	}
	return res
}

func overlap(b belief, at int64) string {
	if b.End == never {
		return "∞"
	}
	return strconv.FormatInt(b.End-at, 10)
}
