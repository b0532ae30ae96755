// Package controller is the rollout controller (issue 16): it drives one
// service's canary from a rollouts.yaml through the release domain's
// transitions, moves traffic through release/actuator's fenced gateway,
// decides with release/analysis, signs its analysis and budget evidence,
// and, with release/burnrate, rolls a promoted release back when it burns
// its error budget during the bake window. See docs/RELEASECTL.md.
package controller

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/aerodb/authority/release/analysis"
	"github.com/aerodb/authority/release/burnrate"
	"github.com/aerodb/authority/release/webhook"
	"gopkg.in/yaml.v3"
)

// Bounds.
const (
	MaxConfigBytes  = 1 << 20
	MaxSteps        = 64
	MaxTemplates    = 32
	MaxPause        = 24 * time.Hour
	MaxBake         = 7 * 24 * time.Hour
	DefaultLeaseFor = time.Minute
)

// Config is a rollouts.yaml: one service's canary.
type Config struct {
	// Service names the rollout (logs, metrics); Holder defaults to it.
	Service string `yaml:"service"`
	// Domain is the release domain; the controller holds its lease as
	// Holder (its certificate is releaser/Holder).
	Domain string `yaml:"domain"`
	Holder string `yaml:"holder"`
	// Stable (optional) is the digest expected to be stable now; a
	// different stable is an error (someone else moved it).
	Stable string `yaml:"stable"`
	// Canary is the digest to roll out; Manifest the DSSE envelope file
	// admitting it (signed_manifest).
	Canary   string `yaml:"canary"`
	Manifest string `yaml:"manifest"`
	Steps    []Step `yaml:"steps"`
	// AnalysisTemplates by name, each in release/analysis's format.
	AnalysisTemplates map[string]analysis.Config `yaml:"analysisTemplates"`
	Actuator          ActuatorConfig             `yaml:"actuator"`
	// Signing is the key the controller signs analysis and budget
	// evidence with (PKCS#8 PEM Ed25519, `authorityctl evidence keygen`).
	Signing Signing `yaml:"signing"`
	// Prometheus serves the burn-rate and budget queries.
	Prometheus string `yaml:"prometheus"`
	// Budget: when set, a promotion carries signed budget evidence
	// measured over this SLO (the policy's error_budget check).
	Budget *burnrate.SLO `yaml:"budget"`
	// CanaryBurn: burn-rate rules on the canary alone, offered to the
	// analysis as the custom provider "canary-burn" (result 1 when a rule
	// fires, 0 otherwise).
	CanaryBurn *burnrate.SLO `yaml:"canaryBurn"`
	// Bake: after a promotion, the stable release is watched for Duration;
	// a firing rule rolls back to the last known good.
	Bake     *Bake          `yaml:"bake"`
	Rollback RollbackConfig `yaml:"rollback"`
	Webhooks *Webhooks      `yaml:"webhooks"`
	// LeaseWait bounds waiting for another controller's lease (1m).
	LeaseWait analysis.Duration `yaml:"leaseWait"`
}

// Step is exactly one of setWeight, pause, analysis.
type Step struct {
	SetWeight *uint32       `yaml:"setWeight"`
	Pause     *PauseStep    `yaml:"pause"`
	Analysis  *AnalysisStep `yaml:"analysis"`
}

// PauseStep waits Duration (required: a controller never waits forever).
type PauseStep struct {
	Duration analysis.Duration `yaml:"duration"`
}

// AnalysisStep runs the named templates as one analysis.
type AnalysisStep struct {
	Templates []string `yaml:"templates"`
}

// ActuatorConfig is the traffic target behind the fenced gateway.
type ActuatorConfig struct {
	// State is the gateway's state file (one per traffic target).
	State string `yaml:"state"`
	// CheckAuthority also asks the authority for the domain's current
	// epoch on every call (GatewayConfig.Epochs).
	CheckAuthority bool           `yaml:"checkAuthority"`
	HAProxy        *HAProxyTarget `yaml:"haproxy"`
	Script         *ScriptTarget  `yaml:"script"`
	Webhook        *WebhookTarget `yaml:"webhook"`
}

type HAProxyTarget struct {
	Socket  string            `yaml:"socket"`
	Backend string            `yaml:"backend"`
	Stable  string            `yaml:"stable"`
	Canary  string            `yaml:"canary"`
	Total   uint32            `yaml:"total"`
	Timeout analysis.Duration `yaml:"timeout"`
}

type ScriptTarget struct {
	Argv    []string          `yaml:"argv"`
	Env     []string          `yaml:"env"`
	Timeout analysis.Duration `yaml:"timeout"`
}

type WebhookTarget struct {
	URL     string            `yaml:"url"`
	Timeout analysis.Duration `yaml:"timeout"`
}

type Signing struct {
	Key   string `yaml:"key"`
	KeyID string `yaml:"keyId"`
}

// Bake is the post-promotion watch.
type Bake struct {
	Duration analysis.Duration `yaml:"duration"`
	Interval analysis.Duration `yaml:"interval"`
	SLO      burnrate.SLO      `yaml:"slo"`
}

