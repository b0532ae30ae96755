package flow

import (
	"path/filepath"
	"strings"
	"testing"
)

func examples(t *testing.T, names ...string) []string {
	var out []string
	for _, n := range names {
		out = append(out, filepath.Join("..", "..", "deploy", "probes", n))
	}
	return out
}

func TestExamplesAreValid(t *testing.T) {
	for _, set := range [][]string{{"sample-app/environments.yaml", "sample-app/flows.yaml"}, {"authority/flows.yaml"}} {
		cfg, ds := LoadFiles(examples(t, set...)...)
		if len(ds) > 0 {
			t.Fatalf("%v:\n%v", set, ds)
		}
		if len(cfg.Flows) == 0 {
			t.Fatalf("%v: no flows", set)
		}
	}
	cfg, _ := LoadFiles(examples(t, "sample-app/environments.yaml", "sample-app/flows.yaml")...)
	b := cfg.Flow("browse")
	if b.Schedule.Every.D().Seconds() != 30 || b.Verdict.MinSamples != 3 || len(b.Steps) != 2 {
		t.Fatalf("browse decoded wrong: %+v", b)
	}
	if got := cfg.Setups["login"].Cache.ExpiresInVar; got != "expires_in" {
		t.Fatalf("setup cache: %q", got)
	}
	if cfg.Limits.MaxBodyBytes != DefaultMaxBodyBytes || cfg.Limits.StepTimeout.D() != DefaultStepTimeout {
		t.Fatalf("default limits not applied: %+v", cfg.Limits)
	}
	if b.Steps[0].AssertPos[1].Line == 0 || !strings.HasSuffix(b.Steps[0].AssertPos[1].File, "flows.yaml") {
		t.Fatalf("assertion position not recorded: %v", b.Steps[0].AssertPos)
	}
}

const brokenBase = `environments:
  prod:
    base_url: http://127.0.0.1:1
    variables: {user: bot}
    secrets:
      password: hunter2
`

// TestLintReportsEveryErrorAtOnce is acceptance item 2: one broken file,
// every error reported at once with file:line.
func TestLintReportsEveryErrorAtOnce(t *testing.T) {
	src := brokenBase + `flows:
  - name: checkout
    schedul: {every: 30s}
    steps:
      - name: a
        request:
          url: /items/{{ item_id }}
          methd: GET
        assert:
          - status == 
          - statuz == 200
          - vars.nope == "x"
      - name: b
        request:
          url: /x/{{ secrets.token }}
          timeout: 3 parsecs
        extract:
          - {var: id, json: "items[0]"}
          - {var: re, regexp: "("}
  - name: other
    schedule: {every: 100ms}
    setup: nowhere
    steps: []
slos:
  - name: s
    objective: 99.9
    flows: [checkout, missing]
`
	_, ds := Load(Source{Name: "broken.yaml", Data: []byte(src)})
	want := []struct {
		line int
		frag string
	}{
		{6, "secrets are references to environment variables"},
		{8, "schedule.every is required"},
		{9, `unknown field "schedul"`},
		{13, `undefined variable "item_id"`},
		{14, `unknown field "methd"`},
		{16, `bad assertion "status =="`},
		{17, `bad assertion "statuz == 200"`},
		{18, "undefined variable vars.nope"},
		{21, `undefined secret "token" in environment prod`},
		{22, "invalid duration"},
		{24, "must start with $"},
		{25, "bad regexp"},
		{26, "shorter than 1s"},
		{26, `unknown setup "nowhere"`},
		{26, "has no steps"},
		{31, "objective 99.9 must be a ratio"},
		{31, `unknown flow "missing"`},
	}
	t.Logf("diagnostics:\n%v", ds)
	for _, w := range want {
		found := false
		for _, d := range ds {
			if d.Pos.File == "broken.yaml" && d.Pos.Line == w.line && strings.Contains(d.Msg, w.frag) {
				found = true
			}
		}
		if !found {
			t.Errorf("missing diagnostic at broken.yaml:%d containing %q", w.line, w.frag)
		}
	}
	if len(ds) < len(want) {
		t.Errorf("got %d diagnostics, want at least %d", len(ds), len(want))
	}
	if strings.Contains(ds.Error(), "hunter2") {
		t.Errorf("an inline secret's value was echoed in a diagnostic")
	}
}

