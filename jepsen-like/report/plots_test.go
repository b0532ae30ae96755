package report

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aerodb/authority/jepsen-like/checker"
	"github.com/aerodb/authority/jepsen-like/history"
)

const (
	ms  = int64(time.Millisecond)
	sec = int64(time.Second)
)

// synthetic is a small run starting at t=10 s (monotonic): reads, a
// promote, an acquire and a release with ok / fail / info outcomes, one
// read still pending at the end, and one partition window [1.5 s, 2.5 s]
// after the start.
func synthetic() []history.Record {
	base := 10 * sec
	var recs []history.Record
	op := func(p int, f, typ string, at int64) {
		recs = append(recs, history.Record{Kind: history.KindOp, Process: p, F: f, Type: typ, Domain: "db1", Time: base + at})
	}
	pair := func(p int, f, typ string, at, lat int64) {
		op(p, f, history.Invoke, at)
		op(p, f, typ, at+lat)
	}
	recs = append(recs, history.Record{Kind: history.KindLeader, Node: "s1", Time: base, Value: history.Value{Term: 1}})
	pair(1, history.FRead, history.OK, 100*ms, 1*ms)    // completes 0.101 s
	pair(1, history.FRead, history.OK, 200*ms, 2*ms)    // 0.202 s
	pair(1, history.FRead, history.OK, 300*ms, 3*ms)    // 0.303 s
	pair(1, history.FRead, history.Fail, 1200*ms, 4*ms) // 1.204 s
	pair(2, history.FPromote, history.OK, 500*ms, 10*ms)
	pair(2, history.FPromote, history.Info, 1600*ms, 500*ms) // 2.1 s, during the fault
	pair(3, history.FAcquire, history.OK, 2600*ms, 20*ms)    // 2.62 s
	pair(3, history.FRelease, history.Fail, 2700*ms, 30*ms)  // 2.73 s
	op(4, history.FRead, history.Invoke, 2800*ms)            // never completes
	recs = append(recs,
		history.Record{Kind: history.KindNemesis, Type: history.NemesisStart, Fault: "partition-<leader>", Time: base + 1500*ms},
		history.Record{Kind: history.KindNemesis, Type: history.NemesisStop, Fault: "partition-<leader>", Time: base + 2500*ms},
		// A completion with no invoke is ignored.
		history.Record{Kind: history.KindOp, Process: 9, F: history.FRead, Type: history.OK, Time: base + 2900*ms},
		history.Record{Kind: history.KindApplied, Node: "s1", Time: base + 3000*ms})
	return recs
}

func TestPairPlotOps(t *testing.T) {
	ops := pairPlotOps(sorted(synthetic()))
	if len(ops) != 9 {
		t.Fatalf("got %d ops, want 9: %+v", len(ops), ops)
	}
	done := 0
	for _, o := range ops {
		if o.done() {
			done++
		}
	}
	if done != 8 {
		t.Errorf("completed ops = %d, want 8", done)
	}
	if last := ops[len(ops)-1]; last.done() || last.Process != 4 {
		t.Errorf("last op = %+v, want process 4 pending", last)
	}
	if o := ops[5]; o.F != history.FPromote || o.Type != history.Info || o.latencyMS() != 500 {
		t.Errorf("ops[5] = %+v (latency %v), want promote info 500 ms", o, o.latencyMS())
	}
}

func TestThroughputBuckets(t *testing.T) {
	recs := sorted(synthetic())
	t0, t1 := recs[0].Time, recs[len(recs)-1].Time
	bs := throughput(pairPlotOps(recs), t0, t1)
	want := []tpBucket{
		{OK: 4},                   // reads at 0.101, 0.202, 0.303; promote at 0.51
		{Fail: 1},                 // read fail at 1.204
		{OK: 1, Fail: 1, Info: 1}, // promote info 2.1, acquire ok 2.62, release fail 2.73
		{},                        // [3 s, 4 s): nothing; the pending read is not counted
	}
	if len(bs) != len(want) {
		t.Fatalf("got %d buckets %+v, want %d", len(bs), bs, len(want))
	}
	for i := range want {
		if bs[i] != want[i] {
			t.Errorf("bucket %d = %+v, want %+v", i, bs[i], want[i])
		}
	}
}

