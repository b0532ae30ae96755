// Package analysis is the canary analysis engine of the rollout controller:
// Argo Rollouts' AnalysisRun semantics (metrics measured at an interval up
// to a count, success/failure conditions in expr-lang over `result`,
// failureLimit / inconclusiveLimit / consecutiveErrorLimit, run status = the
// worst metric) with Argo's and Flagger's known failures fixed: no data (an
// empty result, NaN, ±Inf, fewer samples than minSamples) is an explicit
// Inconclusive measurement, never 0, never an index error, never an Error;
// a metric needs at least one successful measurement (and, with
// consecutiveSuccesses, that many in a row at the end) to be Successful, so
// an analysis with no data can never pass; configurations are validated up
// front with every error reported at once.
//
// The package is a library: a Runner measures with injected providers and an
// injected clock and returns a Result; Verdict/Predicate turn it into the
// analysis evidence predicate the authority's release validator checks.
package analysis

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Bounds on configurations.
const (
	MaxConfigBytes        = 256 << 10
	MaxMetrics            = 64
	MaxCount              = 1000
	MaxDuration           = 24 * time.Hour
	MaxConditionLen       = 1024
	MaxQueryLen           = 4096
	MaxHeaders            = 32
	MaxHeaderLen          = 4096
	MaxBodyLen            = 16 << 10
	MaxTimeout            = 60 * time.Second
	DefaultTimeout        = 10 * time.Second
	DefaultConsecErrors   = 4
	MaxResponseBytes      = 1 << 20 // every provider's response body limit
	MaxResultValues       = 10000   // values in one vector result
	maxJSONPathSegments   = 32
	maxMinSamples         = 1 << 40
	maxRangeStepsPerQuery = 11000
)

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9_.-]{0,62}[a-z0-9])?$`)

// Duration is a time.Duration decoded from a Go duration string ("30s").
type Duration time.Duration

// UnmarshalYAML decodes "1m30s".
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: duration must be a string like \"30s\"", n.Line)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: bad duration %.40q", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML encodes the duration string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D is the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Config is an analysis: the metrics measured against one canary.
type Config struct {
	Metrics []Metric `yaml:"metrics"`
}

// Metric is one Argo-style metric.
type Metric struct {
	Name     string   `yaml:"name"`
	Provider Provider `yaml:"provider"`
	// Interval between measurements; Count measurements in all (bounded:
	// an analysis always ends). InitialDelay before the first.
	Interval     Duration `yaml:"interval"`
	Count        int      `yaml:"count"`
	InitialDelay Duration `yaml:"initialDelay"`
	// Conditions over `result` (a float, or a list of floats for vectors).
	SuccessCondition string `yaml:"successCondition"`
	FailureCondition string `yaml:"failureCondition"`
	// Limits as in Argo (nil = default): the metric fails when more than
	// FailureLimit measurements failed (cumulative, default 0), is
	// inconclusive when more than InconclusiveLimit were inconclusive
	// (default 0), errors when more than ConsecutiveErrorLimit query errors
	// happened in a row (default 4).
	FailureLimit          *int `yaml:"failureLimit"`
	InconclusiveLimit     *int `yaml:"inconclusiveLimit"`
	ConsecutiveErrorLimit *int `yaml:"consecutiveErrorLimit"`
	// MinSamples: a measurement over fewer samples (requests, probe runs) is
	// Inconclusive (no data).
	MinSamples int64 `yaml:"minSamples"`
	// ConsecutiveSuccesses: hysteresis; the metric succeeds only if its last
	// that many measurements were Successful.
	ConsecutiveSuccesses int `yaml:"consecutiveSuccesses"`
	// DryRun: measured and reported, never decides the run.
	DryRun bool `yaml:"dryRun"`
}

// Provider: exactly one of the fields is set.
type Provider struct {
	Prometheus *PrometheusProvider `yaml:"prometheus"`
	Probe      *ProbeProvider      `yaml:"probe"`
	Web        *WebProvider        `yaml:"web"`
	// Custom names a provider registered with the Runner (tests, simulations).
	Custom string `yaml:"custom"`
}

// PrometheusProvider queries Prometheus' HTTP API.
type PrometheusProvider struct {
	Address string   `yaml:"address"` // http://127.0.0.1:9090
	Query   string   `yaml:"query"`
	Timeout Duration `yaml:"timeout"`
	// CountQuery returns the sample count (e.g. requests in the window) the
	// MinSamples guard compares with; required when MinSamples > 0.
	CountQuery string `yaml:"countQuery"`
	// Range, when set, runs a range query over [now-Range.Start, now] with
	// Range.Step; the result is every sample value of every series.
	Range *PromRange `yaml:"range"`
}

// PromRange is a range query window.
type PromRange struct {
	Start Duration `yaml:"start"` // how far back
	Step  Duration `yaml:"step"`
}

// ProbeProvider asks the probe service for a flow's verdict:
// pass ⇒ 1, fail ⇒ 0, inconclusive ⇒ no data; the run count is the sample
// count.
type ProbeProvider struct {
	Address string   `yaml:"address"` // http://127.0.0.1:8089
	Flow    string   `yaml:"flow"`
	Window  string   `yaml:"window"` // 10m
	Timeout Duration `yaml:"timeout"`
}

// WebProvider calls a JSON endpoint and extracts `result` with JSONPath.
type WebProvider struct {
	URL     string            `yaml:"url"`
	Method  string            `yaml:"method"` // GET (default) or POST
	Headers map[string]string `yaml:"headers"`
	Body    string            `yaml:"body"`
	Timeout Duration          `yaml:"timeout"`
	// JSONPath selects the value: $.a.b[0].c (dots and indices).
	JSONPath string `yaml:"jsonPath"`
	// SamplesJSONPath selects the sample count; required when MinSamples > 0.
	SamplesJSONPath string `yaml:"samplesJsonPath"`
}

// Parse decodes a YAML analysis strictly (unknown fields, e.g. an unknown
// provider name, are errors) and validates it; every error is reported at
// once. customProviders are the names of providers the runner will be given.
func Parse(data []byte, customProviders ...string) (*Config, error) {
	if len(data) > MaxConfigBytes {
		return nil, fmt.Errorf("analysis config is %d bytes, more than %d", len(data), MaxConfigBytes)
	}
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var errs []error
	if err := dec.Decode(&c); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, fmt.Errorf("analysis config: %w", err)
		}
		for _, e := range te.Errors {
			errs = append(errs, errors.New(e))
		}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		errs = append(errs, errors.New("analysis config: more than one YAML document"))
	}
	if err := c.Validate(customProviders...); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &c, nil
}

// Validate checks the whole configuration and returns every error at once.
func (c *Config) Validate(customProviders ...string) error {
	var errs []error
	add := func(m, f string, a ...any) {
		errs = append(errs, fmt.Errorf("metric %s: %s", m, fmt.Sprintf(f, a...)))
	}
	if len(c.Metrics) == 0 {
		errs = append(errs, errors.New("analysis has no metrics"))
	}
	if len(c.Metrics) > MaxMetrics {
		errs = append(errs, fmt.Errorf("analysis has %d metrics, more than %d", len(c.Metrics), MaxMetrics))
	}
	seen := map[string]bool{}
	deciding := 0
	for i := range c.Metrics {
		m := &c.Metrics[i]
		id := fmt.Sprintf("#%d", i)
		if !nameRE.MatchString(m.Name) {
			add(id, "name must match %s", nameRE)
		} else {
			id = m.Name
			if seen[m.Name] {
				add(id, "duplicate metric name")
			}
			seen[m.Name] = true
		}
		if !m.DryRun {
			deciding++
		}
		if m.Count < 1 || m.Count > MaxCount {
			add(id, "count must be 1..%d (an analysis always ends)", MaxCount)
		}
		if m.Interval < 0 || m.Interval.D() > MaxDuration || (m.Count > 1 && m.Interval <= 0) {
			add(id, "interval must be positive (when count > 1) and at most %s", MaxDuration)
		}
		if m.InitialDelay < 0 || m.InitialDelay.D() > MaxDuration {
			add(id, "initialDelay must be 0..%s", MaxDuration)
		}
		if m.SuccessCondition == "" && m.FailureCondition == "" {
			add(id, "needs a successCondition or a failureCondition")
		}
		for _, cond := range []struct{ n, s string }{{"successCondition", m.SuccessCondition}, {"failureCondition", m.FailureCondition}} {
			if cond.s == "" {
				continue
			}
			if len(cond.s) > MaxConditionLen {
				add(id, "%s longer than %d", cond.n, MaxConditionLen)
			} else if _, err := compile(cond.s); err != nil {
				add(id, "%s does not compile: %s", cond.n, clip(err.Error(), 200))
			}
		}
		for _, l := range []struct {
			n string
			v *int
		}{{"failureLimit", m.FailureLimit}, {"inconclusiveLimit", m.InconclusiveLimit}, {"consecutiveErrorLimit", m.ConsecutiveErrorLimit}} {
			if l.v != nil && (*l.v < 0 || *l.v > MaxCount) {
				add(id, "%s must be 0..%d", l.n, MaxCount)
			}
		}
		if m.MinSamples < 0 || m.MinSamples > maxMinSamples {
			add(id, "minSamples must be 0..%d", int64(maxMinSamples))
		}
		if m.ConsecutiveSuccesses < 0 || (m.Count >= 1 && m.ConsecutiveSuccesses > m.Count) {
			add(id, "consecutiveSuccesses must be 0..count")
		}
		for _, e := range m.Provider.validate(m, customProviders) {
			add(id, "%s", e)
		}
	}
	if len(c.Metrics) > 0 && deciding == 0 {
		errs = append(errs, errors.New("analysis has only dryRun metrics: nothing would decide"))
	}
	return errors.Join(errs...)
}

// Require checks that every metric the release policy requires is defined
// and deciding (not dryRun): an unknown metric name is a config error, never
// a silent pass.
func (c *Config) Require(names ...string) error {
	var errs []error
	for _, n := range names {
		m := c.metric(n)
		switch {
		case m == nil:
			errs = append(errs, fmt.Errorf("required metric %.64q is not defined in the analysis", n))
		case m.DryRun:
			errs = append(errs, fmt.Errorf("required metric %.64q is dryRun and never decides", n))
		}
	}
	return errors.Join(errs...)
}

func (c *Config) metric(name string) *Metric {
	for i := range c.Metrics {
		if c.Metrics[i].Name == name {
			return &c.Metrics[i]
		}
	}
	return nil
}

func (p *Provider) validate(m *Metric, custom []string) []string {
	var errs []string
	n := 0
	if p.Prometheus != nil {
		n++
		q := p.Prometheus
		errs = append(errs, checkURL("prometheus.address", q.Address)...)
		if q.Query == "" || len(q.Query) > MaxQueryLen {
			errs = append(errs, fmt.Sprintf("prometheus.query must be 1..%d bytes", MaxQueryLen))
		}
		if len(q.CountQuery) > MaxQueryLen {
			errs = append(errs, fmt.Sprintf("prometheus.countQuery longer than %d", MaxQueryLen))
		}
		if m.MinSamples > 0 && q.CountQuery == "" {
			errs = append(errs, "minSamples needs prometheus.countQuery (the sample count)")
		}
		errs = append(errs, checkTimeout("prometheus.timeout", q.Timeout)...)
		if r := q.Range; r != nil {
			if r.Start <= 0 || r.Step <= 0 || r.Start.D() > MaxDuration || r.Start.D()/r.Step.D() > maxRangeStepsPerQuery {
				errs = append(errs, fmt.Sprintf("prometheus.range needs start > 0 (≤ %s) and step > 0 with at most %d steps", MaxDuration, maxRangeStepsPerQuery))
			}
		}
	}
	if p.Probe != nil {
		n++
		q := p.Probe
		errs = append(errs, checkURL("probe.address", q.Address)...)
		if !nameRE.MatchString(q.Flow) {
			errs = append(errs, "probe.flow must be a flow name")
		}
		if d, err := time.ParseDuration(q.Window); err != nil || d <= 0 || d > 30*24*time.Hour {
			errs = append(errs, "probe.window must be a positive duration like 10m")
		}
		errs = append(errs, checkTimeout("probe.timeout", q.Timeout)...)
	}
	if p.Web != nil {
		n++
		w := p.Web
		errs = append(errs, checkURL("web.url", w.URL)...)
		switch w.Method {
		case "", "GET", "POST":
		default:
			errs = append(errs, "web.method must be GET or POST")
		}
		if len(w.Headers) > MaxHeaders {
			errs = append(errs, fmt.Sprintf("web.headers: more than %d", MaxHeaders))
		}
		for k, v := range w.Headers {
			if k == "" || len(k)+len(v) > MaxHeaderLen || strings.ContainsAny(k+v, "\r\n") {
				errs = append(errs, "web.headers: a header is empty, too long or contains a newline") // never echo values (secrets)
				break
			}
		}
		if len(w.Body) > MaxBodyLen {
			errs = append(errs, fmt.Sprintf("web.body longer than %d", MaxBodyLen))
		}
		if _, err := parseJSONPath(w.JSONPath); err != nil {
			errs = append(errs, "web.jsonPath: "+err.Error())
		}
		if w.SamplesJSONPath != "" {
			if _, err := parseJSONPath(w.SamplesJSONPath); err != nil {
				errs = append(errs, "web.samplesJsonPath: "+err.Error())
			}
		} else if m.MinSamples > 0 {
			errs = append(errs, "minSamples needs web.samplesJsonPath (the sample count)")
		}
		errs = append(errs, checkTimeout("web.timeout", w.Timeout)...)
	}
	if p.Custom != "" {
		n++
		found := false
		for _, c := range custom {
			found = found || c == p.Custom
		}
		if !found {
			errs = append(errs, fmt.Sprintf("unknown provider %.64q", p.Custom))
		}
	}
	if n != 1 {
		errs = append(errs, "provider must name exactly one of prometheus, probe, web, custom")
	}
	return errs
}

func checkURL(field, s string) []string {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(s) > 2048 {
		return []string{field + " must be an http(s) URL"}
	}
	return nil
}

func checkTimeout(field string, d Duration) []string {
	if d < 0 || d.D() > MaxTimeout {
		return []string{fmt.Sprintf("%s must be 0..%s", field, MaxTimeout)}
	}
	return nil
}

func (m *Metric) failureLimit() int      { return intOr(m.FailureLimit, 0) }
func (m *Metric) inconclusiveLimit() int { return intOr(m.InconclusiveLimit, 0) }
func (m *Metric) consecErrLimit() int    { return intOr(m.ConsecutiveErrorLimit, DefaultConsecErrors) }

func intOr(p *int, d int) int {
	if p == nil {
		return d
	}
	return *p
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
