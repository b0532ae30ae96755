package fsm

import (
	"fmt"
	"strconv"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// Benchmarks of the apply path (decoded commands: ApplyCommand, without
// the protobuf decode Apply adds) and of snapshots.

// BenchmarkApplyPromotionAttempt: a denied attempt with a fresh request id
// per iteration, on a domain whose denied ring is full, so every apply also
// evicts the oldest record and its request id.
func BenchmarkApplyPromotionAttempt(b *testing.B) {
	h, attempt := readyToPromote(b)
	attempt.Lease.State = pb.LeaseState_LEASE_STATE_HELD // PrimaryStillActive
	for i := range DeniedHistory {
		a := cloneAttempt(attempt)
		a.Request.RequestId = "fill-" + strconv.Itoa(i)
		h.ok(attemptCmd(a))
	}
	cmd := attemptCmd(attempt)
	req := attempt.Request
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		req.RequestId = "bench-" + strconv.Itoa(i)
		h.index++
		if res := h.f.ApplyCommand(h.index, 1, cmd); res.Err != nil || res.Attempt.Decision.Allowed {
			b.Fatalf("iteration %d: %v", i, res.Err)
		}
	}
}

// BenchmarkApplyPromotionAllowed promotes back and forth between n2 and n3,
// with evidence for the current (holder, epoch) each iteration. Allowed
// records are permanent, so the domain is rebuilt (untimed) now and then.
func BenchmarkApplyPromotionAllowed(b *testing.B) {
	const rebuildEvery = 4096
	var h *harness
	var attempt *pb.PromotionAttempt
	cmd := &pb.Command{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i%rebuildEvery == 0 {
			b.StopTimer()
			h, attempt = readyToPromote(b)
			// n1 → n2 first, then n2 ↔ n3.
			cmd.Body = &pb.Command_PromotionAttempt{PromotionAttempt: attempt}
			b.StartTimer()
		}
		d := h.f.domains["db1"]
		cand := "n2"
		if d.Holder == "n2" {
			cand = "n3"
		}
		attempt.Request.RequestId = "p-" + strconv.Itoa(i)
		attempt.Request.Candidate = cand
		attempt.Lease.Holder, attempt.Lease.Epoch = d.Holder, d.Epoch
		attempt.CandidateReport.MemberId, attempt.CandidateReport.Epoch = cand, d.Epoch
		h.index++
		if res := h.f.ApplyCommand(h.index, 1, cmd); res.Err != nil || !res.Attempt.Decision.Allowed {
			b.Fatalf("iteration %d: %v %s", i, res.Err, DescribeAttempt(res.Attempt))
		}
	}
}

// BenchmarkApplyWatermarkAdvance: one advance per entry, lsn increasing.
func BenchmarkApplyWatermarkAdvance(b *testing.B) {
	h, _ := readyToPromote(b)
	adv := wmAdv("db1", "n1", 1, 100, h100, 50)
	cmd := advanceCmd(adv)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		adv.Lsn, adv.VisibleCommitId = uint64(101+i), uint64(51+i)
		h.index++
		if res := h.f.ApplyCommand(h.index, 1, cmd); res.Err != nil {
			b.Fatal(res.Err)
		}
	}
}

// BenchmarkApplyWatermarkBatch64: one entry advancing 64 domains (group
// commit across domains).
func BenchmarkApplyWatermarkBatch64(b *testing.B) {
	h := newHarness(b)
	advs := make([]*pb.WatermarkAdvance, 64)
	for i := range advs {
		name := fmt.Sprintf("db%02d", i)
		h.ok(createDB(name))
		h.ok(registerCmd(name, "n1"))
		h.ok(assignCmd(name, "n1"))
		advs[i] = wmAdv(name, "n1", 1, 0, h100, 0)
	}
	cmd := advanceCmd(advs...)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		for _, a := range advs {
			a.Lsn, a.VisibleCommitId = uint64(1+i), uint64(1+i)
		}
		h.index++
		res := h.f.ApplyCommand(h.index, 1, cmd)
		if w := res.Watermarks[63]; w.Err != nil {
			b.Fatal(w.Err)
		}
	}
}

// BenchmarkSnapshot1000Domains: 1000 aerodb domains, each with three
// members, a watermark, and one allowed and one denied attempt.
func BenchmarkSnapshot1000Domains(b *testing.B) {
	h := newHarness(b)
	for i := range 1000 {
		name := fmt.Sprintf("db%04d", i)
		h.ok(createDB(name))
		for _, m := range []string{"n1", "n2", "n3"} {
			h.ok(registerCmd(name, m))
		}
		h.ok(assignCmd(name, "n1"))
		h.ok(advanceCmd(wmAdv(name, "n1", 1, 100, h100, 50)))
		a := &pb.PromotionAttempt{
			Request:         &pb.PromotionRequest{RequestId: "r1", Domain: name, Candidate: "n2", Reason: "bench"},
			Lease:           leaseObs("n1", 1, pb.LeaseState_LEASE_STATE_HELD),
			CandidateReport: report("n2", 1),
		}
		h.ok(attemptCmd(a))
		a.Request.RequestId = "r2"
		a.Lease.State = pb.LeaseState_LEASE_STATE_EXPIRED
		h.ok(attemptCmd(a))
	}
	snap, err := h.f.Snapshot()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(snap)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := h.f.Snapshot(); err != nil {
			b.Fatal(err)
		}
	}
}
