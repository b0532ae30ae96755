// Package burnrate is the rollback engine's measurement: multi-window,
// multi-burn-rate SLO rules (the Google SRE workbook's alerting, chapter 5)
// evaluated over Prometheus' HTTP API, and the error budget left.
//
// A rule fires when the error budget burns at least Factor times faster
// than the objective allows over BOTH its long and its short window: the
// long window gives significance, the short one makes the rule reset
// quickly once the burn stops. The defaults are the workbook's paging
// rules (14.4× over 1 h and 5 m; 6× over 6 h and 30 m); tests and the
// canary's analysis use compressed windows.
package burnrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aerodb/authority/release/analysis"
)

// Bounds.
const (
	MaxRules         = 16
	MaxQueryBytes    = 4096
	MaxResponseBytes = 1 << 20
	MaxWindow        = 90 * 24 * time.Hour
	WindowVar        = "$window" // replaced in the error-ratio query by a window, e.g. 5m
)

// Rule is one multi-window burn-rate rule.
type Rule struct {
	Name   string            `yaml:"name"`
	Factor float64           `yaml:"factor"` // burn rate: error ratio / (1 − objective)
	Long   analysis.Duration `yaml:"long"`
	Short  analysis.Duration `yaml:"short"`
}

// DefaultRules are the workbook's page rules: 14.4× over 1 h and 5 m (2 %
// of a 30-day budget in an hour), 6× over 6 h and 30 m (5 % in 6 hours).
func DefaultRules() []Rule {
	return []Rule{
		{Name: "fast", Factor: 14.4, Long: analysis.Duration(time.Hour), Short: analysis.Duration(5 * time.Minute)},
		{Name: "slow", Factor: 6, Long: analysis.Duration(6 * time.Hour), Short: analysis.Duration(30 * time.Minute)},
	}
}

// Compress divides every window of rules by f (at least 1 s each): the same
// rules on a test's time scale.
func Compress(rules []Rule, f float64) []Rule {
	out := make([]Rule, len(rules))
	for i, r := range rules {
		r.Long = analysis.Duration(max(time.Second, time.Duration(float64(r.Long)/f)).Round(time.Second))
		r.Short = analysis.Duration(max(time.Second, time.Duration(float64(r.Short)/f)).Round(time.Second))
		out[i] = r
	}
	return out
}

// SLO is what the rules are evaluated on.
type SLO struct {
	// Objective is the success ratio promised, e.g. 0.999 (budget 0.1 %).
	Objective float64 `yaml:"objective"`
	// ErrorRatio is a PromQL query of the error ratio over $window, e.g.
	// sum(rate(errors_total[$window])) / sum(rate(requests_total[$window])).
	ErrorRatio string `yaml:"errorRatio"`
	// Rules (DefaultRules when empty).
	Rules []Rule `yaml:"rules"`
	// BudgetWindow is the SLO period the budget is measured over (30 days
	// when zero).
	BudgetWindow analysis.Duration `yaml:"budgetWindow"`
}

// Validate returns every problem at once.
func (s *SLO) Validate() error {
	var errs []error
	if !(s.Objective > 0 && s.Objective < 1) {
		errs = append(errs, fmt.Errorf("objective %v: want 0 < objective < 1", s.Objective))
	}
	switch {
	case s.ErrorRatio == "":
		errs = append(errs, errors.New("errorRatio: required (a PromQL error ratio over $window)"))
	case len(s.ErrorRatio) > MaxQueryBytes:
		errs = append(errs, fmt.Errorf("errorRatio: %d bytes exceeds %d", len(s.ErrorRatio), MaxQueryBytes))
	case !strings.Contains(s.ErrorRatio, WindowVar):
		errs = append(errs, fmt.Errorf("errorRatio: must use %s (each rule's windows are substituted)", WindowVar))
	}
	if len(s.Rules) > MaxRules {
		errs = append(errs, fmt.Errorf("rules: %d exceeds %d", len(s.Rules), MaxRules))
	}
	for i, r := range s.Rules {
		if !(r.Factor > 0) || math.IsInf(r.Factor, 0) {
			errs = append(errs, fmt.Errorf("rules[%d] %q: factor %v must be > 0", i, clip(r.Name), r.Factor))
		}
		if r.Short.D() < time.Second || r.Long.D() <= r.Short.D() || r.Long.D() > MaxWindow {
			errs = append(errs, fmt.Errorf("rules[%d] %q: want 1s <= short < long <= %v (short %v, long %v)", i, clip(r.Name), MaxWindow, r.Short.D(), r.Long.D()))
		}
	}
	if b := s.BudgetWindow.D(); b < 0 || b > MaxWindow {
		errs = append(errs, fmt.Errorf("budgetWindow %v: want 0..%v", b, MaxWindow))
	}
	return errors.Join(errs...)
}

