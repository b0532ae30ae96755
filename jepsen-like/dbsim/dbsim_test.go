package dbsim

import (
	"bytes"
	"errors"
	"testing"
)

func TestAcceptFenceTruncateAndSegments(t *testing.T) {
	p := &Member{ID: "n1"}
	r := &Member{ID: "n2"}
	for range 3 {
		p.Append(1)
	}
	if err := r.Accept(1, p.WAL, false); err != nil {
		t.Fatal(err)
	}
	p.Append(1) // lsn 4 of epoch 1: never shipped
	// n2 is fenced at epoch 2 and refuses epoch 1 from then on.
	r.Fence = 2
	if err := r.Accept(1, p.WAL, false); !errors.Is(err, ErrFenced) {
		t.Fatalf("fenced replica accepted epoch 1: %v", err)
	}
	// The negative control's replica takes it anyway.
	m := &Member{ID: "m", Fence: 2}
	if err := m.Accept(1, p.WAL, true); err != nil || m.Last().Lsn != 4 {
		t.Fatalf("mutant replica: %v, last %+v", err, m.Last())
	}
	// n2 becomes holder of epoch 2 and writes lsn 4..5; n1 (old holder, with
	// its unshipped lsn 4 of epoch 1) rejoins: its suffix is truncated.
	r.Append(2)
	r.Append(2)
	if err := p.Accept(2, r.WAL, false); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p.Last().Hash, r.Last().Hash) || p.Last().Lsn != 5 {
		t.Fatalf("old holder after rejoining: %+v, want %+v", p.Last(), r.Last())
	}
	// An epoch-1 shipment cannot overwrite epoch-2 history even without the fence.
	if err := p.Accept(1, p.WAL[:3], true); !errors.Is(err, ErrNewerHistory) {
		t.Fatalf("epoch-1 shipment over epoch-2 history: %v", err)
	}
	seg := Segments(p.WAL)
	if seg != "1:1-3,2:4-5" {
		t.Fatalf("segments %q", seg)
	}
	wal, err := Rebuild(seg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range wal {
		if !bytes.Equal(wal[i].Hash, p.WAL[i].Hash) {
			t.Fatalf("rebuilt record %d differs", i+1)
		}
	}
	for _, bad := range []string{"1:2-3", "2:1-2,1:3-3", "1:1-x", "x"} {
		if _, err := Rebuild(bad); err == nil {
			t.Errorf("Rebuild(%q) accepted", bad)
		}
	}
}
