package webhook

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"time"

	"gopkg.in/yaml.v3"
)

// Bounds and defaults of the configuration.
const (
	MaxEndpoints       = 16
	MaxConfigBytes     = 64 << 10
	MaxURLBytes        = 2048
	MaxAttemptsLimit   = 100
	MaxQueueSize       = 4096
	DefaultTimeout     = 10 * time.Second
	DefaultMaxAttempts = 8
	DefaultBackoffBase = 500 * time.Millisecond
	DefaultBackoffMax  = 60 * time.Second
	DefaultQueueSize   = 64
	MaxTimeout         = 5 * time.Minute
	MaxBackoff         = time.Hour
)

// Endpoint is one configured receiver.
type Endpoint struct {
	// Name labels the endpoint in metrics, logs and the state file, and is
	// part of the delivery key. [a-z0-9][a-z0-9_.-]{0,62}.
	Name string `yaml:"name" json:"name"`
	// URL is the http(s) address deliveries are POSTed to. It is never
	// logged (it may carry a token).
	URL string `yaml:"url" json:"url"`
	// SecretEnv names the environment variable holding the HMAC secret
	// (never the secret itself). Required, non-empty.
	SecretEnv string `yaml:"secret_env" json:"secret_env"`
	// Actions and Phases filter what the endpoint gets (empty: all). A
	// payload is delivered when its action is in Actions and its release
	// phase (after the decision) in Phases.
	Actions []string `yaml:"actions,omitempty" json:"actions,omitempty"`
	Phases  []string `yaml:"phases,omitempty" json:"phases,omitempty"`
	// AllowedOnly skips denied decisions (default: denials are delivered
	// too, with allowed false and their denial_reason).
	AllowedOnly bool `yaml:"allowed_only,omitempty" json:"allowed_only,omitempty"`
	// Timeout bounds one attempt (default DefaultTimeout).
	Timeout time.Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
	// MaxAttempts bounds the attempts of one delivery (default
	// DefaultMaxAttempts); after them the delivery is dropped and counted.
	MaxAttempts int `yaml:"max_attempts,omitempty" json:"max_attempts,omitempty"`
	// BackoffBase and BackoffMax shape the wait before retry n:
	// min(BackoffMax, BackoffBase*2^(n-1)) scaled by a jitter in [0.5, 1).
	BackoffBase time.Duration `yaml:"backoff_base,omitempty" json:"backoff_base,omitempty"`
	BackoffMax  time.Duration `yaml:"backoff_max,omitempty" json:"backoff_max,omitempty"`
	// QueueSize bounds the events read ahead for this endpoint (default
	// DefaultQueueSize).
	QueueSize int `yaml:"queue_size,omitempty" json:"queue_size,omitempty"`
}

// Config is the webhooks configuration file.
type Config struct {
	Namespace string     `yaml:"namespace,omitempty" json:"namespace,omitempty"`
	Endpoints []Endpoint `yaml:"endpoints" json:"endpoints"`
}

var (
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)
	envRE  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
)

// ParseConfig strictly decodes a YAML configuration (unknown fields are
// errors), applies defaults and validates it.
func ParseConfig(data []byte) (*Config, error) {
	if len(data) > MaxConfigBytes {
		return nil, fmt.Errorf("webhook config: %d bytes exceeds %d", len(data), MaxConfigBytes)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var c Config
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("webhook config: %w", err)
	}
	if len(c.Namespace) > MaxFieldBytes {
		return nil, fmt.Errorf("webhook config: namespace longer than %d bytes", MaxFieldBytes)
	}
	for i := range c.Endpoints {
		c.Endpoints[i].defaults()
	}
	if err := ValidateEndpoints(c.Endpoints); err != nil {
		return nil, err
	}
	return &c, nil
}

func (e *Endpoint) defaults() {
	if e.Timeout == 0 {
		e.Timeout = DefaultTimeout
	}
	if e.MaxAttempts == 0 {
		e.MaxAttempts = DefaultMaxAttempts
	}
	if e.BackoffBase == 0 {
		e.BackoffBase = DefaultBackoffBase
	}
	if e.BackoffMax == 0 {
		e.BackoffMax = DefaultBackoffMax
	}
	if e.QueueSize == 0 {
		e.QueueSize = DefaultQueueSize
	}
}

// ValidateEndpoints checks endpoints (after defaults). Errors name the
// endpoint and the field, never a URL or a secret.
func ValidateEndpoints(eps []Endpoint) error {
	if len(eps) == 0 {
		return errors.New("webhook config: no endpoints")
	}
	if len(eps) > MaxEndpoints {
		return fmt.Errorf("webhook config: %d endpoints exceeds %d", len(eps), MaxEndpoints)
	}
	seen := map[string]bool{}
	for i, e := range eps {
		if !nameRE.MatchString(e.Name) {
			return fmt.Errorf("webhook config: endpoint %d: name must match %s", i, nameRE)
		}
		if seen[e.Name] {
			return fmt.Errorf("webhook config: endpoint %q: duplicate name", e.Name)
		}
		seen[e.Name] = true
		bad := func(format string, a ...any) error {
			return fmt.Errorf("webhook config: endpoint %q: "+format, append([]any{e.Name}, a...)...)
		}
		if len(e.URL) > MaxURLBytes {
			return bad("url longer than %d bytes", MaxURLBytes)
		}
		u, err := url.Parse(e.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return bad("url must be an absolute http or https URL")
		}
		if !envRE.MatchString(e.SecretEnv) {
			return bad("secret_env must name an environment variable")
		}
		if len(e.Actions) > len(Actions) || len(e.Phases) > len(Phases) {
			return bad("too many actions or phases")
		}
		for _, a := range e.Actions {
			if !contains(Actions, a) {
				return bad("unknown action (want one of %v)", Actions)
			}
		}
		for _, p := range e.Phases {
			if !contains(Phases, p) {
				return bad("unknown phase (want one of %v)", Phases)
			}
		}
		switch {
		case e.Timeout <= 0 || e.Timeout > MaxTimeout:
			return bad("timeout must be in (0, %v]", MaxTimeout)
		case e.MaxAttempts < 1 || e.MaxAttempts > MaxAttemptsLimit:
			return bad("max_attempts must be in [1, %d]", MaxAttemptsLimit)
		case e.BackoffBase <= 0 || e.BackoffMax < e.BackoffBase || e.BackoffMax > MaxBackoff:
			return bad("backoff must satisfy 0 < backoff_base <= backoff_max <= %v", MaxBackoff)
		case e.QueueSize < 1 || e.QueueSize > MaxQueueSize:
			return bad("queue_size must be in [1, %d]", MaxQueueSize)
		}
	}
	return nil
}

// Wants reports whether the endpoint takes p.
func (e *Endpoint) Wants(p Payload) bool {
	if !p.Allowed && e.AllowedOnly {
		return false
	}
	if len(e.Actions) > 0 && !contains(e.Actions, p.Action) {
		return false
	}
	if len(e.Phases) > 0 && !contains(e.Phases, p.ReleasePhase) {
		return false
	}
	return true
}
