package gate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/aerodb/authority/pipeline/alert"
)

// AlertName is the alertname label of a failed gate's alert.
const AlertName = "DeployHealthGateFailed"

// Alert posting bounds.
const (
	AlertTimeout  = 10 * time.Second
	AlertAttempts = 3
)

// Result is one service's outcome.
type Result struct {
	Name   string
	Type   string
	Passed bool
	// Attempts is the number of attempts started (0 when the service could
	// not be tried, e.g. a password variable is unset).
	Attempts int
	// Error is why the last attempt failed (bounded, secrets redacted).
	Error    string
	Duration time.Duration
	// Output is a command gate's last output (its tail, bounded, secrets
	// redacted).
	Output string
}

// MarshalJSON writes the result with its duration in milliseconds.
func (r Result) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Name       string `json:"name"`
		Type       string `json:"type"`
		Passed     bool   `json:"passed"`
		Attempts   int    `json:"attempts"`
		Error      string `json:"error,omitempty"`
		DurationMS int64  `json:"duration_ms"`
		Output     string `json:"output,omitempty"`
	}{r.Name, r.Type, r.Passed, r.Attempts, r.Error, r.Duration.Milliseconds(), r.Output})
}

// AlertOutcome is what happened to the failure alert.
type AlertOutcome struct {
	// URL is the webhook without credentials or query.
	URL    string `json:"url"`
	Alerts int    `json:"alerts"`
	Posted bool   `json:"posted"`
	Error  string `json:"error,omitempty"`
}

// Report is the outcome of all gates, services in config order.
type Report struct {
	// Passed: every service passed (false with no services).
	Passed    bool
	Env       string
	Domain    string
	DeployID  string
	StartedAt time.Time
	Duration  time.Duration
	Services  []Result
	// Alert is set when an alert was due (a gate failed and a webhook is
	// configured); a failed post does not change Passed.
	Alert *AlertOutcome
}

// Failed is the names of the services that failed, in config order.
func (r Report) Failed() []string {
	var out []string
	for _, s := range r.Services {
		if !s.Passed {
			out = append(out, s.Name)
		}
	}
	return out
}

// MarshalJSON writes the report with fixed field order, times in UTC.
func (r Report) MarshalJSON() ([]byte, error) {
	failed := r.Failed()
	if failed == nil {
		failed = []string{}
	}
	services := r.Services
	if services == nil {
		services = []Result{}
	}
	return json.Marshal(struct {
		Passed     bool          `json:"passed"`
		Env        string        `json:"env,omitempty"`
		Domain     string        `json:"domain,omitempty"`
		DeployID   string        `json:"deploy_id,omitempty"`
		StartedAt  string        `json:"started_at"`
		DurationMS int64         `json:"duration_ms"`
		Failed     []string      `json:"failed"`
		Services   []Result      `json:"services"`
		Alert      *AlertOutcome `json:"alert,omitempty"`
	}{r.Passed, r.Env, r.Domain, r.DeployID, r.StartedAt.UTC().Format(time.RFC3339Nano),
		r.Duration.Milliseconds(), failed, services, r.Alert})
}

// Run checks every service (at most cfg.Concurrency at once), each within
// its own timeout, and returns the report. When a gate failed and
// cfg.AlertWebhook is set it posts FailureAlerts there (bounded by
// AlertTimeout and AlertAttempts, even when ctx is cancelled), recording
// the outcome in Report.Alert. Cancelling ctx fails the gates not yet
// passed.
func Run(ctx context.Context, cfg Config) Report {
	rep := Report{Env: cfg.Env, Domain: cfg.Domain, DeployID: cfg.DeployID, StartedAt: time.Now()}
	rep.Services = make([]Result, len(cfg.Services))
	conc := cfg.Concurrency
	if conc <= 0 {
		conc = DefaultConcurrency
	}
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for i, s := range cfg.Services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			rep.Services[i] = runService(ctx, s, os.Getenv)
		}()
	}
	wg.Wait()
	rep.Duration = time.Since(rep.StartedAt)
	rep.Passed = len(rep.Services) > 0 && len(rep.Failed()) == 0
	if !rep.Passed && cfg.AlertWebhook != "" {
		alerts := FailureAlerts(cfg, rep)
		out := &AlertOutcome{URL: alert.Redact(cfg.AlertWebhook), Alerts: len(alerts)}
		if len(alerts) > 0 {
			pctx := context.WithoutCancel(ctx)
			err := alert.PostWithOptions(pctx, cfg.AlertWebhook, alerts, alert.Options{Timeout: AlertTimeout, Attempts: AlertAttempts})
			out.Posted = err == nil
			if err != nil {
				out.Error = clip(err.Error(), MaxErrorBytes)
			}
		}
		rep.Alert = out
	}
	return rep
}

// FailureAlerts is one alert per failed service of rep: labels alertname
// (AlertName), severity, env, domain, deploy_id, service (empty ones left
// out); annotations summary and description; StartsAt the report's start.
func FailureAlerts(cfg Config, rep Report) []alert.Alert {
	sev := map[string]string{}
	for _, s := range cfg.Services {
		sev[s.Name] = s.Severity
	}
	var out []alert.Alert
	for _, r := range rep.Services {
		if r.Passed {
			continue
		}
		severity := sev[r.Name]
		if severity == "" {
			severity = cfg.Severity
		}
		if severity == "" {
			severity = DefaultSeverity
		}
		labels := map[string]string{"alertname": AlertName, "severity": severity, "service": r.Name}
		for k, v := range map[string]string{"env": rep.Env, "domain": rep.Domain, "deploy_id": rep.DeployID} {
			if v != "" {
				labels[k] = v
			}
		}
		deploy := rep.DeployID
		if deploy == "" {
			deploy = "(no deploy id)"
		}
		where := ""
		if rep.Env != "" {
			where = " in " + rep.Env
		}
		out = append(out, alert.Alert{
			Labels: labels,
			Annotations: map[string]string{
				"summary": fmt.Sprintf("Health gate %s failed for deploy %s%s: rollback required", r.Name, deploy, where),
				"description": fmt.Sprintf("%s gate %q (%s): %s",
					r.Type, r.Name, r.Duration.Round(time.Millisecond), r.Error),
			},
			StartsAt: rep.StartedAt,
		})
	}
	return out
}

