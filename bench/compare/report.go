package compare

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"
)

// format renders a value in its row's unit.
func format(v float64, unit string) string {
	switch {
	case v == 0:
		return "–"
	case unit == "/s" && v >= 10_000:
		return fmt.Sprintf("%.1fk/s", v/1000)
	case unit == "/s":
		return fmt.Sprintf("%.0f/s", v)
	case unit == "ms":
		return fmt.Sprintf("%.2f ms", v)
	case unit == "s":
		return fmt.Sprintf("%.2f s", v)
	default:
		return fmt.Sprintf("%.1f %s", v, unit)
	}
}

// Markdown renders the report: the table, both systems' settings, notes.
func (r *Report) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# etcd %s vs authorityd, side by side (%s run, %s)\n\n", EtcdVersion, r.Mode, r.Date)
	fmt.Fprintf(&b, "Three server processes of each system on one machine (%s), one system after the other per row family; %s; %d keys / domains in the scale rows. Ratio = ours ÷ etcd. Timings on a shared machine are noisy.\n\n",
		r.Host, r.Transport, r.Config.Keys)
	b.WriteString("| Measure | etcd | ours | ratio | which is better |\n|---|---|---|---|---|\n")
	for _, x := range r.Results {
		label := r.label(x.Row)
		fmt.Fprintf(&b, "| %s | %s | %s | %.2f | %s |\n", label, format(x.Etcd, x.Unit), format(x.Ours, x.Unit), x.Ratio, verdictWho(x))
	}
	b.WriteString("\n## Settings\n\n")
	for _, sys := range []string{"etcd", "authority"} {
		fmt.Fprintf(&b, "- **%s**: %s\n", sys, strings.Join(r.Settings[sys], "; "))
	}
	fmt.Fprintf(&b, "- **run**: %d timed rounds per latency row, %d renewals, %v per write row, %d writers, failover N = %d, takeover N = %d; elapsed %s\n",
		r.Config.Rounds, r.Config.Renewals, r.Config.WriteFor, r.Config.Writers, r.Config.Failovers, r.Config.Takeovers, r.Elapsed)
	b.WriteString("\n## Notes\n\n")
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "- %s\n", n)
	}
	return b.String()
}

// label is a row's label with {N} replaced by the run's key count.
func (r *Report) label(row Row) string {
	n := fmt.Sprintf("%d,%03d", r.Config.Keys/1000, r.Config.Keys%1000)
	return strings.ReplaceAll(row.Label, "{N}", n)
}

func verdictWho(x Result) string {
	switch x.Verdict {
	case "tie", "n/a":
		return x.Verdict
	}
	if strings.HasSuffix(x.Verdict, x.Win) {
		return "ours, " + x.Verdict
	}
	return "etcd (ours " + x.Verdict + ")"
}

// Write saves the report as <dir>/<date>[-quick][-tls].md, .json and .svg and
// returns the Markdown path.
func (r *Report) Write(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	t, _ := time.Parse(time.RFC3339, r.Date)
	base := filepath.Join(dir, t.Format("2006-01-02"))
	if r.Mode == "quick" {
		base += "-quick"
	}
	if r.Config.TLS {
		base += "-tls"
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	svg, err := r.SVG()
	if err != nil {
		return "", err
	}
	for ext, body := range map[string][]byte{".md": []byte(r.Markdown()), ".json": append(js, '\n'), ".svg": []byte(svg)} {
		if err := os.WriteFile(base+ext, body, 0o644); err != nil {
			return "", err
		}
	}
	return base + ".md", nil
}

// The chart: one bar per row from a centre line, its length log2 of ours'
// advantage (right, green: ours better; left, red: etcd better), capped at
// 8×.
var svgTmpl = template.Must(template.New("svg").Parse(`<svg xmlns="http://www.w3.org/2000/svg" width="{{.W}}" height="{{.H}}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="20" font-size="14" font-weight="bold">{{.Title}}</text>
<text x="{{.Mid}}" y="40" text-anchor="end" fill="#b22">← etcd better</text>
<text x="{{.Mid}}" y="40" dx="6" fill="#282">ours better →</text>
{{range .Ticks}}<line x1="{{.X}}" y1="48" x2="{{.X}}" y2="{{$.AxisEnd}}" stroke="#ddd"/><text x="{{.X}}" y="{{$.TickY}}" text-anchor="middle" fill="#666">{{.Label}}</text>
{{end}}{{range .Bars}}<text x="{{$.LabelX}}" y="{{.TextY}}" text-anchor="end">{{.Label}}</text>
<rect x="{{.X}}" y="{{.Y}}" width="{{.Width}}" height="16" fill="{{.Color}}"/>
<text x="{{.VX}}" y="{{.TextY}}" text-anchor="{{.Anchor}}" fill="#333">{{.Verdict}}</text>
{{end}}<line x1="{{.Mid}}" y1="48" x2="{{.Mid}}" y2="{{.AxisEnd}}" stroke="black"/>
</svg>
`))

// SVG renders the chart.
func (r *Report) SVG() (string, error) {
	const labelW, half, rowH, top = 530, 230, 24, 56
	type bar struct {
		Label, Color, Verdict, Anchor string
		X, Y, Width, TextY, VX        float64
	}
	type tick struct {
		X     float64
		Label string
	}
	mid := float64(labelW + 10 + half)
	scale := half / 3.0 // log2(8) = 3
	var bars []bar
	for i, x := range r.Results {
		adv := x.Ratio
		if x.Better == Lower && adv != 0 {
			adv = 1 / adv
		}
		l := 0.0
		if adv > 0 {
			l = math.Max(-3, math.Min(3, math.Log2(adv)))
		}
		y := float64(top + i*rowH)
		b := bar{Label: r.label(x.Row), Verdict: x.Verdict, Y: y, TextY: y + 12, Width: math.Abs(l) * scale, Color: "#4a4"}
		if l >= 0 {
			b.X, b.VX, b.Anchor = mid, mid+b.Width+4, "start"
		} else {
			b.X, b.VX, b.Anchor, b.Color = mid-b.Width, mid-b.Width-4, "end", "#c44"
		}
		bars = append(bars, b)
	}
	var ticks []tick
	for _, f := range []float64{1.0 / 8, 1.0 / 4, 1.0 / 2, 1, 2, 4, 8} {
		lbl := fmt.Sprintf("%g×", f)
		if f < 1 {
			lbl = fmt.Sprintf("%g×", 1/f)
		}
		ticks = append(ticks, tick{X: mid + math.Log2(f)*scale, Label: lbl})
	}
	h := top + len(bars)*rowH + 30
	var b strings.Builder
	err := svgTmpl.Execute(&b, map[string]any{
		"W": labelW + 2*half + 110, "H": h, "Mid": mid, "LabelX": labelW, "AxisEnd": h - 24, "TickY": h - 10,
		"Title": fmt.Sprintf("authorityd vs etcd %s, ratio of ours to etcd (%s run, %s)", EtcdVersion, r.Mode, r.Date),
		"Bars":  bars, "Ticks": ticks,
	})
	return b.String(), err
}
