package promotion

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
)

// gatedLog holds every AdvanceWatermark proposal until the test lets it
// through, and records each one's number of advances.
type gatedLog struct {
	*fakeLog
	entered chan int      // a watermark proposal is waiting (its size)
	gate    chan struct{} // closed: proposals go through
}

func (l *gatedLog) Propose(ctx context.Context, cmd *pb.Command) (*fsm.Result, error) {
	if wm := cmd.GetAdvanceWatermark(); wm != nil {
		l.entered <- len(wm.GetAdvances())
		<-l.gate
	}
	return l.fakeLog.Propose(ctx, cmd)
}

// newGatedService: a leader with domains d0..d{n-1}, each held by n1 at
// epoch 1 with its watermark at lsn 100.
func newGatedService(t *testing.T, n int, perCall bool) (*Service, *gatedLog) {
	t.Helper()
	f := fsm.New()
	gl := &gatedLog{fakeLog: &fakeLog{fsm: f, term: 1}, entered: make(chan int, 64), gate: make(chan struct{})}
	close(gl.gate) // open during setup
	svc := NewService(Config{Log: gl, FSM: f, Clock: newFakeClock(), WatermarkEntryPerCall: perCall})
	ctx := context.Background()
	if err := svc.BecomeLeader(ctx); err != nil {
		t.Fatal(err)
	}
	must := func(_ *fsm.Result, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		d := fmt.Sprintf("d%d", i)
		must(svc.CreateDomain(ctx, d, pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: 60_000, Durability: pb.Durability_DURABILITY_AUTHORITY_GATED}))
		must(svc.RegisterMember(ctx, &pb.RegisterMember{Domain: d, MemberId: "n1"}))
		must(svc.AssignInitial(ctx, d, "n1"))
		errs, err := svc.AdvanceWatermark(ctx, []*pb.WatermarkAdvance{wmAdv(d, 100)})
		if err != nil || errs[0] != nil {
			t.Fatal(err, errs)
		}
	}
	for len(gl.entered) > 0 {
		<-gl.entered
	}
	gl.gate = make(chan struct{}) // closed by the test
	return svc, gl
}

func wmAdv(domain string, lsn uint64) *pb.WatermarkAdvance {
	return &pb.WatermarkAdvance{Domain: domain, Epoch: 1, Holder: "n1", Lsn: lsn, Hash: []byte{byte(lsn), 1}, VisibleCommitId: lsn}
}

type wmReply struct {
	call  int
	errs  []error
	index uint64
	err   error
	// durable: every advance of the call was in the FSM when it returned
	durable bool
}

func startAdvance(svc *Service, ctx context.Context, call int, advs []*pb.WatermarkAdvance, out chan<- wmReply) {
	go func() {
		errs, index, err := svc.AdvanceWatermarkAt(ctx, advs)
		durable := err == nil
		for i, a := range advs {
			wm, ok := svc.fsm.Watermark(a.Domain)
			if err == nil && errs[i] == nil && (!ok || wm.Lsn < a.Lsn) {
				durable = false
			}
		}
		out <- wmReply{call: call, errs: errs, index: index, err: err, durable: durable}
	}()
}

// waitQueued waits (bounded) until n calls wait in the merge queue.
func waitQueued(t *testing.T, svc *Service, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		svc.wm.mu.Lock()
		q := len(svc.wm.queue)
		svc.wm.mu.Unlock()
		if q == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d calls queued, want %d", q, n)
		}
		time.Sleep(time.Millisecond) // polling an observable condition, bounded
	}
}

func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("nothing within 5s")
	}
	var zero T
	return zero
}

// Concurrent calls arriving while entries are in flight are merged into one
// entry; each call gets its own advances' results (a conflicting advance
// fails alone) and returns only once its advances are applied.
func TestWatermarkCallsMergeIntoOneEntry(t *testing.T) {
	svc, gl := newGatedService(t, 6, false)
	ctx := context.Background()
	out := make(chan wmReply, 8)
	// Two calls fill the in-flight proposals (wmMaxInflight).
	// Each is started once the one before it is proposed: two calls
	// started together may merge (the second arriving before the first
	// reached the log).
	startAdvance(svc, ctx, 0, []*pb.WatermarkAdvance{wmAdv("d0", 101)}, out)
	a := recv(t, gl.entered)
	startAdvance(svc, ctx, 1, []*pb.WatermarkAdvance{wmAdv("d1", 101)}, out)
	if b := recv(t, gl.entered); a != 1 || b != 1 {
		t.Fatalf("first proposals carry %d and %d advances, want 1 and 1", a, b)
	}
	// Four more queue behind them: one with two advances, one conflicting
	// (below the recorded lsn 100).
	startAdvance(svc, ctx, 2, []*pb.WatermarkAdvance{wmAdv("d2", 101), wmAdv("d3", 101)}, out)
	waitQueued(t, svc, 1)
	startAdvance(svc, ctx, 3, []*pb.WatermarkAdvance{wmAdv("d4", 99)}, out)
	waitQueued(t, svc, 2)
	startAdvance(svc, ctx, 4, []*pb.WatermarkAdvance{wmAdv("d5", 101)}, out)
	waitQueued(t, svc, 3)
	select {
	case r := <-out:
		t.Fatalf("call %d returned before any entry committed", r.call)
	default:
	}
	close(gl.gate)
	if n := recv(t, gl.entered); n != 4 {
		t.Fatalf("merged entry carries %d advances, want 4 (calls 2, 3 and 4)", n)
	}
	replies := map[int]wmReply{}
	for range 5 {
		r := recv(t, out)
		replies[r.call] = r
	}
	for call, r := range replies {
		if r.err != nil {
			t.Fatalf("call %d: %v", call, r.err)
		}
		if !r.durable {
			t.Fatalf("call %d returned before its advances were applied", call)
		}
	}
	if replies[2].index != replies[3].index || replies[3].index != replies[4].index || replies[2].index == replies[0].index {
		t.Fatalf("entry indexes: %d %d %d %d %d", replies[0].index, replies[1].index, replies[2].index, replies[3].index, replies[4].index)
	}
	if e := replies[2].errs; len(e) != 2 || e[0] != nil || e[1] != nil {
		t.Fatalf("call 2: %v", e)
	}
	if e := replies[3].errs; len(e) != 1 || !errors.Is(e[0], fsm.ErrConflict) {
		t.Fatalf("call 3 (below the recorded lsn): %v, want a conflict", e)
	}
	if e := replies[4].errs; len(e) != 1 || e[0] != nil {
		t.Fatalf("call 4: %v", e)
	}
}

