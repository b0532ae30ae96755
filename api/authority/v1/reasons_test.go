package authorityv1_test

import (
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/grpc/codes"
)

// TestEveryReasonHasExactlyOneCode: the reason ↔ code table lists each
// reason once, with a code, and nothing else.
func TestEveryReasonHasExactlyOneCode(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range pb.Reasons {
		if seen[r] {
			t.Errorf("reason %s listed twice in Reasons", r)
		}
		seen[r] = true
		c, ok := pb.ReasonCode(r)
		if !ok || c == 0 {
			t.Errorf("reason %s has no code", r)
		}
	}
	for r := range pb.ReasonCodes {
		if !seen[r] {
			t.Errorf("ReasonCodes has %s, which Reasons does not list", r)
		}
	}
	if _, ok := pb.ReasonCode("NO_SUCH_REASON"); ok {
		t.Error("an unknown reason has a code")
	}
}

// TestCodeNumbersAreGRPCs: the numbers the messages package spells out are
// grpc's codes (the package must not import grpc itself).
func TestCodeNumbersAreGRPCs(t *testing.T) {
	for _, c := range []struct {
		got  uint32
		want codes.Code
	}{
		{pb.CodeCanceled, codes.Canceled}, {pb.CodeInvalidArgument, codes.InvalidArgument},
		{pb.CodeNotFound, codes.NotFound}, {pb.CodeAlreadyExists, codes.AlreadyExists},
		{pb.CodePermissionDenied, codes.PermissionDenied}, {pb.CodeResourceExhausted, codes.ResourceExhausted},
		{pb.CodeFailedPrecondition, codes.FailedPrecondition}, {pb.CodeOutOfRange, codes.OutOfRange},
		{pb.CodeInternal, codes.Internal}, {pb.CodeUnavailable, codes.Unavailable},
	} {
		if codes.Code(c.got) != c.want {
			t.Errorf("code %d is %s, want %s (%d)", c.got, codes.Code(c.got), c.want, c.want)
		}
	}
}
