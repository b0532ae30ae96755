// CI mode of the fault-injection cluster: every scenario once with a fixed
// seed, all nine checkers, and a proof that each fault happened. Every
// scenario always runs: none is skipped for time (a skipped scenario would
// let the mode pass without checking what it names). Each scenario's work is
// sized by its own fixed fault windows and workload, not by the clock; the
// wall time of each and of the whole mode is logged (about 350 s on the CI
// machine), and `go test -timeout` (make jepsen: 20m) bounds a run that
// hangs.
package jepsenlike_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aerodb/authority/failpoint"

	"github.com/aerodb/authority/jepsen-like/checker"
	"github.com/aerodb/authority/jepsen-like/history"
	"github.com/aerodb/authority/jepsen-like/nemesis"
	"github.com/aerodb/authority/jepsen-like/runner"
)

// scenarios of the CI mode, in priority order.
func scenarios() []runner.Scenario {
	leaderChanged := func(r *runner.Result) error {
		if !r.LeaderChanged() {
			return fmt.Errorf("no leader change observed (%d leader records)", len(r.Leaders))
		}
		return nil
	}
	return []runner.Scenario{
		{Name: "partition-leader", Seed: 1, Prove: all(leaderChanged, counted("forward_link_accepts", 1)),
			Faults: func(e *nemesis.Env, _ *runner.Run) { e.PartitionLeader(4 * time.Second) }},
		{Name: "kill-random", Seed: 2, Prove: func(r *runner.Result) error {
			if n := r.Get(checker.NameLiveness).Counts["faults"]; n != 2 {
				return fmt.Errorf("%d fault windows recorded, want 2 kills", n)
			}
			return nil
		},
			Faults: func(e *nemesis.Env, _ *runner.Run) {
				e.KillRandom(2 * time.Second)
				time.Sleep(2 * time.Second)
				e.KillRandom(2 * time.Second)
			}},
		{Name: "pause-leader", Seed: 3, Prove: leaderChanged,
			Faults: func(e *nemesis.Env, _ *runner.Run) { e.PauseLeader(3 * time.Second) }},
		{Name: "pause-holder", Seed: 4, ExpectStaleRejections: true, Faults: pauseHolder, Prove: staleRejected},
		{Name: "kill-all", Seed: 5, Prove: leaderChanged,
			Faults: func(e *nemesis.Env, _ *runner.Run) { e.KillAll(time.Second) }},
		{Name: "majority-minority", Seed: 7, Prove: leaderChanged,
			Faults: func(e *nemesis.Env, _ *runner.Run) { e.MajorityMinority(4 * time.Second) }},
		{Name: "failpoint-boundaries-leader", Seed: 6, Prove: allFired(failpoint.All),
			Faults: func(e *nemesis.Env, _ *runner.Run) { e.FailpointBoundaries("leader", failpoint.All, 8*time.Second) }},
		{Name: "failpoint-boundaries-follower", Seed: 8, Prove: allFired(followerPoints),
			Faults: func(e *nemesis.Env, _ *runner.Run) { e.FailpointBoundaries("follower", followerPoints, 8*time.Second) }},
		{Name: "partition-holder", Seed: 9, Faults: partitionHolder, Prove: counted("holder_handovers", 1)},
		{Name: "slow-disk", Seed: 10, Prove: counted("slow_disk_hits", 20),
			Faults: func(e *nemesis.Env, _ *runner.Run) { e.SlowDisk(40*time.Millisecond, 4*time.Second) }},
		// Every server's lease clock runs 8 % fast: the service expires a
		// lease after TTL/1.08 ≈ 926 ms of real time, while a holder with
		// the library's margin (TTL/10) stops at 900 ms; a paused holder's
		// successor must still never overlap it.
		{Name: "clock-skew", Seed: 12, ExpectStaleRejections: true, Faults: pauseHolder,
			ServerEnv: []string{"AUTHORITYD_TEST_CLOCK_RATE=1.08"}, Prove: all(staleRejected, clockSkewed("1.08"))},
		// A hostile node (a valid node certificate of another name) keeps
		// renewing the fence domain's lease for its holder while the holder
		// is paused past its TTL: every renewal must be refused
		// (PERMISSION_DENIED), so the lease expires and the other agent
		// takes the domain within TTL + 1.5 s (Liveness's handover bound).
		// The negative control TestMutantRenewalWithoutNodeIdentity runs
		// this scenario against servers that skip the check.
		{Name: "hostile-renewals", Seed: 15, HandoverBound: 2500 * time.Millisecond, Faults: hostileRenewals, Prove: hostileDenied},
		// The automatic domain's holder (the workload's primary) hangs for
		// 5 s: its lease (TTL 500 ms) expires on the leader, the policy
		// promotes a replica, whose lease expires TTL later too, and again
		// — the dwell (2 s) must hold each next promotion back
		// (policy-anti-flapping), and be what held it (a gap under dwell
		// + 1 s). The negative control
		// TestMutantPolicyIgnoresDwell runs this scenario against servers
		// whose policy ignores dwell and backoff.
		{Name: "flap-auto-holder", Seed: 16, Faults: flapAutoHolder, Prove: all(counted("holder_stalls", 1), policyPromoted(2), dwellBound)},
	}
}

