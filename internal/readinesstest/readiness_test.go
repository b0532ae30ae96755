// Package readinesstest checks docs/READINESS.md, the Phase 6 audit
// (seed 001 §8, seed 000 §9): every invariant id of docs/invariants.txt
// has a row with code paths and named tests, every named test and symbol
// exists, and the coverage line tells the truth.
package readinesstest

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// root is the module root (this package is internal/readinesstest).
func root(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("module root not found from the package dir: %v", err)
	}
	return dir
}

// TestReadiness is the audit's guard: it fails on a missing or unknown
// invariant id, a row without a code path or a test, a row none of whose
// code paths or none of whose tests names the id in its doc comment or body, a named test or
// symbol that does not exist, or a coverage line that does not match.
func TestReadiness(t *testing.T) {
	r := root(t)
	doc, err := os.ReadFile(filepath.Join(r, "docs", "READINESS.md"))
	if err != nil {
		t.Fatal(err)
	}
	ids, err := os.ReadFile(filepath.Join(r, "docs", "invariants.txt"))
	if err != nil {
		t.Fatal(err)
	}
	rep := check(newResolver(r), string(ids), string(doc))
	for _, e := range rep.errs {
		t.Error(e)
	}
	t.Logf("%d ids, %d covered by named tests, %d missing; %d references resolved", rep.ids, rep.covered, rep.ids-rep.covered, rep.refs)
}

// TestCheckerCatchesBrokenDocs proves the guard can fail: each edit of the
// real document (or id list) must produce an error naming the problem.
func TestCheckerCatchesBrokenDocs(t *testing.T) {
	r := root(t)
	docB, err := os.ReadFile(filepath.Join(r, "docs", "READINESS.md"))
	if err != nil {
		t.Fatal(err)
	}
	idsB, err := os.ReadFile(filepath.Join(r, "docs", "invariants.txt"))
	if err != nil {
		t.Fatal(err)
	}
	doc, ids := string(docB), string(idsB)
	res := newResolver(r)
	if rep := check(res, ids, doc); len(rep.errs) != 0 {
		t.Fatalf("the committed document must pass first: %v", rep.errs)
	}
	row := func(id string) string {
		for _, l := range strings.Split(doc, "\n") {
			if c := cells(l); len(c) == 4 && strings.Trim(c[0], "* ") == id {
				return l
			}
		}
		t.Fatalf("no row for %s", id)
		return ""
	}
	p6a2 := row("P6-A2")
	cases := []struct {
		name, ids, doc, want string
	}{
		{"renamed test", ids, strings.Replace(doc, "`fsm.TestPromotionIsExactlyOneEntry`", "`fsm.TestPromotionIsExactlyOneEntryGone`", 1),
			"no func TestPromotionIsExactlyOneEntryGone("},
		{"renamed symbol", ids, strings.Replace(doc, "`validator.checkHistoryPrefix`", "`validator.checkHistoryPrefixGone`", 1),
			"no symbol checkHistoryPrefixGone"},
		{"renamed method", ids, strings.Replace(doc, "`promotion.Service.abortUndecided`", "`promotion.Service.abortGone`", 1),
			"no symbol Service.abortGone"},
		{"missing package", ids, strings.Replace(doc, "`fsm.TestPromotionIsExactlyOneEntry`", "`nosuchpkg.TestX`", 1),
			"nosuchpkg"},
		{"row dropped", ids, strings.Replace(doc, p6a2+"\n", "", 1), "P6-A2: no row"},
		{"row without tests", ids, strings.Replace(doc, p6a2, "| "+strings.Join(append(cells(p6a2)[:3:3], "none yet"), " | ")+" |", 1),
			"P6-A2: no test"},
		{"no test names the id", ids, strings.Replace(doc, p6a2, "| "+strings.Join(append(cells(p6a2)[:3:3], "`fsm.TestIntentThenAttempt`"), " | ")+" |", 1),
			"none of its tests names P6-A2"},
		{"no code path names the id", ids, strings.Replace(doc, p6a2, "| "+strings.Join([]string{"P6-A2", cells(p6a2)[1], "`fsm.grant`", cells(p6a2)[3]}, " | ")+" |", 1),
			"none of its code paths names P6-A2"},
		{"unknown id", ids, strings.Replace(doc, "| P6-A2 |", "| P6-A9 |", 1), "P6-A9: not in docs/invariants.txt"},
		{"new canonical id", ids + "P6-Z1\tsomething new\tsomewhere\n", doc, "P6-Z1: no row"},
		{"coverage line stale", ids, regexp.MustCompile(`Coverage: \d+ ids`).ReplaceAllString(doc, "Coverage: 7 ids"), "coverage line"},
	}
	for _, c := range cases {
		rep := check(res, c.ids, c.doc)
		found := false
		for _, e := range rep.errs {
			if strings.Contains(e, c.want) {
				found = true
			}
		}
		if !found {
			t.Errorf("%s: want an error containing %q, got %v", c.name, c.want, rep.errs)
		}
	}
}

type report struct {
	errs               []string
	ids, covered, refs int
}

