// Package report writes a fault-injection run's report: summary.md
// (verdict per checker, counts, seed, reproduction command), results.json,
// and timeline.html (inline SVG: one lane per process with its operations
// coloured ok / fail / unknown, fault windows shaded, the leader per term,
// agents' belief intervals, the fenced resource's accepts and rejects), and
// plots.html (inline SVG: latency per operation over time on a log scale,
// throughput per second, fault windows shaded, and a table of counts and
// latency percentiles per operation).
package report

import (
	"cmp"
	"encoding/json"
	"fmt"
	"html"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/aerodb/authority/jepsen-like/checker"
	"github.com/aerodb/authority/jepsen-like/history"
)

// Meta describes the run.
type Meta struct {
	Scenario string
	Seed     uint64
	Repro    string
	Elapsed  time.Duration
}

// Write writes summary.md, results.json, timeline.html and plots.html into dir.
func Write(dir string, m Meta, in checker.Input, rs []checker.Result) error {
	verdict := "VALID"
	if !checker.Valid(rs) {
		verdict = "INVALID"
	}
	counts := map[string]int{}
	for _, r := range in.History {
		k := r.Kind
		if r.Type != "" {
			k += "/" + r.Type
		}
		counts[k]++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Fault-injection run: %s — %s\n\n", m.Scenario, verdict)
	fmt.Fprintf(&b, "- seed: `%d`\n- elapsed: %s\n- reproduce: `%s`\n- nodes: %d, history records: %d\n",
		m.Seed, m.Elapsed.Round(time.Millisecond), m.Repro, len(in.NodeLogs), len(in.History))
	if len(in.ArmedFailpoints) > 0 {
		fmt.Fprintf(&b, "- armed failpoints: %v, hits: %v\n", in.ArmedFailpoints, in.FailpointHits)
	}
	b.WriteString("\n| checker | verdict | details |\n|---|---|---|\n")
	for _, r := range rs {
		v := "valid"
		if !r.Valid {
			v = "**INVALID**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", r.Name, v, strings.ReplaceAll(r.Details, "|", "\\|"))
	}
	b.WriteString("\n## Record counts\n\n")
	for _, k := range sortedKeys(counts) {
		fmt.Fprintf(&b, "- %s: %d\n", k, counts[k])
	}
	b.WriteString("\n## Faults\n\n")
	for _, r := range sorted(in.History) {
		if r.Kind == history.KindNemesis {
			fmt.Fprintf(&b, "- %s %s: %s\n", r.Type, r.Fault, r.Info)
		}
	}
	b.WriteString("\nFiles: `history.jsonl` (merged), `nodes/<id>.events` (applied logs), `results.json`, `timeline.html`, `plots.html` (latency and throughput), `linearizability-<domain>.html`.\n")
	if err := os.WriteFile(filepath.Join(dir, "summary.md"), []byte(b.String()), 0o644); err != nil {
		return err
	}
	js, err := json.MarshalIndent(map[string]any{"scenario": m.Scenario, "seed": m.Seed, "repro": m.Repro, "valid": checker.Valid(rs),
		"elapsed_ms": m.Elapsed.Milliseconds(), "results": rs, "record_counts": counts,
		"armed_failpoints": in.ArmedFailpoints, "failpoint_hits": in.FailpointHits}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), js, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "timeline.html"), []byte(Timeline(m, in, rs)), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "plots.html"), []byte(Plots(m, in, rs)), 0o644)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sorted(recs []history.Record) []history.Record {
	out := slices.Clone(recs)
	slices.SortStableFunc(out, func(a, b history.Record) int { return cmp.Compare(a.Time, b.Time) })
	return out
}

type span struct {
	start, end int64
	typ, label string
}

