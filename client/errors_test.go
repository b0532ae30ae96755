package client

import (
	"context"
	"errors"
	"fmt"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func statusWith(code codes.Code, reason, msg string, meta map[string]string) error {
	st, err := status.New(code, msg).WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: pb.ErrorDomain, Metadata: meta})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

func TestErrorMappingEveryReason(t *testing.T) {
	cases := []struct {
		reason   string
		code     codes.Code
		sentinel error
	}{
		{pb.ReasonNotLeader, codes.Unavailable, ErrNotLeader},
		{pb.ReasonOutcomeUnknown, codes.Unavailable, ErrOutcomeUnknown},
		{pb.ReasonFenced, codes.FailedPrecondition, ErrFenced},
		{pb.ReasonEpochStale, codes.FailedPrecondition, ErrEpochStale},
		{pb.ReasonLeaseExpired, codes.FailedPrecondition, ErrLeaseExpired},
		{pb.ReasonNoLease, codes.NotFound, ErrNoLease},
		{pb.ReasonNotFound, codes.NotFound, ErrNotFound},
		{pb.ReasonAlreadyExists, codes.AlreadyExists, ErrAlreadyExists},
		{pb.ReasonInvalidArgument, codes.InvalidArgument, ErrInvalidArgument},
		{pb.ReasonFailedPrecondition, codes.FailedPrecondition, ErrFailedPrecondition},
		{pb.ReasonConflict, codes.FailedPrecondition, ErrConflict},
		{pb.ReasonPromotionDisabled, codes.FailedPrecondition, ErrPromotionDisabled},
		{pb.ReasonCompacted, codes.OutOfRange, ErrCompacted},
		{pb.ReasonInternal, codes.Internal, ErrInternal},
		{pb.ReasonPermissionDenied, codes.PermissionDenied, ErrPermissionDenied},
		{reasonRateLimited, codes.ResourceExhausted, ErrRateLimited},
	}
	all := []error{ErrNotLeader, ErrOutcomeUnknown, ErrFenced, ErrEpochStale, ErrLeaseExpired, ErrNoLease, ErrNotFound,
		ErrAlreadyExists, ErrInvalidArgument, ErrFailedPrecondition, ErrConflict, ErrPromotionDisabled, ErrCompacted, ErrInternal,
		ErrPermissionDenied, ErrRateLimited}
	if len(cases) != len(reasonSentinels) {
		t.Fatalf("%d cases for %d mapped reasons", len(cases), len(reasonSentinels))
	}
	for _, tc := range cases {
		msg := "server says " + tc.reason
		err := mapError(statusWith(tc.code, tc.reason, msg, nil))
		if !errors.Is(err, tc.sentinel) {
			t.Errorf("%s: %v is not %v", tc.reason, err, tc.sentinel)
		}
		for _, other := range all {
			if other == tc.sentinel || tc.sentinel == ErrEpochStale && other == ErrFenced {
				continue
			}
			if errors.Is(err, other) {
				t.Errorf("%s: also matches %v", tc.reason, other)
			}
		}
		if err.Error() != msg {
			t.Errorf("%s: message %q, want the server's %q", tc.reason, err.Error(), msg)
		}
		if status.Code(err) != tc.code {
			t.Errorf("%s: code %v, want %v", tc.reason, status.Code(err), tc.code)
		}
		var e *Error
		if !errors.As(err, &e) || e.Reason != tc.reason || e.Code != tc.code {
			t.Errorf("%s: *Error %+v", tc.reason, e)
		}
		// Reasons carried in message bodies map the same way.
		body := reasonError(tc.reason, msg)
		if !errors.Is(body, tc.sentinel) || status.Code(body) != tc.code {
			t.Errorf("%s in a body: %v (code %v)", tc.reason, body, status.Code(body))
		}
		// Wrapped further, errors.Is still works.
		if !errors.Is(fmt.Errorf("call: %w", err), tc.sentinel) {
			t.Errorf("%s: wrapping lost the sentinel", tc.reason)
		}
	}
	if !errors.Is(ErrEpochStale, ErrFenced) {
		t.Fatal("ErrEpochStale must be a kind of ErrFenced")
	}
	if errors.Is(ErrFenced, ErrEpochStale) {
		t.Fatal("ErrFenced must not be ErrEpochStale")
	}
}

