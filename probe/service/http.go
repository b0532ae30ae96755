package service

import (
	"encoding/json"
	"html/template"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/aerodb/authority/probe/flow"
	"github.com/aerodb/authority/probe/verdict"
)

// Handler serves /metrics, /healthz, the verdict API, /v1/slos and the
// status pages.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	mux.HandleFunc("GET /healthz", s.serveHealth)
	mux.HandleFunc("GET /v1/verdicts/{flow}", s.serveVerdict)
	mux.HandleFunc("GET /v1/slos", s.serveSLOs)
	mux.HandleFunc("GET /{$}", s.serveIndex)
	mux.HandleFunc("GET /status/{flow}", s.serveFlow)
	return mux
}

// serveHealth is 200 while the scheduler loop runs (or before it started,
// for tests that drive RunDue), 503 once it stopped.
func (s *Service) serveHealth(w http.ResponseWriter, _ *http.Request) {
	if s.lastLoop.Load() != 0 && !s.loopAlive.Load() {
		http.Error(w, "scheduler stopped", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}

// serveVerdict answers GET /v1/verdicts/{flow}?window=10m[&min_samples=N]
// [&min_success_ratio=R][&format=dsse]. The HTTP status is 200 for every
// verdict (the verdict is in the body: Argo's web provider reads it with
// jsonPath "{$.verdict}"); 404 for an unknown flow, 400 for bad parameters.
func (s *Service) serveVerdict(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	window := 5 * time.Minute
	if ws := q.Get("window"); ws != "" {
		d, err := flow.ParseDuration(ws)
		if err != nil {
			httpError(w, http.StatusBadRequest, err.Error())
			return
		}
		window = d
	}
	minSamples, minRatio := -1, -1.0
	if v := q.Get("min_samples"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			httpError(w, http.StatusBadRequest, "min_samples must be a non-negative integer")
			return
		}
		minSamples = n
	}
	if v := q.Get("min_success_ratio"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f > 1 || math.IsNaN(f) {
			httpError(w, http.StatusBadRequest, "min_success_ratio must be within 0..1")
			return
		}
		minRatio = f
	}
	name := r.PathValue("flow")
	if s.byName[name] == nil {
		httpError(w, http.StatusNotFound, "no flow "+strconv.Quote(name)+" in environment "+s.env)
		return
	}
	v, err := s.Verdict(name, window, minSamples, minRatio)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	s.m.verdicts.WithLabelValues(name, v.Verdict).Inc()
	switch q.Get("format") {
	case "", "json":
		writeJSON(w, v)
	case "dsse":
		if s.o.Signer == nil {
			httpError(w, http.StatusNotImplemented, "no signing key configured (serve --signing-key)")
			return
		}
		env, err := s.o.Signer.Sign(r.Context(), v)
		if err != nil {
			httpError(w, http.StatusInternalServerError, err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/vnd.dsse.envelope.v1+json")
		json.NewEncoder(w).Encode(env)
	default:
		httpError(w, http.StatusBadRequest, "format must be json or dsse")
	}
}

type sloJSON struct {
	Name            string              `json:"name"`
	Objective       float64             `json:"objective"`
	Window          string              `json:"window"`
	Good            uint64              `json:"good"`
	Total           uint64              `json:"total"`
	Compliance      *float64            `json:"compliance"`
	BudgetRemaining float64             `json:"error_budget_remaining"`
	BurnRates       map[string]*float64 `json:"burn_rates"`
}

func (s *Service) serveSLOs(w http.ResponseWriter, _ *http.Request) {
	var out []sloJSON
	for _, sn := range s.SLOSnapshots() {
		j := sloJSON{Name: sn.Name, Objective: sn.Objective, Window: sn.Window, Good: sn.Good, Total: sn.Total,
			Compliance: nanNull(sn.Compliance), BudgetRemaining: sn.BudgetRemaining, BurnRates: map[string]*float64{}}
		for k, v := range sn.BurnRates {
			j.BurnRates[k] = nanNull(v)
		}
		out = append(out, j)
	}
	writeJSON(w, out)
}

func nanNull(f float64) *float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil
	}
	return &f
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

type flowRow struct {
	Name, Description, Last, LastError string
	Every                              string
	LastAt                             string
	V5m, V1h                           verdict.Verdict
}

var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"pct": func(p *float64) string {
		if p == nil {
			return "–"
		}
		return strconv.FormatFloat(*p*100, 'f', 2, 64) + " %"
	},
	"f2": func(f float64) string {
		if math.IsNaN(f) {
			return "–"
		}
		return strconv.FormatFloat(f, 'f', 3, 64)
	},
	"ms": func(d time.Duration) string {
		return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64) + " ms"
	},
}).Parse(`<!doctype html><html><head><meta charset="utf-8"><title>probes · {{.Env}}</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
.pass{color:#070}.fail,.error{color:#b00}.inconclusive,.skipped{color:#888}</style></head><body>
{{if .Flow}}{{with .Flow}}<p><a href="/">all flows</a></p><h1>flow {{.Name}}</h1><p>{{.Description}} · every {{.Every}}</p>
<p>verdict 5m: <b class="{{.V5m.Verdict}}">{{.V5m.Verdict}}</b> ({{.V5m.Reason}}) · 1h: <b class="{{.V1h.Verdict}}">{{.V1h.Verdict}}</b> ({{.V1h.Reason}})</p>{{end}}
<h2>last runs</h2>{{range .Runs}}<h3 class="{{.Result}}">{{.RunID}} · {{.Result}} · {{.Start.Format "2006-01-02 15:04:05Z07:00"}} · {{ms .Duration}}</h3>
{{if .Error}}<p class="fail">{{.Error}}</p>{{end}}<table><tr><th>step</th><th>result</th><th>request</th><th>status</th><th>time</th><th>why</th></tr>
{{range .Steps}}<tr><td>{{.Name}}</td><td class="{{.Result}}">{{.Result}}</td><td>{{.Method}} {{.URL}}</td><td>{{if .Status}}{{.Status}}{{end}}</td><td>{{if .Status}}{{ms .Duration}}{{end}}</td><td>{{.Summary}}</td></tr>{{end}}</table>
{{else}}<p>no runs yet</p>{{end}}
{{else}}<h1>synthetic probes · {{.Env}}</h1><table><tr><th>flow</th><th>every</th><th>last run</th><th>last result</th><th>verdict 5m</th><th>success 1h</th></tr>
{{range .Rows}}<tr><td><a href="/status/{{.Name}}">{{.Name}}</a></td><td>{{.Every}}</td><td>{{.LastAt}}</td><td class="{{.Last}}">{{.Last}}</td><td class="{{.V5m.Verdict}}">{{.V5m.Verdict}}</td><td>{{pct .V1h.SuccessRatio}}</td></tr>{{end}}</table>
<h2>SLOs</h2><table><tr><th>slo</th><th>objective</th><th>window</th><th>events</th><th>budget left</th><th>burn 5m</th><th>30m</th><th>1h</th><th>6h</th></tr>
{{range .SLOs}}<tr><td>{{.Name}}</td><td>{{.Objective}}</td><td>{{.Window}}</td><td>{{.Good}}/{{.Total}}</td><td>{{f2 .BudgetRemaining}}</td><td>{{f2 (index .BurnRates "5m")}}</td><td>{{f2 (index .BurnRates "30m")}}</td><td>{{f2 (index .BurnRates "1h")}}</td><td>{{f2 (index .BurnRates "6h")}}</td></tr>{{end}}</table>{{end}}
</body></html>`))

