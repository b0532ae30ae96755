package observability

import (
	"context"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// canary_abort_verdict_total is counted from committed release.abort_labelled
// events (an operator's label, or a retry promoted), on every server alike.
func TestReleaseAbortVerdictsCountedFromEvents(t *testing.T) {
	m := NewReleaseMetrics(prometheus.NewRegistry())
	ev := func(typ string, kv ...string) *pb.Event {
		e := &pb.Event{Type: typ, Domain: "rel"}
		for i := 0; i+1 < len(kv); i += 2 {
			e.Fields = append(e.Fields, &pb.Observed{Key: kv[i], Value: kv[i+1]})
		}
		return e
	}
	for _, e := range []*pb.Event{
		ev(fsm.EventReleaseDecided, "action", "abort", "allowed", "true", "reason", "analysis_failed"),
		ev(fsm.EventReleaseAbortLabelled, "verdict", "false", "source", fsm.AbortVerdictRetry),
		ev(fsm.EventReleaseAbortLabelled, "verdict", "false", "source", fsm.AbortVerdictOperator),
		ev(fsm.EventReleaseAbortLabelled, "verdict", "true", "source", fsm.AbortVerdictOperator),
		ev(fsm.EventReleaseAbortLabelled, "verdict", "bogus"),
	} {
		if err := m.Write(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	if f, tr := testutil.ToFloat64(m.verdicts.WithLabelValues("false")), testutil.ToFloat64(m.verdicts.WithLabelValues("true")); f != 2 || tr != 1 {
		t.Fatalf("canary_abort_verdict_total false=%v true=%v, want 2 and 1", f, tr)
	}
	if n := testutil.CollectAndCount(m.verdicts); n != 2 {
		t.Fatalf("%d verdict series, want 2 (false, true)", n)
	}
	if n := testutil.ToFloat64(m.aborts.WithLabelValues("analysis_failed")); n != 1 {
		t.Fatalf("canary_aborts_total = %v", n)
	}
}