// Timeline renders the run as an HTML page with one inline SVG.
func Timeline(m Meta, in checker.Input, rs []checker.Result) string {
	recs := sorted(in.History)
	if len(recs) == 0 {
		return "<html><body>empty history</body></html>"
	}
	t0, t1 := recs[0].Time, recs[len(recs)-1].Time
	if t1 <= t0 {
		t1 = t0 + 1
	}
	const left, width, laneH = 190, 1360, 16
	x := func(t int64) float64 { return left + float64(t-t0)/float64(t1-t0)*width }

	// Operation lanes per process (grouped by domain).
	type lane struct {
		key   string
		spans []span
	}
	lanes := map[string]*lane{}
	open := map[int]history.Record{}
	laneOf := func(r history.Record) *lane {
		k := fmt.Sprintf("%s p%d", r.Domain, r.Process)
		if lanes[k] == nil {
			lanes[k] = &lane{key: k}
		}
		return lanes[k]
	}
	faults := faultSpans(recs, t1)
	var leaders []span
	beliefs := map[string][]span{}
	openBelief := map[string]history.Record{}
	var fencedMarks []history.Record
	for _, r := range recs {
		switch r.Kind {
		case history.KindOp:
			if r.Type == history.Invoke {
				open[r.Process] = r
				continue
			}
			inv, ok := open[r.Process]
			if !ok {
				continue
			}
			delete(open, r.Process)
			label := inv.F
			switch {
			case r.Value.Outcome != "":
				label += " " + r.Value.Outcome
			case r.Value.Epoch != 0:
				label += fmt.Sprintf(" e%d", r.Value.Epoch)
			}
			laneOf(inv).spans = append(laneOf(inv).spans, span{inv.Time, r.Time, r.Type, label})
		case history.KindLeader:
			if n := len(leaders); n > 0 {
				leaders[n-1].end = r.Time
			}
			leaders = append(leaders, span{r.Time, t1, "", fmt.Sprintf("%s t%d", r.Node, r.Value.Term)})
		case history.KindAgent:
			k := r.Value.Holder
			if b, ok := openBelief[k]; ok {
				beliefs[k] = append(beliefs[k], span{b.Time, r.Time, "belief", fmt.Sprintf("e%d", b.Value.Epoch)})
				delete(openBelief, k)
			}
			if r.Type == history.AgentHolds {
				openBelief[k] = r
			}
		case history.KindFenced:
			fencedMarks = append(fencedMarks, r)
		}
	}
	for _, inv := range open {
		laneOf(inv).spans = append(laneOf(inv).spans, span{inv.Time, t1, history.Info, inv.F + " ?"})
	}
	for k, b := range openBelief {
		beliefs[k] = append(beliefs[k], span{b.Time, t1, "belief", fmt.Sprintf("e%d", b.Value.Epoch)})
	}

	colour := map[string]string{history.OK: opColour[history.OK], history.Fail: opColour[history.Fail], history.Info: opColour[history.Info], "belief": "#5b7bd5"}
	var svg strings.Builder
	y := 30
	row := func(label string) int {
		cy := y
		fmt.Fprintf(&svg, `<text x="%d" y="%d" class="lbl">%s</text>`, left-6, cy+laneH-4, html.EscapeString(label))
		fmt.Fprintf(&svg, `<line x1="%d" x2="%d" y1="%d" y2="%d" class="grid"/>`, left, left+width, cy+laneH+1, cy+laneH+1)
		y += laneH + 3
		return cy
	}
	// Leader lane.
	ly := row("leader (node, term)")
	for i, s := range leaders {
		fill := []string{"#e8e0f5", "#d5c6ee"}[i%2]
		fmt.Fprintf(&svg, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"><title>%s</title></rect><text x="%.1f" y="%d" class="in">%s</text>`,
			x(s.start), ly, max(1, x(s.end)-x(s.start)), laneH, fill, html.EscapeString(s.label), x(s.start)+2, ly+laneH-4, html.EscapeString(s.label))
	}
	// Agent lanes.
	for _, k := range sortedKeys(beliefs) {
		ay := row("agent " + k + " believes")
		for _, s := range beliefs[k] {
			fmt.Fprintf(&svg, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"><title>%s holds %s</title></rect><text x="%.1f" y="%d" class="in w">%s</text>`,
				x(s.start), ay, max(1, x(s.end)-x(s.start)), laneH, colour["belief"], k, s.label, x(s.start)+2, ay+laneH-4, s.label)
		}
	}
	// Fenced lane.
	fy := row("fenced accept ▲ / reject ▼")
	for _, r := range fencedMarks {
		c, mark := "#2e9d4a", fmt.Sprintf("%.1f,%d %.1f,%d %.1f,%d", x(r.Time)-3, fy+laneH/2+4, x(r.Time)+3, fy+laneH/2+4, x(r.Time), fy+1)
		if r.Type == history.FencedReject {
			c, mark = "#d9534f", fmt.Sprintf("%.1f,%d %.1f,%d %.1f,%d", x(r.Time)-5, fy, x(r.Time)+5, fy, x(r.Time), fy+laneH)
		}
		fmt.Fprintf(&svg, `<polygon points="%s" fill="%s"><title>%s %s e%d seq %d</title></polygon>`, mark, c, r.Type, r.Value.Holder, r.Value.Epoch, r.Value.Seq)
	}
	// Operation lanes.
	keys := sortedKeys(lanes)
	sort.SliceStable(keys, func(i, j int) bool {
		return lanes[keys[i]].spans[0].start < lanes[keys[j]].spans[0].start && strings.Fields(keys[i])[0] == strings.Fields(keys[j])[0] ||
			strings.Fields(keys[i])[0] < strings.Fields(keys[j])[0]
	})
	for _, k := range keys {
		oy := row(k)
		for _, s := range lanes[k].spans {
			fmt.Fprintf(&svg, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"><title>%s (%s) %.1f ms</title></rect>`,
				x(s.start), oy+2, max(1.5, x(s.end)-x(s.start)), laneH-4, colour[s.typ], html.EscapeString(s.label), s.typ, float64(s.end-s.start)/1e6)
		}
	}
	h := y + 20
	var bg strings.Builder
	faultShading(&bg, faults, x, 14, h-14, left+width+20)
	// Time axis.
	for s := int64(0); s <= (t1-t0)/1e9; s++ {
		tx := x(t0 + s*1e9)
		fmt.Fprintf(&bg, `<line x1="%.1f" x2="%.1f" y1="14" y2="%d" class="tick"/><text x="%.1f" y="%d" class="ax">%ds</text>`, tx, tx, h-6, tx+2, h+6, s)
	}
	var res strings.Builder
	for _, r := range rs {
		c, v := "ok", "valid"
		if !r.Valid {
			c, v = "bad", "INVALID"
		}
		fmt.Fprintf(&res, `<li class="%s"><b>%s</b>: %s — %s</li>`, c, r.Name, v, html.EscapeString(r.Details))
	}
	verdict := "VALID"
	if !checker.Valid(rs) {
		verdict = "INVALID"
	}
	return fmt.Sprintf(`<!doctype html><html><head><meta charset="utf-8"><title>%[1]s timeline</title><style>
body{font:13px sans-serif;margin:12px;color:#222} h1{font-size:18px;margin:0 0 4px}
.lbl{font:11px monospace;text-anchor:end;fill:#333} .in{font:10px monospace;fill:#333} .w{fill:#fff}
.grid{stroke:#eee} .tick{stroke:#ccc;stroke-dasharray:2,3} .ax{font:10px monospace;fill:#666} .fault{font:bold 11px sans-serif;fill:#b02020}
ul{margin:4px 0 8px;padding-left:18px} li.ok{color:#1e6b33} li.bad{color:#b02020} .legend span{display:inline-block;margin-right:14px}
.sw{display:inline-block;width:12px;height:10px;margin-right:4px;vertical-align:middle}
</style></head><body>
<h1>%[1]s — %[2]s</h1><div>seed %[3]d · %[4]s · repro: <code>%[5]s</code> · <a href="plots.html">latency and throughput plots</a></div>
<ul>%[6]s</ul>
<div class="legend"><span><i class="sw" style="background:#2e9d4a"></i>ok</span><span><i class="sw" style="background:#d9534f"></i>fail</span><span><i class="sw" style="background:#f0ad4e"></i>unknown (info)</span><span><i class="sw" style="background:#5b7bd5"></i>agent belief</span><span><i class="sw" style="background:#ff6b6b;opacity:.4"></i>fault window</span><span>▲ fenced accept ▼ fenced reject</span></div>
<svg xmlns="http://www.w3.org/2000/svg" width="%[7]d" height="%[8]d">%[9]s%[10]s</svg></body></html>`,
		html.EscapeString(m.Scenario), verdict, m.Seed, m.Elapsed.Round(time.Millisecond), html.EscapeString(m.Repro), res.String(),
		left+width+20, h+14, bg.String(), svg.String())
}
