package flow

import (
	"fmt"
	"regexp"
	"strings"
)

// Template is a parsed string with {{ name }} and {{ secrets.name }}
// references. Built-in names: base_url, env, run_id.
type Template struct {
	parts []tplPart
}

type tplPart struct {
	lit string
	ref string // non-empty for a reference
}

var refRE = regexp.MustCompile(`^(secrets\.)?[A-Za-z_][A-Za-z0-9_]*$`)

// Builtins are the variables every template may use.
var Builtins = []string{"base_url", "env", "run_id"}

// ParseTemplate parses s; errors name the offending reference.
func ParseTemplate(s string) (*Template, error) {
	t := &Template{}
	rest := s
	for {
		i := strings.Index(rest, "{{")
		if i < 0 {
			if strings.Contains(rest, "}}") {
				return nil, fmt.Errorf("unmatched \"}}\" in template %q", s)
			}
			if rest != "" {
				t.parts = append(t.parts, tplPart{lit: rest})
			}
			return t, nil
		}
		if i > 0 {
			if strings.Contains(rest[:i], "}}") {
				return nil, fmt.Errorf("unmatched \"}}\" in template %q", s)
			}
			t.parts = append(t.parts, tplPart{lit: rest[:i]})
		}
		rest = rest[i+2:]
		j := strings.Index(rest, "}}")
		if j < 0 {
			return nil, fmt.Errorf("unterminated \"{{\" in template %q", s)
		}
		name := strings.TrimSpace(rest[:j])
		if !refRE.MatchString(name) {
			return nil, fmt.Errorf("bad reference {{%s}}: want {{ name }} or {{ secrets.name }}", rest[:j])
		}
		t.parts = append(t.parts, tplPart{ref: name})
		rest = rest[j+2:]
	}
}

// Refs lists the references in order (secrets as "secrets.name").
func (t *Template) Refs() []string {
	var out []string
	for _, p := range t.parts {
		if p.ref != "" {
			out = append(out, p.ref)
		}
	}
	return out
}

// Render substitutes references with lookup; an unknown reference is an
// error naming it (never its value).
func (t *Template) Render(lookup func(ref string) (string, bool)) (string, error) {
	var b strings.Builder
	for _, p := range t.parts {
		if p.ref == "" {
			b.WriteString(p.lit)
			continue
		}
		v, ok := lookup(p.ref)
		if !ok {
			return "", fmt.Errorf("undefined variable %q", p.ref)
		}
		b.WriteString(v)
	}
	return b.String(), nil
}
