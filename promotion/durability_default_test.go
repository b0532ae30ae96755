package promotion

import (
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
)

// storedPolicy is a domain's policy as the log applied it.
func (r *rig) storedPolicy(name string) *pb.Policy {
	r.t.Helper()
	d, ok := r.svc.fsm.Domain(name)
	if !ok {
		r.t.Fatalf("domain %q not found", name)
	}
	return d.GetPolicy()
}

// The leader writes replica-quorum into a new aerodb domain whose request
// leaves durability unspecified, with K from min_sync_replicas (default 1);
// an explicit choice is kept; lock and release domains keep an unspecified
// (authority-gated) durability and are created (the FSM refuses
// replica-quorum for them).
func TestCreateDomainDefaultDurability(t *testing.T) {
	r := newRig(t, false)
	const (
		rq    = pb.Durability_DURABILITY_REPLICA_QUORUM
		gated = pb.Durability_DURABILITY_AUTHORITY_GATED
		unset = pb.Durability_DURABILITY_UNSPECIFIED
	)
	aero, lock, rel := pb.DomainKind_DOMAIN_KIND_AERODB, pb.DomainKind_DOMAIN_KIND_LOCK, pb.DomainKind_DOMAIN_KIND_RELEASE
	for _, c := range []struct {
		name    string
		kind    pb.DomainKind
		policy  *pb.Policy
		want    pb.Durability
		wantMin uint32
	}{
		{"nil-policy", aero, nil, rq, 1},
		{"ttl-only", aero, &pb.Policy{LeaseTtlMs: 2000}, rq, 1},
		{"k2", aero, &pb.Policy{MinSyncReplicas: 2}, rq, 2},
		{"gated", aero, &pb.Policy{Durability: gated}, gated, 1},
		{"quorum", aero, &pb.Policy{Durability: rq, MinSyncReplicas: 3}, rq, 3},
		{"lk", lock, nil, unset, 1},
		{"rel", rel, &pb.Policy{LeaseTtlMs: 2000}, unset, 1},
	} {
		r.ok(r.svc.CreateDomain(r.ctx, c.name, c.kind, c.policy))
		p := r.storedPolicy(c.name)
		if p.GetDurability() != c.want || p.GetMinSyncReplicas() != c.wantMin {
			t.Errorf("%s (%v): stored durability %v K=%d, want %v K=%d", c.name, c.kind, p.GetDurability(), p.GetMinSyncReplicas(), c.want, c.wantMin)
		}
		if got, want := fsm.ReplicaQuorum(p), c.want == rq; got != want {
			t.Errorf("%s: fsm.ReplicaQuorum = %t, want %t", c.name, got, want)
		}
	}
	if CreateDefaults(aero, nil).GetDurability() != DefaultDurability || DefaultDurability != rq {
		t.Fatalf("DefaultDurability = %v", DefaultDurability)
	}
}

// An update that does not name a durability keeps the domain's: a gated
// domain (explicitly gated, or stored unspecified before the default
// changed) stays gated — its promotions stay on the gated checks — and a
// replica-quorum domain stays replica-quorum (leaving it while a holder
// holds would be refused).
func TestUpdatePolicyKeepsDurability(t *testing.T) {
	r := newRig(t, false) // db1: explicitly gated, n1 holds epoch 1
	// legacy: an aerodb domain created before the default changed, as the
	// log holds it (durability unspecified), straight into the log.
	r.ok(r.log.Propose(r.ctx, &pb.Command{Body: &pb.Command_CreateDomain{CreateDomain: &pb.CreateDomain{
		Name: "legacy", Kind: pb.DomainKind_DOMAIN_KIND_AERODB, Policy: WithDefaults(&pb.Policy{LeaseTtlMs: 1000})}}}))
	r.ok(r.svc.CreateDomain(r.ctx, "fresh", pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: 1000, MinSyncReplicas: 2}))
	for _, id := range []string{"m1", "m2", "m3"} {
		r.ok(r.svc.RegisterMember(r.ctx, &pb.RegisterMember{Domain: "fresh", MemberId: id}))
	}
	r.ok(r.svc.AssignInitial(r.ctx, "fresh", "m1"))

	update := &pb.Policy{LeaseTtlMs: 2000, MinSyncReplicas: 2} // no durability named
	for _, c := range []struct {
		name string
		want pb.Durability
	}{
		{"db1", pb.Durability_DURABILITY_AUTHORITY_GATED},
		{"legacy", pb.Durability_DURABILITY_UNSPECIFIED},
		{"fresh", pb.Durability_DURABILITY_REPLICA_QUORUM},
	} {
		if _, err := r.svc.UpdatePolicy(r.ctx, c.name, update); err != nil {
			t.Fatalf("update %s: %v", c.name, err)
		}
		p := r.storedPolicy(c.name)
		if p.GetDurability() != c.want || p.GetLeaseTtlMs() != 2000 {
			t.Errorf("%s after update: durability %v ttl %d, want %v ttl 2000", c.name, p.GetDurability(), p.GetLeaseTtlMs(), c.want)
		}
	}
	if fsm.ReplicaQuorum(r.storedPolicy("legacy")) || fsm.ReplicaQuorum(r.storedPolicy("db1")) {
		t.Fatal("a gated domain became replica-quorum through an update that named no durability")
	}
	// The gated domain still promotes on the gated checks: no prepare, no
	// fenced reports, the watermark decides.
	r.clock.Advance(testTTL)
	r.report("n2", 1, 100, h100, 50)
	out, err := r.svc.Promote(r.ctx, req("r1", "n2", 1))
	if err != nil || !out.Record.GetDecision().GetAllowed() {
		t.Fatalf("gated promotion after update: %+v %v", out, err)
	}
	if out.Record.GetFence() != nil || len(out.Record.GetFenceReports()) != 0 {
		t.Fatalf("a gated promotion went through a fence: %v", out.Record)
	}
	// An explicit durability still changes it (leaving replica-quorum is
	// refused while m1 holds "fresh": the FSM's rule, unchanged).
	if _, err := r.svc.UpdatePolicy(r.ctx, "fresh", &pb.Policy{Durability: pb.Durability_DURABILITY_AUTHORITY_GATED}); err == nil {
		t.Fatal("leaving replica-quorum while a holder holds was allowed")
	}
	r.ok(r.svc.UpdatePolicy(r.ctx, "legacy", &pb.Policy{Durability: pb.Durability_DURABILITY_REPLICA_QUORUM}))
	if !fsm.ReplicaQuorum(r.storedPolicy("legacy")) {
		t.Fatal("an explicit replica-quorum update did not apply")
	}
}