// checker is one prepared check; run is one attempt. output is what a
// command printed ("" for other checks).
type checker interface {
	run(ctx context.Context) (output string, err error)
	close()
}

// runService tries s until it passes, its retries are spent or its timeout
// is reached.
func runService(ctx context.Context, s Service, getenv func(string) string) Result {
	start := time.Now()
	res := Result{Name: s.Name, Type: s.Type()}
	s.Policy = s.Policy.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	chk, secrets, err := prepare(s, getenv)
	if err != nil {
		res.Error = sanitize(err.Error(), secrets)
		res.Duration = time.Since(start)
		return res
	}
	defer chk.close()
	backoff := s.Backoff.Initial
	var last error
	stop := ""
	for attempt := 1; attempt <= s.Retries+1; attempt++ {
		if attempt > 1 {
			if dl, ok := ctx.Deadline(); ok && time.Until(dl) < backoff {
				stop = fmt.Sprintf("timeout %v would pass before attempt %d", s.Timeout, attempt)
				break
			}
			if !wait(ctx, backoff) {
				break
			}
			backoff = min(time.Duration(float64(backoff)*s.Backoff.Multiplier), s.Backoff.Max)
		}
		actx, acancel := context.WithTimeout(ctx, s.AttemptTimeout)
		out, err := chk.run(actx)
		attemptErr := actx.Err()
		acancel()
		res.Attempts = attempt
		res.Output = out
		if err == nil {
			res.Passed = true
			break
		}
		if attemptErr != nil && ctx.Err() == nil {
			err = fmt.Errorf("attempt timed out after %v: %w", s.AttemptTimeout, err)
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	res.Duration = time.Since(start)
	if !res.Passed {
		msg := fmt.Sprintf("failed after %d attempt(s)", res.Attempts)
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded) || stop != "":
			if stop == "" {
				stop = fmt.Sprintf("timeout %v reached", s.Timeout)
			}
			msg = fmt.Sprintf("%s after %d attempt(s)", stop, res.Attempts)
		case ctx.Err() != nil:
			msg = fmt.Sprintf("cancelled after %d attempt(s)", res.Attempts)
		}
		if last != nil {
			msg += ": " + last.Error()
		}
		res.Error = sanitize(msg, secrets)
	}
	res.Output = redact(res.Output, secrets)
	return res
}

func (p Policy) withDefaults() Policy {
	if p.Timeout <= 0 {
		p.Timeout = DefaultTimeout
	}
	if p.AttemptTimeout <= 0 || p.AttemptTimeout > p.Timeout {
		p.AttemptTimeout = min(DefaultAttemptTimeout, p.Timeout)
	}
	if p.Retries < 0 {
		p.Retries = 0
	}
	if p.Backoff.Initial <= 0 {
		p.Backoff.Initial = DefaultBackoffInitial
	}
	if p.Backoff.Max < p.Backoff.Initial {
		p.Backoff.Max = max(DefaultBackoffMax, p.Backoff.Initial)
	}
	if p.Backoff.Multiplier < 1 {
		p.Backoff.Multiplier = DefaultBackoffMultiplier
	}
	return p
}

// wait sleeps d unless ctx ends first; it reports whether d passed.
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// prepare resolves s's secrets from the environment and builds its
// checker. secrets are the values to redact from anything reported.
func prepare(s Service, getenv func(string) string) (checker, []string, error) {
	var secrets []string
	secret := func(field, name string) (string, error) {
		if name == "" {
			return "", nil
		}
		v := getenv(name)
		if v == "" {
			return "", fmt.Errorf("environment variable %s (%s) is not set", name, field)
		}
		secrets = append(secrets, v)
		return v, nil
	}
	switch {
	case s.HTTP != nil:
		hdr := map[string]string{}
		for k, env := range s.HTTP.SecretHeaders {
			v, err := secret("http.secret_headers."+k, env)
			if err != nil {
				return nil, secrets, err
			}
			hdr[k] = v
		}
		c, err := newHTTPChecker(s.HTTP, hdr)
		return c, secrets, err
	case s.Postgres != nil:
		pw, err := secret("postgres.password_env", s.Postgres.PasswordEnv)
		if err != nil {
			return nil, secrets, err
		}
		c, err := newPostgresChecker(s.Postgres, pw)
		return c, secrets, err
	case s.Redis != nil:
		pw, err := secret("redis.password_env", s.Redis.PasswordEnv)
		if err != nil {
			return nil, secrets, err
		}
		return newRedisChecker(s.Redis, pw, s.AttemptTimeout), secrets, nil
	case s.Command != nil:
		return newCommandChecker(s.Command), secrets, nil
	}
	return nil, secrets, errors.New("no check configured")
}

// redact replaces every secret value in s.
func redact(s string, secrets []string) string {
	for _, v := range secrets {
		if v != "" {
			s = strings.ReplaceAll(s, v, "[REDACTED]")
		}
	}
	return s
}

// sanitize is redact, then control characters replaced and the length
// bounded by MaxErrorBytes.
func sanitize(s string, secrets []string) string {
	return clip(printable(redact(s, secrets)), MaxErrorBytes)
}

// printable replaces control characters and invalid UTF-8 with spaces.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// clip cuts s to at most n bytes on a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}
