package fsm

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/protobuf/proto"
)

// Fuzz targets. With plain `go test` they run their seed corpus; explore
// with e.g. go test ./fsm -run '^$' -fuzz FuzzApply -fuzztime 60s

// fuzzBase is the state every FuzzApply input is applied to: a domain
// ready to promote plus lock and release domains (built per input: cheap,
// and inputs cannot leak into each other).
func fuzzBase(t testing.TB) (*FSM, uint64) {
	f := populatedFSM(t)
	return f, f.LastIndex() + 1
}

// fuzzSeedCommands are valid and nearly valid entries of every kind.
func fuzzSeedCommands(t testing.TB) []*pb.Command {
	_, attempt := readyToPromote(t)
	a3 := cloneAttempt(attempt)
	a3.Request.RequestId = "req-9"
	a3.Request.Candidate = "n3"
	a3.Lease = leaseObs("n2", 2, pb.LeaseState_LEASE_STATE_EXPIRED)
	a3.CandidateReport = report("n3", 2)
	a3.CandidateReport.AppliedCommitId = 60
	a3.CandidateReport.WatermarkLsn, a3.CandidateReport.HashAtWatermark = 120, h120
	a3.CandidateReport.FlushedLsn, a3.CandidateReport.FlushedHash = 120, h120
	return []*pb.Command{
		createDB("db9"),
		createLock("db1"),
		updatePolicyCmd("db1", &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL, LeaseTtlMs: 1000, ReportMaxAgeMs: 1000, PromotionDisabled: true}),
		registerCmd("db1", "n4"),
		assignCmd("db1", "n1"),
		acquireCmd("lock1", "runner-b", leaseObs("runner-a", 1, pb.LeaseState_LEASE_STATE_EXPIRED), u64p(1)),
		acquireCmd("db1", "n2", nil, nil),
		releaseCmd("db1", "n2", 2),
		releaseCmd("lock1", "runner-a", 1),
		advanceCmd(wmAdv("db1", "n2", 2, 130, h120, 70)),
		advanceCmd(wmAdv("db1", "n2", 2, 110, h120, 70), wmAdv("db1", "n1", 1, 140, h100, 80)),
		attemptCmd(a3),
		attemptCmd(attempt), // a duplicate of the recorded req-1
		completeCmd("rel1", "ctl", 1, "canary-1"),
		abortCmd("lock1", "runner-a", 1, "x"),
		{},
	}
}

func FuzzApply(f *testing.F) {
	for _, cmd := range fuzzSeedCommands(f) {
		data, err := proto.Marshal(cmd)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte{})
	f.Add([]byte{0xff})
	f.Add([]byte{0x52, 0x05, 0x01})
	f.Add(withUnknownField(f, &pb.Command{Term: 1}))
	f.Add(withUnknownField(f, releaseCmd("db1", "n2", 2)))

	f.Fuzz(func(t *testing.T, data []byte) {
		fsm, index := fuzzBase(t)
		fsm.advance(index)
		before := mustHash(t, fsm)

		var res *Result
		msg := func() (msg string) {
			defer func() {
				if r := recover(); r != nil {
					msg, _ = r.(string)
					if msg == "" {
						msg = "non-string panic"
					}
				}
			}()
			res = fsm.Apply(index, 1, data)
			return ""
		}()
		if msg != "" {
			// The one documented panic: a command this version does not
			// know. Anything else (including an AU-1 invariant under the
			// invariants tag) is a bug.
			var cmd pb.Command
			if !strings.Contains(msg, "unknown to this version") || proto.Unmarshal(data, &cmd) != nil ||
				cmd.Body != nil || len(cmd.ProtoReflect().GetUnknown()) == 0 {
				t.Fatalf("Apply(%x) panicked: %s", data, msg)
			}
			if mustHash(t, fsm) != before {
				t.Fatal("the unknown-command panic changed the state")
			}
			return
		}
		failedAll := res.Err != nil || res.Duplicate
		if len(res.Watermarks) > 1 {
			failedAll = true
			for _, w := range res.Watermarks {
				failedAll = failedAll && w.Err != nil
			}
		}
		if failedAll && mustHash(t, fsm) != before {
			t.Fatalf("Apply(%x) failed (%v) but changed the state", data, res.Err)
		}
		if res.Err != nil && !isSentinel(res.Err) {
			t.Fatalf("Apply(%x): error %v wraps no sentinel", data, res.Err)
		}
		// Whatever happened, the state still round-trips.
		roundTrip(t, fsm)
	})
}

func isSentinel(err error) bool {
	for _, s := range []error{ErrNotFound, ErrExists, ErrInvalid, ErrFenced, ErrPrecondition, ErrConflict} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

func FuzzRestore(f *testing.F) {
	empty, err := New().Snapshot()
	if err != nil {
		f.Fatal(err)
	}
	full, err := populatedFSM(f).Snapshot()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(empty)
	f.Add(full)
	f.Add(full[:len(full)/2])
	f.Add(append(bytes.Clone(full), 0))
	f.Add([]byte(snapshotMagic))
	f.Add([]byte{})
	f.Add(buildSnapshot(snapshotMagic, []rawRecord{headerRecord(f, &pb.SnapshotHeader{Version: 1, DomainCount: 2}), domainRecord(f, "b"), domainRecord(f, "a")}))

	f.Fuzz(func(t *testing.T, data []byte) {
		target := New()
		target.ApplyCommand(1, 1, createLock("keep"))
		before := mustHash(t, target)
		if err := target.Restore(bytes.NewReader(data)); err != nil {
			if !errors.Is(err, ErrCorruptSnapshot) {
				t.Fatalf("Restore error %v is not ErrCorruptSnapshot", err)
			}
			if mustHash(t, target) != before {
				t.Fatal("a failed restore changed the state")
			}
			return
		}
		// A valid snapshot: its restored state is a fixed point of
		// Snapshot/Restore and accepts further entries without panicking.
		g := roundTrip(t, target)
		for i, name := range g.DomainNames() {
			idx := g.LastIndex() + uint64(i) + 1
			g.ApplyCommand(idx, 1, attemptCmd(&pb.PromotionAttempt{Request: &pb.PromotionRequest{RequestId: "fz", Domain: name, Candidate: "n2"}}))
			g.ApplyCommand(idx, 1, advanceCmd(wmAdv(name, "n1", 1, 1, h100, 1)))
		}
	})
}
