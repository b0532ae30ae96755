package client

import (
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
)

func TestWatcherDropsDuplicates(t *testing.T) {
	w := &Watcher{from: 5}
	ev := func(i uint64, s uint32) *pb.Event { return &pb.Event{Index: i, Seq: s} }
	if !w.duplicate(ev(4, 0)) || w.duplicate(ev(5, 0)) || w.resumeIndex() != 5 {
		t.Fatal("before any delivery: events below from are dropped, resume at from")
	}
	w.lastIndex, w.lastSeq, w.delivered = 7, 1, true
	for _, e := range []*pb.Event{ev(6, 3), ev(7, 0), ev(7, 1)} {
		if !w.duplicate(e) {
			t.Fatalf("(%d,%d) must be a duplicate", e.Index, e.Seq)
		}
	}
	for _, e := range []*pb.Event{ev(7, 2), ev(8, 0)} {
		if w.duplicate(e) {
			t.Fatalf("(%d,%d) is new", e.Index, e.Seq)
		}
	}
	if w.resumeIndex() != 7 {
		t.Fatalf("resume at %d, want the last delivered index 7 (its later seqs may be missing)", w.resumeIndex())
	}
}
