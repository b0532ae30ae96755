package ratelimittest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/internal/testcluster"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Low limits, so a test reaches them in a few calls.
const (
	writeRate, writeBurst   = 5, 10
	streamsPerIdentity      = 3
	deniedRate, deniedBurst = 1, 3
	// maxCalls bounds the loops that write until refused: at 5 writes/s
	// after a burst of 10, a refusal comes within 1,000 calls unless each
	// call took over 200 ms.
	maxCalls = 1000
)

var (
	flooder  = identity.Identity{Role: identity.Operator, Name: "flooder"}
	honest   = identity.Identity{Role: identity.Operator, Name: "honest"}
	promoter = identity.Identity{Role: identity.Operator, Name: "promoter"}
	watcher  = identity.Identity{Role: identity.Reader, Name: "watcher"}
	other    = identity.Identity{Role: identity.Reader, Name: "other"}
)

func start(t *testing.T) *testcluster.Cluster {
	return testcluster.StartWith(t, testcluster.Options{Servers: 3, ExtraArgs: []string{
		"--write-rate-per-identity", strconv.Itoa(writeRate), "--write-burst-per-identity", strconv.Itoa(writeBurst),
		"--grpc-max-streams-per-identity", strconv.Itoa(streamsPerIdentity),
		"--promote-denied-rate-per-domain", strconv.Itoa(deniedRate), "--promote-denied-burst-per-domain", strconv.Itoa(deniedBurst),
	}})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// stub connects the generated stubs to one server as id (no retries).
func stub(t *testing.T, c *testcluster.Cluster, addr string, id identity.Identity) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, c.DialOption(id))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// rateLimited checks that err is the refusal of a rate or stream limit:
// RESOURCE_EXHAUSTED, ErrorInfo RATE_LIMITED, a message naming flag, and
// a positive RetryInfo delay, which it returns.
func rateLimited(t *testing.T, what string, err error, flag string) time.Duration {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("%s: got %v, want RESOURCE_EXHAUSTED", what, err)
	}
	if !strings.Contains(st.Message(), flag) {
		t.Errorf("%s: message %q does not name %s", what, st.Message(), flag)
	}
	var reason string
	var delay time.Duration
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			reason = d.GetReason()
		case *errdetails.RetryInfo:
			delay = d.GetRetryDelay().AsDuration()
		}
	}
	if reason != "RATE_LIMITED" || delay <= 0 {
		t.Fatalf("%s: reason %q, retry delay %v; want RATE_LIMITED and a delay", what, reason, delay)
	}
	return delay
}

// createUntilRefused creates domains named prefix-N through conn until one
// is refused by the write limit; it returns how many were created and the
// refusal. Any other error fails the test.
func createUntilRefused(t *testing.T, ctx context.Context, conn *grpc.ClientConn, prefix string) (int, error) {
	t.Helper()
	d := pbgrpc.NewDomainsClient(conn)
	for i := range maxCalls {
		_, err := d.CreateDomain(ctx, &pb.CreateDomainRequest{Name: fmt.Sprintf("%s-%d", prefix, i), Kind: pb.DomainKind_DOMAIN_KIND_LOCK})
		if status.Code(err) == codes.ResourceExhausted {
			return i, err
		}
		if err != nil {
			t.Fatalf("create %s-%d: %v", prefix, i, err)
		}
	}
	t.Fatalf("%d writes of one identity, none refused: no per-identity write limit", maxCalls)
	return 0, nil
}

