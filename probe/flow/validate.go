package flow

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"
)

var (
	identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	nameRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$`)
	methods = map[string]bool{http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
		http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true}
)

// DefaultSLOWindow is the window of an SLO that names none.
const DefaultSLOWindow = 30 * 24 * time.Hour

func validate(cfg *Config) Diags {
	var ds Diags
	add := func(p Pos, format string, args ...any) { ds = append(ds, Diag{p, fmt.Sprintf(format, args...)}) }
	limitsPos := Pos{}
	if len(cfg.Files) > 0 {
		limitsPos.File = cfg.Files[0]
	}
	l := &cfg.Limits
	switch {
	case l.MaxBodyBytes == 0:
		l.MaxBodyBytes = DefaultMaxBodyBytes
	case l.MaxBodyBytes < 0 || l.MaxBodyBytes > CapMaxBodyBytes:
		add(limitsPos, "limits.max_body_bytes: %d is outside 1..%d", l.MaxBodyBytes, CapMaxBodyBytes)
	}
	switch {
	case l.MaxSteps == 0:
		l.MaxSteps = DefaultMaxSteps
	case l.MaxSteps < 0 || l.MaxSteps > CapMaxSteps:
		add(limitsPos, "limits.max_steps: %d is outside 1..%d", l.MaxSteps, CapMaxSteps)
	}
	switch {
	case l.StepTimeout == 0:
		l.StepTimeout = Duration(DefaultStepTimeout)
	case l.StepTimeout.D() > CapStepTimeout:
		add(limitsPos, "limits.step_timeout: %s is more than the %s cap", l.StepTimeout, CapStepTimeout)
	}
	switch {
	case l.FlowTimeout == 0:
		l.FlowTimeout = Duration(DefaultFlowTimeout)
	case l.FlowTimeout.D() > CapFlowTimeout:
		add(limitsPos, "limits.flow_timeout: %s is more than the %s cap", l.FlowTimeout, CapFlowTimeout)
	}

	envNames := sortedKeys(cfg.Environments)
	for _, name := range envNames {
		e := cfg.Environments[name]
		if e == nil {
			continue
		}
		if !nameRE.MatchString(name) {
			add(e.Pos, "environment name %q: use letters, digits, '.', '_' and '-'", name)
		}
		if u, err := url.Parse(e.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add(e.Pos, "environment %q: base_url %q must be an absolute http(s) URL", name, e.BaseURL)
		}
		for _, v := range sortedKeys(e.Variables) {
			if !identRE.MatchString(v) {
				add(e.Pos, "environment %q: variable name %q is not an identifier", name, v)
			}
			if isBuiltin(v) {
				add(e.Pos, "environment %q: variable %q shadows a built-in", name, v)
			}
		}
		for _, s := range sortedKeys(e.Secrets) {
			if !identRE.MatchString(s) {
				add(e.Pos, "environment %q: secret name %q is not an identifier", name, s)
			}
			if !identRE.MatchString(e.Secrets[s].Env) {
				add(e.Pos, "environment %q: secret %q needs env: NAME of an environment variable", name, s)
			}
		}
	}

	// Which environments use each setup (for its variable checks).
	setupEnvs := map[string][]string{}
	for _, f := range cfg.Flows {
		if f != nil && f.Setup != "" {
			setupEnvs[f.Setup] = append(setupEnvs[f.Setup], flowEnvs(cfg, f)...)
		}
	}
	setupExports := map[string]map[string]bool{}
	for _, name := range sortedKeys(cfg.Setups) {
		s := cfg.Setups[name]
		if s == nil {
			continue
		}
		if !identRE.MatchString(name) && !nameRE.MatchString(name) {
			add(s.Pos, "setup name %q: use letters, digits, '.', '_' and '-'", name)
		}
		envs := uniq(setupEnvs[name])
		if len(envs) == 0 {
			envs = envNames
		}
		sc := &scope{cfg: cfg, envs: envs, vars: map[string]bool{}}
		extracted, _ := validateSteps(cfg, "setup "+name, s.Pos, s.Steps, sc, add)
		if len(s.Steps) == 0 {
			add(s.Pos, "setup %q has no steps", name)
		}
		exp := map[string]bool{}
		for _, x := range s.Exports {
			if !extracted[x] {
				add(s.Pos, "setup %q exports %q, which none of its steps extracts", name, x)
			}
			exp[x] = true
		}
		setupExports[name] = exp
		if s.Cache.TTL == 0 && s.Cache.ExpiresInVar == "" {
			add(s.Pos, "setup %q: cache needs ttl or expires_in_var (how long the login stays valid)", name)
		}
		if s.Cache.ExpiresInVar != "" && !extracted[s.Cache.ExpiresInVar] {
			add(s.Pos, "setup %q: cache.expires_in_var %q is not extracted by its steps", name, s.Cache.ExpiresInVar)
		}
	}

	flowNames := map[string]*Flow{}
	for _, f := range cfg.Flows {
		if f == nil {
			continue
		}
		if !nameRE.MatchString(f.Name) {
			add(f.Pos, "flow name %q: required; use letters, digits, '.', '_' and '-'", f.Name)
		} else if prev, ok := flowNames[f.Name]; ok {
			add(f.Pos, "flow %q already defined at %s", f.Name, prev.Pos)
		} else {
			flowNames[f.Name] = f
		}
		what := "flow " + f.Name
		for _, e := range f.Environments {
			if _, ok := cfg.Environments[e]; !ok {
				add(f.Pos, "%s: unknown environment %q", what, e)
			}
		}
		if len(cfg.Environments) == 0 {
			add(f.Pos, "%s: no environments are defined (environments: in this or a shared file)", what)
		}
		every := f.Schedule.Every.D()
		if every == 0 {
			add(f.Pos, "%s: schedule.every is required", what)
		} else if every < MinInterval {
			add(f.Pos, "%s: schedule.every %s is shorter than %s", what, every, MinInterval)
		}
		if f.Timeout.D() > CapFlowTimeout {
			add(f.Pos, "%s: timeout %s is more than the %s cap", what, f.Timeout, CapFlowTimeout)
		}
		if f.Verdict.MinSamples < 0 {
			add(f.Pos, "%s: verdict.min_samples must be >= 0", what)
		}
		if f.Verdict.MinSuccessRatio < 0 || f.Verdict.MinSuccessRatio > 1 {
			add(f.Pos, "%s: verdict.min_success_ratio must be within 0..1", what)
		}
		if f.Verdict.MinSamples == 0 {
			f.Verdict.MinSamples = 1
		}
		if f.Verdict.MinSuccessRatio == 0 {
			f.Verdict.MinSuccessRatio = 1
		}
		sc := &scope{cfg: cfg, envs: flowEnvs(cfg, f), vars: map[string]bool{}}
		for _, v := range sortedKeys(f.Variables) {
			if !identRE.MatchString(v) || isBuiltin(v) {
				add(f.Pos, "%s: variable name %q is not an identifier or shadows a built-in", what, v)
			}
			sc.vars[v] = true
		}
		if f.Setup != "" {
			if _, ok := cfg.Setups[f.Setup]; !ok {
				add(f.Pos, "%s: unknown setup %q", what, f.Setup)
			}
			for v := range setupExports[f.Setup] {
				sc.vars[v] = true
			}
		}
		if len(f.Steps) == 0 {
			add(f.Pos, "%s has no steps", what)
		}
		if len(f.Steps) > cfg.Limits.MaxSteps {
			add(f.Pos, "%s has %d steps, more than limits.max_steps (%d)", what, len(f.Steps), cfg.Limits.MaxSteps)
		}
		validateSteps(cfg, what, f.Pos, f.Steps, sc, add)
	}

	sloNames := map[string]bool{}
	for _, s := range cfg.SLOs {
		if s == nil {
			continue
		}
		if !nameRE.MatchString(s.Name) {
			add(s.Pos, "slo name %q: required; use letters, digits, '.', '_' and '-'", s.Name)
		} else if sloNames[s.Name] {
			add(s.Pos, "slo %q defined twice", s.Name)
		}
		sloNames[s.Name] = true
		if !(s.Objective > 0 && s.Objective < 1) {
			add(s.Pos, "slo %q: objective %v must be a ratio strictly between 0 and 1 (e.g. 0.999)", s.Name, s.Objective)
		}
		if s.Window == 0 {
			s.Window = Duration(DefaultSLOWindow)
		}
		if s.Window.D() < time.Minute || s.Window.D() > MaxSLOWindow {
			add(s.Pos, "slo %q: window %s is outside 1m..%s", s.Name, s.Window, MaxSLOWindow)
		}
		if len(s.Flows) == 0 {
			add(s.Pos, "slo %q: flows is required", s.Name)
		}
		for _, fn := range s.Flows {
			if flowNames[fn] == nil {
				add(s.Pos, "slo %q: unknown flow %q", s.Name, fn)
			}
		}
		for _, st := range s.Steps {
			if !sloStepKnown(cfg, s, st) {
				add(s.Pos, "slo %q: step %q is not a step of its flows (write step or flow/step)", s.Name, st)
			}
		}
	}
	return ds
}

// SLOCountsStep reports whether step (of flow) is an event of SLO s.
func SLOCountsStep(s *SLO, flow, step string) bool {
	for _, x := range s.Steps {
		if x == step || x == flow+"/"+step {
			return true
		}
	}
	return false
}

func sloStepKnown(cfg *Config, s *SLO, st string) bool {
	for _, fn := range s.Flows {
		f := cfg.Flow(fn)
		if f == nil {
			continue
		}
		for _, step := range f.Steps {
			if step != nil && (st == step.Name || st == fn+"/"+step.Name) {
				return true
			}
		}
	}
	return false
}

func flowEnvs(cfg *Config, f *Flow) []string {
	if len(f.Environments) > 0 {
		return f.Environments
	}
	return sortedKeys(cfg.Environments)
}

// scope is what a step may reference.
type scope struct {
	cfg  *Config
	envs []string
	vars map[string]bool // flow variables, setup exports, earlier extractions
}

// check reports an undefined reference; "" if fine.
func (sc *scope) check(ref string) string {
	if name, ok := strings.CutPrefix(ref, "secrets."); ok {
		var missing []string
		for _, e := range sc.envs {
			env := sc.cfg.Environments[e]
			if env == nil {
				continue
			}
			if _, ok := env.Secrets[name]; !ok {
				missing = append(missing, e)
			}
		}
		if len(missing) > 0 {
			return fmt.Sprintf("undefined secret %q in environment %s", name, strings.Join(missing, ", "))
		}
		return ""
	}
	if isBuiltin(ref) || sc.vars[ref] {
		return ""
	}
	var missing []string
	for _, e := range sc.envs {
		env := sc.cfg.Environments[e]
		if env == nil {
			continue
		}
		if _, ok := env.Variables[ref]; !ok {
			missing = append(missing, e)
		}
	}
	if len(missing) == 0 && len(sc.envs) > 0 {
		return ""
	}
	if len(missing) == len(sc.envs) {
		return fmt.Sprintf("undefined variable %q", ref)
	}
	return fmt.Sprintf("variable %q is not defined in environment %s", ref, strings.Join(missing, ", "))
}

func validateSteps(cfg *Config, what string, owner Pos, steps []*Step, sc *scope, add func(Pos, string, ...any)) (extracted, secret map[string]bool) {
	extracted, secret = map[string]bool{}, map[string]bool{}
	names := map[string]bool{}
	checkTpl := func(p Pos, field, s string) {
		t, err := ParseTemplate(s)
		if err != nil {
			add(p, "%s: %v", field, err)
			return
		}
		for _, r := range t.Refs() {
			if msg := sc.check(r); msg != "" {
				add(p, "%s: %s", field, msg)
			}
		}
	}
	for i, s := range steps {
		if s == nil {
			add(owner, "%s: steps[%d] is empty", what, i)
			continue
		}
		sw := fmt.Sprintf("%s step %d", what, i+1)
		if s.Name == "" {
			add(s.Pos, "%s: name is required", sw)
		} else {
			sw = fmt.Sprintf("%s step %q", what, s.Name)
			if !nameRE.MatchString(s.Name) {
				add(s.Pos, "%s: name: use letters, digits, '.', '_' and '-'", sw)
			}
			if names[s.Name] {
				add(s.Pos, "%s: duplicate step name", sw)
			}
			names[s.Name] = true
		}
		r := &s.Request
		if r.Method == "" {
			r.Method = http.MethodGet
		}
		r.Method = strings.ToUpper(r.Method)
		if !methods[r.Method] {
			add(s.Pos, "%s: unsupported method %q", sw, r.Method)
		}
		if r.URL == "" {
			add(s.Pos, "%s: request.url is required", sw)
		} else {
			checkTpl(s.URLPos, sw+" request.url", r.URL)
		}
		for _, h := range sortedKeys(r.Headers) {
			checkTpl(s.HeadersPos[h], fmt.Sprintf("%s header %s", sw, h), r.Headers[h])
		}
		if r.Body != "" {
			checkTpl(s.BodyPos, sw+" request.body", r.Body)
		}
		if r.Timeout.D() > cfg.Limits.StepTimeout.D() && cfg.Limits.StepTimeout != 0 {
			add(s.Pos, "%s: timeout %s is more than limits.step_timeout (%s)", sw, r.Timeout, cfg.Limits.StepTimeout)
		}
		if len(s.Extract) > MaxExtractions {
			add(s.Pos, "%s: more than %d extractions", sw, MaxExtractions)
		}
		// Extractions of this step are visible to its own assertions.
		stepVars := map[string]bool{}
		for j, x := range s.Extract {
			if x == nil {
				add(s.Pos, "%s: extract[%d] is empty", sw, j)
				continue
			}
			n := 0
			for _, v := range []string{x.JSON, x.Header, x.Cookie, x.Regexp} {
				if v != "" {
					n++
				}
			}
			if n != 1 {
				add(x.Pos, "%s: extraction of %q needs exactly one of json, header, cookie, regexp", sw, x.Var)
			}
			if !identRE.MatchString(x.Var) || isBuiltin(x.Var) {
				add(x.Pos, "%s: extraction var %q is not an identifier or shadows a built-in", sw, x.Var)
			}
			if x.JSON != "" {
				if _, err := ParseJSONPath(x.JSON); err != nil {
					add(x.Pos, "%s: %v", sw, err)
				}
			}
			if x.Regexp != "" {
				if _, err := regexp.Compile(x.Regexp); err != nil {
					add(x.Pos, "%s: bad regexp: %v", sw, err)
				}
			}
			stepVars[x.Var] = true
			extracted[x.Var] = true
			if x.Secret {
				secret[x.Var] = true
			}
		}
		if len(s.Assert) > MaxAssertions {
			add(s.Pos, "%s: more than %d assertions", sw, MaxAssertions)
		}
		for j, src := range s.Assert {
			p := s.Pos
			if j < len(s.AssertPos) {
				p = s.AssertPos[j]
			}
			a, err := CompileAssertion(src)
			if err != nil {
				add(p, "%s: bad assertion %q: %s", sw, src, oneLine(err.Error()))
				continue
			}
			for _, v := range a.VarRefs {
				if !stepVars[v] && !sc.vars[v] && sc.check(v) != "" {
					add(p, "%s: assertion %q: undefined variable vars.%s", sw, src, v)
				}
			}
		}
		for v := range stepVars {
			sc.vars[v] = true
		}
	}
	return extracted, secret
}

func oneLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func isBuiltin(v string) bool {
	for _, b := range Builtins {
		if b == v {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func uniq(s []string) []string {
	m := map[string]bool{}
	var out []string
	for _, x := range s {
		if !m[x] {
			m[x] = true
			out = append(out, x)
		}
	}
	sort.Strings(out)
	return out
}
