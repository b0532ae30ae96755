package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeServer is an in-process authority.v1 server whose answers the test
// scripts.
type fakeServer struct {
	pbgrpc.UnimplementedDomainsServer
	pbgrpc.UnimplementedWatermarksServer
	pbgrpc.UnimplementedClusterServer

	addr string

	mu         sync.Mutex
	redirectTo string  // non-empty: answer NOT_LEADER with this hint
	createErrs []error // scripted CreateDomain errors, popped per call
	domain     *pb.Domain
	gets       int
	getErrs    []error // scripted GetDomain errors, popped per call
	getErr     error   // when set, every GetDomain fails with it

	advanceGate chan struct{} // each Advance waits for one token
	batches     [][]*pb.WatermarkAdvance
	advanced    chan struct{}
	// inAdvance counts the Advance calls in flight per domain; overlaps
	// records a domain sent while another call carrying it was in flight.
	inAdvance map[string]int
	overlaps  []string
}

func startFake(t *testing.T) *fakeServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{addr: lis.Addr().String(), advanced: make(chan struct{}, 64)}
	g := grpc.NewServer()
	pbgrpc.RegisterDomainsServer(g, f)
	pbgrpc.RegisterWatermarksServer(g, f)
	pbgrpc.RegisterClusterServer(g, f)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return f
}

func (f *fakeServer) notLeader() error {
	if f.redirectTo == "" {
		return nil
	}
	return statusWith(codes.Unavailable, pb.ReasonNotLeader, "not the leader", map[string]string{pb.MetaLeaderID: "s2", pb.MetaLeaderAddr: f.redirectTo})
}

func (f *fakeServer) Members(context.Context, *pb.MembersRequest) (*pb.MembersResponse, error) {
	return nil, status.Error(codes.Unimplemented, "no")
}

func (f *fakeServer) GetDomain(_ context.Context, req *pb.GetDomainRequest) (*pb.DomainResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gets++
	if err := f.notLeader(); err != nil {
		return nil, err
	}
	if f.getErr != nil {
		return nil, f.getErr
	}
	if len(f.getErrs) > 0 {
		err := f.getErrs[0]
		f.getErrs = f.getErrs[1:]
		return nil, err
	}
	if f.domain == nil || f.domain.Name != req.GetName() {
		return nil, statusWith(codes.NotFound, pb.ReasonNotFound, "no such domain", nil)
	}
	return &pb.DomainResponse{Domain: f.domain}, nil
}

func (f *fakeServer) CreateDomain(_ context.Context, req *pb.CreateDomainRequest) (*pb.DomainResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.notLeader(); err != nil {
		return nil, err
	}
	if len(f.createErrs) > 0 {
		err := f.createErrs[0]
		f.createErrs = f.createErrs[1:]
		return nil, err
	}
	f.domain = &pb.Domain{Name: req.GetName(), Kind: req.GetKind(), Policy: req.GetPolicy()}
	return &pb.DomainResponse{Domain: f.domain}, nil
}

func (f *fakeServer) Advance(_ context.Context, req *pb.AdvanceRequest) (*pb.AdvanceResponse, error) {
	f.mu.Lock()
	f.batches = append(f.batches, req.GetAdvances())
	gate := f.advanceGate
	if f.inAdvance == nil {
		f.inAdvance = map[string]int{}
	}
	for _, a := range req.GetAdvances() {
		if f.inAdvance[a.GetDomain()] > 0 {
			f.overlaps = append(f.overlaps, a.GetDomain())
		}
		f.inAdvance[a.GetDomain()]++
	}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		for _, a := range req.GetAdvances() {
			f.inAdvance[a.GetDomain()]--
		}
		f.mu.Unlock()
	}()
	f.advanced <- struct{}{}
	if gate != nil {
		<-gate
	}
	resp := &pb.AdvanceResponse{}
	for _, a := range req.GetAdvances() {
		resp.Results = append(resp.Results, &pb.AdvanceResult{Domain: a.GetDomain(), Ok: true})
	}
	return resp, nil
}

