package promotion

import (
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/validator"
)

// Issue 17 (Phase 6 readiness §4): the leader writes strict mode into a new
// aerodb domain whose request names none; an explicit choice is kept; an
// update that names no mode keeps the domain's (a strict domain never
// becomes permitting by omission, a legacy one stays legacy); lock and
// release domains name none.
func TestNewAerodbDomainIsStrict(t *testing.T) {
	r := newRig(t, false)
	const (
		strict    = pb.WaiverMode_WAIVER_MODE_STRICT
		permitted = pb.WaiverMode_WAIVER_MODE_PERMITTED
		unset     = pb.WaiverMode_WAIVER_MODE_UNSPECIFIED
	)
	if DefaultWaiverMode != strict {
		t.Fatalf("DefaultWaiverMode = %v", DefaultWaiverMode)
	}
	r.ok(r.svc.CreateDomain(r.ctx, "fresh", pb.DomainKind_DOMAIN_KIND_AERODB, nil))
	r.ok(r.svc.CreateDomain(r.ctx, "dev", pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{WaiverMode: permitted, WaiverReason: "lab cluster"}))
	r.ok(r.svc.CreateDomain(r.ctx, "lk", pb.DomainKind_DOMAIN_KIND_LOCK, nil))
	// legacy: an aerodb domain created before strict mode, as the log holds it.
	r.ok(r.log.Propose(r.ctx, &pb.Command{Body: &pb.Command_CreateDomain{CreateDomain: &pb.CreateDomain{
		Name: "legacy", Kind: pb.DomainKind_DOMAIN_KIND_AERODB, Policy: WithDefaults(&pb.Policy{LeaseTtlMs: 1000})}}}))
	for name, want := range map[string]pb.WaiverMode{"db1": strict, "fresh": strict, "dev": permitted, "lk": unset, "legacy": unset} {
		if got := r.storedPolicy(name).GetWaiverMode(); got != want {
			t.Errorf("%s: stored waiver mode %v, want %v", name, got, want)
		}
	}
	// Updates that name no mode keep it (and its reason).
	for _, name := range []string{"fresh", "dev", "legacy"} {
		before := r.storedPolicy(name)
		r.ok(r.svc.UpdatePolicy(r.ctx, name, &pb.Policy{LeaseTtlMs: 2000}))
		after := r.storedPolicy(name)
		if after.GetWaiverMode() != before.GetWaiverMode() || after.GetWaiverReason() != before.GetWaiverReason() {
			t.Errorf("%s: update without a mode moved it from %v %q to %v %q", name,
				before.GetWaiverMode(), before.GetWaiverReason(), after.GetWaiverMode(), after.GetWaiverReason())
		}
	}
	// A deviation needs its reason (the FSM refuses it otherwise).
	if _, err := r.svc.UpdatePolicy(r.ctx, "fresh", &pb.Policy{WaiverMode: permitted}); err == nil {
		t.Fatal("permitted without a reason was accepted")
	}
}

// On a domain the leader created, a waived request is refused (strict) and
// decided on its merits once an operator records a deviation.
func TestStrictDomainRefusesWaivers(t *testing.T) {
	r := newRig(t, false) // db1 created through the leader: strict
	r.clock.Advance(testTTL)
	r.report("n2", 1, 90, h90, 50) // behind the watermark: only allow-data-loss would promote
	q := req("w1", "n2", 1)
	q.Waivers, q.Reason = []string{validator.WaiverAllowDataLoss}, "n1 disk lost"
	_, err := r.svc.Promote(r.ctx, q)
	wantDenied(t, err, validator.ReasonInvalidRequest)
	r.ok(r.svc.UpdatePolicy(r.ctx, "db1", &pb.Policy{LeaseTtlMs: uint64(testTTL.Milliseconds()),
		WaiverMode: pb.WaiverMode_WAIVER_MODE_PERMITTED, WaiverReason: "OPS-7: restore from n2 approved"}))
	r.report("n2", 1, 90, h90, 50)
	q = req("w2", "n2", 1)
	q.Waivers, q.Reason = []string{validator.WaiverAllowDataLoss}, "n1 disk lost"
	out, err := r.svc.Promote(r.ctx, q)
	if err != nil {
		t.Fatalf("permitted deviation: %v", err)
	}
	if got := out.Record.GetDecision().GetWaiversApplied(); len(got) != 1 {
		t.Fatalf("waivers applied %v", got)
	}
}
