//go:build jepsen_mutants

package jepsenlike_test

import (
	"strings"
	"testing"
	"time"

	"github.com/aerodb/authority/jepsen-like/checker"
	"github.com/aerodb/authority/jepsen-like/fenced"
	"github.com/aerodb/authority/jepsen-like/nemesis"
	"github.com/aerodb/authority/jepsen-like/runner"
)

// Negative control: a fenced resource that ignores epochs, under the
// pause-holder scenario, must be caught by NoOverlappingPrimaries (a stale
// write accepted), or the harness cannot see what it claims to check.
func TestMutantFencedIgnoresEpochs(t *testing.T) {
	sc := runner.Scenario{Name: "mutant-fenced-ignores-epochs", Seed: 4, ExpectStaleRejections: true,
		Fenced: fenced.NewMutant, Faults: pauseHolderMutant}
	res := runner.Execute(t, sc)
	np := res.Get(checker.NameNoOverlap)
	if np.Valid || np.Counts["stale_accepts"] < 1 {
		t.Fatalf("the mutant fenced resource was not caught by %s: %+v", checker.NameNoOverlap, np)
	}
	t.Logf("caught by %s: %s", np.Name, np.Details)
	for _, r := range res.Results {
		if r.Name != checker.NameNoOverlap && !r.Valid {
			t.Errorf("checker %s also failed (the mutant only breaks fencing): %s", r.Name, r.Details)
		}
	}
}

// pauseHolderMutant pauses the holder until a stale write arrived (the
// mutant accepts it, so count writes below the highest epoch via the
// checker afterwards; pause three times to make one likely).
func pauseHolderMutant(e *nemesis.Env, r *runner.Run) {
	for range 3 {
		e.PauseHolder(r.Fenced.LastHolder(runner.FenceDomain), 3*time.Second)
		time.Sleep(time.Second)
	}
}

// Negative control: servers that serve reads without leader verification
// (AUTHORITY_MUTANT=stale-reads), under a partitioned leader, must be caught
// by the linearizability checker.
func TestMutantReadsWithoutLeaderVerification(t *testing.T) {
	t.Setenv("AUTHORITY_MUTANT", "stale-reads") // inherited by every authorityd
	sc := runner.Scenario{Name: "mutant-stale-reads", Seed: 11,
		Faults: func(e *nemesis.Env, _ *runner.Run) { e.PartitionLeader(4 * time.Second) }}
	res := runner.Execute(t, sc)
	lin := res.Get(checker.NameLinearizable)
	if lin.Valid {
		t.Fatalf("reads without leader verification were not caught by %s: %s", checker.NameLinearizable, lin.Details)
	}
	t.Logf("caught by %s: %s", lin.Name, lin.Details)
}

// Negative control: promotion without compare-and-set
// (AUTHORITY_MUTANT=no-cas: the validator reports the expected epoch but
// never enforces it, at pre-validation and at apply). The workload's
// clients promote with the epoch they last saw — one time in four an older
// one — so once a holder's lease expires a stale expectation is allowed,
// which only the linearizability checker's compare-and-set model can see.
func TestMutantPromotionWithoutCAS(t *testing.T) {
	t.Setenv("AUTHORITY_MUTANT", "no-cas") // inherited by every authorityd
	// Only an allowed promotion on a stale epoch shows the mutant, and
	// promotions are allowed only when the primary's lease lapsed (about
	// one in thirty): half of them stale and a longer warm-up make a miss
	// unlikely (one run without either saw 9 allowed, none stale).
	sc := runner.Scenario{Name: "mutant-no-cas", Seed: 13, StaleOneIn: 2, Warmup: 6 * time.Second,
		Faults: func(e *nemesis.Env, _ *runner.Run) { e.KillRandom(time.Second) }}
	res := runner.Execute(t, sc)
	lin := res.Get(checker.NameLinearizable)
	if lin.Valid {
		t.Fatalf("promotion without compare-and-set was not caught by %s: %s", checker.NameLinearizable, lin.Details)
	}
	if !strings.Contains(lin.Details, "promote(") {
		t.Fatalf("%s failed, but not on a promotion: %s", checker.NameLinearizable, lin.Details)
	}
	t.Logf("caught by %s: %s", lin.Name, lin.Details)
}

// Negative control: a client margin of zero (the smallest the library
// accepts, 1 ns) with a fast clock (every server's lease clock at 1.5×
// real time). A paused holder still believes in its lease until send time
// + TTL while the service expired it after TTL/1.5 and granted the lock to
// the other agent: NoOverlappingPrimaries must see the belief outlive the
// newer grant.
func TestMutantZeroMarginFastClock(t *testing.T) {
	sc := runner.Scenario{Name: "mutant-zero-margin-fast-clock", Seed: 14, Faults: pauseHolderMutant,
		ServerEnv: []string{"AUTHORITYD_TEST_CLOCK_RATE=1.5"}, AgentArgs: []string{"--margin=1ns"}}
	res := runner.Execute(t, sc)
	np := res.Get(checker.NameNoOverlap)
	if np.Valid || np.Counts["overlaps"] < 1 {
		t.Fatalf("zero margin with a fast clock was not caught by %s: %+v", checker.NameNoOverlap, np)
	}
	t.Logf("caught by %s: %s", np.Name, np.Details)
}

