package checker

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/aerodb/authority/jepsen-like/history"
)

// Liveness is the run's sanity check (a fault test that injected nothing,
// or did nothing, proves nothing):
//   - at least MinOpsAroundFaults ok operations completed before the first
//     nemesis start, and at least as many were invoked after the last
//     nemesis stop (with no nemesis at all, the whole run counts for both);
//   - every fault was healed (a start without a stop fails);
//   - every armed failpoint was hit at least once;
//   - with RequireHealedOpsPerDomain, every domain has ≥ 1 ok read and
//     ≥ 1 ok write invoked after the last heal;
//   - with HandoverBound, a holder paused (stopped renewing) for longer
//     than the bound lost its domain to another holder within the bound
//     (its lease expired; nobody kept it alive for it), and at least one
//     such pause was checked.
func Liveness(in Input) Result {
	res := Result{Name: NameLiveness, Valid: true, Counts: map[string]int{}}
	var problems []string
	ops, malformed := pairOps(in.History)
	windows := nemesisWindows(in.History)
	firstStart, lastStop := int64(never), int64(0)
	for _, w := range windows {
		firstStart = min(firstStart, w.Start)
		lastStop = max(lastStop, w.Stop)
		if w.Stop == never {
			problems = append(problems, fmt.Sprintf("fault %q started at %d was never healed", w.Fault, w.Start))
		}
	}
	res.Counts["faults"] = len(windows)
	res.Counts["malformed_op_records"] = len(malformed)
	type rw struct{ read, write int }
	healed := map[string]*rw{}
	for _, o := range ops {
		if healed[o.Domain] == nil {
			healed[o.Domain] = &rw{}
		}
		res.Counts[o.Type]++
		if o.Type != history.OK {
			continue
		}
		if len(windows) == 0 || o.Return <= firstStart {
			res.Counts["ok_before_faults"]++
		}
		if len(windows) == 0 || lastStop != never && o.Call >= lastStop {
			res.Counts["ok_after_faults"]++
			if o.F == history.FRead {
				healed[o.Domain].read++
			} else {
				healed[o.Domain].write++
			}
		}
	}
	if n := res.Counts["ok_before_faults"]; n < in.MinOpsAroundFaults {
		problems = append(problems, fmt.Sprintf("%d ok ops before the first fault, want ≥ %d", n, in.MinOpsAroundFaults))
	}
	if n := res.Counts["ok_after_faults"]; n < in.MinOpsAroundFaults {
		problems = append(problems, fmt.Sprintf("%d ok ops after the last fault was healed, want ≥ %d", n, in.MinOpsAroundFaults))
	}
	if in.RequireHealedOpsPerDomain {
		for _, d := range sortedKeys(healed) {
			if h := healed[d]; h.read == 0 || h.write == 0 {
				problems = append(problems, fmt.Sprintf("domain %q: %d ok reads and %d ok writes after healing, want ≥ 1 each", d, h.read, h.write))
			}
		}
	}
	armed := append([]string(nil), in.ArmedFailpoints...)
	sort.Strings(armed)
	var hits []string
	for _, fp := range armed {
		n := in.FailpointHits[fp]
		hits = append(hits, fmt.Sprintf("%s=%d", fp, n))
		if n < 1 {
			problems = append(problems, fmt.Sprintf("armed failpoint %q never fired", fp))
		}
	}
	res.Counts["armed_failpoints"] = len(armed)
	if in.HandoverBound > 0 {
		problems = append(problems, handovers(in, ops, windows, res.Counts)...)
	}
	summary := fmt.Sprintf("%d ok ops before the first fault, %d after the last heal (want ≥ %d); %d faults; ops ok/fail/info %d/%d/%d",
		res.Counts["ok_before_faults"], res.Counts["ok_after_faults"], in.MinOpsAroundFaults, len(windows),
		res.Counts[history.OK], res.Counts[history.Fail], res.Counts[history.Info])
	if len(armed) > 0 {
		summary += "; failpoint hits " + strings.Join(hits, ", ")
	}
	if in.HandoverBound > 0 {
		summary += fmt.Sprintf("; %d of %d paused holders lost their domain within %v (slowest %d ms)",
			res.Counts["handovers"], res.Counts["paused_holders"], in.HandoverBound, res.Counts["max_handover_ms"])
	}
	if len(malformed) > 0 {
		summary += "; malformed op records (ignored): " + details(malformed, 3)
	}
	if len(problems) > 0 {
		res.Valid = false
		res.Details = details(problems, 6) + " [" + summary + "]"
	} else {
		res.Details = summary
	}
	return res
}