func (s *SLO) rules() []Rule {
	if len(s.Rules) == 0 {
		return DefaultRules()
	}
	return s.Rules
}

// Querier runs an instant PromQL query and returns one number; ok is false
// when the answer holds no finite value (no series, NaN from 0/0: no
// traffic), which is never a burn.
type Querier interface {
	Query(ctx context.Context, q string, at time.Time) (v float64, ok bool, err error)
}

// PromWindow formats d as a Prometheus duration (whole seconds).
func PromWindow(d time.Duration) string {
	return strconv.FormatInt(int64(max(time.Second, d).Round(time.Second)/time.Second), 10) + "s"
}

// RuleResult is one rule's evaluation.
type RuleResult struct {
	Rule                Rule
	LongBurn, ShortBurn float64
	LongOK, ShortOK     bool // the window had data
	Firing              bool
}

// Decision is one evaluation of every rule.
type Decision struct {
	At      time.Time
	Firing  bool
	Rule    string // the first firing rule
	Results []RuleResult
}

// Message is one line naming the firing rule, or why nothing fires.
func (d Decision) Message() string {
	var b strings.Builder
	if d.Firing {
		fmt.Fprintf(&b, "burn rate rule %q fired:", d.Rule)
	} else {
		b.WriteString("no burn:")
	}
	for _, r := range d.Results {
		fmt.Fprintf(&b, " %s %.3g×/%v long %s short %s;", r.Rule.Name, r.Rule.Factor, r.Rule.Long.D(), burnText(r.LongBurn, r.LongOK), burnText(r.ShortBurn, r.ShortOK))
	}
	return strings.TrimSuffix(b.String(), ";")
}

func burnText(v float64, ok bool) string {
	if !ok {
		return "no-data"
	}
	return strconv.FormatFloat(v, 'g', 4, 64) + "×"
}

// Evaluate runs every rule at now. A rule fires only when both windows have
// data and both burn at least its factor.
func Evaluate(ctx context.Context, q Querier, s *SLO, now time.Time) (Decision, error) {
	d := Decision{At: now}
	budget := 1 - s.Objective
	ratio := func(w time.Duration) (float64, bool, error) {
		v, ok, err := q.Query(ctx, strings.ReplaceAll(s.ErrorRatio, WindowVar, PromWindow(w)), now)
		if err != nil || !ok {
			return 0, false, err
		}
		return v / budget, true, nil
	}
	for _, r := range s.rules() {
		rr := RuleResult{Rule: r}
		var err error
		if rr.LongBurn, rr.LongOK, err = ratio(r.Long.D()); err != nil {
			return d, fmt.Errorf("rule %q long window: %w", clip(r.Name), err)
		}
		if rr.ShortBurn, rr.ShortOK, err = ratio(r.Short.D()); err != nil {
			return d, fmt.Errorf("rule %q short window: %w", clip(r.Name), err)
		}
		rr.Firing = rr.LongOK && rr.ShortOK && rr.LongBurn >= r.Factor && rr.ShortBurn >= r.Factor
		if rr.Firing && !d.Firing {
			d.Firing, d.Rule = true, r.Name
		}
		d.Results = append(d.Results, rr)
	}
	return d, nil
}

// Remaining is the fraction of the error budget left over the SLO's budget
// window at now: 1 − error ratio / (1 − objective); ≤ 0 is exhausted. No
// data (no traffic) leaves the whole budget.
func Remaining(ctx context.Context, q Querier, s *SLO, now time.Time) (float64, error) {
	w := s.BudgetWindow.D()
	if w == 0 {
		w = 30 * 24 * time.Hour
	}
	v, ok, err := q.Query(ctx, strings.ReplaceAll(s.ErrorRatio, WindowVar, PromWindow(w)), now)
	if err != nil {
		return 0, fmt.Errorf("error budget: %w", err)
	}
	if !ok {
		return 1, nil
	}
	return 1 - v/(1-s.Objective), nil
}

