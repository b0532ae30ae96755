//go:build failpoints

package promotion

import (
	"errors"
	"slices"
	"strings"
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
			_, err := r.svc.Promote(r.ctx, req("r1", "n2", 1))
			if !strings.HasPrefix(point, "promote/") {
				// raftlog/* fire in cluster's log store (not in this fake):
				// the attempt is queued only after the intent's commit.
				want := []string{"queue intent", "wait intent", "queue attempt", "wait attempt"}
				if got := l.promotionTrace(); err != nil || !slices.Equal(got, want) {
					t.Fatalf("err = %v, trace = %q, want %q", err, got, want)
				}
				return
			}
			if !errors.Is(err, failpoint.ErrInjected) {
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

// promote/queued fires with both entries queued and neither waited for:
// the caller hears "unknown" (either may commit), never a decision.
func TestQueuedPointIsIndeterminate(t *testing.T) {
	r := newRig(t, false)
	l := traced(r)
	r.report("n2", 1, 100, h100, 50)
	r.clock.Advance(testTTL)
	if err := failpoint.Arm(failpoint.PromoteQueued + "=error"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { failpoint.Arm(failpoint.PromoteQueued + "=off") })
	out, err := r.svc.Promote(r.ctx, req("r1", "n2", 1))
	if !errors.Is(err, ErrIndeterminate) || out.Committed {
		t.Fatalf("promote = %+v, %v; want indeterminate", out, err)
	}
	want := []string{"queue intent", "queue attempt"}
	if got := l.promotionTrace(); !slices.Equal(got, want) {
		t.Fatalf("trace = %q, want %q", got, want)
	}
}