func fakeClient(t *testing.T, endpoints ...string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialConfig(ctx, Config{Endpoints: endpoints, Rand: rand.NewPCG(3, 4), MaxRetryDelay: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestInvokeFollowsNotLeaderHint(t *testing.T) {
	follower, leader := startFake(t), startFake(t)
	leader.domain = &pb.Domain{Name: "d", Epoch: 3}
	follower.redirectTo = leader.addr
	c := fakeClient(t, follower.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := c.GetDomain(ctx, "d")
	if err != nil || d.GetEpoch() != 3 {
		t.Fatalf("GetDomain: %v %v", d, err)
	}
	// The hint sticks: the next call goes straight to the leader.
	if _, err := c.GetDomain(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	if follower.gets != 1 || leader.gets != 2 {
		t.Fatalf("follower served %d, leader %d; want 1 and 2", follower.gets, leader.gets)
	}
	// A definitive error is returned at once, with its sentinel.
	if _, err := c.GetDomain(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("want ErrNotFound, got %v", err)
	}
}

func TestCreateDomainResolvesAlreadyExistsAfterUnknown(t *testing.T) {
	s := startFake(t)
	policy := &pb.Policy{LeaseTtlMs: 1000}
	kind := pb.DomainKind_DOMAIN_KIND_AERODB
	s.domain = &pb.Domain{Name: "d", Kind: kind, Policy: &pb.Policy{LeaseTtlMs: 1000, ReportMaxAgeMs: 30000}}
	s.createErrs = []error{
		statusWith(codes.Unavailable, pb.ReasonOutcomeUnknown, "leadership lost after proposing", nil),
		statusWith(codes.AlreadyExists, pb.ReasonAlreadyExists, "domain d exists", nil),
	}
	c := fakeClient(t, s.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := c.CreateDomain(ctx, "d", kind, policy)
	if err != nil || d.GetName() != "d" {
		t.Fatalf("CreateDomain after an unknown outcome: %v %v", d, err)
	}
	// The same sequence for a domain that differs: unknown, not success.
	s.createErrs = []error{
		statusWith(codes.Unavailable, pb.ReasonOutcomeUnknown, "?", nil),
		statusWith(codes.AlreadyExists, pb.ReasonAlreadyExists, "domain d exists", nil),
	}
	_, err = c.CreateDomain(ctx, "d", kind, &pb.Policy{LeaseTtlMs: 2000})
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("want ErrOutcomeUnknown+ErrAlreadyExists, got %v", err)
	}
	// Without an earlier unknown outcome ALREADY_EXISTS is just that.
	s.createErrs = []error{statusWith(codes.AlreadyExists, pb.ReasonAlreadyExists, "domain d exists", nil)}
	_, err = c.CreateDomain(ctx, "d", kind, policy)
	if !errors.Is(err, ErrAlreadyExists) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("want plain ErrAlreadyExists, got %v", err)
	}
}

func fakeClientConfig(t *testing.T, cfg Config) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg.Rand, cfg.MaxRetryDelay = rand.NewPCG(3, 4), 50*time.Millisecond
	c, err := DialConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// With one Advance in flight (AckGateInflight 1) every position pending
// while it is in flight goes into the next one.
func TestBatcherGroupCommit(t *testing.T) {
	s := startFake(t)
	s.advanceGate = make(chan struct{})
	c := fakeClientConfig(t, Config{Endpoints: []string{s.addr}, AckGateInflight: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gA := NewAckGate(c, "a", "h", 1)
	gB := NewAckGate(c, "b", "h", 1)
	defer gA.Close()
	defer gB.Close()

	first := make(chan error, 1)
	go func() { first <- gA.WaitDurable(ctx, 1, []byte{1}, 1) }()
	recvWithin(t, s.advanced, "first Advance") // now in flight, blocked
	// While it is in flight, many callers over two domains accumulate.
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	var queued sync.WaitGroup
	for i := range 20 {
		g, lsn := gA, uint64(2+i)
		if i%2 == 1 {
			g = gB
		}
		wg.Add(1)
		queued.Add(1)
		go func() {
			defer wg.Done()
			queued.Done()
			errs <- g.WaitDurable(ctx, lsn, []byte{byte(lsn)}, lsn)
		}()
	}
	queued.Wait()
	// Wait until every caller is registered with the batcher.
	waitFor(t, func() bool {
		c.watermarkBatcher.mu.Lock()
		defer c.watermarkBatcher.mu.Unlock()
		n := 0
		for _, st := range c.watermarkBatcher.gates {
			n += len(st.waiters)
		}
		return n == 21
	})
	close(s.advanceGate) // release the first and every later RPC
	if err := recvWithin(t, first, "first wait"); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.batches) != 2 {
		t.Fatalf("%d Advance RPCs for 21 waits, want 2 (group commit)", len(s.batches))
	}
	got := map[string]uint64{}
	for _, a := range s.batches[1] {
		got[a.GetDomain()] = a.GetLsn()
	}
	if got["a"] != 20 || got["b"] != 21 || len(s.batches[1]) != 2 {
		t.Fatalf("second batch %v, want the highest lsn per domain (a:20 b:21)", got)
	}
	// Positions at or below the committed one return at once, without RPC.
	if err := gA.WaitDurable(ctx, 5, []byte{5}, 5); err != nil {
		t.Fatal(err)
	}
	if len(s.batches) != 2 {
		t.Fatal("a durable position sent an RPC")
	}
}

// With several Advance calls in flight, a gate's position is in one of
// them only: a later position of the same gate waits for the call in
// flight, other gates' positions go at once in another call.
func TestBatcherInflightKeepsGateOrder(t *testing.T) {
	s := startFake(t)
	s.advanceGate = make(chan struct{})
	c := fakeClientConfig(t, Config{Endpoints: []string{s.addr}, AckGateInflight: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gA, gB, gC := NewAckGate(c, "a", "h", 1), NewAckGate(c, "b", "h", 1), NewAckGate(c, "c", "h", 1)
	defer gA.Close()
	defer gB.Close()
	defer gC.Close()
	errs := make(chan error, 4)
	wait := func(g *AckGate, lsn uint64) { go func() { errs <- g.WaitDurable(ctx, lsn, []byte{byte(lsn)}, lsn) }() }
	wait(gA, 1)
	recvWithin(t, s.advanced, "Advance a:1")
	wait(gB, 2)
	recvWithin(t, s.advanced, "Advance b:2 (a second call while the first is in flight)")
	wait(gA, 3) // a:1 is in flight: a:3 must wait for it
	waitFor(t, func() bool {
		c.watermarkBatcher.mu.Lock()
		defer c.watermarkBatcher.mu.Unlock()
		return len(c.watermarkBatcher.gates[gA.key].waiters) == 2
	})
	wait(gC, 5)
	recvWithin(t, s.advanced, "Advance c:5 (the third flusher)")
	close(s.advanceGate)
	for range 4 {
		if err := recvWithin(t, errs, "waits"); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.overlaps) > 0 {
		t.Fatalf("domains %v sent while a call carrying them was in flight (batches %v)", s.overlaps, s.batches)
	}
	if got := s.batches[2]; len(got) != 1 || got[0].GetDomain() != "c" {
		t.Fatalf("third call %v, want c:5 only", got)
	}
}

// waitFor polls cond (a bounded failure guard for observing internal state
// of another goroutine; not used to order events).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// One Advance call carries at most the servers' per-call bound
// (transport.MaxAdvancesPerRequest, 1,000); the rest goes in the next.
func TestBatcherCallBound(t *testing.T) {
	b := newWatermarkBatcher(&Client{})
	for i := range maxAdvanceBatch + 1 {
		k := gateKey{domain: fmt.Sprintf("d%04d", i), holder: "h", epoch: 1}
		b.state(k).want = &pb.WatermarkAdvance{Domain: k.domain, Lsn: 1}
	}
	if _, advs := b.collect(); len(advs) != 1000 {
		t.Fatalf("first call carries %d advances, want 1000", len(advs))
	}
	if _, advs := b.collect(); len(advs) != 1 {
		t.Fatalf("second call carries %d advances, want 1", len(advs))
	}
}