// Negative control: servers that skip the node-identity check on KeepAlive
// (AUTHORITY_MUTANT=no-node-identity: a node may renew any holder's lease),
// under the hostile-renewals scenario: the hostile node keeps the paused
// holder's lease alive, so nobody else gets the domain, which Liveness's
// handover bound must catch.
func TestMutantRenewalWithoutNodeIdentity(t *testing.T) {
	t.Setenv("AUTHORITY_MUTANT", "no-node-identity") // inherited by every authorityd
	sc := scenario(t, "hostile-renewals")
	sc.Name, sc.Prove = "mutant-no-node-identity", nil
	res := runner.Execute(t, sc)
	if n := res.Counters[nemesis.HostileAccepted]; n < 1 {
		t.Fatalf("the mutant accepted no hostile renewal (counters %v)", res.Counters)
	}
	live := res.Get(checker.NameLiveness)
	if live.Valid || !strings.Contains(live.Details, "stopped renewing") {
		t.Fatalf("renewals by another node were not caught by %s: %+v", checker.NameLiveness, live)
	}
	t.Logf("caught by %s: %s", live.Name, live.Details)
	for _, r := range res.Results {
		if r.Name != checker.NameLiveness && !r.Valid {
			t.Errorf("checker %s also failed (the mutant only keeps a lease alive): %s", r.Name, r.Details)
		}
	}
}

// Negative control: an automatic policy that ignores the dwell and the
// backoff (AUTHORITY_MUTANT=policy-no-dwell), under flap-auto-holder (the
// automatic domain's holder hangs twice for 3 s): each new holder's lease
// expires TTL after its promotion and the mutant promotes again at once,
// which policy-anti-flapping must catch (promotions within the dwell).
func TestMutantPolicyIgnoresDwell(t *testing.T) {
	t.Setenv("AUTHORITY_MUTANT", "policy-no-dwell") // inherited by every authorityd
	sc := scenario(t, "flap-auto-holder")
	sc.Name, sc.Prove = "mutant-policy-no-dwell", nil
	res := runner.Execute(t, sc)
	pf := res.Get(checker.NamePolicyAntiFlapping)
	if pf.Valid || pf.Counts["within_dwell"] < 1 {
		t.Fatalf("a policy ignoring dwell and backoff was not caught by %s: %+v", checker.NamePolicyAntiFlapping, pf)
	}
	t.Logf("caught by %s (%d policy promotions, %d within the dwell): %s", pf.Name, pf.Counts["policy_promotions"], pf.Counts["within_dwell"], pf.Details)
	for _, r := range res.Results {
		if r.Name != checker.NamePolicyAntiFlapping && !r.Valid {
			t.Errorf("checker %s also failed (the mutant only ignores dwell and backoff): %s", r.Name, r.Details)
		}
	}
}

// Negative controls of the replica-quorum domain's simulated database
// (workload.Config.DBMutant): each loses acknowledged writes across a
// promotion, which no-lost-acknowledged-db-writes must catch, while every
// other checker (the authority is unchanged) passes.
func TestMutantDBAcknowledgesAfterKMinusOneReplicas(t *testing.T) {
	dbMutantRun(t, runner.Scenario{Name: "mutant-db-ack-short", Seed: 17, DBMutant: "ack-short", Faults: cutOffDBPrimaryTwice})
}

func TestMutantDBReplicaAcceptsBelowItsFence(t *testing.T) {
	dbMutantRun(t, runner.Scenario{Name: "mutant-db-replica-ignores-fence", Seed: 18, DBMutant: "replica-ignores-fence", Faults: cutOffDBPrimaryTwice})
}

// cutOffDBPrimaryTwice cuts the replica-quorum primary off from the
// authority twice for 3 s: its lease lapses, a promotion completes while it
// still writes to its replicas (which only their fences stop).
func cutOffDBPrimaryTwice(e *nemesis.Env, r *runner.Run) {
	for range 2 {
		cutOffDBPrimary(e, r, 3*time.Second)
		time.Sleep(time.Second)
	}
}

func dbMutantRun(t *testing.T, sc runner.Scenario) {
	res := runner.Execute(t, sc)
	db := res.Get(checker.NameNoLostDBWrites)
	if db.Valid || db.Counts["lost"] < 1 {
		t.Fatalf("database mutant %q was not caught by %s: %+v", sc.DBMutant, checker.NameNoLostDBWrites, db)
	}
	t.Logf("caught by %s (%d acknowledged, %d promotions, %d lost): %s", db.Name, db.Counts["acknowledged"], db.Counts["promotions"], db.Counts["lost"], db.Details)
	for _, r := range res.Results {
		if r.Name != checker.NameNoLostDBWrites && !r.Valid {
			t.Errorf("checker %s also failed (the mutant only breaks the simulated database): %s", r.Name, r.Details)
		}
	}
}
