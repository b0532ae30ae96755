package promotion

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
)

// traceLog is a fakeLog that records, in order, every command queued
// (ProposeAsync), waited for, and proposed with a wait (Propose).
type traceLog struct {
	*fakeLog
	trace []string
}

func kindOf(cmd *pb.Command) string {
	switch cmd.Body.(type) {
	case *pb.Command_PromotionIntent:
		return "intent"
	case *pb.Command_PromotionAttempt:
		return "attempt"
	}
	return fmt.Sprintf("%T", cmd.Body)
}

func (l *traceLog) Propose(ctx context.Context, cmd *pb.Command) (*fsm.Result, error) {
	l.trace = append(l.trace, "propose "+kindOf(cmd))
	return l.fakeLog.Propose(ctx, cmd)
}

func (l *traceLog) ProposeAsync(ctx context.Context, cmd *pb.Command) (func(context.Context) (*fsm.Result, error), error) {
	k := kindOf(cmd)
	l.trace = append(l.trace, "queue "+k)
	res, err := l.fakeLog.Propose(ctx, cmd)
	return func(context.Context) (*fsm.Result, error) {
		l.trace = append(l.trace, "wait "+k)
		return res, err
	}, nil
}

func (l *traceLog) promotionTrace() []string {
	return slices.DeleteFunc(slices.Clone(l.trace), func(s string) bool {
		return !strings.HasSuffix(s, " intent") && !strings.HasSuffix(s, " attempt")
	})
}

func traced(r *rig) *traceLog {
	l := &traceLog{fakeLog: r.log}
	r.svc.log = l
	return l
}

// A leader that can pipeline queues the attempt right behind the intent
// and waits once: both are queued before either is waited for, in log
// order, and the decision is the one the sequential path reaches.
func TestPromotePipelinesIntentAndAttempt(t *testing.T) {
	for _, allowed := range []bool{true, false} {
		t.Run(fmt.Sprint("allowed=", allowed), func(t *testing.T) {
			r := newRig(t, false)
			l := traced(r)
			if allowed {
				r.report("n2", 1, 100, h100, 50)
			} else {
				r.report("n2", 1, 90, h90, 50)
			}
			r.clock.Advance(testTTL)
			out, err := r.svc.Promote(r.ctx, req("r1", "n2", 1))
			if allowed != (err == nil) || !out.Committed {
				t.Fatalf("promote: %+v %v", out, err)
			}
			want := []string{"queue intent", "queue attempt", "wait intent", "wait attempt"}
			if got := l.promotionTrace(); !slices.Equal(got, want) {
				t.Fatalf("trace = %q, want %q", got, want)
			}
			if p := r.svc.fsm.PendingIntents(); len(p) != 0 {
				t.Fatalf("intent still pending: %+v", p)
			}
			evs, _, _ := r.svc.fsm.EventsFrom(1, 1000)
			var types []string
			for _, e := range evs {
				if e.Type == fsm.EventPromotionRequested {
					types = append(types, e.Type) // once: from the intent, not again from the attempt
				}
			}
			if len(types) != 1 {
				t.Fatalf("requested events = %d, want 1", len(types))
			}
		})
	}
}

// A Log that cannot pipeline (or a replica-quorum domain) keeps the
// sequential path: the intent commits before the attempt is proposed.
func TestPromoteWithoutPipelinerWaitsForTheIntent(t *testing.T) {
	r := newRig(t, false)
	l := &traceLog{fakeLog: r.log}
	r.svc.log = seqTrace{l}
	r.report("n2", 1, 100, h100, 50)
	r.clock.Advance(testTTL)
	if _, err := r.svc.Promote(r.ctx, req("r1", "n2", 1)); err != nil {
		t.Fatal(err)
	}
	want := []string{"propose intent", "propose attempt"}
	if got := l.promotionTrace(); !slices.Equal(got, want) {
		t.Fatalf("trace = %q, want %q", got, want)
	}
}

// seqTrace is a traceLog without ProposeAsync.
type seqTrace struct{ l *traceLog }

func (s seqTrace) Propose(ctx context.Context, cmd *pb.Command) (*fsm.Result, error) {
	return s.l.Propose(ctx, cmd)
}
func (s seqTrace) Barrier(ctx context.Context) error      { return s.l.Barrier(ctx) }
func (s seqTrace) VerifyLeader(ctx context.Context) error { return s.l.VerifyLeader(ctx) }
func (s seqTrace) Term() uint64                           { return s.l.Term() }
func (s seqTrace) ID() string                             { return s.l.ID() }

// "Not leader" tells the client nothing was proposed (it then sends the
// request elsewhere): a pipelined promotion says so only when raft refused
// its intent too. An attempt refused behind an intent that is in the log
// is "unknown" (P6-F3: no re-send of a request whose intent may commit).
func TestPipelinedNotLeaderOnlyWhenTheIntentWasRefused(t *testing.T) {
	r := newRig(t, false)
	traced(r)
	r.report("n2", 1, 100, h100, 50)
	r.clock.Advance(testTTL)
	r.log.failAttempts = ErrNotLeader
	if _, err := r.svc.Promote(r.ctx, req("r1", "n2", 1)); !errors.Is(err, ErrIndeterminate) || errors.Is(err, ErrNotLeader) {
		t.Fatalf("attempt refused behind a logged intent: err = %v, want only indeterminate", err)
	}
	if p := r.svc.fsm.PendingIntents(); len(p) != 1 {
		t.Fatalf("pending = %+v", p)
	}
	r.log.failAttempts = nil
	r.log.fail = ErrNotLeader
	if _, err := r.svc.Promote(r.ctx, req("r2", "n2", 1)); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("both refused: err = %v, want not leader", err)
	}
}

// Observations waiting for the next write are queued ahead of it without
// a commit wait each (the write commits only after them), and still
// precede it in the log.
func TestNotesQueuedAheadOfTheWrite(t *testing.T) {
	r := newRig(t, false)
	l := traced(r)
	if _, err := r.svc.Renew("db1", "n1", 9); !errors.Is(err, ErrFenced) { // a fenced renewal: one note
		t.Fatalf("stale renewal: %v", err)
	}
	from := r.log.index + 1
	r.ok(r.svc.RegisterMember(r.ctx, &pb.RegisterMember{Domain: "db1", MemberId: "n4"}))
	var got []string
	for _, e := range l.trace {
		got = append(got, strings.NewReplacer("*authorityv1.Command_", "", "*v1.Command_", "").Replace(e))
	}
	want := []string{"queue Note", "propose RegisterMember", "wait Note"}
	if !slices.Equal(got, want) {
		t.Fatalf("trace = %q, want %q", got, want)
	}
	evs, _, _ := r.svc.fsm.EventsFrom(from, 10)
	if len(evs) == 0 || evs[0].Index != from {
		t.Fatalf("the note is not the entry before the write: %v", evs)
	}
}