// With WatermarkEntryPerCall every call proposes its own entry.
func TestWatermarkEntryPerCall(t *testing.T) {
	svc, gl := newGatedService(t, 3, true)
	out := make(chan wmReply, 3)
	for i := range 3 {
		startAdvance(svc, context.Background(), i, []*pb.WatermarkAdvance{wmAdv(fmt.Sprintf("d%d", i), 101)}, out)
	}
	for range 3 {
		if n := recv(t, gl.entered); n != 1 {
			t.Fatalf("entry of %d advances, want 1", n)
		}
	}
	close(gl.gate)
	for range 3 {
		if r := recv(t, out); r.err != nil || r.errs[0] != nil || !r.durable {
			t.Fatalf("call %d: %v %v durable=%v", r.call, r.err, r.errs, r.durable)
		}
	}
}

// A caller that stops waiting hears "unknown" and does not fail the calls
// merged with it; its advance still commits.
func TestWatermarkMergedCallerGivesUp(t *testing.T) {
	svc, gl := newGatedService(t, 4, false)
	out := make(chan wmReply, 4)
	startAdvance(svc, context.Background(), 0, []*pb.WatermarkAdvance{wmAdv("d0", 101)}, out)
	recv(t, gl.entered) // proposed before call 1 starts, so the two never merge
	startAdvance(svc, context.Background(), 1, []*pb.WatermarkAdvance{wmAdv("d1", 101)}, out)
	recv(t, gl.entered)
	ctx, cancel := context.WithCancel(context.Background())
	startAdvance(svc, ctx, 2, []*pb.WatermarkAdvance{wmAdv("d2", 101)}, out)
	waitQueued(t, svc, 1)
	startAdvance(svc, context.Background(), 3, []*pb.WatermarkAdvance{wmAdv("d3", 101)}, out)
	waitQueued(t, svc, 2)
	cancel()
	if r := recv(t, out); r.call != 2 || !errors.Is(r.err, ErrIndeterminate) {
		t.Fatalf("call %d: %v, want call 2 indeterminate", r.call, r.err)
	}
	close(gl.gate)
	if n := recv(t, gl.entered); n != 2 {
		t.Fatalf("merged entry of %d advances, want 2", n)
	}
	for range 3 {
		if r := recv(t, out); r.err != nil || r.errs[0] != nil || !r.durable {
			t.Fatalf("call %d: %v %v", r.call, r.err, r.errs)
		}
	}
	if wm, _ := svc.fsm.Watermark("d2"); wm.GetLsn() != 101 {
		t.Fatalf("abandoned advance: watermark %d, want 101 (committed anyway)", wm.GetLsn())
	}
}

// A failed proposal fails every call merged into it.
func TestWatermarkMergedProposalFails(t *testing.T) {
	svc, gl := newGatedService(t, 4, false)
	out := make(chan wmReply, 4)
	startAdvance(svc, context.Background(), 0, []*pb.WatermarkAdvance{wmAdv("d0", 101)}, out)
	recv(t, gl.entered) // proposed before call 1 starts, so the two never merge
	startAdvance(svc, context.Background(), 1, []*pb.WatermarkAdvance{wmAdv("d1", 101)}, out)
	recv(t, gl.entered)
	startAdvance(svc, context.Background(), 2, []*pb.WatermarkAdvance{wmAdv("d2", 101)}, out)
	waitQueued(t, svc, 1)
	startAdvance(svc, context.Background(), 3, []*pb.WatermarkAdvance{wmAdv("d3", 101)}, out)
	waitQueued(t, svc, 2)
	gl.mu.Lock()
	gl.fail = ErrIndeterminate
	gl.mu.Unlock()
	close(gl.gate)
	recv(t, gl.entered)
	for range 4 {
		if r := recv(t, out); !errors.Is(r.err, ErrIndeterminate) {
			t.Fatalf("call %d: %v, want the proposal's error", r.call, r.err)
		}
	}
}

// A merged entry stops at wmMaxMerged advances; a call is never split, and
// a call larger than that alone still goes in one entry.
func TestWatermarkMergeBound(t *testing.T) {
	big := func(n int) *wmCall { return &wmCall{advs: make([]*pb.WatermarkAdvance, n)} }
	w := &wmCommitter{queue: []*wmCall{big(600), big(400), big(1), big(1500), big(2)}}
	var sizes []int
	for len(w.queue) > 0 {
		n := 0
		for _, c := range w.take() {
			n += len(c.advs)
		}
		sizes = append(sizes, n)
	}
	if fmt.Sprint(sizes) != "[1000 1 1500 2]" {
		t.Fatalf("entries of %v advances, want [1000 1 1500 2]", sizes)
	}
}