// domainsWith counts the domains whose name starts with prefix.
func domainsWith(t *testing.T, ctx context.Context, cl *client.Client, prefix string) int {
	t.Helper()
	all, err := cl.ListDomains(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range all {
		if strings.HasPrefix(d.GetName(), prefix+"-") {
			n++
		}
	}
	return n
}

// refusals reads authority_rate_limited_total{method,role} from a server's
// /metrics (0 when the series does not exist yet).
func refusals(t *testing.T, c *testcluster.Cluster, s *testcluster.Server, method, role string) int {
	t.Helper()
	resp, err := c.HTTPClient(testcluster.Reader).Get(c.URL(s, "/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d %v", resp.StatusCode, err)
	}
	re := regexp.MustCompile(`(?m)^authority_rate_limited_total\{method="` + regexp.QuoteMeta(method) + `",role="` + role + `"\} (\d+)$`)
	m := re.FindSubmatch(body)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

func TestRateLimits(t *testing.T) {
	c := start(t)
	t.Run("write limit per identity", func(t *testing.T) { testWriteLimit(t, c) })
	t.Run("denied promotions per domain", func(t *testing.T) { testDeniedPromotions(t, c) })
	t.Run("streams per identity", func(t *testing.T) { testStreams(t, c) })
}

// One identity writing as fast as it can is refused with a retry delay, on
// the leader and through a follower (the leader charges the caller a
// follower forwards for); another identity is unaffected; the state holds
// exactly the accepted writes; the client library waits out the delays and
// every call succeeds.
func testWriteLimit(t *testing.T, c *testcluster.Cluster) {
	ctx := ctxT(t)
	leader := c.WaitLeader()
	var follower *testcluster.Server
	for _, s := range c.Servers {
		if s != leader {
			follower = s
			break
		}
	}
	created := 0
	n, err := createUntilRefused(t, ctx, stub(t, c, leader.GRPCAddr, flooder), "flood")
	created += n
	if n < writeBurst {
		t.Fatalf("refused after %d writes, below the burst of %d", n, writeBurst)
	}
	if d := rateLimited(t, "flooder on the leader", err, "--write-rate-per-identity"); d > time.Second/writeRate+time.Millisecond {
		t.Errorf("retry delay %v, more than one token's time at %d/s", d, writeRate)
	}
	// Through a follower: forwarded, charged on the leader to the flooder,
	// refused with the leader's answer (never OUTCOME_UNKNOWN).
	n, err = createUntilRefused(t, ctx, stub(t, c, follower.GRPCAddr, flooder), "floodvia")
	created += n
	rateLimited(t, "flooder through a follower", err, "--write-rate-per-identity")

	// Another identity has its own bucket: its burst passes at once.
	hd := pbgrpc.NewDomainsClient(stub(t, c, follower.GRPCAddr, honest))
	for i := range writeBurst {
		if _, err := hd.CreateDomain(ctx, &pb.CreateDomainRequest{Name: fmt.Sprintf("honest-%d", i), Kind: pb.DomainKind_DOMAIN_KIND_LOCK}); err != nil {
			t.Fatalf("honest write %d while the flooder is limited: %v", i, err)
		}
	}
	reader := c.Dial(testcluster.Reader)
	if got := domainsWith(t, ctx, reader, "flood") + domainsWith(t, ctx, reader, "floodvia"); got != created {
		t.Fatalf("%d flood domains in the state, %d writes accepted", got, created)
	}
	if got := domainsWith(t, ctx, reader, "honest"); got != writeBurst {
		t.Fatalf("%d honest domains, want %d", got, writeBurst)
	}

	// The client library retries a rate limit after the server's delay:
	// all of its writes succeed although the leader refused some.
	before := refusals(t, c, leader, "/authority.v1.Domains/CreateDomain", "operator")
	cl := c.Dial(flooder)
	const libWrites = 2 * writeBurst
	for i := range libWrites {
		if _, err := cl.CreateDomain(ctx, fmt.Sprintf("lib-%d", i), pb.DomainKind_DOMAIN_KIND_LOCK, nil); err != nil {
			t.Fatalf("client library write %d: %v", i, err)
		}
	}
	after := refusals(t, c, leader, "/authority.v1.Domains/CreateDomain", "operator")
	if after <= before {
		t.Fatalf("authority_rate_limited_total on the leader went from %d to %d: the library's writes were never refused", before, after)
	}
	if got := domainsWith(t, ctx, reader, "lib"); got != libWrites {
		t.Fatalf("%d lib domains, want %d", got, libWrites)
	}
	t.Logf("flooder: %d raw writes accepted before refusals; library: %d writes, %d refusals retried", created, libWrites, after-before)
	c.WithT(t).WaitConverged(reader, 20*time.Second)
}

// Denied promotions on one domain beyond its bucket are refused before
// anything is proposed; another domain is unaffected; dry runs pass; the
// state holds exactly the committed denials.
func testDeniedPromotions(t *testing.T, c *testcluster.Cluster) {
	ctx := ctxT(t)
	op := c.Dial(testcluster.Operator)
	for _, name := range []string{"db-1", "db-2"} {
		if _, err := op.CreateDomain(ctx, name, pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: 60_000, Durability: pb.Durability_DURABILITY_AUTHORITY_GATED}); err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{"a", "b"} {
			if _, err := op.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: name, MemberId: m}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := op.AssignInitial(ctx, name, "a"); err != nil {
			t.Fatal(err)
		}
	}
	p := pbgrpc.NewPromotionClient(stub(t, c, c.WaitLeader().GRPCAddr, promoter))
	promote := func(domain, id string, dry bool) (*pb.PromoteResponse, error) {
		// Candidate b never reported progress, and a holds its lease: denied.
		return p.Promote(ctx, &pb.PromoteRequest{Request: &pb.PromotionRequest{RequestId: id, Domain: domain, Candidate: "b",
			Reason: "rate limit test", DryRun: dry}})
	}
	denied := 0
	var refusal error
	for i := range deniedBurst + 10 {
		resp, err := promote("db-1", fmt.Sprintf("r%d", i), false)
		if status.Code(err) == codes.ResourceExhausted {
			refusal = err
			break
		}
		if err != nil || !resp.GetCommitted() || resp.GetRecord().GetDecision().GetAllowed() {
			t.Fatalf("promotion %d: want a committed denial, got %v %v", i, resp, err)
		}
		denied++
	}
	if refusal == nil {
		t.Fatalf("%d denied promotions on one domain, none refused: no per-domain limit", denied)
	}
	if denied < deniedBurst {
		t.Fatalf("refused after %d denials, below the burst of %d", denied, deniedBurst)
	}
	rateLimited(t, "denied promotions on db-1", refusal, "--promote-denied-rate-per-domain")
	// Another domain: its own bucket.
	if resp, err := promote("db-2", "other", false); err != nil || !resp.GetCommitted() {
		t.Fatalf("a promotion on another domain: %v %v", resp, err)
	}
	// A dry run commits nothing: not refused.
	if resp, err := promote("db-1", "dry", true); err != nil || resp.GetCommitted() {
		t.Fatalf("a dry run on the limited domain: %v %v", resp, err)
	}
	// Exactly the committed denials are recorded; the refused one is not.
	reader := c.Dial(testcluster.Reader)
	for i := range denied + 1 {
		_, err := reader.Explain(ctx, "db-1", fmt.Sprintf("r%d", i))
		if i < denied && err != nil {
			t.Fatalf("committed denial r%d not recorded: %v", i, err)
		}
		if i == denied && !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("refused promotion r%d: %v, want not found", i, err)
		}
	}
	c.WithT(t).WaitConverged(reader, 20*time.Second)
}

