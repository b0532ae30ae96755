package promotion

import (
	"errors"
	"strconv"
)

// State is a step of AeroDB's Phase 6 promotion lifecycle. The names are
// AeroDB's, so events, explanations and the spec read the same.
type State int

// The seven lifecycle states. Steady is the zero value, so a fresh attempt
// needs no initialisation to be in it.
const (
	Steady State = iota
	PromotionRequested
	PromotionValidating
	PromotionApproved
	AuthorityTransitioning
	PromotionSucceeded
	PromotionDenied
)

var stateNames = [...]string{
	Steady:                 "Steady",
	PromotionRequested:     "PromotionRequested",
	PromotionValidating:    "PromotionValidating",
	PromotionApproved:      "PromotionApproved",
	AuthorityTransitioning: "AuthorityTransitioning",
	PromotionSucceeded:     "PromotionSucceeded",
	PromotionDenied:        "PromotionDenied",
}

// String returns AeroDB's name for s, or "State(n)" for a value outside the
// lifecycle, so a corrupt value is visible rather than mistaken for Steady.
func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

type transition struct{ from, to State }

// allowedTransitions is the whole lifecycle: exactly AeroDB's 9 allowed
// transitions. Anything absent is forbidden, which covers self-loops,
// timeout- or retry-driven moves and re-entering PromotionApproved.
var allowedTransitions = map[transition]bool{
	{Steady, PromotionRequested}:                 true,
	{PromotionRequested, PromotionValidating}:    true,
	{PromotionRequested, Steady}:                 true, // immediate rejection, e.g. malformed
	{PromotionValidating, PromotionApproved}:     true,
	{PromotionValidating, PromotionDenied}:       true,
	{PromotionApproved, AuthorityTransitioning}:  true,
	{AuthorityTransitioning, PromotionSucceeded}: true,
	{PromotionSucceeded, Steady}:                 true,
	{PromotionDenied, Steady}:                    true,
}

// Allowed reports whether from→to is one of the 9 allowed transitions.
func Allowed(from, to State) bool {
	return allowedTransitions[transition{from, to}]
}

// ErrForbiddenTransition is the sentinel every *TransitionError wraps.
var ErrForbiddenTransition = errors.New("promotion: forbidden lifecycle transition")

// TransitionError names the forbidden move; errors.Is(err,
// ErrForbiddenTransition) holds for it.
type TransitionError struct {
	From, To State
}

func (e *TransitionError) Error() string {
	return ErrForbiddenTransition.Error() + " " + e.From.String() + " -> " + e.To.String()
}

// Unwrap lets callers branch with errors.Is instead of reading the message.
func (e *TransitionError) Unwrap() error { return ErrForbiddenTransition }

// Lifecycle tracks the states of one promotion attempt. It is not safe for
// concurrent use: one goroutine owns an attempt.
type Lifecycle struct {
	requestID string
	state     State
	history   []State
}

// NewLifecycle starts the attempt named by requestID in Steady.
func NewLifecycle(requestID string) *Lifecycle {
	return &Lifecycle{requestID: requestID, state: Steady, history: []State{Steady}}
}

// RequestID returns the client-chosen id of the attempt.
func (l *Lifecycle) RequestID() string { return l.requestID }

// State returns the current state.
func (l *Lifecycle) State() State { return l.state }

// To moves the attempt to next. A forbidden move returns *TransitionError and
// leaves the state untouched, so a caller's bug cannot corrupt the record.
func (l *Lifecycle) To(next State) error {
	if !Allowed(l.state, next) {
		return &TransitionError{From: l.state, To: next}
	}
	l.state = next
	l.history = append(l.history, next)
	return nil
}

// History returns every state visited, in order, starting with Steady. The
// slice is a copy: callers cannot rewrite the attempt's past.
func (l *Lifecycle) History() []State {
	return append([]State(nil), l.history...)
}
