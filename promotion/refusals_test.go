package promotion

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
)

// refusalObserver records refusals and dry runs.
type refusalObserver struct {
	noopObserver
	mu   sync.Mutex
	seen []string
}

func (o *refusalObserver) Refused(reason string, dry bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seen = append(o.seen, fmt.Sprintf("refused/%s/dry=%t", reason, dry))
}

func (o *refusalObserver) DryRun(allowed bool, reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.seen = append(o.seen, fmt.Sprintf("dry-run/allowed=%t/%s", allowed, reason))
}

func (o *refusalObserver) take() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := o.seen
	o.seen = nil
	return out
}

// eventsOfType renders the events of one type after index from.
func eventsOfType(t *testing.T, f *fsm.FSM, from uint64, typ string) []string {
	t.Helper()
	var out []string
	for _, e := range eventsSince(t, f, from) {
		if parts := strings.SplitN(e, " ", 3); parts[1] == typ {
			out = append(out, parts[2])
		}
	}
	return out
}

// Issue 17: requests refused before the lifecycle (unknown domain, request
// id conflict, not ready, not leader, globally disabled) and dry runs are
// counted by the observer with bounded labels and, on the leader, become
// coalesced events carried by the next write. None writes an entry of its
// own.
func TestRefusalsAndDryRunsObservable(t *testing.T) {
	r := newRig(t, false)
	o := &refusalObserver{}
	r.svc.obs = o
	f := r.svc.fsm
	r.clock.Advance(testTTL)
	r.report("n2", 1, 100, h100, 50)
	wantDenied(t, errOnly(r.svc.Promote(r.ctx, req("c1", "n3", 1))), "MetadataMissing") // n3 never reported
	start := f.LastIndex()

	q := req("u1", "n2")
	q.Domain = "no-such-domain"
	if _, err := r.svc.Promote(r.ctx, q); !errors.Is(err, fsm.ErrNotFound) {
		t.Fatalf("unknown domain: %v", err)
	}
	if _, err := r.svc.Promote(r.ctx, req("c1", "n2", 1)); !errors.Is(err, fsm.ErrConflict) {
		t.Fatalf("request id conflict: %v", err)
	}
	bad := req("bad id with spaces", "n2")
	if _, err := r.svc.Promote(r.ctx, bad); err == nil {
		t.Fatal("malformed request id admitted")
	}
	dry := req("d1", "n2", 1)
	dry.DryRun = true
	if _, err := r.svc.Promote(r.ctx, dry); err != nil {
		t.Fatalf("dry run: %v", err)
	}
	dry2 := req("d2", "n3", 1)
	dry2.DryRun = true
	wantDenied(t, errOnly(r.svc.Promote(r.ctx, dry2)), "MetadataMissing")
	dry3 := req("d3", "n2", 1)
	dry3.DryRun, dry3.Domain = true, "no-such-domain"
	if _, err := r.svc.Promote(r.ctx, dry3); !errors.Is(err, fsm.ErrNotFound) {
		t.Fatalf("dry run, unknown domain: %v", err)
	}
	r.log.mu.Lock()
	r.log.term++ // a new term this leader has not done its barrier in
	r.log.mu.Unlock()
	if _, err := r.svc.Promote(r.ctx, req("n1", "n2")); !errors.Is(err, ErrNotReady) {
		t.Fatalf("not ready: %v", err)
	}
	r.log.mu.Lock()
	r.log.term--
	r.log.mu.Unlock()

	if f.LastIndex() != start {
		t.Fatalf("refusals and dry runs wrote %d entries of their own", f.LastIndex()-start)
	}
	got := o.take()
	want := []string{
		"refused/" + RefusedUnknownDomain + "/dry=false",
		"refused/" + RefusedRequestIDConflict + "/dry=false",
		"refused/" + RefusedInvalid + "/dry=false",
		"dry-run/allowed=true/",
		"dry-run/allowed=false/MetadataMissing",
		"refused/" + RefusedUnknownDomain + "/dry=true",
		"refused/" + RefusedNotReady + "/dry=false",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("observed:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The next write carries the events; an unknown or malformed domain is
	// not echoed.
	r.ok(r.svc.RegisterMember(r.ctx, &pb.RegisterMember{Domain: "db1", MemberId: "n4"}))
	refused := eventsOfType(t, f, start, fsm.EventPromotionRefused)
	wantRefused := []string{
		" reason=invalid_request,dry_run=false,count=1",
		" reason=unknown_domain,dry_run=false,count=1",
		" reason=unknown_domain,dry_run=true,count=1",
		"db1 reason=not_ready,dry_run=false,count=1",
		"db1 reason=request_id_conflict,dry_run=false,count=1",
	}
	if !slices.Equal(refused, wantRefused) {
		t.Fatalf("refusal events:\n%s\nwant:\n%s", strings.Join(refused, "\n"), strings.Join(wantRefused, "\n"))
	}
	dryRuns := eventsOfType(t, f, start, fsm.EventPromotionDryRun)
	wantDry := []string{"db1 outcome=allowed,reason=,count=1", "db1 outcome=denied,reason=MetadataMissing,count=1"}
	if !slices.Equal(dryRuns, wantDry) {
		t.Fatalf("dry-run events:\n%s\nwant:\n%s", strings.Join(dryRuns, "\n"), strings.Join(wantDry, "\n"))
	}

	// A follower counts (metric) but notes nothing; globally disabled is
	// refused and counted.
	r.svc.StepDown()
	if _, err := r.svc.Promote(r.ctx, req("f1", "n2")); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("follower: %v", err)
	}
	if got := o.take(); !slices.Equal(got, []string{"refused/" + RefusedNotLeader + "/dry=false"}) {
		t.Fatalf("follower observed %v", got)
	}
	off := newRig(t, true)
	oo := &refusalObserver{}
	off.svc.obs = oo
	if _, err := off.svc.Promote(off.ctx, req("g1", "n2")); !errors.Is(err, ErrGloballyDisabled) {
		t.Fatalf("globally disabled: %v", err)
	}
	if got := oo.take(); !slices.Equal(got, []string{"refused/" + RefusedGloballyDisabled + "/dry=false"}) {
		t.Fatalf("disabled observed %v", got)
	}
	for _, reason := range RefusalReasons() {
		if strings.ContainsAny(reason, " {}=,\"") {
			t.Fatalf("refusal reason %q is not a bounded label value", reason)
		}
	}
}

func errOnly(_ *Outcome, err error) error { return err }

// Issue 17: the abort a new leader records names the last lifecycle state
// the attempt reached when this node led it (here: AuthorityTransitioning,
// its commit failed), and PromotionRequested when no node here saw more
// (the log proves only the intent).
func TestAbortNamesTheLastKnownState(t *testing.T) {
	for _, c := range []struct {
		name      string
		sameNode  bool
		wantState string
	}{
		{"same node regains leadership", true, AuthorityTransitioning.String()},
		{"another node takes over", false, LastKnownRequested},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, false)
			r.clock.Advance(testTTL)
			r.report("n2", 1, 100, h100, 50)
			r.log.mu.Lock()
			r.log.failAttempts = errors.New("proposal lost")
			r.log.mu.Unlock()
			out, err := r.svc.Promote(r.ctx, req("x1", "n2", 1))
			if err == nil || out.Lifecycle[len(out.Lifecycle)-1] != AuthorityTransitioning {
				t.Fatalf("promote: %v, lifecycle %v", err, out.Lifecycle)
			}
			r.log.mu.Lock()
			r.log.failAttempts = nil
			r.log.term++
			r.log.mu.Unlock()
			start := r.svc.fsm.LastIndex()
			next := r.svc
			if !c.sameNode {
				r.svc.StepDown()
				next = NewService(Config{Log: r.log, FSM: r.svc.fsm, Clock: r.clock})
			}
			if err := next.BecomeLeader(r.ctx); err != nil {
				t.Fatal(err)
			}
			aborts := eventsOfType(t, r.svc.fsm, start, fsm.EventPromotionAbortedOnCrash)
			if len(aborts) != 1 || !strings.Contains(aborts[0], "last_known_state="+c.wantState+",") {
				t.Fatalf("aborts %q, want last_known_state=%s", aborts, c.wantState)
			}
			if next.undecided.lastKnown("db1", "x1") != LastKnownRequested || len(next.undecided.state) != 0 {
				t.Fatalf("the aborted attempt is still remembered: %v", next.undecided.state)
			}
		})
	}
}
