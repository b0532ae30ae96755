// Package flow is the probe service's flow model: environments, shared setup
// flows (auth/session), flows of HTTP steps with extractions and expr-lang
// assertions, schedules and SLO blocks, loaded from YAML with strict decoding
// (every unknown field, type error and semantic error reported at once with
// file:line).
package flow

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Hard bounds. A file may lower the defaults (limits: block) but never raise
// them past these caps.
const (
	DefaultMaxBodyBytes = 1 << 20
	CapMaxBodyBytes     = 16 << 20
	DefaultMaxSteps     = 50
	CapMaxSteps         = 200
	DefaultStepTimeout  = 10 * time.Second
	CapStepTimeout      = 2 * time.Minute
	DefaultFlowTimeout  = time.Minute
	CapFlowTimeout      = 10 * time.Minute
	MinInterval         = time.Second
	MaxSLOWindow        = 31 * 24 * time.Hour
	MaxAssertions       = 50
	MaxExtractions      = 50
	MaxExprNodes        = 1000
)

// Config is the merged content of one or more flow files.
type Config struct {
	Environments map[string]*Environment
	Setups       map[string]*Setup
	Flows        []*Flow
	SLOs         []*SLO
	Limits       Limits
	// Files lists the loaded files, in load order.
	Files []string
}

// Flow returns the flow of that name, or nil.
func (c *Config) Flow(name string) *Flow {
	for _, f := range c.Flows {
		if f.Name == name {
			return f
		}
	}
	return nil
}

// File is the YAML schema of one flow file; every section is optional so
// shared configuration (environments, setups) can live in its own file.
type File struct {
	Environments map[string]*Environment `yaml:"environments"`
	Setups       map[string]*Setup       `yaml:"setups"`
	Flows        []*Flow                 `yaml:"flows"`
	SLOs         []*SLO                  `yaml:"slos"`
	Limits       *Limits                 `yaml:"limits"`
}

// Limits bound what one run may do.
type Limits struct {
	MaxBodyBytes int64    `yaml:"max_body_bytes"`
	MaxSteps     int      `yaml:"max_steps"`
	StepTimeout  Duration `yaml:"step_timeout"`
	FlowTimeout  Duration `yaml:"flow_timeout"`
}

// Environment is one target environment (staging, pre-prod, prod).
type Environment struct {
	BaseURL   string               `yaml:"base_url"`
	Variables map[string]string    `yaml:"variables"`
	Secrets   map[string]SecretRef `yaml:"secrets"`

	Pos Pos `yaml:"-"`
}

// SecretRef names where a secret's value comes from: an environment variable
// of the probe process. Inline values are rejected by the loader.
type SecretRef struct {
	Env string `yaml:"env"`
}

// Setup is a shared setup flow (log in, open a session): its steps run once,
// the exported variables are cached until the expiry and reused by every
// flow naming the setup; a 401 in a flow refreshes it once.
type Setup struct {
	Steps   []*Step    `yaml:"steps"`
	Exports []string   `yaml:"exports"`
	Cache   SetupCache `yaml:"cache"`

	Name string `yaml:"-"`
	Pos  Pos    `yaml:"-"`
}

// SetupCache says how long a setup's exports stay valid: a fixed ttl, or the
// number of seconds found in an extracted variable (expires_in_var, e.g. an
// OAuth expires_in), whichever is shorter when both are set.
type SetupCache struct {
	TTL          Duration `yaml:"ttl"`
	ExpiresInVar string   `yaml:"expires_in_var"`
}

// Flow is one scheduled user journey.
type Flow struct {
	Name         string            `yaml:"name"`
	Description  string            `yaml:"description"`
	Setup        string            `yaml:"setup"`
	Environments []string          `yaml:"environments"`
	Variables    map[string]string `yaml:"variables"`
	Schedule     Schedule          `yaml:"schedule"`
	Timeout      Duration          `yaml:"timeout"`
	Verdict      VerdictPolicy     `yaml:"verdict"`
	Steps        []*Step           `yaml:"steps"`

	Pos Pos `yaml:"-"`
}

// RunsIn reports whether the flow runs in environment env (no list = all).
func (f *Flow) RunsIn(env string) bool {
	if len(f.Environments) == 0 {
		return true
	}
	for _, e := range f.Environments {
		if e == env {
			return true
		}
	}
	return false
}

// Schedule is how often a flow runs.
type Schedule struct {
	Every Duration `yaml:"every"`
}

// VerdictPolicy is the default verdict rule of a flow (the verdict API's
// query parameters override it): fewer than MinSamples runs in the window is
// inconclusive; a success ratio below MinSuccessRatio fails.
type VerdictPolicy struct {
	MinSamples      int     `yaml:"min_samples"`
	MinSuccessRatio float64 `yaml:"min_success_ratio"`
}

// Step is one HTTP request with its extractions and assertions.
type Step struct {
	Name    string        `yaml:"name"`
	Request Request       `yaml:"request"`
	Extract []*Extraction `yaml:"extract"`
	Assert  []string      `yaml:"assert"`

	Pos        Pos            `yaml:"-"`
	AssertPos  []Pos          `yaml:"-"`
	URLPos     Pos            `yaml:"-"`
	BodyPos    Pos            `yaml:"-"`
	HeadersPos map[string]Pos `yaml:"-"`
}

// Request is a step's HTTP request; URL, header values and body are
// templates ({{ name }}, {{ secrets.name }}).
type Request struct {
	Method  string            `yaml:"method"`
	URL     string            `yaml:"url"`
	Headers map[string]string `yaml:"headers"`
	Body    string            `yaml:"body"`
	Timeout Duration          `yaml:"timeout"`
}

// Extraction sets a variable from the response: exactly one of JSON (a path
// like $.items[0].id), Header, Cookie or Regexp (first capture group, else
// the whole match). Secret marks the value for redaction everywhere.
type Extraction struct {
	Var    string `yaml:"var"`
	JSON   string `yaml:"json"`
	Header string `yaml:"header"`
	Cookie string `yaml:"cookie"`
	Regexp string `yaml:"regexp"`
	Secret bool   `yaml:"secret"`

	Pos Pos `yaml:"-"`
}

// SLO binds flows (or some of their steps) to an objective over a window.
// Each run of a listed flow is one event (good if the run passed); when
// Steps is set, each listed step of each run is one event instead (a step
// not reached because an earlier one failed counts as bad).
type SLO struct {
	Name        string   `yaml:"name"`
	Description string   `yaml:"description"`
	Objective   float64  `yaml:"objective"`
	Window      Duration `yaml:"window"`
	Flows       []string `yaml:"flows"`
	Steps       []string `yaml:"steps"`

	Pos Pos `yaml:"-"`
}

// Pos is a position in a flow file.
type Pos struct {
	File string
	Line int
	Col  int
}

func (p Pos) String() string {
	if p.Line == 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}

// Duration is a time.Duration in YAML ("500ms", "30s", "1h", "30d").
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// ParseDuration accepts Go durations plus a whole-day suffix ("30d").
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if strings.HasSuffix(s, "d") {
		n, err := strconv.Atoi(strings.TrimSuffix(s, "d"))
		if err != nil || n < 0 {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (want e.g. 500ms, 30s, 5m, 1h, 30d)", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("negative duration %q", s)
	}
	return d, nil
}

// UnmarshalYAML reports a bad duration as a yaml.TypeError so that the
// decoder collects it with the others instead of stopping.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: a duration must be a string like \"30s\"", n.Line)}}
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	*d = Duration(v)
	return nil
}

// String formats the duration.
func (d Duration) String() string { return time.Duration(d).String() }
