package report

import (
	"fmt"
	"html"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aerodb/authority/jepsen-like/checker"
	"github.com/aerodb/authority/jepsen-like/history"
)

// opColour is the fill of an operation by outcome, shared by timeline.html
// and plots.html.
var opColour = map[string]string{history.OK: "#2e9d4a", history.Fail: "#d9534f", history.Info: "#f0ad4e"}

// maxDots bounds the dots of the latency plot (about 110 bytes each, so
// plots.html stays around 2 MB however long the run).
const maxDots = 20000

// plotOp is one client operation: an invoke paired with the next non-invoke
// op record of the same process (as Timeline pairs them). Type is ok, fail
// or info (any other completion type counts as info); it is "" while the
// op is pending (no completion in the history), and then Return is 0.
type plotOp struct {
	Process      int
	F, Domain    string
	Type         string
	Call, Return int64
}

func (o plotOp) done() bool { return o.Type != "" }

// latencyMS is completion − invoke in milliseconds.
func (o plotOp) latencyMS() float64 { return float64(o.Return-o.Call) / 1e6 }

// pairPlotOps pairs invokes and completions of recs (sorted by time), in
// invoke order. A completion with no outstanding invoke is ignored; an
// invoke while one is outstanding leaves the earlier op pending.
func pairPlotOps(recs []history.Record) []plotOp {
	var ops []plotOp
	open := map[int]int{} // process -> index in ops
	for _, r := range recs {
		if r.Kind != history.KindOp {
			continue
		}
		if r.Type == history.Invoke {
			open[r.Process] = len(ops)
			ops = append(ops, plotOp{Process: r.Process, F: r.F, Domain: r.Domain, Call: r.Time})
			continue
		}
		i, ok := open[r.Process]
		if !ok {
			continue
		}
		delete(open, r.Process)
		typ := r.Type
		if typ != history.OK && typ != history.Fail {
			typ = history.Info
		}
		ops[i].Type, ops[i].Return = typ, r.Time
	}
	return ops
}

// faultSpans pairs nemesis start/stop records of recs (sorted by time) by
// fault name; a fault never healed ends at t1.
func faultSpans(recs []history.Record, t1 int64) []span {
	var faults []span
	open := map[string]int64{}
	for _, r := range recs {
		if r.Kind != history.KindNemesis {
			continue
		}
		if r.Type == history.NemesisStart {
			open[r.Fault] = r.Time
		} else if s, ok := open[r.Fault]; ok {
			faults = append(faults, span{s, r.Time, r.Fault, r.Fault})
			delete(open, r.Fault)
		}
	}
	for _, f := range sortedKeys(open) {
		faults = append(faults, span{open[f], t1, f, f + " (never healed)"})
	}
	return faults
}