func TestLintTable(t *testing.T) {
	env := `environments:
  prod: {base_url: "http://127.0.0.1:1", variables: {v: x}}
  staging: {base_url: "http://127.0.0.1:2"}
`
	cases := []struct {
		name string
		src  string
		line int
		frag string
	}{
		{"unknown top-level", env + "flowz: []\n", 4, `unknown field "flowz"`},
		{"env missing in one environment", env + `flows:
  - name: f
    schedule: {every: 1s}
    steps: [{name: s, request: {url: "/{{ v }}"}}]
`, 7, `variable "v" is not defined in environment staging`},
		{"extraction before use ok, after use not", env + `flows:
  - name: f
    schedule: {every: 1s}
    steps:
      - {name: a, request: {url: "/{{ later }}"}}
      - {name: b, request: {url: "/"}, extract: [{var: later, header: X}]}
`, 8, `undefined variable "later"`},
		{"two extraction sources", env + `flows:
  - name: f
    schedule: {every: 1s}
    steps:
      - {name: a, request: {url: "/"}, extract: [{var: x, header: X, cookie: c}]}
`, 8, "exactly one of"},
		{"duplicate key", env + `flows:
  - name: f
    name: g
    schedule: {every: 1s}
    steps: [{name: s, request: {url: "/"}}]
`, 6, `duplicate field "name"`},
		{"assertion not boolean", env + `flows:
  - name: f
    schedule: {every: 1s}
    steps: [{name: s, request: {url: "/"}, assert: ["status + 1"]}]
`, 7, "bad assertion"},
		{"unterminated template", env + `flows:
  - name: f
    schedule: {every: 1s}
    steps: [{name: s, request: {url: "/{{ v"}}]
`, 7, "unterminated"},
		{"setup exports unknown", env + `setups:
  login:
    steps: [{name: s, request: {url: "/"}}]
    exports: [token]
    cache: {ttl: 1m}
`, 5, `exports "token", which none of its steps extracts`},
		{"wrong kind", env + `flows:
  - name: f
    schedule: {every: 1s}
    steps: {name: s}
`, 7, "steps: expected a list"},
		{"limits over cap", env + `limits: {max_body_bytes: 999999999}
`, 0, "limits.max_body_bytes"},
		{"step count bound", env + `limits: {max_steps: 1}
flows:
  - name: f
    schedule: {every: 1s}
    steps: [{name: a, request: {url: "/"}}, {name: b, request: {url: "/"}}]
`, 6, "more than limits.max_steps"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, ds := Load(Source{Name: "f.yaml", Data: []byte(c.src)})
			for _, d := range ds {
				if d.Pos.Line == c.line && strings.Contains(d.Msg, c.frag) {
					return
				}
			}
			t.Fatalf("want f.yaml:%d %q, got:\n%v", c.line, c.frag, ds)
		})
	}
}

func TestTemplateAndJSONPath(t *testing.T) {
	tp, err := ParseTemplate("a{{ x }}b{{secrets.y}}")
	if err != nil {
		t.Fatal(err)
	}
	out, err := tp.Render(func(r string) (string, bool) { return map[string]string{"x": "1", "secrets.y": "2"}[r], true })
	if err != nil || out != "a1b2" {
		t.Fatalf("%q %v", out, err)
	}
	jp, err := ParseJSONPath(`$.items[-1]["na.me"]`)
	if err != nil {
		t.Fatal(err)
	}
	v, ok := jp.Eval(map[string]any{"items": []any{1, map[string]any{"na.me": "w"}}})
	if !ok || v != "w" {
		t.Fatalf("%v %v", v, ok)
	}
}

func TestAssertionObservedValues(t *testing.T) {
	a, err := CompileAssertion(`status == 200 && json.name == "widget"`)
	if err != nil {
		t.Fatal(err)
	}
	ok, obs, err := a.Eval(&AssertEnv{Status: 500, JSON: map[string]any{"name": "gadget"}})
	if ok || err != nil {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
	got := map[string]string{}
	for _, o := range obs {
		got[o.Expr] = o.Value
	}
	if got["status"] != "500" || got["json.name"] != `"gadget"` {
		t.Fatalf("observed %v", obs)
	}
}
