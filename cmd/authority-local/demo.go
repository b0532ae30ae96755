package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/fsm"
)

// seedDemo creates domain "orders" (primary n1, replicas n2 and n3, a
// committed watermark and n2's progress report) and runs a promotion that
// the validator denies while n1's lease is valid, printing its explanation.
// "orders" is authority-gated, named at creation: there are no databases
// here, the watermark and the report are given by hand, and no replica
// would answer the fence a replica-quorum promotion (the default of a new
// aerodb domain) first sets up; `make demo` shows that mode with refnodes.
// The operator administers; n1 advances its watermark and n2 reports its
// progress with their own identities. On a second run the domain exists:
// it only shows it.
func seedDemo(ctx context.Context, cl clients) error {
	c := cl.operator
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	hash := []byte{0xc0, 0xff, 0xee, 0x64}
	_, err := c.CreateDomain(ctx, "orders", pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: 15_000, ReportMaxAgeMs: 600_000,
		Durability: pb.Durability_DURABILITY_AUTHORITY_GATED})
	if errors.Is(err, client.ErrAlreadyExists) {
		d, err := c.GetDomain(ctx, "orders")
		if err != nil {
			return err
		}
		fmt.Printf("\nDomain orders already exists (restarted from disk):\n%s", fsm.DescribeDomain(d))
		return nil
	}
	if err != nil {
		return err
	}
	for _, m := range []string{"n1", "n2", "n3"} {
		if _, err := c.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: "orders", MemberId: m}); err != nil {
			return err
		}
	}
	if _, err := c.AssignInitial(ctx, "orders", "n1"); err != nil {
		return err
	}
	errs, err := cl.n1.AdvanceWatermark(ctx, []*pb.WatermarkAdvance{{Domain: "orders", Epoch: 1, Holder: "n1", Lsn: 100, Hash: hash, VisibleCommitId: 42}})
	if err := errors.Join(append(errs, err)...); err != nil {
		return err
	}
	if _, err := cl.n2.ReportProgress(ctx, "orders", &pb.ProgressReport{MemberId: "n2", Epoch: 1, FlushedLsn: 100, FlushedHash: hash,
		WatermarkLsn: 100, HashAtWatermark: hash, AppliedCommitId: 42, ReadSafe: true, State: pb.ReplicaState_REPLICA_STATE_STREAMING}); err != nil {
		return err
	}
	d, err := c.GetDomain(ctx, "orders")
	if err != nil {
		return err
	}
	fmt.Printf("\nDemo domain (authority-gated, chosen at creation: a new aerodb domain is replica-quorum unless told,\n"+
		"see `make demo`): primary n1 at epoch 1, watermark committed, replica n2 reporting:\n%s", fsm.DescribeDomain(d))
	expected := uint64(1)
	_, err = c.Promote(ctx, &pb.PromotionRequest{RequestId: "demo-early", Domain: "orders", Candidate: "n2",
		ExpectedEpoch: &expected, Reason: "demo: n1 looks slow", InitiatedBy: pb.Initiator_INITIATOR_OPERATOR})
	var denied *client.DeniedError
	if !errors.As(err, &denied) {
		return fmt.Errorf("demo promotion: expected a denial, got %v", err)
	}
	fmt.Printf("\nPromoting n2 while n1's 15 s lease is valid is DENIED (%s); the committed explanation:\n%s",
		denied.Reason(), fsm.DescribeAttempt(denied.Record))
	fmt.Println("\nn1's lease is not renewed by anyone, so it expires 15 s after the assignment;")
	fmt.Println("then the dry run `promote orders --to n2 --dry-run` exits 0, and the real promotion")
	fmt.Println("`promote orders --to n2 --request-id after-expiry --expected-epoch 1 --reason \"n1 gone\"` is allowed")
	fmt.Println("(n2 holds the watermark). A request id names one request: after a denial, retry with a new one.")
	return nil
}
