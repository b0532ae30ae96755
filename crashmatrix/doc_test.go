package crashmatrix_test

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/aerodb/authority/failpoint"
)

// matrixDoc is the crash matrix's documentation, relative to this package.
const matrixDoc = "../docs/CRASH-MATRIX.md"

// docRow is one row of "## The matrix" in docs/CRASH-MATRIX.md.
type docRow struct {
	point, role, killed, requestTo, commit, allowedCell, deniedCell string
}

// docRowFor is what the row of (point, role) must say, derived from the
// plan the matrix runs.
func docRowFor(point, role string) docRow {
	p := planFor(point, role)
	r := docRow{point: point, role: role, killed: "a follower", requestTo: "leader", commit: "before"}
	if p.killLeader {
		r.killed = "leader"
	}
	switch {
	case p.snapshot:
		r.requestTo = "(snapshot RPC to it)"
	case p.viaFollower:
		r.requestTo = "follower → leader"
	}
	if p.committed {
		r.commit = "after"
	}
	suite := "TestCrashMatrixLeader"
	if role == roleFollower {
		suite = "TestCrashMatrixFollower"
	}
	r.allowedCell = suite + "/" + cellName(point) + "/allowed"
	r.deniedCell = suite + "/" + cellName(point) + "/denied"
	return r
}

var firstCode = regexp.MustCompile("^`([^`]+)`")

// parseMatrixDoc reads the rows of the "## The matrix" table: a row names
// its point in its first cell (a continuation row leaves it empty and
// continues the point above).
func parseMatrixDoc(text string) ([]docRow, error) {
	_, after, ok := strings.Cut(text, "\n## The matrix\n")
	if !ok {
		return nil, fmt.Errorf("no \"## The matrix\" section")
	}
	section, _, _ := strings.Cut(after, "\n## ")
	var rows []docRow
	point, inTable := "", false
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "|") {
			if inTable {
				break // the first table of the section ends
			}
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if !inTable { // the header
			if len(cells) != 8 || cells[0] != "Point" {
				return nil, fmt.Errorf("matrix header %q: want Point | Role | Killed | Request to | Commit | Reply | Allowed cell | Denied cell", line)
			}
			inTable = true
			continue
		}
		if strings.HasPrefix(cells[0], "---") {
			continue
		}
		if len(cells) != 8 {
			return nil, fmt.Errorf("matrix row %q has %d cells, want 8", line, len(cells))
		}
		if cells[0] != "" {
			m := firstCode.FindStringSubmatch(cells[0])
			if m == nil {
				return nil, fmt.Errorf("matrix row %q does not name its point in backquotes", line)
			}
			point = m[1]
		}
		if point == "" {
			return nil, fmt.Errorf("matrix row %q continues no point", line)
		}
		commit, _, _ := strings.Cut(cells[4], " ")
		rows = append(rows, docRow{point: point, role: cells[1], killed: cells[2], requestTo: cells[3], commit: commit,
			allowedCell: strings.Trim(cells[6], "`"), deniedCell: strings.Trim(cells[7], "`")})
	}
	return rows, nil
}

// checkMatrixDoc compares the documented matrix with the one the code runs:
// every failpoint × role has exactly one row, saying what its plan does and
// naming its two cells; no row documents a cell that does not run.
func checkMatrixDoc(text string) []string {
	rows, err := parseMatrixDoc(text)
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	seen := map[[2]string]bool{}
	for _, r := range rows {
		k := [2]string{r.point, r.role}
		switch {
		case !slices.Contains(failpoint.All, r.point):
			problems = append(problems, fmt.Sprintf("docs row for %s (%s): not a point the matrix runs (failpoint.All)", r.point, r.role))
			continue
		case r.role != roleLeader && r.role != roleFollower:
			problems = append(problems, fmt.Sprintf("docs row for %s: role %q", r.point, r.role))
			continue
		case seen[k]:
			problems = append(problems, fmt.Sprintf("docs: two rows for %s (%s)", r.point, r.role))
		}
		seen[k] = true
		if want := docRowFor(r.point, r.role); r != want {
			problems = append(problems, fmt.Sprintf("docs row for %s (%s) says %+v; the matrix runs %+v", r.point, r.role, r, want))
		}
	}
	for _, p := range failpoint.All {
		for _, role := range []string{roleLeader, roleFollower} {
			if !seen[[2]string{p, role}] {
				problems = append(problems, fmt.Sprintf("docs: no row for %s (%s)", p, role))
			}
		}
	}
	return problems
}

func readMatrixDoc() (string, error) {
	b, err := os.ReadFile(matrixDoc)
	return string(b), err
}

// TestMatrixDocDriftIsCaught: each kind of drift between docs/CRASH-MATRIX.md
// and the matrix is reported (the check above can fail).
func TestMatrixDocDriftIsCaught(t *testing.T) {
	doc, err := readMatrixDoc()
	if err != nil {
		t.Fatal(err)
	}
	if p := checkMatrixDoc(doc); len(p) != 0 {
		t.Fatalf("the committed doc drifted: %v", p)
	}
	leaderRow := "| `promote/validating` | leader | leader | leader | before |"
	followerRow := "| | follower | a follower | leader | after (leader + other follower) | the decision | `TestCrashMatrixFollower/raftlog.before-store/allowed`"
	for name, mutate := range map[string]func(string) string{
		"a row removed": func(s string) string {
			i := strings.Index(s, leaderRow)
			j := strings.Index(s[i:], "\n")
			return s[:i] + s[i+j+1:]
		},
		"commit flipped": func(s string) string {
			return strings.Replace(s, leaderRow, "| `promote/validating` | leader | leader | leader | after |", 1)
		},
		"killed server changed": func(s string) string {
			return strings.Replace(s, followerRow, strings.Replace(followerRow, "a follower", "leader", 1), 1)
		},
		"cell renamed": func(s string) string {
			return strings.Replace(s, "`TestCrashMatrixLeader/fsm.after-apply-promotion/denied`", "`TestCrashMatrixLeader/fsm.after-apply/denied`", 1)
		},
		"unknown point documented": func(s string) string {
			return strings.Replace(s, leaderRow, "| `promote/elsewhere` | leader | leader | leader | before | transport error | `a` | `b` |\n"+leaderRow, 1)
		},
		"table gone": func(s string) string { return strings.Replace(s, "## The matrix", "## Matrix", 1) },
	} {
		mutated := mutate(doc)
		if mutated == doc {
			t.Fatalf("%s: the mutation changed nothing (the doc's wording moved: update this test)", name)
		}
		if p := checkMatrixDoc(mutated); len(p) == 0 {
			t.Errorf("%s: not caught", name)
		}
	}
}
