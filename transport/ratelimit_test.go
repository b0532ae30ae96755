package transport

import (
	"fmt"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/authz"
	"github.com/aerodb/authority/identity"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var t0 = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

// A bucket of 10/s, burst 3: three writes at once, then one every 100 ms;
// a refusal spends nothing and names the wait until the next token.
func TestBucketTake(t *testing.T) {
	b := newBuckets(10, 3, 100)
	for i := range 3 {
		if _, ok := b.take("a", t0); !ok {
			t.Fatalf("write %d of the burst refused", i)
		}
	}
	wait, ok := b.take("a", t0)
	if ok || wait != 100*time.Millisecond {
		t.Fatalf("over the burst: ok %v, wait %v (want refused, 100ms)", ok, wait)
	}
	// Refusals spend nothing: 40 ms later the wait is 60 ms, however many
	// refusals came in between.
	for range 50 {
		b.take("a", t0.Add(40*time.Millisecond))
	}
	if wait, ok := b.take("a", t0.Add(40*time.Millisecond)); ok || wait != 60*time.Millisecond {
		t.Fatalf("40 ms later: ok %v, wait %v (want refused, 60ms)", ok, wait)
	}
	if _, ok := b.take("a", t0.Add(100*time.Millisecond)); !ok {
		t.Fatal("a token after 100 ms refused")
	}
	// Another key has its own full bucket.
	for i := range 3 {
		if _, ok := b.take("b", t0); !ok {
			t.Fatalf("another identity's write %d refused", i)
		}
	}
	// Over one simulated second at a steady 50 calls/s, exactly 10 pass
	// (the rate), after the burst.
	c := newBuckets(10, 1, 100)
	passed := 0
	for i := range 50 {
		if _, ok := c.take("k", t0.Add(time.Duration(i)*20*time.Millisecond)); ok {
			passed++
		}
	}
	if passed != 10 {
		t.Fatalf("%d of 50 calls over 1 s passed a 10/s bucket of burst 1, want 10", passed)
	}
}

// The denial bucket is checked without spending and charged after the
// fact, into debt: concurrent denials that all passed the check make the
// next caller wait for each of them.
func TestBucketReadyCharge(t *testing.T) {
	b := newBuckets(2, 2, 100)
	if _, ok := b.ready("d", t0); !ok {
		t.Fatal("a fresh domain is not ready")
	}
	for range 4 { // two within the burst, two in debt
		b.charge("d", t0)
	}
	wait, ok := b.ready("d", t0)
	if ok || wait != 1500*time.Millisecond {
		t.Fatalf("after 4 charges on 2/s burst 2: ok %v, wait %v (want 1.5s: two tokens of debt plus one)", ok, wait)
	}
	if _, ok := b.ready("d", t0.Add(1500*time.Millisecond)); !ok {
		t.Fatal("not ready after the wait it named")
	}
	if _, ok := b.ready("other", t0); !ok {
		t.Fatal("another domain is limited")
	}
}

// The table keeps at most max keys; the least recently used goes first,
// and an evicted key comes back with a full bucket.
func TestBucketsBounded(t *testing.T) {
	b := newBuckets(1, 1, 100)
	for i := range 1000 {
		b.take(fmt.Sprintf("id-%d", i), t0)
		if n := b.len(); n > 100 {
			t.Fatalf("%d keys tracked, bound 100", n)
		}
	}
	// id-999 was used last: still empty. id-0 was evicted: full again.
	if _, ok := b.take("id-999", t0); ok {
		t.Fatal("the most recent key was evicted")
	}
	if _, ok := b.take("id-0", t0); !ok {
		t.Fatal("an evicted key did not come back full")
	}
	if newBuckets(0, 10, 10) != nil {
		t.Fatal("a zero rate must turn the limit off")
	}
}

func TestStreamCounts(t *testing.T) {
	s := &streamCounts{max: 2, n: map[string]int{}}
	if !s.open("a") || !s.open("a") || s.open("a") {
		t.Fatal("want two streams of a, not three")
	}
	if !s.open("b") {
		t.Fatal("b limited by a's streams")
	}
	s.close("a")
	if !s.open("a") {
		t.Fatal("a closed stream did not free its slot")
	}
	s.close("a")
	s.close("a")
	s.close("b")
	if len(s.n) != 0 {
		t.Fatalf("identities without streams still tracked: %v", s.n)
	}
}

// A refusal is RESOURCE_EXHAUSTED with ErrorInfo RATE_LIMITED naming the
// flags, and a RetryInfo with the wait; it is counted by method and role.
func TestRefusal(t *testing.T) {
	reg := prometheus.NewRegistry()
	l := newLimiter(RateLimits{WritesPerSecond: 1, WriteBurst: 1}, reg)
	l.now = func() time.Time { return t0 }
	id := identity.Identity{Role: identity.Node, Name: "h1"}
	if err := l.admitWrite("/authority.v1.Leases/Acquire", id); err != nil {
		t.Fatal(err)
	}
	err := l.admitWrite("/authority.v1.Leases/Acquire", id)
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), FlagWriteRate) || !strings.Contains(st.Message(), "node:h1") {
		t.Fatalf("refusal: %v", err)
	}
	var info *errdetails.ErrorInfo
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			info = d
		case *errdetails.RetryInfo:
			retry = d
		}
	}
	if info == nil || info.Reason != ReasonRateLimited || info.Domain != pb.ErrorDomain || !strings.Contains(info.Metadata["limit"], FlagWriteBurst) {
		t.Fatalf("error info: %v", info)
	}
	if retry == nil || retry.RetryDelay.AsDuration() != time.Second {
		t.Fatalf("retry info: %v (want 1s)", retry)
	}
	if got := testutil.ToFloat64(l.refusals.WithLabelValues("/authority.v1.Leases/Acquire", "node")); got != 1 {
		t.Fatalf("authority_rate_limited_total{Acquire,node} = %v", got)
	}
	if n, err := testutil.GatherAndCount(reg, "authority_rate_limited_total"); err != nil || n != 1 {
		t.Fatalf("registered series: %d %v", n, err)
	}
}