func (s *Service) row(e *entry) flowRow {
	r := flowRow{Name: e.flow.Name, Description: e.flow.Description, Every: e.every.String(), Last: "never"}
	if rs := s.Recent(e.flow.Name); len(rs) > 0 {
		r.Last, r.LastError, r.LastAt = rs[0].Result, rs[0].Error, rs[0].Start.Format(time.RFC3339)
	}
	r.V5m, _ = s.Verdict(e.flow.Name, 5*time.Minute, -1, -1)
	r.V1h, _ = s.Verdict(e.flow.Name, time.Hour, -1, -1)
	return r
}

func (s *Service) serveIndex(w http.ResponseWriter, _ *http.Request) {
	var rows []flowRow
	for _, e := range sortedFlows(s) {
		rows = append(rows, s.row(e))
	}
	s.page(w, map[string]any{"Env": s.env, "Rows": rows, "SLOs": s.SLOSnapshots()})
}

func (s *Service) serveFlow(w http.ResponseWriter, r *http.Request) {
	e := s.byName[r.PathValue("flow")]
	if e == nil {
		http.NotFound(w, r)
		return
	}
	row := s.row(e)
	s.page(w, map[string]any{"Env": s.env, "Flow": &row, "Runs": s.Recent(e.flow.Name)})
}

func (s *Service) page(w http.ResponseWriter, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := pageTmpl.Execute(w, data); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}