// faultShading draws fault windows as translucent red bands from y top to
// top+h, each with its fault's name just above (starting at the band's
// left edge, or ending at its right edge when the name would run past
// right, the x where the plot ends).
func faultShading(b *strings.Builder, faults []span, x func(int64) float64, top, h int, right float64) {
	for _, f := range faults {
		x0, x1 := x(f.start), x(f.end)
		label := fmt.Sprintf(`<text x="%.1f" y="%d" class="fault">%s</text>`, x0+2, top-2, html.EscapeString(f.label))
		if x0+2+7*float64(utf8.RuneCountInString(f.label)) > right {
			label = fmt.Sprintf(`<text x="%.1f" y="%d" class="fault" text-anchor="end">%s</text>`, x1-2, top-2, html.EscapeString(f.label))
		}
		fmt.Fprintf(b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="#ff6b6b" opacity="0.16"/>%s`, x0, top, max(2, x1-x0), h, label)
	}
}

// fOrder is the panel order of the known operations; others follow sorted.
var fOrder = []string{history.FRead, history.FPromote, history.FAcquire, history.FRenew, history.FRelease, history.FAdvance, history.FWrite}

// opFs lists the operations present in ops, in panel order.
func opFs(ops []plotOp) []string {
	seen := map[string]bool{}
	for _, o := range ops {
		seen[o.F] = true
	}
	var out []string
	for _, f := range fOrder {
		if seen[f] {
			out = append(out, f)
			delete(seen, f)
		}
	}
	return append(out, sortedKeys(seen)...)
}

// tpBucket counts the ops completed in one second of the run.
type tpBucket struct{ OK, Fail, Info int }

func (b tpBucket) total() int { return b.OK + b.Fail + b.Info }

// throughput buckets completed ops by completion time into 1-second
// buckets from t0 (bucket i is [t0+i s, t0+(i+1) s)), covering [t0, t1].
func throughput(ops []plotOp, t0, t1 int64) []tpBucket {
	n := int((t1-t0)/1e9) + 1
	bs := make([]tpBucket, n)
	for _, o := range ops {
		if !o.done() {
			continue
		}
		i := min(max(int((o.Return-t0)/1e9), 0), n-1)
		switch o.Type {
		case history.OK:
			bs[i].OK++
		case history.Fail:
			bs[i].Fail++
		default:
			bs[i].Info++
		}
	}
	return bs
}

// fStats summarises one operation: how many were invoked, their outcomes,
// and latency percentiles (ms, nearest rank) over the completed ones — ok,
// fail and info alike (an info op's latency is how long the client waited
// before giving up). The percentiles are 0 when none completed.
type fStats struct {
	F                            string
	Ops, OK, Fail, Info, Pending int
	P50, P99, Max                float64
}

// latencyStats returns one row per operation (in panel order) and a last
// row "all" over every operation.
func latencyStats(ops []plotOp) []fStats {
	row := func(name string, keep func(plotOp) bool) fStats {
		s := fStats{F: name}
		var lat []float64
		for _, o := range ops {
			if !keep(o) {
				continue
			}
			s.Ops++
			switch o.Type {
			case history.OK:
				s.OK++
			case history.Fail:
				s.Fail++
			case history.Info:
				s.Info++
			default:
				s.Pending++
				continue
			}
			lat = append(lat, o.latencyMS())
		}
		slices.Sort(lat)
		s.P50, s.P99 = percentile(lat, 50), percentile(lat, 99)
		if len(lat) > 0 {
			s.Max = lat[len(lat)-1]
		}
		return s
	}
	var out []fStats
	for _, f := range opFs(ops) {
		out = append(out, row(f, func(o plotOp) bool { return o.F == f }))
	}
	return append(out, row("all", func(plotOp) bool { return true }))
}

// percentile is the nearest-rank p-th percentile of sorted xs (0 if empty).
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(xs)))) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}

// sampleOps picks the completed ops to draw (done, in invoke order): all of
// them when they are at most limit; otherwise every k-th op of each class,
// non-ok ops (rarer, and the interesting ones) getting up to half the
// budget and ok ops the rest. The note says what was left out ("" if
// nothing).
func sampleOps(done []plotOp, limit int) ([]plotOp, string) {
	if len(done) <= limit {
		return done, ""
	}
	nonOK := 0
	for _, o := range done {
		if o.Type != history.OK {
			nonOK++
		}
	}
	okN := len(done) - nonOK
	nonOKBudget := min(nonOK, limit/2)
	okBudget := max(limit-nonOKBudget, 1)
	stride := func(n, budget int) int { return max(1, (n+budget-1)/max(budget, 1)) }
	kOK, kNon := stride(okN, okBudget), stride(nonOK, max(nonOKBudget, 1))
	var out []plotOp
	iOK, iNon := 0, 0
	for _, o := range done {
		if o.Type == history.OK {
			if iOK%kOK == 0 {
				out = append(out, o)
			}
			iOK++
		} else {
			if iNon%kNon == 0 {
				out = append(out, o)
			}
			iNon++
		}
	}
	note := fmt.Sprintf(" To bound the page, %d of the %d completed operations are drawn: 1 in %d ok ops", len(out), len(done), kOK)
	if kNon == 1 {
		note += " and every fail/info op (the table counts them all)."
	} else {
		note += fmt.Sprintf(" and 1 in %d fail/info ops (the table counts them all).", kNon)
	}
	return out, note
}

// niceStep is the 1, 2 or 5 × 10^k step nearest above raw.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw*0.999 {
			return m * p
		}
	}
	return 10 * p
}

func fmtNum(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// fmtMS formats a latency in milliseconds with about three significant
// digits.
func fmtMS(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case v >= 0.1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case v == 0:
		return "0"
	default:
		return strconv.FormatFloat(v, 'g', 3, 64)
	}
}

// Plot geometry (pixels).
const (
	plotLeft   = 80   // left margin, for the y axis labels
	plotWidth  = 1300 // plot area width
	bandTop    = 14   // top of the fault bands (their names are above)
	plotTop    = 38   // top of the first latency panel (its title is above)
	panelH     = 110  // one latency panel
	panelPad   = 5    // inside a panel, above and below the log scale
	panelGap   = 24   // between latency panels, for the next one's title
	tpTop      = 24   // top of the throughput plot area
	tpH        = 180  // throughput plot area
	axisBottom = 34   // below the plot area: x tick labels and axis title
)

// timeAxis draws the x axis for [t0, t1] (seconds since t0): dashed
// vertical grid lines from top to bottom and tick labels below.
func timeAxis(b *strings.Builder, x func(int64) float64, t0, t1 int64, top, bottom int) {
	spanS := float64(t1-t0) / 1e9
	step := niceStep(spanS / 12)
	for s := 0.0; s <= spanS*1.0000001; s += step {
		tx := x(t0 + int64(math.Round(s*1e9)))
		fmt.Fprintf(b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" class="tick"/><text x="%.1f" y="%d" class="ax mid">%ss</text>`,
			tx, tx, top, bottom+4, tx, bottom+15, fmtNum(math.Round(s/step)*step))
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" class="axt mid">time since run start (s)</text>`, plotLeft+plotWidth/2, bottom+30)
}

// yTitle draws a rotated y axis title centred on [top, bottom].
func yTitle(b *strings.Builder, title string, top, bottom int) {
	cy := (top + bottom) / 2
	fmt.Fprintf(b, `<text x="14" y="%d" class="axt mid" transform="rotate(-90 14 %d)">%s</text>`, cy, cy, html.EscapeString(title))
}

// latencySVG draws one panel per operation: a dot per drawn op at its
// invoke time, at its latency on a log scale shared by all panels.
func latencySVG(ops, drawn []plotOp, faults []span, x func(int64) float64, t0, t1 int64) string {
	fs := opFs(ops)
	if len(fs) == 0 {
		return "<p>No client operations in the history.</p>"
	}
	// Log-scale decades covering every completed op's latency; latencies
	// ≤ 0 (equal timestamps) sit on the lowest line.
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, o := range ops {
		if o.done() && o.latencyMS() > 0 {
			lo, hi = min(lo, o.latencyMS()), max(hi, o.latencyMS())
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 1, 10
	}
	dlo, dhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dhi <= dlo {
		dhi = dlo + 1
	}
	counts := map[string]*fStats{}
	for _, s := range latencyStats(ops) {
		counts[s.F] = &s
	}
	var bg, fg strings.Builder
	bottom := plotTop + len(fs)*(panelH+panelGap) - panelGap
	panelY := map[string]int{}
	for i, f := range fs {
		py := plotTop + i*(panelH+panelGap)
		panelY[f] = py
		fmt.Fprintf(&fg, `<rect x="%d" y="%d" width="%d" height="%d" class="frame"/>`, plotLeft, py, plotWidth, panelH)
		ly := func(v float64) float64 { return logY(py, v, dlo, dhi) }
		minor := dhi-dlo <= 3
		for d := dlo; d <= dhi; d++ {
			for _, m := range []float64{1, 2, 5} {
				v := m * math.Pow(10, d)
				if d == dhi && m > 1 || m > 1 && !minor {
					continue
				}
				cls := "grid"
				if m > 1 {
					cls = "grid minor"
				}
				fmt.Fprintf(&bg, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" class="%s"/><text x="%d" y="%.1f" class="ax end">%s</text>`,
					plotLeft, plotLeft+plotWidth, ly(v), ly(v), cls, plotLeft-4, ly(v)+3, fmtNum(roundSig(v)))
			}
		}
		s := counts[f]
		title := fmt.Sprintf("%s — %d ops: ok %d · fail %d · info %d", f, s.Ops, s.OK, s.Fail, s.Info)
		if s.Pending > 0 {
			title += fmt.Sprintf(" · pending %d (not drawn)", s.Pending)
		}
		fmt.Fprintf(&fg, `<text x="%d" y="%d" class="ptitle">%s</text>`, plotLeft+2, py-5, html.EscapeString(title))
	}
	for _, o := range drawn {
		py := panelY[o.F]
		lat := o.latencyMS()
		fmt.Fprintf(&fg, `<circle cx="%.1f" cy="%.1f" r="2.2" class="dot %s"><title>%s %s p%d %s: %s ms, invoked at %.3f s</title></circle>`,
			x(o.Call), logY(py, lat, dlo, dhi), o.Type, html.EscapeString(o.F), o.Type, o.Process, html.EscapeString(o.Domain), fmtMS(lat), float64(o.Call-t0)/1e9)
	}
	var svg strings.Builder
	faultShading(&svg, faults, x, bandTop, bottom-bandTop, plotLeft+plotWidth)
	svg.WriteString(bg.String())
	timeAxis(&svg, x, t0, t1, plotTop, bottom)
	yTitle(&svg, "latency (ms, log scale)", plotTop, bottom)
	svg.WriteString(fg.String())
	return fmt.Sprintf(`<svg xmlns="http://www.w3.org/2000/svg" class="latency" width="%d" height="%d">%s</svg>`,
		plotLeft+plotWidth+20, bottom+axisBottom+4, svg.String())
}

// logY is the y of latency v (ms) in the panel at py whose log scale spans
// decades [dlo, dhi]; v ≤ 0 sits on the lowest line.
func logY(py int, v, dlo, dhi float64) float64 {
	if v <= 0 {
		v = math.Pow(10, dlo)
	}
	inner := float64(panelH - 2*panelPad)
	return float64(py+panelH-panelPad) - (math.Log10(v)-dlo)/(dhi-dlo)*inner
}

// roundSig rounds to 6 significant digits (so 10^-3 prints as 0.001).
func roundSig(v float64) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 6, 64), 64)
	return f
}

