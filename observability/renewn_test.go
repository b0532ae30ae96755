package observability

import (
	"testing"

	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/promotion"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A batch of renewals is counted with one update, through the interface
// the promotion service looks for.
func TestRenewedNCountsABatch(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry(), fsm.New())
	var c promotion.RenewCounter = m
	c.RenewedN("ok", 125)
	m.Renewed("ok")
	if got := testutil.ToFloat64(m.renewals.WithLabelValues("ok")); got != 126 {
		t.Fatalf("authority_lease_renewals_total{result=ok} = %v, want 126", got)
	}
}