// IdenticalPrefixes: every node's final log is a prefix of the longest,
// event by event (index, seq, type, domain, epoch, holder, fields). Exact
// re-deliveries of an event are ignored; out-of-order or conflicting
// duplicates fail. No node logs at all fails (nothing was compared).
func IdenticalPrefixes(in Input) Result {
	res := Result{Name: NameIdenticalPrefixes, Valid: true, Counts: map[string]int{}}
	logs, normProblems := normalizedLogs(in)
	names := nodeNames(logs)
	var problems []string
	for _, n := range names {
		for _, p := range normProblems[n] {
			problems = append(problems, "node "+n+": "+p)
		}
		res.Counts["duplicates_dropped"] += len(in.NodeLogs[n]) - len(logs[n]) - len(normProblems[n])
	}
	if len(names) == 0 {
		res.Valid = false
		res.Details = "no node logs"
		return res
	}
	longest := names[0]
	for _, n := range names {
		if len(logs[n]) > len(logs[longest]) {
			longest = n
		}
	}
	ref := logs[longest]
	res.Counts["longest"] = len(ref)
	var lens []string
	for _, n := range names {
		lens = append(lens, fmt.Sprintf("%s=%d", n, len(logs[n])))
		for i, ev := range logs[n] {
			if !sameEvent(ev, ref[i]) {
				problems = append(problems, fmt.Sprintf("node %s diverges from %s at event %d: %s vs %s",
					n, longest, i, evString(ev), evString(ref[i])))
				res.Counts["divergent_nodes"]++
				break
			}
		}
	}
	if len(problems) > 0 {
		res.Valid = false
		res.Details = details(problems, 5)
	} else {
		res.Details = fmt.Sprintf("every node's log is a prefix of %s's (events: %s)", longest, strings.Join(lens, ", "))
	}
	return res
}

// handovers checks every pause-holder fault longer than in.HandoverBound
// whose holder held its domain when the pause began: another holder must
// have been granted the domain (an agent's holds record, an ok acquire)
// within the bound of the pause's start. Counts: paused_holders (checked),
// paused_not_holding (skipped), handovers, max_handover_ms.
func handovers(in Input, ops []op, windows []nemesisWindow, counts map[string]int) []string {
	bound := int64(in.HandoverBound)
	bs := beliefs(in.History)
	var problems []string
	for _, w := range windows {
		if w.Fault != "pause-holder" || w.Domain == "" || w.Holder == "" || w.Stop == never || w.Stop-w.Start <= bound {
			continue
		}
		held := false
		for _, b := range bs {
			held = held || b.Domain == w.Domain && b.Holder == w.Holder && b.Start <= w.Start && w.Start < b.End
		}
		if !held {
			counts["paused_not_holding"]++
			continue
		}
		counts["paused_holders"]++
		first, by := int64(never), ""
		for _, r := range in.History {
			if r.Kind == history.KindAgent && r.Type == history.AgentHolds && r.Domain == w.Domain && r.Value.Holder != w.Holder &&
				r.Time >= w.Start && r.Time < first {
				first, by = r.Time, r.Value.Holder
			}
		}
		for _, o := range ops {
			if o.F == history.FAcquire && o.Type == history.OK && o.Domain == w.Domain && o.Args.Holder != w.Holder &&
				o.Return >= w.Start && o.Return < first {
				first, by = o.Return, o.Args.Holder
			}
		}
		if first <= w.Start+bound {
			counts["handovers"]++
			counts["max_handover_ms"] = max(counts["max_handover_ms"], int((first-w.Start)/int64(time.Millisecond)))
			continue
		}
		next := "none by the end of the run"
		if first != never {
			next = fmt.Sprintf("first to %q %v after the pause began", by, time.Duration(first-w.Start).Round(time.Millisecond))
		}
		problems = append(problems, fmt.Sprintf("holder %q of %q stopped renewing at %d (paused %v) but kept the domain: no other holder was granted it within %v (%s)",
			w.Holder, w.Domain, w.Start, time.Duration(w.Stop-w.Start).Round(time.Millisecond), in.HandoverBound, next))
	}
	if counts["paused_holders"] == 0 {
		problems = append(problems, fmt.Sprintf("handover bound %v: no holder was paused for longer while holding its domain (nothing checked)", in.HandoverBound))
	}
	return problems
}
