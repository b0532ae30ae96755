package validator

import (
	"slices"
	"testing"

	"github.com/aerodb/authority/render"
)

// TestRenderRequiredKeysAreEmitted: render.RequiredKeys (what the
// explanation shows as a rule's requirement) names only checks the
// validator runs and keys those checks still observe, so renaming a key in
// one place fails here instead of silently moving it to "observed".
func TestRenderRequiredKeysAreEmitted(t *testing.T) {
	in := allowedInput()
	in.Attempt.Request.ExpectedEpoch = u64p(in.Domain.Epoch)
	d := Evaluate(in)
	for _, name := range render.RequiredKeyChecks() {
		c := findCheck(d, name)
		if c == nil {
			t.Errorf("render names check %q, which Evaluate does not run", name)
			continue
		}
		var keys []string
		for _, o := range c.Observed {
			keys = append(keys, o.Key)
		}
		for _, k := range render.RequiredKeys(name) {
			if !slices.Contains(keys, k) {
				t.Errorf("check %s: render requires key %q; observed keys %v", name, k, keys)
			}
		}
	}
}