// throughputSVG draws the buckets as stacked bars: ok at the bottom, then
// fail, then info.
func throughputSVG(bs []tpBucket, faults []span, x func(int64) float64, t0, t1 int64) string {
	peak := 0
	for _, b := range bs {
		peak = max(peak, b.total())
	}
	step := niceStep(float64(max(peak, 1)) / 5)
	step = max(step, 1)
	yMax := math.Ceil(float64(max(peak, 1))/step) * step
	top, bottom := tpTop, tpTop+tpH
	ly := func(v float64) float64 { return float64(bottom) - v/yMax*tpH }
	var svg strings.Builder
	faultShading(&svg, faults, x, bandTop, bottom-bandTop, plotLeft+plotWidth)
	for v := 0.0; v <= yMax+step/2; v += step {
		fmt.Fprintf(&svg, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" class="grid"/><text x="%d" y="%.1f" class="ax end">%s</text>`,
			plotLeft, plotLeft+plotWidth, ly(v), ly(v), plotLeft-4, ly(v)+3, fmtNum(v))
	}
	timeAxis(&svg, x, t0, t1, top, bottom)
	yTitle(&svg, "ops completed / s", top, bottom)
	fmt.Fprintf(&svg, `<rect x="%d" y="%d" width="%d" height="%d" class="frame"/>`, plotLeft, top, plotWidth, tpH)
	for i, b := range bs {
		if b.total() == 0 {
			continue
		}
		x0 := x(t0 + int64(i)*1e9)
		x1 := min(x(t0+int64(i+1)*1e9), plotLeft+plotWidth)
		w := max(x1-x0-0.5, 0.8)
		base := 0
		for _, part := range []struct {
			typ string
			n   int
		}{{history.OK, b.OK}, {history.Fail, b.Fail}, {history.Info, b.Info}} {
			if part.n == 0 {
				continue
			}
			fmt.Fprintf(&svg, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" class="bar %s"><title>%d–%d s: %d %s (total %d)</title></rect>`,
				x0, ly(float64(base+part.n)), w, ly(float64(base))-ly(float64(base+part.n)), part.typ, i, i+1, part.n, part.typ, b.total())
			base += part.n
		}
	}
	return fmt.Sprintf(`<svg xmlns="http://www.w3.org/2000/svg" class="throughput" width="%d" height="%d">%s</svg>`,
		plotLeft+plotWidth+20, bottom+axisBottom+4, svg.String())
}

