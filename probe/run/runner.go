// Package run executes flows: it renders each step's request, sends it,
// reads a bounded body, extracts variables and evaluates the assertions,
// running shared setup flows (login) once and caching their exports until
// they expire or a 401 asks for one refresh.
package run

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aerodb/authority/probe/clock"
	"github.com/aerodb/authority/probe/flow"
)

// Outcome of a run or a step.
const (
	Pass  = "pass"
	Fail  = "fail"  // an assertion or extraction failed
	Error = "error" // the request could not be made or read (timeout, refused, body too large, setup)
)

// Result is one run of a flow. Every string in it is redacted.
type Result struct {
	Flow      string        `json:"flow"`
	Env       string        `json:"env"`
	RunID     string        `json:"run_id"`
	Scheduled time.Time     `json:"scheduled,omitzero"`
	Start     time.Time     `json:"start"`
	Duration  time.Duration `json:"-"`
	Result    string        `json:"result"`
	Error     string        `json:"error,omitempty"`
	Steps     []StepResult  `json:"steps"`
	// SetupRefreshed is set when a 401 made the run log in again.
	SetupRefreshed bool `json:"setup_refreshed,omitempty"`
}

// Success reports whether the run passed.
func (r *Result) Success() bool { return r.Result == Pass }

// StepResult is one step of a run.
type StepResult struct {
	Name     string        `json:"name"`
	Method   string        `json:"method,omitempty"`
	URL      string        `json:"url,omitempty"`
	Status   int           `json:"status,omitempty"`
	Duration time.Duration `json:"-"`
	Result   string        `json:"result"` // pass, fail, error, or "skipped" (not reached)
	Attempts int           `json:"attempts,omitempty"`
	Error    string        `json:"error,omitempty"`
	Failures []Failure     `json:"failures,omitempty"`
}

// Skipped marks a step not reached because an earlier one failed.
const Skipped = "skipped"

// Failure is one failed assertion with the values it saw.
type Failure struct {
	Assertion string          `json:"assertion"`
	Observed  []flow.Observed `json:"observed,omitempty"`
	Error     string          `json:"error,omitempty"`
}

// Event is a setup event (login, refresh) for the event stream.
type Event struct {
	Time   time.Time `json:"time"`
	Type   string    `json:"type"` // setup_login, setup_refresh, setup_error
	Setup  string    `json:"setup"`
	Flow   string    `json:"flow,omitempty"`
	Error  string    `json:"error,omitempty"`
	Expiry time.Time `json:"expiry,omitzero"`
}

// Options configure a Runner.
type Options struct {
	Config *flow.Config
	Env    string
	// BaseURL overrides the environment's base_url (run --once against
	// another target).
	BaseURL string
	// LookupEnv resolves secret references; os.LookupEnv by default.
	LookupEnv func(string) (string, bool)
	Client    *http.Client
	Clock     clock.Clock
	// OnEvent receives setup events (may be nil).
	OnEvent func(Event)
}

// Runner runs the flows of one environment. It is safe for concurrent use.
type Runner struct {
	cfg      *flow.Config
	env      string
	baseURL  string
	vars     map[string]string
	secrets  map[string]string
	client   *http.Client
	clock    clock.Clock
	onEvent  func(Event)
	redactor *Redactor
	steps    map[*flow.Step]*compiledStep
	setups   map[string]*setupState
	runSeq   atomic.Uint64

	logins, refreshes atomic.Uint64
}

type compiledStep struct {
	url     *flow.Template
	headers map[string]*flow.Template
	body    *flow.Template
	asserts []*flow.Assertion
	extract []compiledExtraction
	timeout time.Duration
}

type compiledExtraction struct {
	x    *flow.Extraction
	path *flow.JSONPath
	re   *regexp.Regexp
}

type setupState struct {
	mu      sync.Mutex // one login at a time per setup
	setup   *flow.Setup
	vars    map[string]string
	expires time.Time
	gen     uint64
	valid   bool
}

