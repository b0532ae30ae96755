package actuator

import (
	"context"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// recorder is a target recording the calls it received.
type recorder struct {
	mu    sync.Mutex
	calls []Call
	hook  func(Call)
}

func (r *recorder) SetWeight(_ context.Context, c Call) error {
	if r.hook != nil {
		r.hook(c)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, c)
	return nil
}

func (r *recorder) n() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

func newGateway(t *testing.T, path string, target Actuator, src EpochSource) *Gateway {
	t.Helper()
	g, err := NewGateway(GatewayConfig{StatePath: path, Target: target, Epochs: src})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// Acceptance item 5: a controller paused past its lease and resumed cannot
// move traffic. A (epoch 3) sets 50; B (epoch 4, the new lease) sets 0; A's
// late call (epoch 3, weight 100) is refused and no request reaches canary.
func TestFencedGatewayStaleControllerCannotMoveTraffic(t *testing.T) {
	h := startHAProxy(t)
	ctx := ctxT(t)
	g := newGateway(t, filepath.Join(t.TempDir(), "fence.json"), h.hp, nil)
	if err := g.SetWeight(ctx, Call{Domain: "rel/web", Epoch: 3, Canary: "v2", Weight: 50}); err != nil {
		t.Fatal(err)
	}
	s, c := h.send(t, 100)
	t.Logf("A (epoch 3) set 50: stable %d, canary %d", s, c)
	if c == 0 || s == 0 {
		t.Fatalf("weight 50 did not split traffic: stable %d canary %d", s, c)
	}
	if err := g.SetWeight(ctx, Call{Domain: "rel/web", Epoch: 4, Canary: "v2", Weight: 0}); err != nil {
		t.Fatal(err)
	}
	err := g.SetWeight(ctx, Call{Domain: "rel/web", Epoch: 3, Canary: "v2", Weight: 100})
	var fe *FencedError
	if !errors.Is(err, ErrFenced) || !errors.As(err, &fe) || fe.Epoch != 3 || fe.Current != 4 || fe.By != "state" {
		t.Errorf("A's late call: got %v, want ErrFenced naming epochs 3 and 4", err)
	}
	t.Logf("A's late call refused: %v", err)
	if sw, cw, err := h.hp.Weights(ctx); err != nil || sw != 100 || cw != 0 {
		t.Fatalf("weights after the refused call: stable %d canary %d (%v), want 100/0", sw, cw, err)
	}
	s, c = h.send(t, 200)
	t.Logf("after A's refused late call: stable %d, canary %d", s, c)
	if c != 0 {
		t.Fatalf("%d requests reached canary after the stale controller's call", c)
	}
	// B keeps working at its epoch; other domains are independent.
	if err := g.SetWeight(ctx, Call{Domain: "rel/web", Epoch: 4, Canary: "v2", Weight: 10}); err != nil {
		t.Fatal(err)
	}
	if got, _ := g.Accepted("rel/web"); got != 4 {
		t.Fatalf("Accepted = %d, want 4", got)
	}
}

func TestGatewayStateSurvivesRestart(t *testing.T) {
	ctx := ctxT(t)
	path := filepath.Join(t.TempDir(), "fence.json")
	rec := &recorder{}
	g1 := newGateway(t, path, rec, nil)
	for _, c := range []Call{{Domain: "a", Epoch: 7, Weight: 10}, {Domain: "b", Epoch: 2, Weight: 20}} {
		if err := g1.SetWeight(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	// A new gateway (a restarted process) over the same file.
	g2 := newGateway(t, path, rec, nil)
	if err := g2.SetWeight(ctx, Call{Domain: "a", Epoch: 6, Weight: 100}); !errors.Is(err, ErrFenced) {
		t.Fatalf("epoch 6 after restart: %v, want ErrFenced", err)
	}
	if err := g2.SetWeight(ctx, Call{Domain: "b", Epoch: 2, Weight: 30}); err != nil {
		t.Fatalf("the same epoch again: %v", err)
	}
	if err := g2.SetWeight(ctx, Call{Domain: "a", Epoch: 8, Weight: 40}); err != nil {
		t.Fatal(err)
	}
	if got, _ := g2.Accepted("a"); got != 8 {
		t.Fatalf("Accepted(a) = %d, want 8", got)
	}
	if rec.n() != 4 {
		t.Fatalf("target saw %d calls, want 4", rec.n())
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary file left behind: %v", err)
	}
}

func TestGatewayRefusesDamagedState(t *testing.T) {
	ctx := ctxT(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	rec := &recorder{}
	if err := newGateway(t, good, rec, nil).SetWeight(ctx, Call{Domain: "a", Epoch: 9, Weight: 10}); err != nil {
		t.Fatal(err)
	}
	valid, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	tampered := []byte(string(valid))
	for i := range tampered { // epoch 9 -> 1 without fixing the checksum
		if tampered[i] == '9' && i > 0 && tampered[i-1] == ' ' {
			tampered[i] = '1'
		}
	}
	if string(tampered) == string(valid) {
		t.Fatal("tampering did not change the file")
	}
	huge := make([]byte, MaxStateBytes+10)
	for i := range huge {
		huge[i] = ' '
	}
	for name, content := range map[string][]byte{
		"empty": {}, "garbage": []byte("9\n"), "truncated": valid[:len(valid)/2],
		"checksum": tampered, "oversized": huge, "trailing": append(append([]byte{}, valid...), []byte("{}")...),
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name+".json")
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := NewGateway(GatewayConfig{StatePath: path, Target: rec}); !errors.Is(err, ErrStateDamaged) {
				t.Fatalf("NewGateway: %v, want ErrStateDamaged", err)
			}
			// Damaged after the gateway started: every call is refused, the
			// target untouched, the file not reset.
			if err := os.WriteFile(path, valid, 0o600); err != nil {
				t.Fatal(err)
			}
			g := newGateway(t, path, rec, nil)
			if err := os.WriteFile(path, content, 0o600); err != nil {
				t.Fatal(err)
			}
			before := rec.n()
			for _, e := range []uint64{1, 9, 10} {
				if err := g.SetWeight(ctx, Call{Domain: "a", Epoch: e, Weight: 50}); !errors.Is(err, ErrStateDamaged) {
					t.Fatalf("epoch %d: %v, want ErrStateDamaged", e, err)
				}
			}
			if rec.n() != before {
				t.Fatal("the target was called with a damaged state file")
			}
			if after, _ := os.ReadFile(path); string(after) != string(content) {
				t.Fatal("the damaged state file was rewritten")
			}
		})
	}
}

// The flock is held from the epoch check through the target's call: another
// gateway (process) cannot take it meanwhile.
func TestGatewayHoldsLockWhileActuating(t *testing.T) {
	ctx := ctxT(t)
	path := filepath.Join(t.TempDir(), "fence.json")
	var checked atomic.Bool
	rec := &recorder{hook: func(Call) {
		f, err := os.OpenFile(path+".lock", os.O_RDWR, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			t.Errorf("the state lock was free while the target ran (flock: %v)", err)
		}
		checked.Store(true)
	}}
	if err := newGateway(t, path, rec, nil).SetWeight(ctx, Call{Domain: "a", Epoch: 1, Weight: 5}); err != nil {
		t.Fatal(err)
	}
	if !checked.Load() {
		t.Fatal("hook did not run")
	}
}

// Concurrent calls from two gateways (as two processes) over one state file
// and one real haproxy: never two actuations at once, accepted epochs never
// decrease, and haproxy ends at the last accepted call's weights.
func TestGatewayConcurrentCallsSerialized(t *testing.T) {
	h := startHAProxy(t)
	ctx := ctxT(t)
	path := filepath.Join(t.TempDir(), "fence.json")
	var (
		inflight, maxInflight atomic.Int32
		mu                    sync.Mutex
		accepted              []Call
	)
	wrap := ActuatorFunc(func(ctx context.Context, c Call) error {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for {
			m := maxInflight.Load()
			if n <= m || maxInflight.CompareAndSwap(m, n) {
				break
			}
		}
		if err := h.hp.SetWeight(ctx, c); err != nil {
			return err
		}
		mu.Lock()
		accepted = append(accepted, c)
		mu.Unlock()
		return nil
	})
	gws := []*Gateway{newGateway(t, path, wrap, nil), newGateway(t, path, wrap, nil)}
	const seed, workers, perWorker = 16003, 8, 6
	t.Logf("seed %d", seed)
	var wg sync.WaitGroup
	var fenced atomic.Int32
	for w := 0; w < workers; w++ {
		rng := rand.New(rand.NewSource(seed + int64(w)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWorker; i++ {
				c := Call{Domain: "rel/web", Epoch: uint64(1 + i + rng.Intn(2)), Canary: "v2", Weight: uint32(rng.Intn(101))}
				err := gws[w%2].SetWeight(ctx, c)
				switch {
				case errors.Is(err, ErrFenced):
					fenced.Add(1)
				case err != nil:
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d calls: %d accepted, %d fenced, max in flight %d", workers*perWorker, len(accepted), fenced.Load(), maxInflight.Load())
	if maxInflight.Load() != 1 {
		t.Fatalf("%d actuations ran at once", maxInflight.Load())
	}
	if len(accepted)+int(fenced.Load()) != workers*perWorker {
		t.Fatalf("accepted %d + fenced %d != %d", len(accepted), fenced.Load(), workers*perWorker)
	}
	for i := 1; i < len(accepted); i++ {
		if accepted[i].Epoch < accepted[i-1].Epoch {
			t.Fatalf("accepted epoch %d after %d", accepted[i].Epoch, accepted[i-1].Epoch)
		}
	}
	last := accepted[len(accepted)-1]
	s, c, err := h.hp.Weights(ctx)
	if err != nil || c != last.Weight || s+c != 100 {
		t.Fatalf("haproxy at %d/%d (%v), want the last accepted call's %d", s, c, err, last.Weight)
	}
	if got, _ := gws[0].Accepted("rel/web"); got != last.Epoch {
		t.Fatalf("stored epoch %d, want %d", got, last.Epoch)
	}
}

func TestGatewayEpochSource(t *testing.T) {
	ctx := ctxT(t)
	path := filepath.Join(t.TempDir(), "fence.json")
	rec := &recorder{}
	var current atomic.Uint64
	current.Store(3)
	var srcErr atomic.Bool
	src := EpochSourceFunc(func(context.Context, string) (uint64, error) {
		if srcErr.Load() {
			return 0, errors.New("authority unreachable")
		}
		return current.Load(), nil
	})
	g := newGateway(t, path, rec, src)
	if err := g.SetWeight(ctx, Call{Domain: "a", Epoch: 3, Weight: 50}); err != nil {
		t.Fatal(err)
	}
	// B is granted epoch 4 but has not moved traffic yet: the state file
	// alone would still accept A's epoch 3; the authority refuses it.
	current.Store(4)
	if err := newGateway(t, path, &recorder{}, nil).SetWeight(ctx, Call{Domain: "other", Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	err := g.SetWeight(ctx, Call{Domain: "a", Epoch: 3, Weight: 100})
	var fe *FencedError
	if !errors.As(err, &fe) || fe.By != "authority" || fe.Epoch != 3 || fe.Current != 4 {
		t.Fatalf("A's call after B's grant: %v, want ErrFenced by the authority (3 vs 4)", err)
	}
	// The authority's epoch was stored: the state file alone now fences 3.
	if err := newGateway(t, path, rec, nil).SetWeight(ctx, Call{Domain: "a", Epoch: 3, Weight: 100}); !errors.Is(err, ErrFenced) {
		t.Fatalf("without the authority after learning epoch 4: %v, want ErrFenced", err)
	}
	// A call from an epoch the authority does not know is refused and not stored.
	if err := g.SetWeight(ctx, Call{Domain: "a", Epoch: 9, Weight: 10}); !errors.Is(err, ErrFenced) {
		t.Fatalf("epoch 9 while the authority is at 4: %v, want ErrFenced", err)
	}
	if got, _ := g.Accepted("a"); got != 4 {
		t.Fatalf("stored %d after refusing epoch 9, want 4", got)
	}
	srcErr.Store(true)
	if err := g.SetWeight(ctx, Call{Domain: "a", Epoch: 4, Weight: 10}); err == nil || errors.Is(err, ErrFenced) {
		t.Fatalf("authority error: %v, want a refusal that is not ErrFenced", err)
	}
	srcErr.Store(false)
	if err := g.SetWeight(ctx, Call{Domain: "a", Epoch: 4, Weight: 10}); err != nil {
		t.Fatal(err)
	}
	if rec.n() != 2 {
		t.Fatalf("target saw %d calls, want 2", rec.n())
	}
}

func TestGatewayRefusesInvalidCalls(t *testing.T) {
	ctx := ctxT(t)
	rec := &recorder{}
	g := newGateway(t, filepath.Join(t.TempDir(), "fence.json"), rec, nil)
	for _, c := range []Call{
		{Domain: "", Epoch: 1}, {Domain: "a b", Epoch: 1}, {Domain: "a", Epoch: 0},
		{Domain: "a", Epoch: 1, Weight: 101}, {Domain: "a", Epoch: 1, Canary: "v 2"},
		{Domain: "a", Epoch: 1, Canary: string(make([]byte, MaxCanaryLen+1))},
		{Domain: string(make([]byte, MaxDomainLen+1)), Epoch: 1},
	} {
		if err := g.SetWeight(ctx, c); !errors.Is(err, ErrInvalidCall) {
			t.Fatalf("%+.40v: %v, want ErrInvalidCall", c, err)
		}
	}
	if rec.n() != 0 {
		t.Fatal("an invalid call reached the target")
	}
}
