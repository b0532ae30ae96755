package observability

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/promotion"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
)

// syncLog applies proposals straight to an FSM (a one-node log).
type syncLog struct {
	mu    sync.Mutex
	f     *fsm.FSM
	index uint64
}

func (l *syncLog) Propose(_ context.Context, cmd *pb.Command) (*fsm.Result, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.index++
	b, _ := proto.Marshal(cmd)
	return l.f.Apply(l.index, 1, b), nil
}
func (l *syncLog) Barrier(context.Context) error      { return nil }
func (l *syncLog) VerifyLeader(context.Context) error { return nil }
func (l *syncLog) Term() uint64                       { return 1 }
func (l *syncLog) ID() string                         { return "s1" }

type stepClock struct{ now time.Time }

func (c *stepClock) Now() time.Time { return c.now }

type blockedSink struct{}

func (blockedSink) Write(ctx context.Context, _ *pb.Event) error { <-ctx.Done(); return ctx.Err() }

type failingSink struct{}

func (failingSink) Write(context.Context, *pb.Event) error { return errors.New("sink is down") }

// run drives the same promotion script through a leader and returns the
// final state hash and every decision's record. observed attaches the
// whole observability layer (the metrics observer and two event sinks, one
// blocked, one failing); !observed attaches nothing (the service's no-op
// observer, no sink). Records are compared whole, log indexes included:
// leader observations are written synchronously ahead of the next write,
// so the indexes are deterministic.
func run(t *testing.T, observed bool) ([32]byte, []string) {
	f := fsm.New()
	clock := &stepClock{now: time.Unix(1_800_000_000, 0)}
	cfg := promotion.Config{Log: &syncLog{f: f}, FSM: f, Clock: clock}
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if observed {
		cfg.Observer = NewMetrics(reg, f)
		go RunSink(ctx, f, 1, blockedSink{}, nil)
		go RunSink(ctx, f, 1, failingSink{}, nil)
	}
	svc := promotion.NewService(cfg)
	if err := svc.BecomeLeader(ctx); err != nil {
		t.Fatal(err)
	}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(svc.CreateDomain(ctx, "db1", pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: 1000, Durability: pb.Durability_DURABILITY_AUTHORITY_GATED}))
	for _, m := range []string{"n1", "n2", "n3"} {
		must(svc.RegisterMember(ctx, &pb.RegisterMember{Domain: "db1", MemberId: m}))
	}
	must(svc.AssignInitial(ctx, "db1", "n1"))
	must(svc.AdvanceWatermark(ctx, []*pb.WatermarkAdvance{{Domain: "db1", Epoch: 1, Holder: "n1", Lsn: 10, Hash: []byte{1}, VisibleCommitId: 3}}))
	must(svc.ReportProgress("db1", &pb.ProgressReport{MemberId: "n2", Epoch: 1, FlushedLsn: 10, FlushedHash: []byte{1}, WatermarkLsn: 10,
		HashAtWatermark: []byte{1}, AppliedCommitId: 3, ReadSafe: true, State: pb.ReplicaState_REPLICA_STATE_STREAMING}))
	must(svc.Renew("db1", "n1", 1))
	svc.Renew("db1", "n2", 1) // fenced: observed, counted, noted
	var artifacts []string
	for i, step := range []time.Duration{0, 500 * time.Millisecond, time.Second} {
		clock.now = clock.now.Add(step)
		one := uint64(1)
		out, _ := svc.Promote(ctx, &pb.PromotionRequest{RequestId: "r" + string(rune('0'+i)), Domain: "db1", Candidate: "n2", ExpectedEpoch: &one})
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(out.Record)
		if err != nil {
			t.Fatal(err)
		}
		artifacts = append(artifacts, string(b))
	}
	h, err := f.StateHash()
	if err != nil {
		t.Fatal(err)
	}
	return h, artifacts
}

// Acceptance (issue 4, item 3; issue 17): with the observability layer
// attached (metrics observer, event sinks blocked or failing) promotions
// decide exactly as they do with none of it.
func TestObservabilityCannotChangeADecision(t *testing.T) {
	h1, a1 := run(t, false)
	h2, a2 := run(t, true)
	if h1 != h2 {
		t.Fatal("state hash differs with the observability layer attached")
	}
	for i := range a1 {
		if a1[i] != a2[i] {
			t.Fatalf("decision %d differs:\n%q\nvs\n%q", i, a1[i], a2[i])
		}
	}
	if a1[0] == a1[2] || len(a1) != 3 {
		t.Fatal("the script must produce both a denial and an allowed promotion")
	}
}