// flapAutoHolder stalls the automatic domain's primary for 5 s (one fault
// window).
func flapAutoHolder(e *nemesis.Env, r *runner.Run) { stallAutoHolder(e, r, 5*time.Second) }

// stallAutoHolder stops the automatic domain's primary (its holder: no
// reads, advances or re-acquires) for d, recorded as a fault window.
func stallAutoHolder(e *nemesis.Env, r *runner.Run, d time.Duration) {
	e.H.Add(history.Record{Kind: history.KindNemesis, Type: history.NemesisStart, Fault: "stall-auto-holder",
		Info: "the primary of " + runner.AutoDomain + " stops (no renewals)", Domain: runner.AutoDomain})
	e.Log("nemesis start stall-auto-holder")
	r.Workload.StallPrimary(runner.AutoDomain, d)
	time.Sleep(d)
	e.H.Add(history.Record{Kind: history.KindNemesis, Type: history.NemesisStop, Fault: "stall-auto-holder",
		Info: "the primary of " + runner.AutoDomain + " resumes", Domain: runner.AutoDomain})
	e.Count("holder_stalls", 1)
}

// cutOffDBPrimary cuts the replica-quorum domain's primary off from the
// authority for d (it still writes to its replicas; its lease lapses, a
// promotion may complete meanwhile), recorded as a fault window.
func cutOffDBPrimary(e *nemesis.Env, r *runner.Run, d time.Duration) {
	e.H.Add(history.Record{Kind: history.KindNemesis, Type: history.NemesisStart, Fault: "cut-off-db-primary",
		Info: "the primary of " + runner.QuorumDomain + " reaches its replicas, not the authority", Domain: runner.QuorumDomain})
	e.Log("nemesis start cut-off-db-primary")
	r.Workload.CutOffDBPrimary(runner.QuorumDomain, d)
	time.Sleep(d)
	e.H.Add(history.Record{Kind: history.KindNemesis, Type: history.NemesisStop, Fault: "cut-off-db-primary",
		Info: "the primary of " + runner.QuorumDomain + " reaches the authority again", Domain: runner.QuorumDomain})
	e.Count("db_primary_cutoffs", 1)
}

// dwellBound proves the dwell was what spaced two policy promotions: the
// closest pair is less than dwell + 1 s apart (the holder kept losing its
// lease, so without the dwell the policy would have promoted sooner).
func dwellBound(r *runner.Result) error {
	pf := r.Get(checker.NamePolicyAntiFlapping)
	if gap, ok := pf.Counts["min_gap_ms"]; !ok || time.Duration(gap)*time.Millisecond >= runner.PolicyDwell+time.Second {
		return fmt.Errorf("no two policy promotions within dwell + 1 s (%s)", pf.Details)
	}
	return nil
}

// policyPromoted proves the automatic policy promoted at least min times.
func policyPromoted(min int) func(r *runner.Result) error {
	return func(r *runner.Result) error {
		if n := r.PolicyPromotions(); n < min {
			return fmt.Errorf("%d policy promotions, want ≥ %d (%s)", n, min, r.Get(checker.NamePolicyAntiFlapping).Details)
		}
		return nil
	}
}

// scenario returns the CI scenario named name.
func scenario(t *testing.T, name string) runner.Scenario {
	for _, sc := range scenarios() {
		if sc.Name == name {
			return sc
		}
	}
	t.Fatalf("no scenario %q", name)
	return runner.Scenario{}
}

// hostileRenewals runs a hostile renewer (node:mallory) over a pause of the
// fence domain's holder (3.5 s, past its 1 s TTL and the handover bound).
func hostileRenewals(e *nemesis.Env, r *runner.Run) {
	stop := e.StartHostileRenewals(runner.FenceDomain, "mallory", 950)
	time.Sleep(500 * time.Millisecond) // the live holder's lease first
	e.PauseHolder(r.Fenced.LastHolder(runner.FenceDomain), 3500*time.Millisecond)
	stop()
}

// hostileDenied proves the hostile renewals reached the servers and were
// all refused for the node's identity.
func hostileDenied(r *runner.Result) error {
	if r.Counters[nemesis.HostileDenied] < 1 || r.Counters[nemesis.HostileAccepted] != 0 {
		return fmt.Errorf("want ≥ 1 hostile renewal denied and none accepted (counters %v)", r.Counters)
	}
	return nil
}