// Prometheus queries a Prometheus server's HTTP API (/api/v1/query). The
// answer must be a scalar or a vector of at most one series.
type Prometheus struct {
	Address string        // http://127.0.0.1:9090
	Timeout time.Duration // per query; 10 s when zero
	Client  *http.Client  // a plain client without redirects when nil
}

var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// Query implements Querier.
func (p *Prometheus) Query(ctx context.Context, q string, at time.Time) (float64, bool, error) {
	if len(q) > MaxQueryBytes {
		return 0, false, fmt.Errorf("query of %d bytes exceeds %d", len(q), MaxQueryBytes)
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	form := url.Values{"query": {q}, "time": {strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)}, "timeout": {PromWindow(timeout)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(p.Address, "/")+"/api/v1/query", strings.NewReader(form.Encode()))
	if err != nil {
		return 0, false, fmt.Errorf("prometheus: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	c := p.Client
	if c == nil {
		c = noRedirects
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, false, fmt.Errorf("prometheus: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return 0, false, fmt.Errorf("prometheus: reading the answer: %w", err)
	}
	if len(body) > MaxResponseBytes {
		return 0, false, fmt.Errorf("prometheus: answer exceeds %d bytes", MaxResponseBytes)
	}
	var ans struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
		Data      struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return 0, false, fmt.Errorf("prometheus: HTTP %d, not its JSON answer", resp.StatusCode)
	}
	if ans.Status != "success" {
		return 0, false, fmt.Errorf("prometheus %s: %s", clip(ans.ErrorType), clip(ans.Error))
	}
	var sample []any
	switch ans.Data.ResultType {
	case "scalar":
		if err := json.Unmarshal(ans.Data.Result, &sample); err != nil {
			return 0, false, fmt.Errorf("prometheus: bad scalar: %w", err)
		}
	case "vector":
		var vec []struct {
			Value []any `json:"value"`
		}
		if err := json.Unmarshal(ans.Data.Result, &vec); err != nil {
			return 0, false, fmt.Errorf("prometheus: bad vector: %w", err)
		}
		switch len(vec) {
		case 0:
			return 0, false, nil
		case 1:
			sample = vec[0].Value
		default:
			return 0, false, fmt.Errorf("prometheus: %d series, want one (aggregate with sum)", len(vec))
		}
	default:
		return 0, false, fmt.Errorf("prometheus: result type %q, want scalar or vector", clip(ans.Data.ResultType))
	}
	if len(sample) != 2 {
		return 0, false, errors.New("prometheus: malformed sample")
	}
	s, _ := sample[1].(string)
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, false, fmt.Errorf("prometheus: sample value %q: %w", clip(s), err)
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, false, nil
	}
	return v, true, nil
}

func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// Clock is release/analysis's clock (RealClock, or VirtualClock in tests).
type Clock = analysis.Clock

// Watch evaluates s at once and then every interval until duration has
// passed (the bake window). It returns the first firing Decision with
// fired true, or the last evaluation with fired false when the window
// passed without a burn. A query error is reported to onError (if set)
// and never fires: errors are not burns. It returns ctx's cause when ctx
// ends first.
func Watch(ctx context.Context, clock Clock, q Querier, s *SLO, duration, interval time.Duration, onError func(error)) (Decision, bool, error) {
	if interval <= 0 || duration <= 0 {
		return Decision{}, false, fmt.Errorf("watch: interval %v and duration %v must be positive", interval, duration)
	}
	end := clock.Now().Add(duration)
	var last Decision
	for {
		now := clock.Now()
		if !now.Before(end) {
			return last, false, nil
		}
		d, err := Evaluate(ctx, q, s, now)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return last, false, context.Cause(ctx)
			}
			if onError != nil {
				onError(err)
			}
		case d.Firing:
			return d, true, nil
		default:
			last = d
		}
		select {
		case <-ctx.Done():
			return last, false, context.Cause(ctx)
		case <-clock.After(interval):
		}
	}
}
