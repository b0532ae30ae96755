package webhook

import (
	"context"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/internal/testcluster"
)

// The real thing: decisions committed by an authorityd, followed with
// client.Watch through WatchSubscribe, delivered, signed and parsed.
func TestEndToEndWithTheAuthority(t *testing.T) {
	c := testcluster.Start(t, 1)
	op := c.Dial(testcluster.Operator)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	policy := &pb.Policy{LeaseTtlMs: 120_000, Release: &pb.ReleasePolicy{Environment: "prod"}}
	if _, err := op.CreateDomain(ctx, "rel", pb.DomainKind_DOMAIN_KIND_RELEASE, policy); err != nil {
		t.Fatal(err)
	}
	ctl := c.Dial(identity.Identity{Role: identity.Releaser, Name: "ctl"})
	lease, err := ctl.Acquire(ctx, "rel", "ctl")
	if err != nil {
		t.Fatal(err)
	}
	st, err := op.Status(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var decided []*pb.ReleaseTransitionResponse
	for _, a := range []pb.ReleaseAction{pb.ReleaseAction_RELEASE_ACTION_PAUSE, pb.ReleaseAction_RELEASE_ACTION_ABORT} {
		resp, err := ctl.ReleaseTransition(ctx, &pb.ReleaseTransition{Domain: "rel", Holder: lease.Holder(),
			Epoch: lease.Epoch(), Action: a, Reason: "drill"})
		if err != nil {
			t.Fatal(err)
		}
		decided = append(decided, resp)
	}
	rv := newRecv(t)
	h := startWith(t, WatchSubscribe(op, "rel"), st.GetHeader().GetAppliedIndex()+1, statePath(t), endpoint("ops", rv.srv.URL))
	got := h.await(t, "ops", len(decided))
	_, handled, badSig := rv.snapshot()
	if badSig != 0 || len(handled) != len(decided) {
		t.Fatalf("bad signatures %d, handled %v", badSig, handled)
	}
	for i, s := range got {
		p := rv.payloads[s.key]
		if p.Domain != "rel" || p.Namespace != "prod" || p.Reason != "drill" || p.LogIndex == 0 || p.Metadata.Timestamp == "0" ||
			p.Action != []string{"pause", "abort"}[i] {
			t.Fatalf("decision %d: payload %+v", i, p)
		}
		t.Logf("delivered %s: %s", s.key, p.Metadata.EventMessage)
	}
}
