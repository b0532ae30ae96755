package validator

import (
	"bytes"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/protobuf/proto"
)

// Chain hashes at the positions the fixtures use. Distinct bytes per lsn so
// that a test comparing the wrong position cannot pass by accident.
var (
	hash100  = bytes.Repeat([]byte{0xab}, 8)
	hash120  = bytes.Repeat([]byte{0xcd}, 8)
	hashFork = bytes.Repeat([]byte{0xef}, 8)
)

// allowedInput is a manual AeroDB domain at epoch 7 whose holder p1's lease
// expired, with candidate r2 fully caught up: every check passes. Tests
// derive each case from it by one mutation.
func allowedInput() Input {
	return Input{
		Domain: &pb.Domain{
			Name:   "db1",
			Kind:   pb.DomainKind_DOMAIN_KIND_AERODB,
			Policy: &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL, LeaseTtlMs: 10000, ReportMaxAgeMs: 5000},
			Epoch:  7,
			Holder: "p1",
			Members: []*pb.Member{
				{Id: "p1", State: pb.MemberState_MEMBER_STATE_ACTIVE},
				{Id: "r2", State: pb.MemberState_MEMBER_STATE_ACTIVE},
				{Id: "r3", State: pb.MemberState_MEMBER_STATE_DECOMMISSIONED},
			},
			Watermark: &pb.Watermark{Epoch: 7, Lsn: 100, Hash: hash100, VisibleCommitId: 55},
		},
		Attempt: &pb.PromotionAttempt{
			Request: &pb.PromotionRequest{
				RequestId: "req-1",
				Domain:    "db1",
				Candidate: "r2",
				Reason:    "p1 host lost",
			},
			Lease: &pb.LeaseObservation{Holder: "p1", Epoch: 7, State: pb.LeaseState_LEASE_STATE_EXPIRED, LeaderTerm: 3, LeaderId: "n1"},
			CandidateReport: &pb.ProgressReport{
				MemberId:        "r2",
				Epoch:           7,
				FlushedLsn:      120,
				FlushedHash:     hash120,
				WatermarkLsn:    100,
				HashAtWatermark: hash100,
				AppliedCommitId: 60,
				ReadSafe:        true,
				State:           pb.ReplicaState_REPLICA_STATE_STREAMING,
			},
			ReportAgeMs: 200,
		},
	}
}

// cloneInput deep-copies an input so callers can compare before and after.
func cloneInput(in Input) Input {
	var out Input
	if in.Domain != nil {
		out.Domain = proto.Clone(in.Domain).(*pb.Domain)
	}
	if in.Attempt != nil {
		out.Attempt = proto.Clone(in.Attempt).(*pb.PromotionAttempt)
	}
	return out
}

// behindReplica: r2 flushed only up to lsn 90, so it has no hash at the
// watermark's lsn 100 (it was told about lsn 100 but never reached it).
func behindReplica(in *Input) {
	r := in.Attempt.CandidateReport
	r.FlushedLsn, r.FlushedHash = 90, bytes.Repeat([]byte{0x90}, 8)
	r.HashAtWatermark = nil
}

// divergentReplica: r2 reports the same lsn as the watermark with another
// chain hash: equal counters, different history.
func divergentReplica(in *Input) {
	in.Attempt.CandidateReport.HashAtWatermark = hashFork
}

func withWaivers(ws ...string) func(*Input) {
	return func(in *Input) { in.Attempt.Request.Waivers = ws }
}

func compose(fs ...func(*Input)) func(*Input) {
	return func(in *Input) {
		for _, f := range fs {
			f(in)
		}
	}
}

func findCheck(d *pb.Decision, name string) *pb.Check {
	for _, c := range d.GetChecks() {
		if c.GetName() == name {
			return c
		}
	}
	return nil
}

func observedValue(c *pb.Check, key string) (string, bool) {
	for _, o := range c.GetObserved() {
		if o.GetKey() == key {
			return o.GetValue(), true
		}
	}
	return "", false
}

func u64p(v uint64) *uint64 { return &v }