// followerPoints are the failpoints that run on followers too (the
// promote/* points run only in the leader's promotion service; the
// workload's requests through followers reach them there).
var followerPoints = []string{failpoint.RaftLogBeforeStore, failpoint.RaftLogAfterStore,
	failpoint.FSMBeforeApplyPromote, failpoint.FSMAfterApplyPromote, failpoint.SnapshotBeforePersist}

// allFired proves every point was armed and killed its server.
func allFired(points []string) func(r *runner.Result) error {
	return func(r *runner.Result) error {
		for _, p := range points {
			if r.Input.FailpointHits[p] < 1 {
				return fmt.Errorf("failpoint %s never fired (hits %v)", p, r.Input.FailpointHits)
			}
		}
		return nil
	}
}

// counted proves a fault's own counter reached min.
func counted(name string, min int) func(r *runner.Result) error {
	return func(r *runner.Result) error {
		if r.Counters[name] < min {
			return fmt.Errorf("%s = %d, want ≥ %d (counters %v)", name, r.Counters[name], min, r.Counters)
		}
		return nil
	}
}

// clockSkewed proves every server ran its lease clock at rate.
func clockSkewed(rate string) func(r *runner.Result) error {
	return func(r *runner.Result) error {
		for id := range r.Input.NodeLogs {
			b, err := os.ReadFile(filepath.Join(r.Dir, "nodes", id+".log"))
			if err != nil {
				return err
			}
			if !strings.Contains(string(b), "AUTHORITYD_TEST_CLOCK_RATE="+rate) {
				return fmt.Errorf("%s's log does not show the clock rate %s", id, rate)
			}
		}
		return nil
	}
}

func all(proofs ...func(r *runner.Result) error) func(r *runner.Result) error {
	return func(r *runner.Result) error {
		for _, p := range proofs {
			if err := p(r); err != nil {
				return err
			}
		}
		return nil
	}
}

// partitionHolder cuts the fence domain's holder off from every server
// (its client links hold) until the other agent took over, up to 3 times.
func partitionHolder(e *nemesis.Env, r *runner.Run) {
	for range 3 {
		before := r.Fenced.LastHolder(runner.FenceDomain)
		e.PartitionHolder(before, 3*time.Second)
		time.Sleep(500 * time.Millisecond)
		if after := r.Fenced.LastHolder(runner.FenceDomain); after != before && after != "" {
			e.Count("holder_handovers", 1)
			return
		}
	}
}

// pauseHolder pauses the agent holding the fence domain past its TTL
// (1 s), up to three times until a stale write was rejected (the pause
// must land between the agent's lease check and its write).
// pauseHolder pauses the fence domain's holder past its TTL until a stale
// write of a resumed holder is rejected (the scenario's proof), at most six
// times: whether a pause lands between a holder's lease check and its write
// depends on timing, which a loaded machine stretches.
func pauseHolder(e *nemesis.Env, r *runner.Run) {
	for range 6 {
		before := r.Fenced.RejectCount()
		e.PauseHolder(r.Fenced.LastHolder(runner.FenceDomain), 3*time.Second)
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if r.Fenced.RejectCount() > before {
				return
			}
		}
	}
}

func staleRejected(r *runner.Result) error {
	np := r.Get(checker.NameNoOverlap)
	if np.Counts["stale_rejects"] < 1 || np.Counts["stale_accepts"] != 0 {
		return fmt.Errorf("want ≥ 1 stale write rejected and 0 accepted, got %v", np.Counts)
	}
	return nil
}

func TestJepsen(t *testing.T) {
	if testing.Short() {
		t.Skip("jepsen-like CI mode: skipped in -short")
	}
	began := time.Now()
	defer func() {
		t.Logf("jepsen-like CI mode: %d scenarios in %v", len(scenarios()), time.Since(began).Round(time.Second))
	}()
	for _, sc := range scenarios() {
		t.Run(sc.Name, func(t *testing.T) {
			res := runner.Execute(t, sc)
			t.Logf("%s: %v, %d history records, %d policy promotions of %s", sc.Name, res.Elapsed.Round(time.Millisecond), len(res.Input.History),
				res.PolicyPromotions(), runner.AutoDomain)
			for _, r := range res.Results {
				if !r.Valid {
					t.Errorf("checker %s INVALID: %s", r.Name, r.Details)
				}
			}
			if sc.Prove != nil {
				if err := sc.Prove(res); err != nil {
					t.Errorf("the fault is not proven to have happened: %v", err)
				}
			}
		})
	}
}