var (
	idRe       = regexp.MustCompile(`^(P6|P5|AU)-[A-Za-z0-9]+$`)
	tickRe     = regexp.MustCompile("`([^`]+)`")
	coverageRe = regexp.MustCompile(`Coverage: (\d+) ids, (\d+) covered by named tests, (\d+) missing`)
	refRe      = regexp.MustCompile(`^([a-z][a-z0-9_-]*(?:/[a-z][a-z0-9_-]*)*)\.([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)(/\S*)?$`)
)

// cells splits a markdown table row into its cells ("" row: nil).
func cells(line string) []string {
	line = strings.TrimSpace(line)
	if !strings.HasPrefix(line, "|") || !strings.HasSuffix(line, "|") {
		return nil
	}
	parts := strings.Split(strings.Trim(line, "|"), "|")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}

func check(res *resolver, idList, doc string) report {
	var rep report
	errf := func(format string, args ...any) { rep.errs = append(rep.errs, fmt.Sprintf(format, args...)) }
	canonical := map[string]bool{}
	var order []string
	for _, l := range strings.Split(idList, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		id, _, _ := strings.Cut(l, "\t")
		if !idRe.MatchString(id) || canonical[id] {
			errf("docs/invariants.txt: bad or repeated id %q", id)
			continue
		}
		canonical[id] = true
		order = append(order, id)
	}
	rows := map[string]bool{}
	covered := map[string]bool{}
	for n, l := range strings.Split(doc, "\n") {
		c := cells(l)
		if len(c) != 4 {
			continue
		}
		id := strings.Trim(c[0], "* ")
		if !idRe.MatchString(id) {
			continue
		}
		at := fmt.Sprintf("READINESS.md:%d: %s", n+1, id)
		if !canonical[id] {
			errf("%s: not in docs/invariants.txt", at)
		}
		if rows[id] {
			errf("%s: a second row", at)
		}
		rows[id] = true
		if len(tickRe.FindAllString(c[1], -1)) == 0 && strings.TrimSpace(c[1]) == "" {
			errf("%s: no spec section", at)
		}
		codes := tickRe.FindAllStringSubmatch(c[2], -1)
		if len(codes) == 0 {
			errf("%s: no code path", at)
		}
		inCode := false
		for _, m := range codes {
			if isTest(m[1]) {
				errf("%s: %s is a test, in the code column", at, m[1])
			}
			if err := res.resolve(m[1]); err != nil {
				errf("%s: %v", at, err)
			}
			if idIn(res.texts[m[1]], id) {
				inCode = true
			}
			rep.refs++
		}
		// S001 §4: every invariant explicitly referenced in the code that
		// enforces it (a doc comment or the body of one of its code paths).
		if len(codes) > 0 && !inCode {
			errf("%s: none of its code paths names %s in its doc comment or body", at, id)
		}
		tests := tickRe.FindAllStringSubmatch(c[3], -1)
		ok, named := 0, false
		for _, m := range tests {
			if !isTest(m[1]) {
				errf("%s: %s in the tests column is not a test (pkg.TestName)", at, m[1])
				continue
			}
			if err := res.resolve(m[1]); err != nil {
				errf("%s: %v", at, err)
				continue
			}
			rep.refs++
			ok++
			if idIn(res.texts[strings.SplitN(m[1], "/", 2)[0]], id) {
				named = true
			}
		}
		if ok > 0 && !named {
			errf("%s: none of its tests names %s in its comment or body", at, id)
		}
		if ok == 0 {
			errf("%s: no test", at)
		} else {
			covered[id] = true
		}
	}
	for _, id := range order {
		if !rows[id] {
			errf("%s: no row in READINESS.md", id)
		}
	}
	// Every other reference to a package of the module, anywhere in the
	// document (checklist evidence), must resolve too.
	for n, l := range strings.Split(doc, "\n") {
		if c := cells(l); len(c) == 4 && idRe.MatchString(strings.Trim(c[0], "* ")) {
			continue // checked above
		}
		for _, m := range tickRe.FindAllStringSubmatch(l, -1) {
			sm := refRe.FindStringSubmatch(m[1])
			if sm == nil || !res.isPackage(sm[1]) {
				continue
			}
			if err := res.resolve(m[1]); err != nil {
				errf("READINESS.md:%d: %v", n+1, err)
			}
			rep.refs++
		}
	}
	rep.ids = len(order)
	for _, id := range order {
		if covered[id] {
			rep.covered++
		}
	}
	m := coverageRe.FindStringSubmatch(doc)
	if m == nil {
		errf("READINESS.md: no coverage line (Coverage: N ids, N covered by named tests, N missing)")
	} else if a, _ := strconv.Atoi(m[1]); a != rep.ids {
		errf("READINESS.md: coverage line says %s ids, docs/invariants.txt has %d", m[1], rep.ids)
	} else if b, _ := strconv.Atoi(m[2]); b != rep.covered {
		errf("READINESS.md: coverage line says %s covered, %d are", m[2], rep.covered)
	} else if c, _ := strconv.Atoi(m[3]); c != rep.ids-rep.covered {
		errf("READINESS.md: coverage line says %s missing, %d are", m[3], rep.ids-rep.covered)
	}
	return rep
}