func TestLatencyStats(t *testing.T) {
	stats := latencyStats(pairPlotOps(sorted(synthetic())))
	want := []fStats{
		{F: "read", Ops: 5, OK: 3, Fail: 1, Pending: 1, P50: 2, P99: 4, Max: 4},
		{F: "promote", Ops: 2, OK: 1, Info: 1, P50: 10, P99: 500, Max: 500},
		{F: "acquire", Ops: 1, OK: 1, P50: 20, P99: 20, Max: 20},
		{F: "release", Ops: 1, Fail: 1, P50: 30, P99: 30, Max: 30},
		// all 8 completed: 1 2 3 4 10 20 30 500 -> p50 = 4th = 4
		{F: "all", Ops: 9, OK: 5, Fail: 2, Info: 1, Pending: 1, P50: 4, P99: 500, Max: 500},
	}
	if len(stats) != len(want) {
		t.Fatalf("got %d rows %+v, want %d", len(stats), stats, len(want))
	}
	for i := range want {
		if stats[i] != want[i] {
			t.Errorf("row %d = %+v, want %+v", i, stats[i], want[i])
		}
	}
}

func TestPercentileNearestRank(t *testing.T) {
	xs := make([]float64, 100)
	for i := range xs {
		xs[i] = float64(i + 1)
	}
	for _, c := range []struct{ p, want float64 }{{50, 50}, {99, 99}, {100, 100}, {1, 1}} {
		if got := percentile(xs, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of nothing = %v", got)
	}
}

var (
	dotRE   = regexp.MustCompile(`<circle [^>]*class="dot (ok|fail|info)"`)
	faultRE = regexp.MustCompile(`<rect [^>]*fill="#ff6b6b" opacity="0.16"/><text [^>]*class="fault">([^<]*)</text>`)
	barRE   = regexp.MustCompile(`<rect [^>]*class="bar (ok|fail|info)"><title>(\d+)–\d+ s: (\d+) `)
)

func TestPlotsPage(t *testing.T) {
	page := Plots(Meta{Scenario: "synthetic <s>", Seed: 7}, checker.Input{History: synthetic()}, nil)
	if !strings.Contains(page, "<svg") || strings.Count(page, "<svg") != 2 {
		t.Fatalf("want two inline SVGs:\n%s", page)
	}
	if strings.Contains(page, "<script") {
		t.Error("page has a script")
	}
	if !strings.Contains(page, "synthetic &lt;s&gt;") || strings.Contains(page, "<s>") {
		t.Error("scenario not escaped")
	}
	// One dot per completed op, coloured by outcome; the pending read is omitted.
	dots := map[string]int{}
	for _, m := range dotRE.FindAllStringSubmatch(page, -1) {
		dots[m[1]]++
	}
	if dots["ok"] != 5 || dots["fail"] != 2 || dots["info"] != 1 {
		t.Errorf("dots = %v, want ok 5, fail 2, info 1", dots)
	}
	if !strings.Contains(page, "1 operations still pending at the end of the history (no completion) are omitted") {
		t.Error("caption does not say the pending op is omitted")
	}
	// One panel per operation, in order.
	var last int
	for _, f := range []string{"read — 5 ops", "promote — 2 ops", "acquire — 1 ops", "release — 1 ops"} {
		i := strings.Index(page, f)
		if i < last {
			t.Errorf("panel %q missing or out of order", f)
		}
		last = i
	}
	// The fault window is shaded on both plots, with its (escaped) name.
	faults := faultRE.FindAllStringSubmatch(page, -1)
	if len(faults) != 2 {
		t.Fatalf("got %d fault bands, want 2 (latency and throughput)", len(faults))
	}
	for _, f := range faults {
		if f[1] != "partition-&lt;leader&gt;" {
			t.Errorf("fault label %q", f[1])
		}
	}
	// The band spans [1.5 s, 2.5 s] of the 3 s history: x = 80 + 1300·t/3.
	if !strings.Contains(page, `<rect x="730.0" y="14" width="433.3"`) {
		t.Error("fault band not at [1.5 s, 2.5 s]")
	}
	// Throughput bars: bucket -> outcome -> count.
	bars := map[string]string{}
	for _, m := range barRE.FindAllStringSubmatch(page, -1) {
		bars[m[2]+" "+m[1]] = m[3]
	}
	wantBars := map[string]string{"0 ok": "4", "1 fail": "1", "2 ok": "1", "2 fail": "1", "2 info": "1"}
	if len(bars) != len(wantBars) {
		t.Errorf("bars = %v, want %v", bars, wantBars)
	}
	for k, v := range wantBars {
		if bars[k] != v {
			t.Errorf("bar %s = %q, want %s", k, bars[k], v)
		}
	}
	// The table.
	for _, row := range []string{
		"<td>read</td><td>5</td><td>3</td><td>1</td><td>0</td><td>1</td><td>2.00</td><td>4.00</td><td>4.00</td>",
		"<td>promote</td><td>2</td><td>1</td><td>0</td><td>1</td><td>0</td><td>10.0</td><td>500</td><td>500</td>",
		`<tr class="all"><td>all</td><td>9</td><td>5</td><td>2</td><td>1</td><td>1</td><td>4.00</td><td>500</td><td>500</td>`,
	} {
		if !strings.Contains(page, row) {
			t.Errorf("table lacks row %s", row)
		}
	}
	// Axes: log decades 1..1000 ms and time ticks.
	for _, s := range []string{">1000</text>", ">1</text>", ">0s</text>", ">3s</text>", "latency (ms, log scale)", "ops completed / s", "time since run start (s)"} {
		if !strings.Contains(page, s) {
			t.Errorf("page lacks %q", s)
		}
	}
}

func TestPlotsSampleBigHistory(t *testing.T) {
	var recs []history.Record
	const n = 30000
	for i := range n {
		typ := history.OK
		if i%100 == 0 {
			typ = history.Fail
		}
		at := int64(i) * 2 * ms
		recs = append(recs,
			history.Record{Kind: history.KindOp, Process: i % 8, F: history.FRead, Type: history.Invoke, Time: at},
			history.Record{Kind: history.KindOp, Process: i % 8, F: history.FRead, Type: typ, Time: at + int64(1+i%50)*ms/10})
	}
	page := Plots(Meta{}, checker.Input{History: recs}, nil)
	dots := map[string]int{}
	for _, m := range dotRE.FindAllStringSubmatch(page, -1) {
		dots[m[1]]++
	}
	if dots["fail"] != n/100 {
		t.Errorf("fail dots = %d, want all %d", dots["fail"], n/100)
	}
	if total := dots["ok"] + dots["fail"]; total > maxDots || total < maxDots/2 {
		t.Errorf("drawn %d dots, want ≤ %d and not too few", total, maxDots)
	}
	if len(page) > 5<<20 {
		t.Errorf("page is %d bytes", len(page))
	}
	if !strings.Contains(page, "15150 of the 30000 completed operations are drawn: 1 in 2 ok ops and every fail/info op") {
		t.Error("caption does not describe the sampling")
	}
	if again := Plots(Meta{}, checker.Input{History: recs}, nil); again != page {
		t.Error("sampling is not deterministic")
	}
	if !strings.Contains(page, `<td>read</td><td>30000</td><td>29700</td><td>300</td>`) {
		t.Error("table does not count every op")
	}
}

func TestWriteWritesPlots(t *testing.T) {
	dir := t.TempDir()
	if err := Write(dir, Meta{Scenario: "s", Seed: 1}, checker.Input{History: synthetic()}, nil); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"summary.md", "results.json", "timeline.html", "plots.html"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "plots.html"))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(dotRE.FindAllString(string(b), -1)); n != 8 {
		t.Errorf("plots.html has %d dots, want 8", n)
	}
	sum, _ := os.ReadFile(filepath.Join(dir, "summary.md"))
	if !strings.Contains(string(sum), "`plots.html`") {
		t.Error("summary.md does not list plots.html")
	}
	tl, _ := os.ReadFile(filepath.Join(dir, "timeline.html"))
	if !strings.Contains(string(tl), `<a href="plots.html">`) {
		t.Error("timeline.html does not link plots.html")
	}
	// The timeline shades the fault exactly as the plots do.
	if !faultRE.MatchString(string(tl)) {
		t.Error("timeline lacks the fault band")
	}
}

func TestPlotsEmpty(t *testing.T) {
	if p := Plots(Meta{}, checker.Input{}, nil); !strings.Contains(p, "empty history") {
		t.Errorf("empty: %s", p)
	}
	// Only nemesis records: no panels, no panic.
	p := Plots(Meta{}, checker.Input{History: []history.Record{
		{Kind: history.KindNemesis, Type: history.NemesisStart, Fault: "kill-all", Time: 5},
	}}, nil)
	if !strings.Contains(p, "No client operations") || !strings.Contains(p, "kill-all (never healed)") {
		t.Errorf("nemesis-only page:\n%s", p)
	}
}
