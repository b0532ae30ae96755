// CI mode of the fault-injection cluster: every scenario once with a fixed
// seed, all seven checkers, and a proof that each fault happened. The whole
// mode is capped by JEPSEN_BUDGET (default 300s): scenarios that would
// start after the budget is spent are skipped, saying so.
package jepsenlike_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/aerodb/authority/jepsen-like/checker"
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
		{Name: "partition-leader", Seed: 1, Prove: leaderChanged,
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
		{Name: "failpoint-kill", Seed: 6, Prove: leaderChanged,
			Faults: func(e *nemesis.Env, _ *runner.Run) { e.FailpointKill("promote/before-propose", 5*time.Second) }},
		{Name: "majority-minority", Seed: 7, Prove: leaderChanged,
			Faults: func(e *nemesis.Env, _ *runner.Run) { e.MajorityMinority(4 * time.Second) }},
	}
}

// pauseHolder pauses the agent holding the fence domain past its TTL
// (1 s), up to three times until a stale write was rejected (the pause
// must land between the agent's lease check and its write).
func pauseHolder(e *nemesis.Env, r *runner.Run) {
	for range 3 {
		before := r.Fenced.RejectCount()
		e.PauseHolder(r.Fenced.LastHolder(runner.FenceDomain), 3*time.Second)
		time.Sleep(time.Second)
		if r.Fenced.RejectCount() > before {
			return
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

// The CI budget is shared by every scenario of this test binary.
var began = time.Now()

func budget() time.Duration {
	if v := os.Getenv("JEPSEN_BUDGET"); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return 300 * time.Second
}

// perScenario is a pessimistic estimate of one scenario's wall time.
const perScenario = 40 * time.Second

func TestJepsen(t *testing.T) {
	if testing.Short() {
		t.Skip("jepsen-like CI mode: skipped in -short")
	}
	for _, sc := range scenarios() {
		t.Run(sc.Name, func(t *testing.T) {
			if spent := time.Since(began); spent+perScenario > budget() {
				t.Skipf("JEPSEN_BUDGET %v: %v spent, not starting %s (estimated %v); raise JEPSEN_BUDGET to run it", budget(), spent.Round(time.Second), sc.Name, perScenario)
			}
			res := runner.Execute(t, sc)
			t.Logf("%s: %v, %d history records", sc.Name, res.Elapsed.Round(time.Millisecond), len(res.Input.History))
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