// New resolves the environment (a missing secret is an error naming the
// environment variable, never a value) and compiles every step.
func New(o Options) (*Runner, error) {
	e := o.Config.Environments[o.Env]
	if e == nil {
		return nil, fmt.Errorf("unknown environment %q", o.Env)
	}
	if o.LookupEnv == nil {
		o.LookupEnv = os.LookupEnv
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Client == nil {
		o.Client = &http.Client{}
	}
	// Never follow redirects silently: a step sees the 3xx and can assert
	// on it (and a redirect cannot carry secrets to another host).
	client := *o.Client
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	r := &Runner{
		cfg: o.Config, env: o.Env, baseURL: strings.TrimRight(e.BaseURL, "/"),
		vars: map[string]string{}, secrets: map[string]string{},
		client: &client, clock: o.Clock, onEvent: o.OnEvent, redactor: NewRedactor(),
		steps: map[*flow.Step]*compiledStep{}, setups: map[string]*setupState{},
	}
	if o.BaseURL != "" {
		r.baseURL = strings.TrimRight(o.BaseURL, "/")
	}
	for k, v := range e.Variables {
		r.vars[k] = v
	}
	var missing []string
	for name, ref := range e.Secrets {
		v, ok := o.LookupEnv(ref.Env)
		if !ok || v == "" {
			missing = append(missing, fmt.Sprintf("%s (secret %s)", ref.Env, name))
			continue
		}
		r.secrets[name] = v
		r.redactor.Add(v)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("environment %q: unset environment variables: %s", o.Env, strings.Join(missing, ", "))
	}
	compile := func(steps []*flow.Step) error {
		for _, s := range steps {
			cs, err := compileStep(s, o.Config.Limits)
			if err != nil {
				return fmt.Errorf("step %q: %w", s.Name, err)
			}
			r.steps[s] = cs
		}
		return nil
	}
	for name, s := range o.Config.Setups {
		if err := compile(s.Steps); err != nil {
			return nil, fmt.Errorf("setup %s: %w", name, err)
		}
		r.setups[name] = &setupState{setup: s}
	}
	for _, f := range o.Config.Flows {
		if err := compile(f.Steps); err != nil {
			return nil, fmt.Errorf("flow %s: %w", f.Name, err)
		}
	}
	return r, nil
}

// Redactor returns the runner's redactor (secrets and secret extractions).
func (r *Runner) Redactor() *Redactor { return r.redactor }

// Env returns the environment name.
func (r *Runner) Env() string { return r.env }

// Logins and Refreshes count setup logins (a refresh is also a login).
func (r *Runner) Logins() uint64    { return r.logins.Load() }
func (r *Runner) Refreshes() uint64 { return r.refreshes.Load() }

func compileStep(s *flow.Step, l flow.Limits) (*compiledStep, error) {
	cs := &compiledStep{headers: map[string]*flow.Template{}, timeout: s.Request.Timeout.D()}
	if cs.timeout == 0 {
		cs.timeout = l.StepTimeout.D()
	}
	var err error
	if cs.url, err = flow.ParseTemplate(s.Request.URL); err != nil {
		return nil, err
	}
	for k, v := range s.Request.Headers {
		if cs.headers[k], err = flow.ParseTemplate(v); err != nil {
			return nil, err
		}
	}
	if cs.body, err = flow.ParseTemplate(s.Request.Body); err != nil {
		return nil, err
	}
	for _, src := range s.Assert {
		a, err := flow.CompileAssertion(src)
		if err != nil {
			return nil, err
		}
		cs.asserts = append(cs.asserts, a)
	}
	for _, x := range s.Extract {
		ce := compiledExtraction{x: x}
		if x.JSON != "" {
			if ce.path, err = flow.ParseJSONPath(x.JSON); err != nil {
				return nil, err
			}
		}
		if x.Regexp != "" {
			if ce.re, err = regexp.Compile(x.Regexp); err != nil {
				return nil, err
			}
		}
		cs.extract = append(cs.extract, ce)
	}
	return cs, nil
}

// Run runs flow f once. scheduled is the time it was due (zero for ad hoc).
func (r *Runner) Run(ctx context.Context, f *flow.Flow, scheduled time.Time) *Result {
	timeout := f.Timeout.D()
	if timeout == 0 || timeout > r.cfg.Limits.FlowTimeout.D() {
		timeout = r.cfg.Limits.FlowTimeout.D()
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res := &Result{Flow: f.Name, Env: r.env, Scheduled: scheduled, Start: r.clock.Now(),
		RunID: fmt.Sprintf("%s-%d", f.Name, r.runSeq.Add(1))}
	defer func() { res.Duration = r.clock.Now().Sub(res.Start) }()
	vars := map[string]string{"base_url": r.baseURL, "env": r.env, "run_id": res.RunID}
	for k, v := range r.vars {
		vars[k] = v
	}
	for k, v := range f.Variables {
		vars[k] = v
	}
	var st *setupState
	var gen uint64
	applySetup := func(refresh bool) error {
		sv, g, err := r.setupVars(ctx, st, gen, refresh, f.Name)
		if err != nil {
			return err
		}
		gen = g
		for k, v := range sv {
			vars[k] = v
		}
		return nil
	}
	if f.Setup != "" {
		st = r.setups[f.Setup]
		if err := applySetup(false); err != nil {
			res.Result = Error
			res.Error = r.redactor.String(fmt.Sprintf("setup %q: %v", f.Setup, err))
			for _, s := range f.Steps {
				res.Steps = append(res.Steps, StepResult{Name: s.Name, Result: Skipped})
			}
			return res
		}
	}
	res.Result = Pass
	refreshed := false
	for i, s := range f.Steps {
		sr := r.step(ctx, s, vars)
		if sr.Status == http.StatusUnauthorized && st != nil && !refreshed {
			// The cached session expired early: log in again, once per
			// run, and replay this step.
			refreshed = true
			res.SetupRefreshed = true
			if err := applySetup(true); err != nil {
				sr.Result = Error
				sr.Error = r.redactor.String(fmt.Sprintf("401, and refreshing setup %q failed: %v", f.Setup, err))
			} else {
				sr = r.step(ctx, s, vars)
				sr.Attempts = 2
			}
		}
		res.Steps = append(res.Steps, sr)
		if sr.Result != Pass {
			res.Result = sr.Result
			res.Error = fmt.Sprintf("step %q: %s", s.Name, sr.Summary())
			for _, rest := range f.Steps[i+1:] {
				res.Steps = append(res.Steps, StepResult{Name: rest.Name, Result: Skipped})
			}
			break
		}
	}
	return res
}

// Summary is a one-line explanation of a failed step: the assertion and
// the observed values, or the error.
func (sr *StepResult) Summary() string {
	if sr.Error != "" {
		return sr.Error
	}
	var parts []string
	for _, f := range sr.Failures {
		s := fmt.Sprintf("assertion %q failed", f.Assertion)
		if f.Error != "" {
			s += ": " + f.Error
		}
		var obs []string
		for _, o := range f.Observed {
			obs = append(obs, o.Expr+" = "+o.Value)
		}
		if len(obs) > 0 {
			s += " (observed " + strings.Join(obs, ", ") + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// setupVars returns the cached exports of a setup, logging in when there is
// no valid entry, or when refresh is set and the entry is still the one
// (gen) that got the 401, so concurrent flows refresh only once.
func (r *Runner) setupVars(ctx context.Context, st *setupState, gen uint64, refresh bool, flowName string) (map[string]string, uint64, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	now := r.clock.Now()
	if st.valid && now.Before(st.expires) && !(refresh && st.gen == gen) {
		return st.vars, st.gen, nil
	}
	vars := map[string]string{"base_url": r.baseURL, "env": r.env, "run_id": "setup-" + st.setup.Name}
	for k, v := range r.vars {
		vars[k] = v
	}
	r.logins.Add(1)
	typ := "setup_login"
	if refresh {
		r.refreshes.Add(1)
		typ = "setup_refresh"
	}
	for _, s := range st.setup.Steps {
		sr := r.step(ctx, s, vars)
		if sr.Result != Pass {
			st.valid = false
			err := fmt.Errorf("step %q: %s", s.Name, sr.Summary())
			r.emit(Event{Time: r.clock.Now(), Type: "setup_error", Setup: st.setup.Name, Flow: flowName, Error: r.redactor.String(err.Error())})
			return nil, 0, err
		}
	}
	exports := map[string]string{}
	for _, k := range st.setup.Exports {
		exports[k] = vars[k]
	}
	ttl := st.setup.Cache.TTL.D()
	if v := st.setup.Cache.ExpiresInVar; v != "" {
		if secs, err := strconv.ParseFloat(vars[v], 64); err == nil && secs > 0 {
			d := time.Duration(secs * float64(time.Second))
			if ttl == 0 || d < ttl {
				ttl = d
			}
		}
	}
	st.vars, st.expires, st.valid = exports, r.clock.Now().Add(ttl), true
	st.gen++
	r.emit(Event{Time: r.clock.Now(), Type: typ, Setup: st.setup.Name, Flow: flowName, Expiry: st.expires})
	return st.vars, st.gen, nil
}

func (r *Runner) emit(e Event) {
	if r.onEvent != nil {
		r.onEvent(e)
	}
}

// ErrBodyTooLarge is a response body over limits.max_body_bytes.
var ErrBodyTooLarge = errors.New("response body too large")

func (r *Runner) step(ctx context.Context, s *flow.Step, vars map[string]string) StepResult {
	cs := r.steps[s]
	sr := StepResult{Name: s.Name, Method: s.Request.Method, Attempts: 1}
	lookup := func(ref string) (string, bool) {
		if name, ok := strings.CutPrefix(ref, "secrets."); ok {
			v, ok := r.secrets[name]
			return v, ok
		}
		v, ok := vars[ref]
		return v, ok
	}
	fail := func(kind, format string, args ...any) StepResult {
		sr.Result = kind
		sr.Error = r.redactor.String(fmt.Sprintf(format, args...))
		return sr
	}
	u, err := cs.url.Render(lookup)
	if err != nil {
		return fail(Error, "url: %v", err)
	}
	if strings.HasPrefix(u, "/") {
		u = r.baseURL + u
	}
	sr.URL = r.redactor.String(u)
	var body io.Reader
	if s.Request.Body != "" {
		b, err := cs.body.Render(lookup)
		if err != nil {
			return fail(Error, "body: %v", err)
		}
		body = strings.NewReader(b)
	}
	sctx, cancel := context.WithTimeout(ctx, cs.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(sctx, s.Request.Method, u, body)
	if err != nil {
		return fail(Error, "request: %v", err)
	}
	for k, t := range cs.headers {
		v, err := t.Render(lookup)
		if err != nil {
			return fail(Error, "header %s: %v", k, err)
		}
		if strings.EqualFold(k, "host") {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	start := r.clock.Now()
	resp, err := r.client.Do(req)
	if err != nil {
		sr.Duration = r.clock.Now().Sub(start)
		return fail(Error, "%s %s: %v", s.Request.Method, sr.URL, unwrapURLError(err))
	}
	limit := r.cfg.Limits.MaxBodyBytes
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	resp.Body.Close()
	sr.Duration = r.clock.Now().Sub(start)
	sr.Status = resp.StatusCode
	if err != nil {
		return fail(Error, "reading body: %v", err)
	}
	if int64(len(data)) > limit {
		return fail(Error, "%v: more than %d bytes (limits.max_body_bytes)", ErrBodyTooLarge, limit)
	}
	env := &flow.AssertEnv{
		Status: resp.StatusCode, LatencyMS: float64(sr.Duration) / float64(time.Millisecond),
		Headers: map[string]string{}, Body: string(data), Vars: vars,
	}
	for k, v := range resp.Header {
		env.Headers[strings.ToLower(k)] = strings.Join(v, ", ")
	}
	trim := bytes.TrimSpace(data)
	if len(trim) > 0 && (trim[0] == '{' || trim[0] == '[') {
		var j any
		if json.Unmarshal(trim, &j) == nil {
			env.JSON = j
		}
	}
	// A 401 is returned to the caller before extraction so it can refresh
	// the session and replay the step.
	var failures []Failure
	for _, ce := range cs.extract {
		v, ok := extract(ce, resp, env)
		if !ok {
			failures = append(failures, Failure{Assertion: "extract " + ce.x.Var, Error: r.redactor.String("not found: " + describe(ce.x))})
			continue
		}
		if ce.x.Secret {
			r.redactor.Add(v)
		}
		vars[ce.x.Var] = v
	}
	for _, a := range cs.asserts {
		ok, obs, err := a.Eval(env)
		if ok {
			continue
		}
		f := Failure{Assertion: a.Src}
		if err != nil {
			f.Error = r.redactor.String(err.Error())
		}
		for _, o := range obs {
			f.Observed = append(f.Observed, flow.Observed{Expr: o.Expr, Value: r.redactor.String(o.Value)})
		}
		failures = append(failures, f)
	}
	sr.Failures = failures
	if len(failures) > 0 {
		sr.Result = Fail
	} else {
		sr.Result = Pass
	}
	return sr
}

func unwrapURLError(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) && ue.Unwrap() != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return errors.New("timeout")
		}
		return ue.Unwrap()
	}
	return err
}

func describe(x *flow.Extraction) string {
	switch {
	case x.JSON != "":
		return "json " + x.JSON
	case x.Header != "":
		return "header " + x.Header
	case x.Cookie != "":
		return "cookie " + x.Cookie
	}
	return "regexp " + x.Regexp
}

func extract(ce compiledExtraction, resp *http.Response, env *flow.AssertEnv) (string, bool) {
	x := ce.x
	switch {
	case ce.path != nil:
		if env.JSON == nil {
			return "", false
		}
		v, ok := ce.path.Eval(env.JSON)
		if !ok {
			return "", false
		}
		return flow.Stringify(v), true
	case x.Header != "":
		v := resp.Header.Get(x.Header)
		return v, v != ""
	case x.Cookie != "":
		for _, c := range resp.Cookies() {
			if c.Name == x.Cookie {
				return c.Value, true
			}
		}
		return "", false
	case ce.re != nil:
		m := ce.re.FindStringSubmatch(env.Body)
		if m == nil {
			return "", false
		}
		if len(m) > 1 {
			return m[1], true
		}
		return m[0], true
	}
	return "", false
}
