package replication

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
)

// manualTimer replaces time.After: the test fires each interval.
type manualTimer struct {
	mu    sync.Mutex
	asked []time.Duration
	ch    chan time.Time
}

func newManualTimer() *manualTimer { return &manualTimer{ch: make(chan time.Time, 1)} }

func (m *manualTimer) after(d time.Duration) <-chan time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.asked = append(m.asked, d)
	return m.ch
}

func (m *manualTimer) requests() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.asked)
}

func (m *manualTimer) fire() { m.ch <- time.Time{} }

// timedDurability records, per call, whether the interval had been fired.
type timedDurability struct {
	fakeDurability
	timer *manualTimer
	fired int
	seen  []int // fired at each call
}

func (f *timedDurability) WaitDurable(ctx context.Context, lsn uint64, h []byte, vis uint64) error {
	f.mu.Lock()
	f.seen = append(f.seen, f.fired)
	f.mu.Unlock()
	return f.fakeDurability.WaitDurable(ctx, lsn, h, vis)
}

func (f *timedDurability) fire() {
	f.mu.Lock()
	f.fired++
	f.mu.Unlock()
	f.timer.fire()
}

func TestQuorumGateAcknowledgesWithoutTheAuthority(t *testing.T) {
	pos := chain(20)
	tm := newManualTimer()
	fd := &timedDurability{fakeDurability: fakeDurability{release: make(chan error)}, timer: tm}
	g := NewQuorumGate(fd, pos[2], 2, 250*time.Millisecond, WithTimer(tm.after))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- g.Run(ctx) }()

	// Acknowledged and visible at the offer, while the watermark advance
	// for it is still blocked at the authority.
	g.Offer(pos[5], 5)
	if err := g.Wait(ctx, 5); err != nil {
		t.Fatal(err)
	}
	if v := g.Visible(); v != 5 {
		t.Fatalf("visible %d, want 5", v)
	}
	waitFor(t, "first lazy advance", func() bool { return fd.callCount() == 1 })
	if wm, _ := g.Watermark(); wm.LSN != 2 {
		t.Fatalf("watermark %d before the authority committed, want 2", wm.LSN)
	}
	fd.release <- nil
	waitFor(t, "the interval timer", func() bool { return tm.requests() == 1 })
	if tm.asked[0] != 250*time.Millisecond {
		t.Fatalf("interval %v", tm.asked[0])
	}
	// Within the interval: every offer is acknowledged at once, none
	// reaches the authority.
	for lsn := 6; lsn <= 12; lsn++ {
		g.Offer(pos[lsn], uint64(lsn))
		if err := g.Wait(ctx, uint64(lsn)); err != nil {
			t.Fatal(err)
		}
	}
	g.Offer(pos[9], 9) // below an earlier offer: ignored
	if d, v := g.Durable(); d.LSN != 12 || v != 12 {
		t.Fatalf("acknowledged %v visible %d, want 12", d, v)
	}
	fd.fire() // the interval passed: one advance covering all of them
	waitFor(t, "second lazy advance", func() bool { return fd.callCount() == 2 })
	fd.release <- nil
	waitFor(t, "watermark 12", func() bool { wm, _ := g.Watermark(); return wm.LSN == 12 })
	fd.mu.Lock()
	calls, visible, seen := append([]uint64(nil), fd.calls...), append([]uint64(nil), fd.visible...), append([]int(nil), fd.seen...)
	fd.mu.Unlock()
	if calls[0] != 5 || calls[1] != 12 || visible[1] != 12 {
		t.Fatalf("advances %v (visible %v), want [5 12]", calls, visible)
	}
	if seen[1] != 1 {
		t.Fatalf("the second advance started before the interval passed (timer fired %d times)", seen[1])
	}
	if g.Advances() != 2 {
		t.Fatalf("advances %d", g.Advances())
	}
	cancel()
	if err := <-runDone; !errors.Is(err, ErrGateStopped) {
		t.Fatalf("run: %v", err)
	}
	if err := g.Wait(context.Background(), 13); !errors.Is(err, ErrGateStopped) {
		t.Fatalf("wait after stop: %v", err)
	}
}

