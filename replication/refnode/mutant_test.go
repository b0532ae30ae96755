//go:build jepsen_mutants

package refnode

import (
	"fmt"
	"testing"
)

// Negative controls of replica-quorum (go test -tags "failpoints
// jepsen_mutants" -run Mutant ./replication/refnode/): each mutant must be
// caught by the scenario TestFencedReplicasStarveOldPrimary runs — the old
// primary's write after the fence is acknowledged (an acknowledged write
// the promoted candidate, chosen among the fenced replicas, does not have)
// or a fenced replica takes it.

func withMutant(t *testing.T, name string) {
	old := mutant
	mutant = name
	t.Cleanup(func() { mutant = old })
}

// Acknowledging after K−1 replicas: with K=2 and N−K+1 = 1 replica fenced,
// the unfenced replica alone makes the write acknowledged.
func TestMutantAckAfterKMinusOneReplicas(t *testing.T) {
	withMutant(t, "ack-k-minus-1")
	out := starveOldPrimary(t, 2, []int{1})
	if !out.acknowledged {
		t.Fatalf("the mutant was not caught: %s", out)
	}
	t.Logf("caught: %s", out)
}

// A replica that accepts WAL of an epoch it was fenced past: with every
// replica fenced, the old primary still gathers acknowledgements.
func TestMutantReplicaAcceptsFencedWAL(t *testing.T) {
	withMutant(t, "accept-fenced-wal")
	for _, tc := range starveCases {
		t.Run(fmt.Sprintf("K=%d", tc.k), func(t *testing.T) {
			out := starveOldPrimary(t, tc.k, tc.fenced)
			if !out.fencedFlushed || !out.acknowledged {
				t.Fatalf("the mutant was not caught: %s", out)
			}
			t.Logf("caught: %s", out)
		})
	}
}
