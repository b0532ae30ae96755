package flow

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// JSONPath is the subset of JSONPath that extractions need: $ followed by
// .field, ["field"] and [index] (negative indexes count from the end).
type JSONPath struct {
	src   string
	steps []pathStep
}

type pathStep struct {
	field string
	index int
	isIdx bool
}

// ParseJSONPath parses p.
func ParseJSONPath(p string) (*JSONPath, error) {
	if !strings.HasPrefix(p, "$") {
		return nil, fmt.Errorf("JSON path %q must start with $", p)
	}
	jp := &JSONPath{src: p}
	rest := p[1:]
	for rest != "" {
		switch {
		case rest[0] == '.':
			rest = rest[1:]
			end := strings.IndexAny(rest, ".[")
			if end < 0 {
				end = len(rest)
			}
			if end == 0 {
				return nil, fmt.Errorf("JSON path %q: empty field name", p)
			}
			jp.steps = append(jp.steps, pathStep{field: rest[:end]})
			rest = rest[end:]
		case rest[0] == '[':
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				return nil, fmt.Errorf("JSON path %q: unterminated [", p)
			}
			in := strings.TrimSpace(rest[1:end])
			rest = rest[end+1:]
			if len(in) >= 2 && (in[0] == '"' || in[0] == '\'') && in[len(in)-1] == in[0] {
				jp.steps = append(jp.steps, pathStep{field: in[1 : len(in)-1]})
				continue
			}
			n, err := strconv.Atoi(in)
			if err != nil {
				return nil, fmt.Errorf("JSON path %q: [%s] is neither an index nor a quoted field (filters and wildcards are not supported)", p, in)
			}
			jp.steps = append(jp.steps, pathStep{index: n, isIdx: true})
		default:
			return nil, fmt.Errorf("JSON path %q: unexpected %q", p, rest[:1])
		}
	}
	return jp, nil
}

// Eval walks v (decoded JSON) and returns the value, or false if absent.
func (jp *JSONPath) Eval(v any) (any, bool) {
	for _, s := range jp.steps {
		if s.isIdx {
			a, ok := v.([]any)
			if !ok {
				return nil, false
			}
			i := s.index
			if i < 0 {
				i += len(a)
			}
			if i < 0 || i >= len(a) {
				return nil, false
			}
			v = a[i]
			continue
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		v, ok = m[s.field]
		if !ok {
			return nil, false
		}
	}
	return v, true
}

// Stringify renders an extracted JSON value as a variable: strings as is,
// numbers and booleans in JSON form, objects and arrays as compact JSON.
func Stringify(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return "null"
	case json.Number:
		return x.String()
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	}
	b, _ := json.Marshal(v)
	return string(b)
}
