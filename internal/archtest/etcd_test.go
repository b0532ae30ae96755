package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

// etcd is measured side by side with authorityd in bench/compare, its own
// Go module; it must never become a dependency of the product module (not
// even an indirect one in its module graph).
func TestProductModuleHasNoEtcd(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "all").Output()
	if err != nil {
		t.Fatalf("go list -m all: %v", err)
	}
	for line := range strings.Lines(string(out)) {
		if strings.HasPrefix(line, "go.etcd.io/etcd/") {
			t.Errorf("the product module's graph has %s: etcd belongs to bench/compare's go.mod only", strings.TrimSpace(line))
		}
		if strings.HasPrefix(line, module+"/bench/compare") {
			t.Errorf("the product module requires %s", strings.TrimSpace(line))
		}
	}
}