// idIn reports whether text names id as a whole word (P6-A1 is not
// named by "P6-A1a").
func idIn(text, id string) bool {
	for i := 0; ; {
		j := strings.Index(text[i:], id)
		if j < 0 {
			return false
		}
		end := i + j + len(id)
		if end == len(text) || !isWordByte(text[end]) {
			if k := i + j; k == 0 || !isWordByte(text[k-1]) {
				return true
			}
		}
		i = end
	}
}

func isWordByte(b byte) bool {
	return b == '_' || b == '-' || 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9'
}

// isTest: pkg.TestName (optionally /subtest).
func isTest(ref string) bool {
	sm := refRe.FindStringSubmatch(ref)
	return sm != nil && !strings.Contains(sm[2], ".") && strings.HasPrefix(sm[2], "Test")
}

// resolver answers whether a test or a symbol exists in a package dir of
// the module, parsing each dir once (every file, whatever its build tags).
type resolver struct {
	root  string
	syms  map[string]map[string]bool // dir → symbol names (Name, Type.Method, Type.Field)
	tests map[string]map[string]bool // dir → test function names
	texts map[string]string          // "dir.TestName" → its doc comment and body
}

func newResolver(root string) *resolver {
	return &resolver{root: root, syms: map[string]map[string]bool{}, tests: map[string]map[string]bool{}, texts: map[string]string{}}
}

func (r *resolver) isPackage(dir string) bool {
	m, _ := filepath.Glob(filepath.Join(r.root, filepath.FromSlash(dir), "*.go"))
	return len(m) > 0
}

func (r *resolver) resolve(ref string) error {
	sm := refRe.FindStringSubmatch(ref)
	if sm == nil {
		return fmt.Errorf("%q is not a reference of the form dir.Symbol, dir.Type.Method or dir.TestName", ref)
	}
	dir, name := sm[1], sm[2]
	if !r.isPackage(dir) {
		return fmt.Errorf("%s: no Go package %s in the module", ref, dir)
	}
	if err := r.load(dir); err != nil {
		return err
	}
	if isTest(ref) {
		if !r.tests[dir][name] {
			return fmt.Errorf("%s: no func %s( in %s/*_test.go", ref, name, dir)
		}
		return nil
	}
	if !r.syms[dir][name] {
		return fmt.Errorf("%s: no symbol %s in package dir %s", ref, name, dir)
	}
	return nil
}

func (r *resolver) load(dir string) error {
	if _, ok := r.syms[dir]; ok {
		return nil
	}
	syms, tests := map[string]bool{}, map[string]bool{}
	files, _ := filepath.Glob(filepath.Join(r.root, filepath.FromSlash(dir), "*.go"))
	fset := token.NewFileSet()
	for _, path := range files {
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f, err := parser.ParseFile(fset, path, src, parser.SkipObjectResolution|parser.ParseComments)
		if err != nil {
			return fmt.Errorf("parsing %s: %w", path, err)
		}
		isTestFile := strings.HasSuffix(path, "_test.go")
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if isTestFile {
					if d.Recv == nil && strings.HasPrefix(d.Name.Name, "Test") {
						tests[d.Name.Name] = true
						from := d.Pos()
						if d.Doc != nil {
							from = d.Doc.Pos()
						}
						r.texts[dir+"."+d.Name.Name] = string(src[fset.Position(from).Offset:fset.Position(d.End()).Offset])
					}
					continue
				}
				name := d.Name.Name
				if d.Recv != nil {
					name = recvName(d.Recv.List[0].Type) + "." + name
				}
				syms[name] = true
				from := d.Pos()
				if d.Doc != nil {
					from = d.Doc.Pos()
				}
				r.texts[dir+"."+name] = string(src[fset.Position(from).Offset:fset.Position(d.End()).Offset])
			case *ast.GenDecl:
				if isTestFile {
					continue
				}
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						syms[s.Name.Name] = true
						r.texts[dir+"."+s.Name.Name] = string(src[fset.Position(d.Pos()).Offset:fset.Position(d.End()).Offset]) + commentText(d.Doc)
						if st, ok := s.Type.(*ast.StructType); ok {
							for _, fl := range st.Fields.List {
								for _, n := range fl.Names {
									syms[s.Name.Name+"."+n.Name] = true
								}
							}
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							syms[n.Name] = true
							r.texts[dir+"."+n.Name] = string(src[fset.Position(d.Pos()).Offset:fset.Position(d.End()).Offset]) + commentText(d.Doc)
						}
					}
				}
			}
		}
	}
	r.syms[dir], r.tests[dir] = syms, tests
	return nil
}

func commentText(g *ast.CommentGroup) string {
	if g == nil {
		return ""
	}
	return g.Text()
}

func recvName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.StarExpr:
		return recvName(e.X)
	case *ast.Ident:
		return e.Name
	case *ast.IndexExpr:
		return recvName(e.X)
	case *ast.IndexListExpr:
		return recvName(e.X)
	}
	return ""
}
