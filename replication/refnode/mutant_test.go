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

// The server asking for N - K fenced reports instead of N - K + 1
// (validator mutant fence-n-minus-k, compiled into authorityd by
// testcluster for a jepsen_mutants test binary): the candidate that missed
// the acknowledged writes is promoted, and they are lost.
func TestMutantFenceQuorumNMinusK(t *testing.T) {
	t.Setenv("AUTHORITY_MUTANT", "fence-n-minus-k")
	out := fenceShortScenario(t, true)
	if !out.allowed || out.n2Last >= out.maxAcked {
		t.Fatalf("the mutant was not caught: allowed=%t reason=%s, n2 at lsn %d, acknowledged up to %d", out.allowed, out.reason, out.n2Last, out.maxAcked)
	}
	t.Logf("caught: n2 promoted on %d fenced report(s) at lsn %d; writes acknowledged up to lsn %d are lost", out.fenceCount, out.n2Last, out.maxAcked)
}
