package fsm

import (
	"slices"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// Issue 17: refusals and dry runs are leader notes; a refusal may name no
// domain (unknown or malformed names are not echoed).
func TestRefusalAndDryRunNotes(t *testing.T) {
	h, _ := readyToPromote(t)
	res := h.ok(&pb.Command{Body: &pb.Command_Note{Note: &pb.Note{Kind: "promotion_refused",
		Fields: []*pb.Observed{{Key: "reason", Value: "unknown_domain"}, {Key: "dry_run", Value: "false"}, {Key: "count", Value: "3"}}}}})
	h.ok(&pb.Command{Body: &pb.Command_Note{Note: &pb.Note{Kind: "promotion_dry_run", Domain: "db1",
		Fields: []*pb.Observed{{Key: "outcome", Value: "allowed"}, {Key: "reason", Value: ""}, {Key: "count", Value: "1"}}}}})
	h.fails(&pb.Command{Body: &pb.Command_Note{Note: &pb.Note{Kind: "promotion_dry_run", Domain: "nope"}}}, ErrNotFound)
	evs, _, _ := h.f.EventsFrom(res.Index, 10)
	if got := eventTypes(evs); !slices.Equal(got, []string{EventPromotionRefused, EventPromotionDryRun}) {
		t.Fatalf("events %v", got)
	}
	if evs[0].Domain != "" || field(evs[0], "count") != "3" || evs[1].Domain != "db1" || field(evs[1], "outcome") != "allowed" {
		t.Fatalf("events %v", evs)
	}
}

// TestEveryNoteKindHasAnEvent: the note kinds the promotion service writes
// (pb.NoteKinds) are exactly the ones the FSM maps to events.
func TestEveryNoteKindHasAnEvent(t *testing.T) {
	for _, k := range pb.NoteKinds {
		if noteEvents[k] == "" {
			t.Errorf("note kind %q has no event type", k)
		}
	}
	if len(noteEvents) != len(pb.NoteKinds) {
		t.Errorf("fsm maps %d note kinds, the API defines %d", len(noteEvents), len(pb.NoteKinds))
	}
}
