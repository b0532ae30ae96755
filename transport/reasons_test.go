package transport

import (
	"context"
	"errors"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/promotion"
	"google.golang.org/grpc/codes"
)

// TestReasonCodesComeFromTheOneTable: every code the server sends with a
// reason is pb.ReasonCodes' (the table the client reads back), except the
// caller's own cancellation.
func TestReasonCodesComeFromTheOneTable(t *testing.T) {
	errs := []error{
		fsm.ErrCompacted, fsm.ErrEpochStale, fsm.ErrFenced, promotion.ErrFenced, promotion.ErrLeaseExpired,
		promotion.ErrNoLease, fsm.ErrNotFound, fsm.ErrExists, fsm.ErrInvalid, fsm.ErrConflict, fsm.ErrPrecondition,
		promotion.ErrGloballyDisabled, promotion.ErrNotLeader, promotion.ErrNotReady, promotion.ErrIndeterminate,
		context.DeadlineExceeded, errors.New("unclassified"),
	}
	for _, err := range errs {
		code, reason := reasonOf(err)
		want, ok := pb.ReasonCode(reason)
		if !ok || code != codes.Code(want) {
			t.Errorf("%v: server sends %s with %s; the table says %d (known %v)", err, code, reason, want, ok)
		}
	}
	if code, reason := reasonOf(context.Canceled); code != codes.Canceled || reason != pb.ReasonOutcomeUnknown {
		t.Errorf("canceled: %s %s", code, reason)
	}
	if c, _ := pb.ReasonCode(ReasonRateLimited); codes.Code(c) != codes.ResourceExhausted {
		t.Errorf("RATE_LIMITED maps to %s", codes.Code(c))
	}
}
