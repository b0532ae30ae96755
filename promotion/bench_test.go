package promotion

import (
	"context"
	"fmt"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// BenchmarkPromoteLeaderCPU: the leader's own work for one allowed
// promotion with expected epoch (admission, evaluation, both entries'
// encoding and apply on a one-node in-process log), without any commit
// wait: what a promotion costs beyond the log. Each round the holder
// releases and the candidate reports (untimed).
func BenchmarkPromoteLeaderCPU(b *testing.B) {
	r := newRig(b, false)
	holder, epoch := "n1", uint64(1)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		cand := map[string]string{"n1": "n2", "n2": "n1"}[holder]
		if _, err := r.svc.Release(ctx, "db1", holder, epoch); err != nil {
			b.Fatal(err)
		}
		if _, err := r.svc.ReportProgress("db1", &pb.ProgressReport{MemberId: cand, Epoch: epoch, FlushedLsn: 100, FlushedHash: h100,
			WatermarkLsn: 100, HashAtWatermark: h100, AppliedCommitId: 50, ReadSafe: true, State: pb.ReplicaState_REPLICA_STATE_STREAMING}); err != nil {
			b.Fatal(err)
		}
		q := req(fmt.Sprintf("b%d", i), cand, epoch)
		b.StartTimer()
		out, err := r.svc.Promote(ctx, q)
		if err != nil {
			b.Fatal(err)
		}
		holder, epoch = cand, out.Record.EpochAfter
	}
}
