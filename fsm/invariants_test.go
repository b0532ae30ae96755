//go:build invariants

package fsm

import (
	"bytes"
	"strings"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// mustPanicWith runs f and fails unless it panics with a message
// containing want.
func mustPanicWith(t *testing.T, want string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		if r == nil {
			t.Fatalf("no panic; want one naming %q", want)
		}
		if msg, _ := r.(string); !strings.Contains(msg, want) {
			t.Fatalf("panic %v; want one naming %q", r, want)
		}
	}()
	f()
}

// Issue 17: the invariants checker (make test's build tag) fires: an epoch
// that goes back, an epoch with two holders, a fence for another epoch —
// each stops the apply that reveals it. The states are forged directly
// (apply itself never produces them), then any entry is applied.
func TestInvariantsCheckerFires(t *testing.T) {
	for _, c := range []struct {
		name, want string
		forge      func(d *pb.Domain)
	}{
		{"epoch back", "epoch went back from 2 to 1", func(d *pb.Domain) { d.Epoch = 1 }},
		{"two holders", `epoch 2 held by "n2" and "n3"`, func(d *pb.Domain) { d.Holder = "n3" }},
		{"stale fence", "keeps a fence for epoch 2", func(d *pb.Domain) { d.Fence = &pb.Fence{Epoch: 2} }},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, attempt := readyToPromote(t)
			h.ok(&pb.Command{Body: &pb.Command_PromotionAttempt{PromotionAttempt: attempt}}) // n2 at epoch 2
			d := h.f.dom("db1")
			c.forge(d)
			h.f.setDomain(d)
			mustPanicWith(t, c.want, func() { h.apply(registerCmd("db1", "n4")) })
		})
	}
}

// The checker keeps its history across a restore: restoring a snapshot that
// undoes a grant this FSM already applied (epoch 2 back to 1) fires, where
// a checker cleared on restore would accept it silently.
func TestInvariantsCheckerSurvivesRestore(t *testing.T) {
	h, attempt := readyToPromote(t)
	old, err := h.f.Snapshot() // epoch 1, held by n1
	if err != nil {
		t.Fatal(err)
	}
	h.ok(&pb.Command{Body: &pb.Command_PromotionAttempt{PromotionAttempt: attempt}}) // epoch 2, n2
	mustPanicWith(t, "epoch went back from 2 to 1", func() { _ = h.f.Restore(bytes.NewReader(old)) })
	// A fresh FSM (a restarted node) restores the same snapshot: no
	// history, nothing to contradict.
	if err := New().Restore(bytes.NewReader(old)); err != nil {
		t.Fatal(err)
	}
}