// statsTable renders latencyStats as an HTML table.
func statsTable(stats []fStats) string {
	var b strings.Builder
	b.WriteString(`<table class="stats"><tr><th>operation</th><th>ops</th><th>ok</th><th>fail</th><th>info</th><th>pending</th><th>p50 ms</th><th>p99 ms</th><th>max ms</th></tr>`)
	for _, s := range stats {
		cls := ""
		if s.F == "all" {
			cls = ` class="all"`
		}
		lat := func(v float64) string {
			if s.Ops == s.Pending {
				return "–"
			}
			return fmtMS(v)
		}
		fmt.Fprintf(&b, `<tr%s><td>%s</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%d</td><td>%s</td><td>%s</td><td>%s</td></tr>`,
			cls, html.EscapeString(s.F), s.Ops, s.OK, s.Fail, s.Info, s.Pending, lat(s.P50), lat(s.P99), lat(s.Max))
	}
	b.WriteString("</table>")
	return b.String()
}

// Plots renders plots.html: per-operation latency over time (log scale,
// one dot per completed op, coloured by outcome), throughput per second
// (stacked ok / fail / info), fault windows shaded on both, and a table of
// per-operation counts and latency percentiles.
func Plots(m Meta, in checker.Input, rs []checker.Result) string {
	recs := sorted(in.History)
	if len(recs) == 0 {
		return "<html><body>empty history</body></html>"
	}
	t0, t1 := recs[0].Time, recs[len(recs)-1].Time
	if t1 <= t0 {
		t1 = t0 + 1
	}
	x := func(t int64) float64 { return plotLeft + float64(t-t0)/float64(t1-t0)*plotWidth }
	ops := pairPlotOps(recs)
	faults := faultSpans(recs, t1)
	var done []plotOp
	for _, o := range ops {
		if o.done() {
			done = append(done, o)
		}
	}
	drawn, note := sampleOps(done, maxDots)
	pending := len(ops) - len(done)
	verdict := "VALID"
	if !checker.Valid(rs) {
		verdict = "INVALID"
	}
	latCaption := fmt.Sprintf("One dot per completed operation (%d), at its invoke time; height = completion − invoke on a log scale (an info op's latency is how long the client waited before giving up). "+
		"%d operations still pending at the end of the history (no completion) are omitted here and counted as pending in the table.%s", len(done), pending, note)
	tpCaption := "Operations completed in each 1-second bucket (by completion time), stacked: ok at the bottom, then fail, then info. Pending operations are not counted."
	bs := throughput(ops, t0, t1)
	return fmt.Sprintf(`<!doctype html><html><head><meta charset="utf-8"><title>%[1]s latency and throughput</title><style>
body{font:13px sans-serif;margin:12px;color:#222} h1{font-size:18px;margin:0 0 4px} h2{font-size:15px;margin:16px 0 4px}
.cap{color:#555;max-width:1380px;margin:2px 0 4px}
.grid{stroke:#e4e4e4} .minor{stroke:#f2f2f2} .tick{stroke:#ccc;stroke-dasharray:2,3} .frame{fill:none;stroke:#999}
.ax{font:10px monospace;fill:#666} .axt{font:11px sans-serif;fill:#444} .end{text-anchor:end} .mid{text-anchor:middle}
.ptitle{font:bold 11px monospace;fill:#333} .fault{font:bold 11px sans-serif;fill:#b02020}
.dot{opacity:.75} .ok{fill:%[7]s} .fail{fill:%[8]s} .info{fill:%[9]s}
.legend span{display:inline-block;margin-right:14px} .sw{display:inline-block;width:12px;height:10px;margin-right:4px;vertical-align:middle}
table.stats{border-collapse:collapse;font:12px monospace} .stats td,.stats th{border:1px solid #ccc;padding:2px 8px;text-align:right}
.stats td:first-child,.stats th:first-child{text-align:left} .stats tr.all{font-weight:bold;background:#f6f6f6}
</style></head><body>
<h1>%[1]s — %[2]s</h1><div>seed %[3]d · %[4]s · <a href="timeline.html">timeline</a> · <a href="summary.md">summary</a></div>
<div class="legend"><span><i class="sw" style="background:%[7]s"></i>ok</span><span><i class="sw" style="background:%[8]s"></i>fail</span><span><i class="sw" style="background:%[9]s"></i>unknown (info)</span><span><i class="sw" style="background:#ff6b6b;opacity:.4"></i>fault window</span></div>
<h2>Latency by operation</h2><p class="cap">%[5]s</p>
%[6]s
<h2>Throughput</h2><p class="cap">%[10]s</p>
%[11]s
<h2>Counts and latency percentiles</h2><p class="cap">Latency percentiles (nearest rank) over the completed operations: ok, fail and info alike.</p>
%[12]s
</body></html>`,
		html.EscapeString(m.Scenario), verdict, m.Seed, m.Elapsed.Round(time.Millisecond), html.EscapeString(latCaption),
		latencySVG(ops, drawn, faults, x, t0, t1), opColour[history.OK], opColour[history.Fail], opColour[history.Info],
		html.EscapeString(tpCaption), throughputSVG(bs, faults, x, t0, t1), statsTable(latencyStats(ops)))
}
