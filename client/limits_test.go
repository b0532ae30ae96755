package client

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"
)

func exhausted(delay time.Duration, info bool) error {
	st := status.New(codes.ResourceExhausted, "grpc: received message larger than max (5000000 vs. 4194304)")
	var details []protoadapt.MessageV1
	if info {
		details = append(details, &errdetails.ErrorInfo{Reason: "RATE_LIMITED", Domain: pb.ErrorDomain})
	}
	if delay > 0 {
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(delay)})
	}
	st, err := st.WithDetails(details...)
	if err != nil {
		panic(err)
	}
	return st.Err()
}

// ResourceExhausted is retried only when the server says when (a rate limit
// with a RetryInfo delay); a size limit fails the same way again: final.
func TestClassifyResourceExhausted(t *testing.T) {
	cases := []struct {
		name  string
		err   error
		class errClass
	}{
		{"size, no details", exhausted(0, false), classFinal},
		{"size, error info", exhausted(0, true), classFinal},
		{"rate limit", exhausted(200*time.Millisecond, false), classRetryAfter},
		{"rate limit with error info", exhausted(200*time.Millisecond, true), classRetryAfter},
		{"mapped rate limit", mapError(exhausted(time.Second, true)), classRetryAfter},
	}
	for _, tc := range cases {
		if class, _ := classify(tc.err); class != tc.class {
			t.Errorf("%s: class %v, want %v", tc.name, class, tc.class)
		}
	}
	if d := retryDelay(exhausted(200*time.Millisecond, true)); d != 200*time.Millisecond {
		t.Fatalf("retry delay %v", d)
	}
}

// A size ResourceExhausted is returned after one attempt, even to a caller
// without a deadline; a rate limit is retried after its delay.
func TestResourceExhaustedRetries(t *testing.T) {
	s := startFake(t)
	s.domain = &pb.Domain{Name: "d", Epoch: 2}
	c := fakeClient(t, s.addr)
	s.mu.Lock()
	s.getErrs = []error{exhausted(0, false)}
	s.mu.Unlock()
	if _, err := c.GetDomain(context.Background(), "d"); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("size limit: %v", err)
	}
	s.mu.Lock()
	gets := s.gets
	s.getErrs = []error{exhausted(60*time.Millisecond, true)}
	s.mu.Unlock()
	if gets != 1 {
		t.Fatalf("a size limit was tried %d times, want once", gets)
	}
	start := time.Now()
	d, err := c.GetDomain(context.Background(), "d")
	if err != nil || d.GetEpoch() != 2 {
		t.Fatalf("after a rate limit: %v %v", d, err)
	}
	if el := time.Since(start); el < 60*time.Millisecond {
		t.Fatalf("retried after %v, before the server's 60ms", el)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gets != 3 {
		t.Fatalf("%d attempts in all, want 3", s.gets)
	}
}

// A rate limit whose delay outlasts the caller's deadline is answered at
// once with the refusal (ErrRateLimited, RESOURCE_EXHAUSTED), after one
// attempt: waiting could only end in DeadlineExceeded.
func TestRateLimitBeyondDeadlineIsFinal(t *testing.T) {
	s := startFake(t)
	s.domain = &pb.Domain{Name: "d", Epoch: 2}
	c := fakeClient(t, s.addr)
	s.mu.Lock()
	s.getErrs = []error{exhausted(time.Hour, true)}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.GetDomain(ctx, "d")
	if !errors.Is(err, ErrRateLimited) || status.Code(err) != codes.ResourceExhausted || ctx.Err() != nil {
		t.Fatalf("want the rate limit before the deadline, got %v (ctx %v)", err, ctx.Err())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gets != 1 {
		t.Fatalf("%d attempts, want 1", s.gets)
	}
}

// A call whose context has no deadline ends after CallTimeout, however
// often it could retry.
func TestCallWithoutDeadlineIsBounded(t *testing.T) {
	s := startFake(t)
	s.getErr = statusWith(codes.Unavailable, pb.ReasonNotLeader, "no leader yet", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialConfig(ctx, Config{Endpoints: []string{s.addr}, Rand: rand.NewPCG(5, 6), MaxRetryDelay: 20 * time.Millisecond,
		CallTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	done := make(chan error, 1)
	go func() { _, err := c.GetDomain(context.Background(), "d"); done <- err }()
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a call without a deadline still retrying after 10 s")
	}
	// The last attempt may have been cut by the same deadline (then its own
	// error is DeadlineExceeded, not NOT_LEADER): only the bound matters,
	// and a read is never an unknown outcome.
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("want DeadlineExceeded (not an unknown outcome), got %v", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("gave up after %v", el)
	}
	if got := (Config{}).withDefaults().CallTimeout; got != DefaultCallTimeout {
		t.Fatalf("default CallTimeout %v", got)
	}
	if got := (Config{RequestTimeout: 40 * time.Second}).withDefaults().CallTimeout; got != 40*time.Second {
		t.Fatalf("CallTimeout below RequestTimeout: %v", got)
	}
}
