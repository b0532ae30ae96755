package promotion

import (
	"errors"
	"slices"
	"testing"
)

var allStates = []State{
	Steady, PromotionRequested, PromotionValidating, PromotionApproved,
	AuthorityTransitioning, PromotionSucceeded, PromotionDenied,
}

// The 9 allowed transitions, written out independently of the table in
// lifecycle.go so that a typo there cannot pass by agreeing with itself.
var wantAllowed = map[[2]State]bool{
	{Steady, PromotionRequested}:                 true,
	{PromotionRequested, PromotionValidating}:    true,
	{PromotionRequested, Steady}:                 true,
	{PromotionValidating, PromotionApproved}:     true,
	{PromotionValidating, PromotionDenied}:       true,
	{PromotionApproved, AuthorityTransitioning}:  true,
	{AuthorityTransitioning, PromotionSucceeded}: true,
	{PromotionSucceeded, Steady}:                 true,
	{PromotionDenied, Steady}:                    true,
}

func TestLifecycleStateNames(t *testing.T) {
	want := []string{
		"Steady", "PromotionRequested", "PromotionValidating", "PromotionApproved",
		"AuthorityTransitioning", "PromotionSucceeded", "PromotionDenied",
	}
	for i, s := range allStates {
		if got := s.String(); got != want[i] {
			t.Errorf("State(%d).String() = %q, want %q", int(s), got, want[i])
		}
	}
	if got := State(7).String(); got != "State(7)" {
		t.Errorf("State(7).String() = %q, want %q", got, "State(7)")
	}
	if got := State(-1).String(); got != "State(-1)" {
		t.Errorf("State(-1).String() = %q, want %q", got, "State(-1)")
	}
}

func TestLifecycleFullPaths(t *testing.T) {
	paths := map[string][]State{
		"success": {PromotionRequested, PromotionValidating, PromotionApproved,
			AuthorityTransitioning, PromotionSucceeded, Steady},
		"denied":             {PromotionRequested, PromotionValidating, PromotionDenied, Steady},
		"immediateRejection": {PromotionRequested, Steady},
	}
	for name, path := range paths {
		t.Run(name, func(t *testing.T) {
			l := NewLifecycle("req-" + name)
			if l.State() != Steady {
				t.Fatalf("new lifecycle in %v, want Steady", l.State())
			}
			for _, next := range path {
				if err := l.To(next); err != nil {
					t.Fatalf("To(%v): %v", next, err)
				}
				if l.State() != next {
					t.Fatalf("State() = %v after To(%v)", l.State(), next)
				}
			}
			want := append([]State{Steady}, path...)
			if got := l.History(); !slices.Equal(got, want) {
				t.Fatalf("History() = %v, want %v", got, want)
			}
			if l.RequestID() != "req-"+name {
				t.Fatalf("RequestID() = %q", l.RequestID())
			}
		})
	}
}

func TestLifecycleAllowedCoversExactlyNine(t *testing.T) {
	n := 0
	for _, from := range allStates {
		for _, to := range allStates {
			want := wantAllowed[[2]State{from, to}]
			if got := Allowed(from, to); got != want {
				t.Errorf("Allowed(%v, %v) = %v, want %v", from, to, got, want)
			}
			if want {
				n++
			}
		}
	}
	if n != 9 {
		t.Fatalf("%d allowed transitions, want 9", n)
	}
	if Allowed(State(-1), Steady) || Allowed(PromotionDenied, State(7)) {
		t.Fatal("a state outside the lifecycle was allowed")
	}
}

// at returns a lifecycle that has legally reached s, so forbidden moves are
// tested from a real position rather than from a forged field.
func at(t *testing.T, s State) *Lifecycle {
	t.Helper()
	route := map[State][]State{
		Steady:                 {},
		PromotionRequested:     {PromotionRequested},
		PromotionValidating:    {PromotionRequested, PromotionValidating},
		PromotionApproved:      {PromotionRequested, PromotionValidating, PromotionApproved},
		AuthorityTransitioning: {PromotionRequested, PromotionValidating, PromotionApproved, AuthorityTransitioning},
		PromotionSucceeded:     {PromotionRequested, PromotionValidating, PromotionApproved, AuthorityTransitioning, PromotionSucceeded},
		PromotionDenied:        {PromotionRequested, PromotionValidating, PromotionDenied},
	}[s]
	l := NewLifecycle("req")
	for _, next := range route {
		if err := l.To(next); err != nil {
			t.Fatalf("reaching %v: To(%v): %v", s, next, err)
		}
	}
	return l
}

func assertForbidden(t *testing.T, from, to State) {
	t.Helper()
	l := at(t, from)
	before := l.History()
	err := l.To(to)
	if !errors.Is(err, ErrForbiddenTransition) {
		t.Fatalf("To(%v) from %v: err = %v, want ErrForbiddenTransition", to, from, err)
	}
	var te *TransitionError
	if !errors.As(err, &te) || te.From != from || te.To != to {
		t.Fatalf("To(%v) from %v: err = %#v, want *TransitionError{%v, %v}", to, from, err, from, to)
	}
	if l.State() != from {
		t.Fatalf("state moved to %v after forbidden %v -> %v", l.State(), from, to)
	}
	if got := l.History(); !slices.Equal(got, before) {
		t.Fatalf("history changed after forbidden move: %v, was %v", got, before)
	}
}

func TestLifecycleForbiddenTransitions(t *testing.T) {
	n := 0
	for _, from := range allStates {
		for _, to := range allStates {
			if wantAllowed[[2]State{from, to}] {
				continue
			}
			n++
			assertForbidden(t, from, to)
		}
	}
	if n != 49-9 {
		t.Fatalf("checked %d forbidden pairs, want 40", n)
	}
}

func TestLifecycleForbiddenByAeroDB(t *testing.T) {
	named := []struct {
		name     string
		from, to State
	}{
		{"SteadyToTransitioning", Steady, AuthorityTransitioning},
		{"RequestedToApproved", PromotionRequested, PromotionApproved},
		{"ValidatingToTransitioning", PromotionValidating, AuthorityTransitioning},
		{"DeniedToTransitioning", PromotionDenied, AuthorityTransitioning},
		{"ReenterApprovedFromApproved", PromotionApproved, PromotionApproved},
		{"ReenterApprovedFromTransitioning", AuthorityTransitioning, PromotionApproved},
		{"ReenterApprovedFromSucceeded", PromotionSucceeded, PromotionApproved},
	}
	for _, tc := range named {
		t.Run(tc.name, func(t *testing.T) { assertForbidden(t, tc.from, tc.to) })
	}
}

func TestLifecycleHistoryIsACopy(t *testing.T) {
	l := NewLifecycle("req")
	if err := l.To(PromotionRequested); err != nil {
		t.Fatal(err)
	}
	h := l.History()
	h[0] = PromotionDenied
	if got := l.History(); got[0] != Steady {
		t.Fatalf("History() shares its backing array: %v", got)
	}
}

func TestTransitionErrorMessage(t *testing.T) {
	err := NewLifecycle("req").To(AuthorityTransitioning)
	want := "promotion: forbidden lifecycle transition Steady -> AuthorityTransitioning"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
}