// openWatch opens a Watch stream on addr as id and waits for its first
// response (a heartbeat within 2 s); it returns the stream's cancel, or the
// error the stream ended with.
func openWatch(t *testing.T, c *testcluster.Cluster, conn *grpc.ClientConn) (context.CancelFunc, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	s, err := pbgrpc.NewWatchClient(conn).Watch(ctx, &pb.WatchRequest{})
	if err == nil {
		_, err = s.Recv()
	}
	if err != nil {
		cancel()
		return nil, err
	}
	return cancel, nil
}

// One identity holds at most the cap of streams on a server, over all its
// connections; another identity is unaffected; a closed stream frees its
// slot.
func testStreams(t *testing.T, c *testcluster.Cluster) {
	s := c.Servers[0]
	var cancels []context.CancelFunc
	defer func() {
		for _, f := range cancels {
			f()
		}
	}()
	for i := range streamsPerIdentity {
		// A connection per stream: the cap is per identity, not per
		// connection.
		cancel, err := openWatch(t, c, stub(t, c, s.GRPCAddr, watcher))
		if err != nil {
			t.Fatalf("stream %d of %d: %v", i+1, streamsPerIdentity, err)
		}
		cancels = append(cancels, cancel)
	}
	_, err := openWatch(t, c, stub(t, c, s.GRPCAddr, watcher))
	delay := rateLimited(t, "a stream over the cap", err, "--grpc-max-streams-per-identity")
	cancel, err := openWatch(t, c, stub(t, c, s.GRPCAddr, other))
	if err != nil {
		t.Fatalf("another identity's stream: %v", err)
	}
	cancels = append(cancels, cancel)
	// Close one: the server frees its slot when the stream's handler ends;
	// retry after the server's delay until it has.
	cancels[0]()
	conn := stub(t, c, s.GRPCAddr, watcher)
	deadline := time.Now().Add(20 * time.Second)
	for {
		cancel, err := openWatch(t, c, conn)
		if err == nil {
			cancels = append(cancels, cancel)
			break
		}
		rateLimited(t, "a stream after one closed", err, "--grpc-max-streams-per-identity")
		if time.Now().After(deadline) {
			t.Fatal("a closed stream never freed its slot")
		}
		time.Sleep(delay) // the server's RetryInfo delay
	}
}