// Every RPC of the authorization table is classified for the rate limits,
// and nothing else; the streams are exactly the streaming RPCs.
func TestEveryRPCHasARateKind(t *testing.T) {
	for m := range authz.Table {
		if _, ok := rpcKinds[m]; !ok {
			t.Errorf("%s has no rate kind", m)
		}
	}
	for m := range rpcKinds {
		if _, ok := authz.Table[m]; !ok {
			t.Errorf("%s is not an RPC of authz.Table", m)
		}
	}
	streams := map[string]bool{}
	for _, sd := range []grpc.ServiceDesc{pbgrpc.Domains_ServiceDesc, pbgrpc.Leases_ServiceDesc, pbgrpc.Watermarks_ServiceDesc,
		pbgrpc.Promotion_ServiceDesc, pbgrpc.Watch_ServiceDesc, pbgrpc.Cluster_ServiceDesc} {
		for _, st := range sd.Streams {
			streams["/"+sd.ServiceName+"/"+st.StreamName] = true
		}
	}
	for m, k := range rpcKinds {
		if (k == rpcStream) != streams[m] {
			t.Errorf("%s: kind %v", m, k)
		}
	}
}

// BenchmarkBucketTake: the cost the write limit adds to a write (one
// identity; and 10,000 identities cycling through a table bounded at
// 1,000, every call an eviction).
func BenchmarkBucketTake(b *testing.B) {
	b.Run("one identity", func(b *testing.B) {
		t := newBuckets(1e9, 1<<30, 1000)
		now := t0
		for b.Loop() {
			t.take("node:h1", now)
		}
	})
	b.Run("evicting", func(b *testing.B) {
		t := newBuckets(1e9, 1<<30, 1000)
		keys := make([]string, 10_000)
		for i := range keys {
			keys[i] = fmt.Sprintf("node:h%d", i)
		}
		i := 0
		for b.Loop() {
			t.take(keys[i%len(keys)], t0)
			i++
		}
	})
}
