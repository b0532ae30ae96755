package compare

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// Result is one row measured on both systems.
type Result struct {
	Row
	Etcd    float64 `json:"etcd"`
	Ours    float64 `json:"ours"`
	Ratio   float64 `json:"ratio"` // ours ÷ etcd
	Verdict string  `json:"verdict"`
}

// Report is one run.
type Report struct {
	Date      string              `json:"date"`
	Mode      string              `json:"mode"` // "full" or "quick"
	Transport string              `json:"transport"`
	Config    Config              `json:"config"`
	Host      string              `json:"host"`
	Settings  map[string][]string `json:"settings"`
	Results   []Result            `json:"results"`
	Notes     []string            `json:"notes"`
	Elapsed   string              `json:"elapsed"`
}

// Select returns the families named in rows ("all", or comma-separated
// family names or row IDs).
func Select(rows string) ([]Family, error) {
	if rows == "all" {
		return Families(), nil
	}
	want := strings.Split(rows, ",")
	var out []Family
	for _, f := range Families() {
		hit := slices.Contains(want, f.Name)
		for _, r := range f.Rows {
			hit = hit || slices.Contains(want, r.ID)
		}
		if hit {
			out = append(out, f)
		}
	}
	var known []string
	for _, f := range Families() {
		known = append(known, f.Name)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-rows %q names no row family (all, %s)", rows, strings.Join(known, ", "))
	}
	return out, nil
}

// Run starts both systems and measures every family on each, etcd first
// for even families and ours first for odd ones (so neither always runs on
// the warmer or busier machine).
func Run(tb testing.TB, cfg Config, fams []Family) *Report {
	start := time.Now()
	runners := []Runner{&Etcd{}, &Ours{}}
	rep := &Report{Date: start.UTC().Format(time.RFC3339), Mode: map[bool]string{true: "quick", false: "full"}[cfg.Quick],
		Transport: "plaintext on loopback for both (etcd http://, authorityd --insecure)", Config: cfg,
		Host: fmt.Sprintf("%s/%s, %d CPUs, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version()), Settings: map[string][]string{}}
	if cfg.TLS {
		rep.Transport = "mutual TLS on loopback for both (etcd https:// with client certificates, authorityd's default mTLS), one test CA"
	}
	go etcdBinary() // builds while authorityd builds; Setup waits for it
	for _, r := range []Runner{runners[1], runners[0]} {
		t0 := time.Now()
		r.Setup(tb, cfg)
		rep.Settings[r.Name()] = r.Settings()
		tb.Logf("%s: built (or waited for the build) and three servers up in %v", r.Name(), time.Since(t0).Round(time.Millisecond))
	}
	for i, f := range fams {
		vals := map[string]Values{}
		for j := range runners {
			r := runners[(i+j)%len(runners)]
			t0 := time.Now()
			vals[r.Name()] = r.Run(tb, f, cfg)
			tb.Logf("%s / %s: %v in %v", f.Name, r.Name(), vals[r.Name()].V, time.Since(t0).Round(time.Millisecond))
		}
		for _, row := range f.Rows {
			e, o := vals["etcd"].V[row.ID], vals["authority"].V[row.ID]
			rep.Results = append(rep.Results, result(row, e, o))
		}
		rep.Notes = append(rep.Notes, vals["etcd"].Notes...)
		rep.Notes = append(rep.Notes, vals["authority"].Notes...)
	}
	rep.Elapsed = time.Since(start).Round(time.Second).String()
	return rep
}

// tie is how close a ratio must be to 1 to count as a tie.
const tie = 0.05

func result(row Row, etcd, ours float64) Result {
	r := Result{Row: row, Etcd: etcd, Ours: ours}
	if etcd == 0 || ours == 0 {
		r.Verdict = "n/a"
		return r
	}
	r.Ratio = ours / etcd
	adv := r.Ratio // > 1: ours better
	if row.Better == Lower {
		adv = 1 / r.Ratio
	}
	switch {
	case adv >= 1-tie && adv <= 1+tie:
		r.Verdict = "tie"
	case adv > 1:
		r.Verdict = fmt.Sprintf("%.1f× %s", adv, row.Win)
	default:
		r.Verdict = fmt.Sprintf("%.1f× %s", 1/adv, row.Lose)
	}
	return r
}
