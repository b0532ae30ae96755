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

func chain(n int) []Position {
	prev := Zero
	out := []Position{Zero}
	for i := 1; i <= n; i++ {
		e := Entry{Epoch: 1, LSN: uint64(i), CommitID: uint64(i), Key: []byte{byte(i)}, Value: []byte("v")}
		p := Position{Epoch: 1, LSN: uint64(i), Hash: ChainHash(prev.Hash, e)}
		out = append(out, p)
		prev = p
	}
	return out
}

// Readiness: P6-S2, AU-5 (identity by chain hash, not a counter); docs/READINESS.md.
func TestChainHashVerifyNext(t *testing.T) {
	prev := Position{Epoch: 2, LSN: 7, Hash: bytes.Repeat([]byte{1}, HashSize)}
	e := Entry{Epoch: 2, LSN: 8, CommitID: 9, Key: []byte("k"), Value: []byte("v")}
	h := ChainHash(prev.Hash, e)
	if p, err := VerifyNext(prev, e, prev.Hash, h); err != nil || p.LSN != 8 || !bytes.Equal(p.Hash, h) {
		t.Fatalf("valid record: %v %v", p, err)
	}
	// Moving a byte between key and value changes the hash.
	if bytes.Equal(h, ChainHash(prev.Hash, Entry{Epoch: 2, LSN: 8, CommitID: 9, Key: []byte("kv")})) {
		t.Fatal("key/value split is ambiguous")
	}
	cases := map[string]func() (Position, Entry, []byte, []byte){
		"gap": func() (Position, Entry, []byte, []byte) {
			e2 := e
			e2.LSN = 9
			return prev, e2, prev.Hash, ChainHash(prev.Hash, e2)
		},
		"old epoch": func() (Position, Entry, []byte, []byte) {
			e2 := e
			e2.Epoch = 1
			return prev, e2, prev.Hash, ChainHash(prev.Hash, e2)
		},
		"prev hash": func() (Position, Entry, []byte, []byte) {
			return prev, e, []byte("other"), ChainHash([]byte("other"), e)
		},
		"bad hash": func() (Position, Entry, []byte, []byte) { return prev, e, prev.Hash, append([]byte{0}, h[1:]...) },
		"value swap": func() (Position, Entry, []byte, []byte) {
			e2 := e
			e2.Value = []byte("forged")
			return prev, e2, prev.Hash, h
		},
	}
	for name, f := range cases {
		p, e, ph, hh := f()
		var ce *ChainError
		if _, err := VerifyNext(p, e, ph, hh); !errors.As(err, &ce) {
			t.Errorf("%s: got %v, want a ChainError", name, err)
		}
	}
}

func TestFenceGuard(t *testing.T) {
	var persisted []uint64
	g := NewFenceGuard(2, func(e uint64) error { persisted = append(persisted, e); return nil })
	if err := g.Admit(2); err != nil {
		t.Fatal(err)
	}
	if err := g.Admit(1); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("epoch 1 below 2: %v", err)
	}
	if err := g.Admit(3); err != nil || g.Highest() != 3 {
		t.Fatalf("admit 3: %v highest %d", err, g.Highest())
	}
	if err := g.Check(2); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("2 after 3: %v", err)
	}
	if raised, _ := g.Observe(3); raised {
		t.Fatal("observing the same epoch raised the fence")
	}
	if len(persisted) != 1 || persisted[0] != 3 {
		t.Fatalf("persisted %v, want [3]", persisted)
	}
	failing := NewFenceGuard(1, func(uint64) error { return errors.New("disk full") })
	if err := failing.Admit(5); err == nil || failing.Highest() != 1 {
		t.Fatalf("a failed persist must leave the fence as it was: %v, %d", err, failing.Highest())
	}
}

func TestSyncTracker(t *testing.T) {
	tr := NewSyncTracker(1)
	tr.Local(10)
	if got := tr.Eligible(); got != 0 {
		t.Fatalf("no replica yet: eligible %d", got)
	}
	tr.Ack("a", 4)
	tr.Ack("b", 7)
	if got := tr.Eligible(); got != 7 {
		t.Fatalf("eligible %d, want 7 (most advanced replica)", got)
	}
	tr.Ack("b", 3) // never goes back
	tr.Ack("c", 12)
	if got := tr.Eligible(); got != 10 {
		t.Fatalf("eligible %d, want 10 (capped by the local flush)", got)
	}
	two := NewSyncTracker(2)
	two.Local(10)
	two.Ack("a", 9)
	if two.Eligible() != 0 {
		t.Fatal("2 sync replicas needed, one acked")
	}
	two.Ack("b", 5)
	if got := two.Eligible(); got != 5 {
		t.Fatalf("eligible %d, want 5 (second most advanced)", got)
	}
}

// fakeDurability records calls and commits what the test releases.
type fakeDurability struct {
	mu      sync.Mutex
	calls   []uint64
	visible []uint64
	release chan error
}

