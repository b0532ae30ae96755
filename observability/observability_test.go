package observability

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/aerodb/authority/promotion"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/validator"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"
)

func record() *pb.AttemptRecord {
	one := uint64(1)
	dom := &pb.Domain{Name: "db1", Kind: pb.DomainKind_DOMAIN_KIND_AERODB, Policy: &pb.Policy{LeaseTtlMs: 1000, ReportMaxAgeMs: 1000},
		Epoch: 1, Holder: "n1", Members: []*pb.Member{{Id: "n1", State: pb.MemberState_MEMBER_STATE_ACTIVE}, {Id: "n2", State: pb.MemberState_MEMBER_STATE_ACTIVE}},
		Watermark: &pb.Watermark{Epoch: 1, Lsn: 100, Hash: []byte{0xab}, VisibleCommitId: 9}}
	att := &pb.PromotionAttempt{
		Request: &pb.PromotionRequest{RequestId: "r1", Domain: "db1", Candidate: "n2", ExpectedEpoch: &one, Reason: "<n1> & co"},
		Lease:   &pb.LeaseObservation{Holder: "n1", Epoch: 1, State: pb.LeaseState_LEASE_STATE_EXPIRED, LeaderTerm: 3, LeaderId: "s1"},
		CandidateReport: &pb.ProgressReport{MemberId: "n2", Epoch: 1, FlushedLsn: 90, FlushedHash: []byte{0x90}, WatermarkLsn: 100,
			AppliedCommitId: 9, ReadSafe: true, State: pb.ReplicaState_REPLICA_STATE_STREAMING},
	}
	return &pb.AttemptRecord{Request: att.Request, Decision: validator.Evaluate(validator.Input{Domain: dom, Attempt: att}),
		LogIndex: 42, Term: 3, EpochBefore: 1, EpochAfter: 1, HolderBefore: "n1", HolderAfter: "n1", Lease: att.Lease,
		CandidateReport: att.CandidateReport}
}

// The artifact is byte-identical for equal records, lists every check in
// the validator's order, and separates observed from required values.
func TestExplanationJSON(t *testing.T) {
	a, err := ExplanationJSON(record())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ExplanationJSON(proto.Clone(record()).(*pb.AttemptRecord))
	if !bytes.Equal(a, b) {
		t.Fatal("equal records, different artifacts")
	}
	var e Explanation
	if err := json.Unmarshal(a, &e); err != nil {
		t.Fatal(err)
	}
	if e.Outcome != "denied" || e.DenialReason != validator.ReasonReplicaBehindWal || e.FailedInvariant != "AU-4 [P6-S1]" ||
		!e.Committed || e.LogIndex != 42 || len(e.Checks) != 10 || *e.Request.ExpectedEpoch != 1 {
		t.Fatalf("artifact %s", a)
	}
	c := e.Checks[7]
	if c.Name != validator.CheckCandidateContainsWatermark || c.Satisfied || c.Reason != validator.ReasonReplicaBehindWal ||
		len(c.Observed) != 1 || c.Observed[0] != (KV{Key: "flushed_lsn", Value: "90"}) || len(c.Required) != 1 || c.Required[0] != (KV{Key: "watermark_lsn", Value: "100"}) {
		t.Fatalf("check %+v", c)
	}
	if !strings.Contains(string(a), `"reason": "<n1> & co"`) {
		t.Fatal("reason must not be HTML-escaped in the artifact")
	}
}