func TestQuorumGateWatermarkNeverBeyondAcknowledged(t *testing.T) {
	pos := chain(10)
	fd := &fakeDurability{release: make(chan error, 10)}
	for range 10 {
		fd.release <- nil
	}
	tm := newManualTimer()
	g := NewQuorumGate(fd, Zero, 0, time.Second, WithTimer(tm.after))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go g.Run(ctx)
	// Nothing offered: nothing advanced, whatever asks.
	wctx, wcancel := context.WithCancel(ctx)
	waited := make(chan error, 1)
	go func() { waited <- g.WaitWatermark(wctx, 4) }()
	g.Offer(pos[3], 3)
	waitFor(t, "advance to 3", func() bool { wm, _ := g.Watermark(); return wm.LSN == 3 })
	// The urgent request for 4 is served once 4 is acknowledged, before
	// the interval passes.
	g.Offer(pos[4], 4)
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	wcancel()
	fd.mu.Lock()
	defer fd.mu.Unlock()
	for i, lsn := range fd.calls {
		if lsn > 4 || (i == 0 && lsn != 3) {
			t.Fatalf("advances %v: beyond what was acknowledged", fd.calls)
		}
	}
}

func TestQuorumGateFencedNeverAcknowledgesAgain(t *testing.T) {
	pos := chain(5)
	fd := &fakeDurability{release: make(chan error, 1)}
	g := NewQuorumGate(fd, Zero, 0, time.Millisecond)
	go g.Run(context.Background())
	g.Offer(pos[3], 3)
	fd.release <- client.ErrFenced // the lazy advance learns the epoch moved
	waitFor(t, "fenced", func() bool { return g.Err() != nil })
	if err := g.Wait(context.Background(), 3); !errors.Is(err, client.ErrFenced) {
		t.Fatalf("after the fence even an acknowledged lsn is refused: %v", err)
	}
	g.Offer(pos[5], 5)
	if err := g.Wait(context.Background(), 5); !errors.Is(err, client.ErrFenced) {
		t.Fatalf("a later wait must be fenced too: %v", err)
	}
	if d, _ := g.Durable(); d.LSN != 3 {
		t.Fatalf("an offer after the fence moved the acknowledged position to %d", d.LSN)
	}
}

func TestQuorumGateWithoutAuthority(t *testing.T) {
	pos := chain(3)
	g := NewQuorumGate(nil, Zero, 0, 0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	g.Offer(pos[3], 3)
	if err := g.Wait(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if wm, _ := g.Watermark(); wm.LSN != 0 {
		t.Fatalf("watermark %d without an authority", wm.LSN)
	}
	cancel()
	if err := <-done; !errors.Is(err, ErrGateStopped) {
		t.Fatal(err)
	}
}

func TestReporterFencesBeforeReporting(t *testing.T) {
	pos := chain(10)
	hashAt := func(lsn uint64) ([]byte, bool) {
		if lsn > 10 {
			return nil, false
		}
		return pos[lsn].Hash, true
	}
	var persisted []uint64
	guard := NewFenceGuard(3, func(e uint64) error { persisted = append(persisted, e); return nil })
	source := func() ReplicaProgress {
		return ReplicaProgress{Member: "n2", Epoch: 3, Flushed: Position{Epoch: 3, LSN: 10, Hash: pos[10].Hash}, FencedEpoch: guard.Highest()}
	}
	rep := NewReporter(nil, "db", time.Hour, source, hashAt)
	failing := true
	var fencedAt []uint64
	rep.OnFence(func(f *pb.Fence) error {
		if failing {
			return errors.New("disk full")
		}
		if _, err := guard.Observe(f.GetEpoch()); err != nil {
			return err
		}
		fencedAt = append(fencedAt, f.GetEpoch())
		return nil
	})
	resp := &pb.ProgressReportResponse{Fence: &pb.Fence{Epoch: 4, Candidate: "n3"}, ChainLsns: []uint64{3, 7, 15}}
	rep.HandleResponse(resp)
	if guard.Highest() != 3 {
		t.Fatal("a failed fence callback raised the guard")
	}
	failing = false
	rep.HandleResponse(resp) // retried on the next reply
	rep.HandleResponse(resp) // handled once
	if len(fencedAt) != 1 || fencedAt[0] != 4 || len(persisted) != 1 || persisted[0] != 4 {
		t.Fatalf("fenced %v persisted %v, want [4] [4]", fencedAt, persisted)
	}
	r := rep.Build()
	if r.FencedEpoch != 4 || r.Epoch != 3 || r.FlushedEpoch != 3 || r.FlushedLsn != 10 || !bytes.Equal(r.FlushedHash, pos[10].Hash) {
		t.Fatalf("fenced report %v", r)
	}
	if len(r.Chain) != 2 || r.Chain[0].Lsn != 3 || !bytes.Equal(r.Chain[0].Hash, pos[3].Hash) ||
		r.Chain[1].Lsn != 7 || !bytes.Equal(r.Chain[1].Hash, pos[7].Hash) {
		t.Fatalf("chain %v, want lsns 3 and 7 (15 is beyond the flushed position)", r.Chain)
	}
}
