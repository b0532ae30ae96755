//go:build failpoints

package promotion

import (
	"errors"
	"slices"
	"testing"

	"github.com/aerodb/authority/failpoint"
)

// With a point that names "intent committed, attempt not proposed" armed,
// the pipelined leader waits for the intent's commit before the point and
// has queued no attempt when it fires: the crash matrix's cells for those
// points kill in exactly that state (docs/CRASH-MATRIX.md).
func TestArmedPointSeesTheIntentCommitted(t *testing.T) {
	for _, point := range pipelineWaitPoints {
		t.Run(point, func(t *testing.T) {
			r := newRig(t, false)
			l := traced(r)
			r.report("n2", 1, 100, h100, 50)
			r.clock.Advance(testTTL)
			if err := failpoint.Arm(point + "=error"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { failpoint.Arm(point + "=off") })
			if _, err := r.svc.Promote(r.ctx, req("r1", "n2", 1)); !errors.Is(err, failpoint.ErrInjected) {
				t.Fatalf("err = %v", err)
			}
			want := []string{"queue intent", "wait intent"}
			if got := l.promotionTrace(); !slices.Equal(got, want) {
				t.Fatalf("trace = %q, want %q", got, want)
			}
			if p := r.svc.fsm.PendingIntents(); len(p) != 1 || p[0].RequestID != "r1" {
				t.Fatalf("pending = %+v", p)
			}
		})
	}
}