func TestMetricsCountDecisions(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := fsm.New()
	m := NewMetrics(reg, f)
	rec := record()
	m.Requested("db1")
	m.Decided(rec, true, time.Millisecond)
	m.Decided(rec, false, time.Millisecond) // dry run: latency only
	allowed := proto.Clone(rec).(*pb.AttemptRecord)
	allowed.Decision = &pb.Decision{Allowed: true}
	m.Decided(allowed, true, time.Millisecond)
	m.CrashAborted("db1", "r9")
	m.Fenced("watermark")
	m.Renewed("ok")
	m.WatermarkBatch(64)
	if got := testutil.ToFloat64(m.denied.WithLabelValues(validator.ReasonReplicaBehindWal)); got != 1 {
		t.Fatalf("denied = %v", got)
	}
	for name, want := range map[string]float64{"replication_promotion_requests_total": 1, "replication_promotion_success_total": 1,
		"replication_promotion_crash_abort_total": 1, "authority_watermark_advances_total": 64} {
		if got := gathered(t, reg, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if n := testutil.CollectAndCount(m.validation); n != 1 {
		t.Fatalf("validation histogram series %d", n)
	}
}

func gathered(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.Metric[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// replication_current_primary stays bounded however many domains exist.
func TestPrimarySeriesBounded(t *testing.T) {
	f := fsm.New()
	idx := uint64(0)
	apply := func(cmd *pb.Command) {
		idx++
		if res := f.ApplyCommand(idx, 1, cmd); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	for i := range MaxPrimarySeries + 50 {
		name := "lock-" + itoa(i)
		apply(&pb.Command{Body: &pb.Command_CreateDomain{CreateDomain: &pb.CreateDomain{Name: name, Kind: pb.DomainKind_DOMAIN_KIND_LOCK,
			Policy: &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL, LeaseTtlMs: 1000, ReportMaxAgeMs: 1000}}}})
		apply(&pb.Command{Body: &pb.Command_Acquire{Acquire: &pb.Acquire{Domain: name, Holder: "r1"}}})
	}
	reg := prometheus.NewRegistry()
	NewMetrics(reg, f)
	if n, err := testutil.GatherAndCount(reg, "replication_current_primary"); err != nil || n != MaxPrimarySeries {
		t.Fatalf("series %d %v", n, err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP authority_current_primary_series_dropped Domains left out of replication_current_primary to bound its cardinality.
# TYPE authority_current_primary_series_dropped gauge
authority_current_primary_series_dropped 50
`), "authority_current_primary_series_dropped"); err != nil {
		t.Fatal(err)
	}
}

func itoa(i int) string { return fmt.Sprintf("%04d", i) }

// A sink that blocks or fails delays nothing but itself: applies go on and
// the sink catches up, in order, once it works again.
// Readiness: AU-11 (observability never changes a decision); docs/READINESS.md.
func TestSinkBlockedOrFailingChangesNothing(t *testing.T) {
	f := fsm.New()
	s := &flakySink{block: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); RunSink(ctx, f, 1, s, nil) }()
	for i := uint64(1); i <= 20; i++ {
		res := f.ApplyCommand(i, 1, &pb.Command{Body: &pb.Command_CreateDomain{CreateDomain: &pb.CreateDomain{Name: "d" + itoa(int(i)),
			Kind: pb.DomainKind_DOMAIN_KIND_LOCK, Policy: &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL, LeaseTtlMs: 1000, ReportMaxAgeMs: 1000}}}})
		if res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	if f.LastIndex() != 20 {
		t.Fatal("applies were held up by the sink")
	}
	s.failNext(3)
	close(s.block)
	deadline := time.Now().Add(10 * time.Second)
	for s.count() < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("sink got %d of 20 events", s.count())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	for i, ev := range s.events() {
		if ev.Index != uint64(i+1) {
			t.Fatalf("event %d has index %d: out of order or duplicated", i, ev.Index)
		}
	}
}

type flakySink struct {
	block chan struct{}
	mu    sync.Mutex
	fails int
	got   []*pb.Event
}

func (s *flakySink) failNext(n int) { s.mu.Lock(); s.fails = n; s.mu.Unlock() }

func (s *flakySink) Write(ctx context.Context, ev *pb.Event) error {
	select {
	case <-s.block:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fails > 0 {
		s.fails--
		return errors.New("sink down")
	}
	s.got = append(s.got, ev)
	return nil
}

func (s *flakySink) count() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.got) }
func (s *flakySink) events() []*pb.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*pb.Event(nil), s.got...)
}

// Issue 17: refusals before the lifecycle and dry runs are counted with
// bounded labels (the refusal reasons, dry_run, outcome and the validator's
// denial reasons).
func TestMetricsCountRefusalsAndDryRuns(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, fsm.New())
	for _, reason := range promotion.RefusalReasons() {
		m.Refused(reason, false)
	}
	m.Refused(promotion.RefusedUnknownDomain, true)
	m.DryRun(true, "")
	m.DryRun(false, validator.ReasonReplicaBehindWal)
	m.DryRun(false, validator.ReasonReplicaBehindWal)
	if got := testutil.ToFloat64(m.refused.WithLabelValues(promotion.RefusedUnknownDomain, "true")); got != 1 {
		t.Fatalf("refused{unknown_domain,dry_run=true} = %v", got)
	}
	if got := testutil.ToFloat64(m.dryRuns.WithLabelValues("denied", validator.ReasonReplicaBehindWal)); got != 2 {
		t.Fatalf("dry runs denied = %v", got)
	}
	if n := testutil.CollectAndCount(m.refused); n != len(promotion.RefusalReasons())+1 {
		t.Fatalf("refused series %d", n)
	}
}