func TestErrorMappingLeavesForeignErrors(t *testing.T) {
	plain := status.Error(codes.Unavailable, "connection refused")
	if got := mapError(plain); got != plain {
		t.Fatalf("transport error changed: %v", got)
	}
	other, _ := status.New(codes.FailedPrecondition, "x").WithDetails(&errdetails.ErrorInfo{Reason: pb.ReasonFenced, Domain: "other.example"})
	if errors.Is(mapError(other.Err()), ErrFenced) {
		t.Fatal("an ErrorInfo of another domain must not map")
	}
}

func TestClassify(t *testing.T) {
	hintErr := statusWith(codes.Unavailable, pb.ReasonNotLeader, "no", map[string]string{pb.MetaLeaderAddr: "10.0.0.1:8001"})
	cases := []struct {
		err   error
		class errClass
		hint  string
	}{
		{hintErr, classNotLeader, "10.0.0.1:8001"},
		{statusWith(codes.Unavailable, pb.ReasonNotLeader, "no", nil), classNotLeader, ""},
		{statusWith(codes.Unavailable, pb.ReasonOutcomeUnknown, "?", nil), classTransient, ""},
		{status.Error(codes.Unavailable, "connection refused"), classTransient, ""},
		{status.Error(codes.DeadlineExceeded, "deadline"), classTransient, ""},
		{context.DeadlineExceeded, classTransient, ""},
		{statusWith(codes.FailedPrecondition, pb.ReasonFenced, "f", nil), classFinal, ""},
		{statusWith(codes.PermissionDenied, pb.ReasonPermissionDenied, "denied", nil), classFinal, ""},
		{status.Error(codes.Internal, "boom"), classFinal, ""},
		{reasonError(pb.ReasonNotLeader, "body"), classNotLeader, ""},
		{reasonError(pb.ReasonFenced, "body"), classFinal, ""},
	}
	for i, tc := range cases {
		class, hint := classify(tc.err)
		if class != tc.class || hint != tc.hint {
			t.Errorf("%d %v: class %v hint %q, want %v %q", i, tc.err, class, hint, tc.class, tc.hint)
		}
	}
}

func TestDeniedError(t *testing.T) {
	rec := &pb.AttemptRecord{Decision: &pb.Decision{DenialReason: "PrimaryStillActive", FailedInvariant: "[P6-A1]"}}
	var err error = &DeniedError{Record: rec}
	if err.Error() != "promotion denied: PrimaryStillActive ([P6-A1])" {
		t.Fatal(err.Error())
	}
	var d *DeniedError
	if !errors.As(fmt.Errorf("x: %w", err), &d) || d.Reason() != "PrimaryStillActive" || d.Invariant() != "[P6-A1]" {
		t.Fatal("errors.As")
	}
	stale := &DeniedError{Record: &pb.AttemptRecord{Decision: &pb.Decision{DenialReason: "EpochStale"}}}
	if !errors.Is(stale, ErrEpochStale) || !errors.Is(stale, ErrFenced) {
		t.Fatal("EpochStale denial must match ErrEpochStale and ErrFenced")
	}
}

func TestGiveUpWrapsContextAndUnknown(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	last := mapError(statusWith(codes.Unavailable, pb.ReasonNotLeader, "no leader", nil))
	err := giveUp(ctx, true, last)
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, context.Canceled) || !errors.Is(err, ErrNotLeader) {
		t.Fatalf("%v", err)
	}
	if err := giveUp(ctx, false, last); errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, context.Canceled) {
		t.Fatalf("%v", err)
	}
}

// TestClientReadsTheOneReasonTable: for every reason of the API the client
// has a sentinel and reports the code the server sends (pb.ReasonCodes, the
// table transport uses), so transport and client agree by construction.
func TestClientReadsTheOneReasonTable(t *testing.T) {
	for _, r := range pb.Reasons {
		want, _ := pb.ReasonCode(r)
		var e *Error
		if !errors.As(reasonError(r, "m"), &e) {
			t.Fatalf("%s: not an *Error", r)
		}
		if e.Code != codes.Code(want) {
			t.Errorf("%s: client code %s, table %d", r, e.Code, want)
		}
		if reasonSentinels[r] == nil {
			t.Errorf("%s: no client sentinel", r)
		}
	}
	if len(reasonSentinels) != len(pb.Reasons) {
		t.Errorf("client knows %d reasons, the API %d", len(reasonSentinels), len(pb.Reasons))
	}
}
