package authorityv1

// Note kinds (Note.kind): the leader's promotion service writes them, the
// FSM maps each to an event type. One definition for both sides.
const (
	NoteLeaderChanged    = "leader_changed"
	NoteLeaseExpired     = "lease_expired"
	NoteFencingRejected  = "fencing_rejected"
	NotePromotionRefused = "promotion_refused"
	NotePromotionDryRun  = "promotion_dry_run"
)

// NoteKinds lists every note kind, in a fixed order.
var NoteKinds = []string{NoteLeaderChanged, NoteLeaseExpired, NoteFencingRejected, NotePromotionRefused, NotePromotionDryRun}
