package flow

import (
	"fmt"
	"sort"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"
)

// AssertEnv is what an assertion sees. Header names are lower-case.
type AssertEnv struct {
	Status    int               `expr:"status"`
	LatencyMS float64           `expr:"latency_ms"`
	Headers   map[string]string `expr:"headers"`
	Body      string            `expr:"body"`
	JSON      any               `expr:"json"`
	Vars      map[string]string `expr:"vars"`
}

// Assertion is a compiled expr-lang boolean expression.
type Assertion struct {
	Src     string
	program *vm.Program
	// parts are sub-expressions whose values are shown when the assertion
	// fails (both sides of each comparison).
	parts []part
	// VarRefs are the vars.NAME references (checked by lint).
	VarRefs []string
}

type part struct {
	src     string
	program *vm.Program
}

var comparisons = map[string]bool{"==": true, "!=": true, "<": true, "<=": true, ">": true, ">=": true,
	"in": true, "matches": true, "contains": true, "startsWith": true, "endsWith": true}

// CompileAssertion type-checks src against AssertEnv; it must be boolean.
func CompileAssertion(src string) (*Assertion, error) {
	opts := []expr.Option{expr.Env(AssertEnv{}), expr.AsBool(), expr.MaxNodes(MaxExprNodes)}
	prog, err := expr.Compile(src, opts...)
	if err != nil {
		return nil, err
	}
	a := &Assertion{Src: src, program: prog}
	tree, err := parser.Parse(src)
	if err != nil {
		return a, nil
	}
	var nodes []ast.Node
	var split func(n ast.Node)
	split = func(n ast.Node) {
		switch b := n.(type) {
		case *ast.BinaryNode:
			switch {
			case b.Operator == "&&" || b.Operator == "||" || b.Operator == "and" || b.Operator == "or":
				split(b.Left)
				split(b.Right)
				return
			case comparisons[b.Operator]:
				nodes = append(nodes, b.Left, b.Right)
				return
			}
		case *ast.UnaryNode:
			split(b.Node)
			return
		}
		nodes = append(nodes, n)
	}
	split(tree.Node)
	seen := map[string]bool{}
	for _, n := range nodes {
		switch n.(type) {
		case *ast.IntegerNode, *ast.FloatNode, *ast.StringNode, *ast.BoolNode, *ast.NilNode:
			continue // literals explain nothing
		}
		s := n.String()
		if seen[s] {
			continue
		}
		seen[s] = true
		p, err := expr.Compile(s, expr.Env(AssertEnv{}))
		if err == nil {
			a.parts = append(a.parts, part{src: s, program: p})
		}
	}
	refs := map[string]bool{}
	ast.Walk(&tree.Node, visitor(func(n *ast.Node) {
		m, ok := (*n).(*ast.MemberNode)
		if !ok {
			return
		}
		id, ok := m.Node.(*ast.IdentifierNode)
		if !ok || id.Value != "vars" {
			return
		}
		if s, ok := m.Property.(*ast.StringNode); ok {
			refs[s.Value] = true
		}
	}))
	for r := range refs {
		a.VarRefs = append(a.VarRefs, r)
	}
	sort.Strings(a.VarRefs)
	return a, nil
}

type visitor func(n *ast.Node)

func (v visitor) Visit(n *ast.Node) { v(n) }

// Eval runs the assertion. On false it returns the observed values of its
// sub-expressions (e.g. "status" = 500), in source order.
func (a *Assertion) Eval(env *AssertEnv) (ok bool, observed []Observed, err error) {
	out, err := expr.Run(a.program, env)
	if err != nil {
		return false, a.observe(env), fmt.Errorf("assertion %q: %w", a.Src, err)
	}
	if b, _ := out.(bool); b {
		return true, nil, nil
	}
	return false, a.observe(env), nil
}

// Observed is the value of one sub-expression of a failed assertion.
type Observed struct {
	Expr  string `json:"expr"`
	Value string `json:"value"`
}

// MaxObservedBytes bounds one observed value in reports.
const MaxObservedBytes = 256

func (a *Assertion) observe(env *AssertEnv) []Observed {
	var obs []Observed
	for _, p := range a.parts {
		v, err := expr.Run(p.program, env)
		s := ""
		if err != nil {
			s = "error: " + err.Error()
		} else {
			s = fmt.Sprintf("%#v", v)
			if str, ok := v.(string); ok {
				s = fmt.Sprintf("%q", str)
			}
		}
		if len(s) > MaxObservedBytes {
			s = s[:MaxObservedBytes] + "…"
		}
		obs = append(obs, Observed{Expr: p.src, Value: s})
	}
	return obs
}
