//go:build jepsen_mutants

package jepsenlike_test

import (
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