// RollbackConfig: after a rollback moved traffic, Probe must answer 2xx
// Successes times in a row (new connections) within Timeout: "probes
// green", the end of rollback_duration_seconds.
type RollbackConfig struct {
	Probe     string            `yaml:"probe"`
	Successes int               `yaml:"successes"`
	Timeout   analysis.Duration `yaml:"timeout"`
	// ProbeFlow (instead of Probe): the probe service's verdict on a flow
	// (GET /v1/verdicts/{flow}) must be pass over a window that began after
	// the traffic moved.
	ProbeFlow *ProbeFlow `yaml:"probeFlow"`
}

// ProbeFlow names a flow of the probe service (cmd/probed).
type ProbeFlow struct {
	Address    string            `yaml:"address"` // http(s)://host:port of the probe service
	Flow       string            `yaml:"flow"`
	Window     analysis.Duration `yaml:"window"`     // default 30s; a multiple of 10s, 10s..1h
	MinSamples int               `yaml:"minSamples"` // default: the flow's own
}

// Webhooks runs release/webhook's dispatcher on the domain's events.
type Webhooks struct {
	webhook.Config `yaml:",inline"`
	State          string `yaml:"state"`
	FromIndex      uint64 `yaml:"fromIndex"`
}

var (
	digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	nameRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/-]{0,252}$`)
)

// Parse decodes a rollouts.yaml strictly (unknown fields are errors) and
// validates it, returning every problem at once.
// custom names analysis providers registered in Options.Custom.
func Parse(data []byte, custom ...string) (*Config, error) {
	if len(data) > MaxConfigBytes {
		return nil, fmt.Errorf("rollouts config: %d bytes exceeds %d", len(data), MaxConfigBytes)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("rollouts config: empty")
		}
		return nil, fmt.Errorf("rollouts config: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("rollouts config: more than one YAML document")
	}
	if err := c.Validate(custom...); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate returns every problem at once.
// custom names analysis providers registered in Options.Custom.
func (c *Config) Validate(custom ...string) error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if !nameRE.MatchString(c.Service) {
		bad("service: required, [A-Za-z0-9._:/-], at most 253 bytes")
	}
	if !nameRE.MatchString(c.Domain) {
		bad("domain: required, [A-Za-z0-9._:/-], at most 253 bytes")
	}
	if c.Holder != "" && !nameRE.MatchString(c.Holder) {
		bad("holder: [A-Za-z0-9._:/-], at most 253 bytes")
	}
	if !digestRE.MatchString(c.Canary) {
		bad("canary: want sha256:<64 hex digits>")
	}
	if c.Stable != "" && !digestRE.MatchString(c.Stable) {
		bad("stable: want sha256:<64 hex digits>")
	}
	if c.Stable != "" && c.Stable == c.Canary {
		bad("canary: equals stable")
	}
	if c.Manifest == "" {
		bad("manifest: required (the DSSE envelope admitting the canary)")
	}
	if len(c.AnalysisTemplates) > MaxTemplates {
		bad("analysisTemplates: %d exceeds %d", len(c.AnalysisTemplates), MaxTemplates)
	}
	for name, t := range c.AnalysisTemplates {
		if !nameRE.MatchString(name) {
			bad("analysisTemplates: bad name %q", clip(name))
			continue
		}
		if err := t.Validate(customProviders(c, custom)...); err != nil {
			bad("analysisTemplates.%s: %w", name, err)
		}
	}
	switch {
	case len(c.Steps) == 0:
		bad("steps: at least one")
	case len(c.Steps) > MaxSteps:
		bad("steps: %d exceeds %d", len(c.Steps), MaxSteps)
	}
	lastAnalysis := -1
	for i, s := range c.Steps {
		n := 0
		if s.SetWeight != nil {
			n++
			if *s.SetWeight > 100 {
				bad("steps[%d].setWeight: %d exceeds 100", i, *s.SetWeight)
			}
		}
		if s.Pause != nil {
			n++
			if d := s.Pause.Duration.D(); d <= 0 || d > MaxPause {
				bad("steps[%d].pause.duration: want 0 < duration <= %v (a controller never waits forever)", i, MaxPause)
			}
		}
		if s.Analysis != nil {
			n++
			lastAnalysis = i
			if len(s.Analysis.Templates) == 0 {
				bad("steps[%d].analysis.templates: at least one", i)
			}
			known := true
			for _, t := range s.Analysis.Templates {
				if _, ok := c.AnalysisTemplates[t]; !ok {
					bad("steps[%d].analysis: unknown template %q", i, clip(t))
					known = false
				}
			}
			if known && len(s.Analysis.Templates) > 1 {
				if err := c.analysisFor(s.Analysis).Validate(customProviders(c, custom)...); err != nil {
					bad("steps[%d].analysis: the templates together: %w", i, err)
				}
			}
		}
		if n != 1 {
			bad("steps[%d]: want exactly one of setWeight, pause, analysis (got %d)", i, n)
		}
	}
	if len(c.Steps) > 0 && lastAnalysis < 0 {
		bad("steps: no analysis step (a promotion needs a signed analysis verdict)")
	}
	a := c.Actuator
	if a.State == "" {
		bad("actuator.state: required (the fenced gateway's state file)")
	}
	targets := 0
	for _, p := range []bool{a.HAProxy != nil, a.Script != nil, a.Webhook != nil} {
		if p {
			targets++
		}
	}
	if targets != 1 {
		bad("actuator: want exactly one of haproxy, script, webhook (got %d)", targets)
	}
	if c.Signing.Key == "" || c.Signing.KeyID == "" {
		bad("signing: key and keyId are required (analysis evidence is signed)")
	}
	needProm := c.Budget != nil || c.CanaryBurn != nil || c.Bake != nil
	if needProm && c.Prometheus == "" {
		bad("prometheus: required by budget, canaryBurn and bake")
	}
	for name, s := range map[string]*burnrate.SLO{"budget": c.Budget, "canaryBurn": c.CanaryBurn} {
		if s != nil {
			if err := s.Validate(); err != nil {
				bad("%s: %w", name, err)
			}
		}
	}
	if b := c.Bake; b != nil {
		if d := b.Duration.D(); d <= 0 || d > MaxBake {
			bad("bake.duration: want 0 < duration <= %v", MaxBake)
		}
		if iv := b.Interval.D(); iv <= 0 || iv > b.Duration.D() {
			bad("bake.interval: want 0 < interval <= duration")
		}
		if err := b.SLO.Validate(); err != nil {
			bad("bake.slo: %w", err)
		}
	}
	r := c.Rollback
	if r.Successes < 0 || r.Successes > 1000 {
		bad("rollback.successes: want 0..1000")
	}
	if (r.Probe != "" || r.ProbeFlow != nil) && (r.Timeout.D() < 0 || r.Timeout.D() > time.Hour) {
		bad("rollback.timeout: want 0..1h")
	}
	if pf := r.ProbeFlow; pf != nil {
		if r.Probe != "" {
			bad("rollback: probe and probeFlow are exclusive")
		}
		if u, err := url.Parse(pf.Address); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(pf.Address) > 512 {
			bad("rollback.probeFlow.address: want http(s)://host:port")
		}
		if pf.Flow == "" || len(pf.Flow) > 128 || strings.ContainsAny(pf.Flow, "/?#") {
			bad("rollback.probeFlow.flow: want a flow name (1..128 bytes)")
		}
		// The probe service counts runs in 10 s buckets: a window that is a
		// multiple of 10 s counts only runs after its start.
		if w := pf.Window.D(); w != 0 && (w < 10*time.Second || w > time.Hour || w%(10*time.Second) != 0) {
			bad("rollback.probeFlow.window: want a multiple of 10s within 10s..1h (the probe service's resolution)")
		}
		if pf.MinSamples < 0 || pf.MinSamples > 10000 {
			bad("rollback.probeFlow.minSamples: want 0..10000")
		}
	}
	if w := c.Webhooks; w != nil {
		if len(w.Endpoints) == 0 {
			bad("webhooks.endpoints: at least one")
		} else {
			eps := append([]webhook.Endpoint(nil), w.Endpoints...)
			if err := webhook.ValidateEndpoints(withDefaults(eps)); err != nil {
				bad("webhooks: %w", err)
			}
		}
		if w.State == "" {
			bad("webhooks.state: required (delivery positions)")
		}
	}
	if lw := c.LeaseWait.D(); lw < 0 || lw > time.Hour {
		bad("leaseWait: want 0..1h")
	}
	return errors.Join(errs...)
}

func (c *Config) holder() string {
	if c.Holder != "" {
		return c.Holder
	}
	return c.Service
}

// CanaryBurnProvider is the custom analysis provider backed by CanaryBurn.
const CanaryBurnProvider = "canary-burn"

func customProviders(c *Config, custom []string) []string {
	if c.CanaryBurn != nil {
		return append([]string{CanaryBurnProvider}, custom...)
	}
	return custom
}

// analysisFor merges the step's templates into one analysis.
func (c *Config) analysisFor(s *AnalysisStep) *analysis.Config {
	out := &analysis.Config{}
	for _, t := range s.Templates {
		out.Metrics = append(out.Metrics, c.AnalysisTemplates[t].Metrics...)
	}
	return out
}

func withDefaults(eps []webhook.Endpoint) []webhook.Endpoint {
	for i := range eps {
		e := &eps[i]
		if e.Timeout == 0 {
			e.Timeout = webhook.DefaultTimeout
		}
		if e.MaxAttempts == 0 {
			e.MaxAttempts = webhook.DefaultMaxAttempts
		}
		if e.BackoffBase == 0 {
			e.BackoffBase = webhook.DefaultBackoffBase
		}
		if e.BackoffMax == 0 {
			e.BackoffMax = webhook.DefaultBackoffMax
		}
		if e.QueueSize == 0 {
			e.QueueSize = webhook.DefaultQueueSize
		}
	}
	return eps
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
