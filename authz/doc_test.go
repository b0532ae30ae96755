package authz

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/aerodb/authority/identity"
)

// TestSecurityDocMatchesTable checks the roles table in docs/SECURITY.md
// against Decide: the docs may not claim a permission the code does not
// grant, or miss one it does.
func TestSecurityDocMatchesTable(t *testing.T) {
	b, err := os.ReadFile("../docs/SECURITY.md")
	if err != nil {
		t.Fatal(err)
	}
	var header []identity.Role
	rows := 0
	for _, line := range strings.Split(string(b), "\n") {
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if len(cells) < 7 {
			continue
		}
		if cells[0] == "RPC" {
			for _, c := range cells[1:] {
				header = append(header, identity.Role(c))
			}
			continue
		}
		method := "/authority.v1." + cells[0]
		if _, ok := Table[method]; !ok {
			continue
		}
		rows++
		for i, role := range header {
			id := identity.Identity{Role: role, Name: "me"}
			allowed := Decide(id, method, requestActingAs(method, "me"), nil) == nil
			documented := cells[i+1] == "yes" || cells[i+1] == "self"
			if allowed != documented {
				t.Errorf("docs/SECURITY.md %s as %s: documented %q, code allows=%v", cells[0], role, cells[i+1], allowed)
			}
		}
	}
	if rows != len(Table) || !slices.Equal(header, identity.Roles) {
		t.Errorf("docs/SECURITY.md lists %d RPCs with roles %v; the table has %d, roles %v", rows, header, len(Table), identity.Roles)
	}
}
