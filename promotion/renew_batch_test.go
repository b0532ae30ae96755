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

const batchTTL = 400 * time.Millisecond

// batchRig is a leader with n lock domains lk-0000… held by holder "h" at
// epoch 1 (TTL batchTTL).
type batchRig struct {
	svc   *Service
	log   *fakeLog
	clock *fakeClock
	ctx   context.Context
}

func newBatchRig(tb testing.TB, n int) *batchRig {
	tb.Helper()
	f := fsm.New()
	r := &batchRig{log: &fakeLog{fsm: f, term: 1}, clock: newFakeClock(), ctx: context.Background()}
	r.svc = NewService(Config{Log: r.log, FSM: f, Clock: r.clock})
	if err := r.svc.BecomeLeader(r.ctx); err != nil {
		tb.Fatal(err)
	}
	for i := range n {
		d := batchDomain(i)
		if _, err := r.svc.CreateDomain(r.ctx, d, pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: uint64(batchTTL.Milliseconds())}); err != nil {
			tb.Fatal(err)
		}
		if _, err := r.svc.Acquire(r.ctx, d, "h", nil); err != nil {
			tb.Fatal(err)
		}
	}
	return r
}

func batchDomain(i int) string { return fmt.Sprintf("lk-%04d", i) }

// Each lease of a batch is judged on its own, as Renew judges it: a stale
// epoch, another holder's lease, a released lease, an expired lease and an
// unknown domain each fail their own entry, and the others are renewed.
func TestRenewBatchJudgesEachLease(t *testing.T) {
	r := newBatchRig(t, 6)
	// lk-0001 moves on: released by h, acquired by x at epoch 2.
	if _, err := r.svc.Release(r.ctx, batchDomain(1), "h", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := r.svc.Acquire(r.ctx, batchDomain(1), "x", nil); err != nil {
		t.Fatal(err)
	}
	// lk-0002 released (the same epoch, no longer held).
	if _, err := r.svc.Release(r.ctx, batchDomain(2), "h", 1); err != nil {
		t.Fatal(err)
	}
	// lk-0003 expires: every other lease is renewed half-way, it is not.
	r.clock.Advance(batchTTL / 2)
	for _, i := range []int{0, 4, 5} {
		if _, err := r.svc.Renew(batchDomain(i), "h", 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.svc.Renew(batchDomain(1), "x", 2); err != nil {
		t.Fatal(err)
	}
	r.clock.Advance(batchTTL / 2)

	domains := []string{batchDomain(0), batchDomain(1), batchDomain(2), batchDomain(3), "nope", batchDomain(4), batchDomain(5)}
	epochs := []uint64{1, 1, 1, 1, 1, 1, 7}
	out := make([]RenewResult, len(domains))
	if err := r.svc.RenewBatch("h", domains, epochs, nil, out); err != nil {
		t.Fatal(err)
	}
	want := []error{nil, ErrFenced, ErrFenced, ErrLeaseExpired, fsm.ErrNotFound, nil, ErrFenced}
	for i, w := range want {
		got := out[i]
		switch {
		case w == nil && (got.Err != nil || got.Remaining != batchTTL):
			t.Errorf("%s: %+v, want renewed for %v", domains[i], got, batchTTL)
		case w != nil && (!errors.Is(got.Err, w) || got.Remaining != 0):
			t.Errorf("%s: %+v, want %v", domains[i], got, w)
		}
	}
	// The renewed leases run a full TTL from now; the others did not move.
	for _, i := range []int{0, 4} {
		if obs, _ := r.svc.Leases().Observe(batchDomain(i)); obs.Status != LeaseHeld || obs.Remaining != batchTTL {
			t.Errorf("%s after the batch: %+v", batchDomain(i), obs)
		}
	}
	if obs, _ := r.svc.Leases().Observe(batchDomain(1)); obs.Holder != "x" || obs.Epoch != 2 || obs.Remaining != batchTTL/2 {
		t.Errorf("x's lease after h's stale renewal: %+v", obs)
	}
	if obs, _ := r.svc.Leases().Observe(batchDomain(5)); obs.Remaining != batchTTL/2 {
		t.Errorf("a renewal at a wrong epoch moved the lease: %+v", obs)
	}
	// The same stale renewals one at a time give the same answers.
	for i, d := range domains {
		_, err := r.svc.Renew(d, "h", epochs[i])
		if (err == nil) != (out[i].Err == nil) || err != nil && renewResultOf(err) != renewResultOf(out[i].Err) {
			t.Errorf("%s: Renew %v, RenewBatch %v", d, err, out[i].Err)
		}
	}
}

// A holder renewing with another holder's name is fenced per lease (the
// transport's authorization refuses it earlier; this is the service's own
// check).
func TestRenewBatchOtherHolderFenced(t *testing.T) {
	r := newBatchRig(t, 2)
	out := make([]RenewResult, 2)
	if err := r.svc.RenewBatch("x", []string{batchDomain(0), batchDomain(1)}, []uint64{1, 1}, nil, out); err != nil {
		t.Fatal(err)
	}
	for i, o := range out {
		if !errors.Is(o.Err, ErrFenced) {
			t.Errorf("entry %d: %+v, want fenced", i, o)
		}
	}
}

// A batch on a demoted service fails whole with ErrNotLeader and renews
// nothing; mismatched lengths are refused.
func TestRenewBatchNotLeader(t *testing.T) {
	r := newBatchRig(t, 1)
	out := make([]RenewResult, 1)
	if err := r.svc.RenewBatch("h", []string{batchDomain(0)}, []uint64{1, 2}, nil, out); !errors.Is(err, fsm.ErrInvalid) {
		t.Fatalf("mismatched lengths: %v", err)
	}
	r.svc.StepDown()
	if err := r.svc.RenewBatch("h", []string{batchDomain(0)}, []uint64{1}, nil, out); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("demoted: %v", err)
	}
}

// The handover request standing for a renewed lease is reported with it.
func TestRenewBatchCarriesHandover(t *testing.T) {
	r := newBatchRig(t, 2)
	if _, err := r.svc.RequestHandover(batchDomain(1), 1, "c", time.Minute); err != nil {
		t.Fatal(err)
	}
	out := make([]RenewResult, 2)
	if err := r.svc.RenewBatch("h", []string{batchDomain(0), batchDomain(1)}, []uint64{1, 1}, nil, out); err != nil {
		t.Fatal(err)
	}
	if out[0].HasHandover || !out[1].HasHandover || out[1].Handover.Candidate != "c" || out[1].Handover.Remaining != time.Minute {
		t.Fatalf("handovers: %+v", out)
	}
}

// A lease of a kind the caller may not act on is refused alone, before it
// is judged (not renewed, not counted), and the others are renewed.
func TestRenewBatchKindRefusedAlone(t *testing.T) {
	r := newBatchRig(t, 2)
	if _, err := r.svc.CreateDomain(r.ctx, "db", pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: uint64(batchTTL.Milliseconds())}); err != nil {
		t.Fatal(err)
	}
	onlyLocks := func(k pb.DomainKind) bool { return k == pb.DomainKind_DOMAIN_KIND_LOCK }
	r.clock.Advance(batchTTL / 2)
	out := make([]RenewResult, 3)
	if err := r.svc.RenewBatch("h", []string{batchDomain(0), "db", batchDomain(1)}, []uint64{1, 1, 1}, onlyLocks, out); err != nil {
		t.Fatal(err)
	}
	if out[0].Err != nil || !errors.Is(out[1].Err, ErrKindNotAllowed) || out[2].Err != nil {
		t.Fatalf("results: %+v", out)
	}
	if obs, _ := r.svc.Leases().Observe(batchDomain(1)); obs.Remaining != batchTTL {
		t.Fatalf("the lease after the refused one was not renewed: %+v", obs)
	}
}

// Renewing a batch allocates nothing per lease.
func TestRenewBatchAllocatesNothing(t *testing.T) {
	const n = 100
	r := newBatchRig(t, n)
	domains, epochs := make([]string, n), make([]uint64, n)
	for i := range n {
		domains[i], epochs[i] = batchDomain(i), 1
	}
	out := make([]RenewResult, n)
	allocs := testing.AllocsPerRun(20, func() {
		if err := r.svc.RenewBatch("h", domains, epochs, nil, out); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch of %d", allocs, n)
	}
}

// BenchmarkRenewBatch: the service's cost per renewal, one lease per call
// (Renew) versus batches of 125 (RenewBatch), over 1,000 leases.
func BenchmarkRenewBatch(b *testing.B) {
	const n, per = 1000, 125
	r := newBatchRig(b, n)
	domains, epochs := make([]string, n), make([]uint64, n)
	for i := range n {
		domains[i], epochs[i] = batchDomain(i), 1
	}
	b.Run("single", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := r.svc.Renew(domains[i%n], "h", 1); err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/renewal")
	})
	b.Run("batch-125", func(b *testing.B) {
		b.ReportAllocs()
		out := make([]RenewResult, per)
		i := 0
		for b.Loop() {
			j := (i * per) % n
			if err := r.svc.RenewBatch("h", domains[j:j+per], epochs[j:j+per], nil, out); err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*per), "ns/renewal")
	})
	b.Run("batch-125-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			out := make([]RenewResult, per)
			i := 0
			for pb.Next() {
				j := (i * per) % n
				if err := r.svc.RenewBatch("h", domains[j:j+per], epochs[j:j+per], nil, out); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*per), "ns/renewal")
	})
}