func (f *fakeDurability) WaitDurable(ctx context.Context, lsn uint64, _ []byte, vis uint64) error {
	f.mu.Lock()
	f.calls = append(f.calls, lsn)
	f.visible = append(f.visible, vis)
	f.mu.Unlock()
	select {
	case err := <-f.release:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *fakeDurability) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestGateGroupCommitsConcurrentWriters(t *testing.T) {
	pos := chain(20)
	fd := &fakeDurability{release: make(chan error)}
	g := NewGate(fd, pos[2], 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- g.Run(ctx) }()

	// Already durable: returns at once.
	if err := g.Wait(ctx, 2); err != nil {
		t.Fatal(err)
	}
	g.Offer(pos[5], 5)
	waitFor(t, "first advance", func() bool { return fd.callCount() == 1 })
	// While lsn 5 is in flight, writers 6..12 pile up; each is offered.
	var wg sync.WaitGroup
	errs := make([]error, 13)
	for lsn := 3; lsn <= 12; lsn++ {
		wg.Add(1)
		go func() { defer wg.Done(); errs[lsn] = g.Wait(ctx, uint64(lsn)) }()
	}
	for lsn := 6; lsn <= 12; lsn++ {
		g.Offer(pos[lsn], uint64(lsn))
	}
	g.Offer(pos[9], 9) // below an earlier offer: ignored
	if v := g.Visible(); v != 2 {
		t.Fatalf("visible %d before any commit, want 2", v)
	}
	fd.release <- nil // lsn 5 committed
	waitFor(t, "second advance", func() bool { return fd.callCount() == 2 })
	if v := g.Visible(); v != 5 {
		t.Fatalf("visible %d after lsn 5, want 5", v)
	}
	fd.release <- nil // lsn 12 committed: one advance for 7 writers
	wg.Wait()
	for lsn := 3; lsn <= 12; lsn++ {
		if errs[lsn] != nil {
			t.Fatalf("lsn %d: %v", lsn, errs[lsn])
		}
	}
	if fd.calls[1] != 12 || fd.visible[1] != 12 {
		t.Fatalf("second advance %d (visible %d), want the highest offer 12", fd.calls[1], fd.visible[1])
	}
	if d, v := g.Durable(); d.LSN != 12 || v != 12 || !d.Same(pos[12]) {
		t.Fatalf("durable %v visible %d", d, v)
	}
	cancel()
	if err := <-runDone; !errors.Is(err, ErrGateStopped) {
		t.Fatalf("run: %v", err)
	}
	if err := g.Wait(context.Background(), 13); !errors.Is(err, ErrGateStopped) {
		t.Fatalf("wait after stop: %v", err)
	}
}

func TestGateFencedNeverAcknowledgesAgain(t *testing.T) {
	pos := chain(5)
	fd := &fakeDurability{release: make(chan error, 1)}
	g := NewGate(fd, Zero, 0)
	go g.Run(context.Background())
	g.Offer(pos[3], 3)
	waiting := make(chan error, 1)
	go func() { waiting <- g.Wait(context.Background(), 3) }()
	fd.release <- client.ErrFenced
	if err := <-waiting; !errors.Is(err, client.ErrFenced) {
		t.Fatalf("waiter: %v", err)
	}
	g.Offer(pos[5], 5)
	if err := g.Wait(context.Background(), 1); !errors.Is(err, client.ErrFenced) {
		t.Fatalf("a later wait must be fenced too: %v", err)
	}
	if fd.callCount() != 1 {
		t.Fatalf("%d advances after fencing", fd.callCount()-1)
	}
	if v := g.Visible(); v != 0 {
		t.Fatalf("nothing may become visible: %d", v)
	}
}

func TestGateWaitContext(t *testing.T) {
	g := NewGate(&fakeDurability{release: make(chan error)}, Zero, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := g.Wait(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v", err)
	}
}

func TestBuildReport(t *testing.T) {
	pos := chain(10)
	hashAt := func(lsn uint64) ([]byte, bool) {
		if lsn > 10 {
			return nil, false
		}
		return pos[lsn].Hash, true
	}
	p := ReplicaProgress{Member: "n2", Epoch: 3, Flushed: pos[10], AppliedCommitID: 10, ReadSafe: true, State: pb.ReplicaState_REPLICA_STATE_STREAMING}
	r := BuildReport(p, &pb.Watermark{Lsn: 7}, nil, hashAt)
	if r.WatermarkLsn != 7 || !bytes.Equal(r.HashAtWatermark, pos[7].Hash) || r.FlushedLsn != 10 || !bytes.Equal(r.FlushedHash, pos[10].Hash) ||
		r.Epoch != 3 || r.MemberId != "n2" || r.AppliedCommitId != 10 || !r.ReadSafe {
		t.Fatalf("report %v", r)
	}
	// Behind the watermark: name its lsn, carry no hash.
	behind := BuildReport(p, &pb.Watermark{Lsn: 15}, nil, hashAt)
	if behind.WatermarkLsn != 15 || len(behind.HashAtWatermark) != 0 {
		t.Fatalf("behind: %v", behind)
	}
	if none := BuildReport(p, nil, nil, hashAt); none.WatermarkLsn != 0 || none.HashAtWatermark != nil {
		t.Fatalf("unknown watermark: %v", none)
	}
}
