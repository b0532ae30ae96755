package preflight

import (
	"testing"
)

// FuzzParseInventory: hostile inventory content never panics, never yields
// more than MaxHosts hosts, and every group of a parsed inventory resolves
// or fails with an error.
func FuzzParseInventory(f *testing.F) {
	for _, s := range []string{crossINI, crossYAML, "[a]\nh[1:3]\n", "h:22\n", "[a:children]\nb\n[b:children]\na\n",
		"all:\n  hosts:\n    x[a:c]:\n", "[a]\nh[0:99][0:99]\n", "[a]\n[::1]:22\n", "[a]\nh x='y\n"} {
		f.Add([]byte(s), ".ini")
		f.Add([]byte(s), ".yml")
		f.Add([]byte(s), "")
	}
	f.Fuzz(func(t *testing.T, b []byte, ext string) {
		inv, err := ParseInventory(b, ext)
		if err != nil {
			return
		}
		if inv.HostCount() > MaxHosts {
			t.Fatalf("%d hosts", inv.HostCount())
		}
		for name := range inv.groups {
			ts, err := inv.Targets(name, 22)
			if err == nil && len(ts) > MaxHosts {
				t.Fatalf("group %s: %d targets", name, len(ts))
			}
		}
	})
}
