package promotion

import (
	"errors"
	"testing"
	"time"
)

func TestHandoverRequestLifecycle(t *testing.T) {
	clk := &fakeClock{now: time.Unix(1000, 0)}
	lt := NewLeaseTable(clk)
	if _, err := lt.RequestHandover("d", 1, "b", time.Second); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("demoted: %v", err)
	}
	lt.Promote([]Grant{{Domain: "d", Holder: "a", Epoch: 3, TTL: 2 * time.Second}})
	if _, err := lt.RequestHandover("x", 3, "b", time.Second); !errors.Is(err, ErrNoLease) {
		t.Fatalf("unknown domain: %v", err)
	}
	if _, err := lt.RequestHandover("d", 2, "b", time.Second); !errors.Is(err, ErrFenced) {
		t.Fatalf("stale epoch: %v", err)
	}
	if _, ok := lt.Handover("d", 3); ok {
		t.Fatal("handover before any request")
	}
	if _, err := lt.RequestHandover("d", 3, "b", time.Second); err != nil {
		t.Fatal(err)
	}
	h, ok := lt.Handover("d", 3)
	if !ok || h.Candidate != "b" || h.Remaining != time.Second {
		t.Fatalf("handover = %+v %v", h, ok)
	}
	if _, ok := lt.Handover("d", 2); ok {
		t.Fatal("handover delivered to another epoch")
	}
	// It expires on its own at its deadline.
	clk.Advance(time.Second)
	if _, ok := lt.Handover("d", 3); ok {
		t.Fatal("handover outlived its deadline")
	}
	// A zero duration clears it.
	if _, err := lt.RequestHandover("d", 3, "b", time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := lt.RequestHandover("d", 3, "", 0); err != nil {
		t.Fatal(err)
	}
	if _, ok := lt.Handover("d", 3); ok {
		t.Fatal("cleared handover still delivered")
	}
	// A new grant drops it; so does a release.
	if _, err := lt.RequestHandover("d", 3, "b", time.Minute); err != nil {
		t.Fatal(err)
	}
	lt.Release("d", 3)
	if _, ok := lt.Handover("d", 3); ok {
		t.Fatal("handover delivered after release")
	}
	if err := lt.Grant(Grant{Domain: "d", Holder: "b", Epoch: 4, TTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	if _, ok := lt.Handover("d", 4); ok {
		t.Fatal("handover carried over to the new epoch")
	}
	// Leader change drops it.
	if _, err := lt.RequestHandover("d", 4, "a", time.Minute); err != nil {
		t.Fatal(err)
	}
	lt.Demote()
	lt.Promote([]Grant{{Domain: "d", Holder: "b", Epoch: 4, TTL: time.Second}})
	if _, ok := lt.Handover("d", 4); ok {
		t.Fatal("handover survived a leader change")
	}
}
