package crashmatrix_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/failpoint"
	"github.com/aerodb/authority/internal/testcluster"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Disablement (AU-14 [P5-I16]): with promotion disabled globally
// (--promotion-disabled on every server) every promotion path is refused
// with PROMOTION_DISABLED and writes nothing, and the rest of the service
// behaves exactly as on a cluster without the flag: the same non-promotion
// workload gives the same results and the same domain states. With
// promotion disabled per domain (policy promotion_disabled) a promotion is
// a committed denial PromotionDisabled and authority is unchanged.
func TestPromotionDisabled(t *testing.T) {
	t.Parallel()
	type run struct {
		r       *rig
		results []string
	}
	on := &run{r: newRig(t, "enabled")}
	off := &run{r: newRig(t, "disabled", "--promotion-disabled")}

	for _, x := range []*run{on, off} {
		x.results = append(x.results, workload(t, x.r, part1)...)
	}
	// Every promotion path on the disabled cluster: refused, nothing written.
	before := off.r.converge(t)
	refuseAll(t, off.r, "d.db")
	if after := off.r.converge(t); after != before {
		t.Fatalf("refused promotions changed the state hash: %s → %s", before, after)
	}
	for _, s := range off.r.cl.Servers {
		for _, p := range []string{failpoint.PromoteReceived, failpoint.PromoteValidating, failpoint.PromoteBeforePropose} {
			if n := off.r.failpointHits(t, s)[p]; n != 0 {
				t.Fatalf("%s: %s was reached %d times with promotion disabled", s.ID, p, n)
			}
		}
		if d := off.r.nodeDomain(t, s, "d.db"); len(d.Pending) != 0 || d.AllowedCount+d.DeniedCount != 0 {
			t.Fatalf("%s: a refused promotion left a trace: %v", s.ID, d)
		}
	}
	for _, x := range []*run{on, off} {
		x.results = append(x.results, workload(t, x.r, part2)...)
	}
	if len(on.results) != len(off.results) {
		t.Fatalf("result counts differ: %d vs %d", len(on.results), len(off.results))
	}
	for i := range on.results {
		if on.results[i] != off.results[i] {
			t.Errorf("workload step %d differs with promotion disabled:\n  enabled:  %s\n  disabled: %s", i, on.results[i], off.results[i])
		}
	}
	for _, dom := range []string{"d.db", "d.lock", "d.pd", "d.free"} {
		a, b := normalized(t, on.r, dom), normalized(t, off.r, dom)
		if a != b {
			t.Errorf("domain %s differs with promotion disabled:\n  enabled:  %s\n  disabled: %s", dom, a, b)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d workload steps gave identical results and domain states with and without --promotion-disabled", len(on.results))

	// Per-domain disablement on the enabled cluster: a committed denial
	// naming PromotionDisabled, for real attempts, dry runs and
	// switchovers alike; authority unchanged.
	r := on.r
	r.report(t, "d.pd", "n2", 1, 100)
	one := uint64(1)
	for i, req := range []*pb.PromotionRequest{
		{RequestId: "pd-1", Domain: "d.pd", Candidate: "n2", ExpectedEpoch: &one, Reason: "drill"},
		{RequestId: "pd-2", Domain: "d.pd", Candidate: "n2", ExpectedEpoch: &one, DryRun: true},
		{RequestId: "pd-3", Domain: "d.pd", Candidate: "n2", ExpectedEpoch: &one, Reason: "planned", InitiatedBy: pb.Initiator_INITIATOR_SWITCHOVER},
	} {
		ctx, cancel := ctxT(20 * time.Second)
		resp, err := r.cli.Promote(ctx, req)
		cancel()
		var denied *client.DeniedError
		if !errors.As(err, &denied) || denied.Reason() != "PromotionDisabled" || !errors.Is(err, client.ErrPromotionDisabled) {
			t.Fatalf("per-domain disabled, request %d: %v, want a PromotionDisabled denial", i, errOrOK(resp, err))
		}
		if resp.Committed == req.DryRun {
			t.Fatalf("request %d: committed=%t for dry_run=%t", i, resp.Committed, req.DryRun)
		}
	}
	r.converge(t)
	r.checkAuthority(t, "d.pd", authority{Epoch: 1, Holder: "n1", Released: true})
	r.checkEvents(t)
	// The globally disabled cluster refuses the same domain before any
	// per-domain rule (nothing is written there either).
	before = off.r.converge(t)
	refuseAll(t, off.r, "d.pd")
	if after := off.r.converge(t); after != before {
		t.Fatalf("refused promotions changed the state hash: %s → %s", before, after)
	}
	for _, x := range []*run{on, off} {
		x.r.stopAndReplay(t)
	}
}

// refuseAll tries every promotion path on a globally disabled cluster and
// requires PROMOTION_DISABLED from each: raw Promote on the leader and
// through a follower, a dry run, a switchover, and the client library.
func refuseAll(t *testing.T, r *rig, dom string) {
	t.Helper()
	leader := r.ready(t)
	follower := r.followers(leader)[0]
	one := uint64(1)
	base := &pb.PromotionRequest{Domain: dom, Candidate: "n2", ExpectedEpoch: &one, Reason: "drill"}
	paths := []struct {
		name string
		conn *grpc.ClientConn
		mod  func(*pb.PromotionRequest)
		want string // the refusal's reason (PROMOTION_DISABLED unless set)
	}{
		{"promote on the leader", r.conns[leader.ID], func(*pb.PromotionRequest) {}, ""},
		{"promote through a follower", r.conns[follower.ID], func(*pb.PromotionRequest) {}, ""},
		{"dry run", r.conns[leader.ID], func(q *pb.PromotionRequest) { q.DryRun = true }, ""},
		{"dry run through a follower", r.conns[follower.ID], func(q *pb.PromotionRequest) { q.DryRun = true }, ""},
		{"switchover", r.conns[leader.ID], func(q *pb.PromotionRequest) { q.InitiatedBy = pb.Initiator_INITIATOR_SWITCHOVER }, ""},
		// No caller may speak for the automatic policy: refused at the edge.
		{"policy-initiated", r.conns[leader.ID], func(q *pb.PromotionRequest) { q.InitiatedBy = pb.Initiator_INITIATOR_POLICY }, pb.ReasonInvalidArgument},
		{"with waivers", r.conns[leader.ID], func(q *pb.PromotionRequest) { q.Waivers = []string{"allow-data-loss"} }, ""},
	}
	for i, p := range paths {
		req := proto.Clone(base).(*pb.PromotionRequest)
		req.RequestId = fmt.Sprintf("%s-off-%d", dom, i)
		p.mod(req)
		ctx, cancel := ctxT(rpcTimeout)
		resp, err := pbgrpc.NewPromotionClient(p.conn).Promote(ctx, &pb.PromoteRequest{Request: req})
		cancel()
		want := p.want
		if want == "" {
			want = pb.ReasonPromotionDisabled
		}
		if reasonOf(err) != want {
			t.Fatalf("%s with promotion disabled: %v, want %s", p.name, errOrOK(resp, err), want)
		}
	}
	ctx, cancel := ctxT(rpcTimeout)
	defer cancel()
	req := proto.Clone(base).(*pb.PromotionRequest)
	req.RequestId = dom + "-off-client"
	if _, err := r.cli.Promote(ctx, req); !errors.Is(err, client.ErrPromotionDisabled) {
		t.Fatalf("client Promote with promotion disabled: %v", err)
	}
}

// step is one call of the workload, made on server s with no retries:
// administration as the operator (r.conns), holder actions as
// node:<holder> (r.as), reads as the operator.
type step struct {
	name string
	do   func(ctx context.Context, r *rig, s *testcluster.Server) (proto.Message, error)
}

// Authority-gated, named (replica-quorum is the default of a new aerodb
// domain): these steps drive the gated path by hand.
var policy = &pb.Policy{LeaseTtlMs: 60000, Durability: pb.Durability_DURABILITY_AUTHORITY_GATED}

// advance is node:<holder> advancing holder's watermark.
func advance(dom, holder string, epoch, lsn uint64) func(context.Context, *rig, *testcluster.Server) (proto.Message, error) {
	return func(ctx context.Context, r *rig, s *testcluster.Server) (proto.Message, error) {
		return pbgrpc.NewWatermarksClient(r.as(s, testcluster.Node(holder))).Advance(ctx, &pb.AdvanceRequest{Advances: []*pb.WatermarkAdvance{
			{Domain: dom, Epoch: epoch, Holder: holder, Lsn: lsn, Hash: lsnHash(lsn), VisibleCommitId: lsn}}})
	}
}

func create(name string, kind pb.DomainKind, p *pb.Policy) func(context.Context, *rig, *testcluster.Server) (proto.Message, error) {
	return func(ctx context.Context, r *rig, s *testcluster.Server) (proto.Message, error) {
		return pbgrpc.NewDomainsClient(r.conns[s.ID]).CreateDomain(ctx, &pb.CreateDomainRequest{Name: name, Kind: kind, Policy: p})
	}
}

func register(dom, m string) func(context.Context, *rig, *testcluster.Server) (proto.Message, error) {
	return func(ctx context.Context, r *rig, s *testcluster.Server) (proto.Message, error) {
		return pbgrpc.NewDomainsClient(r.conns[s.ID]).RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: dom, MemberId: m})
	}
}

func assign(dom, h string) func(context.Context, *rig, *testcluster.Server) (proto.Message, error) {
	return func(ctx context.Context, r *rig, s *testcluster.Server) (proto.Message, error) {
		return pbgrpc.NewDomainsClient(r.conns[s.ID]).AssignInitial(ctx, &pb.AssignInitialRequest{Domain: dom, Holder: h})
	}
}

// acquire is node:<h> acquiring as h.
func acquire(dom, h string) func(context.Context, *rig, *testcluster.Server) (proto.Message, error) {
	return func(ctx context.Context, r *rig, s *testcluster.Server) (proto.Message, error) {
		return pbgrpc.NewLeasesClient(r.as(s, testcluster.Node(h))).Acquire(ctx, &pb.AcquireRequest{Domain: dom, Holder: h})
	}
}

// releaseStep is node:<h> releasing as h.
func releaseStep(dom, h string, e uint64) func(context.Context, *rig, *testcluster.Server) (proto.Message, error) {
	return func(ctx context.Context, r *rig, s *testcluster.Server) (proto.Message, error) {
		return pbgrpc.NewLeasesClient(r.as(s, testcluster.Node(h))).Release(ctx, &pb.ReleaseRequest{Domain: dom, Holder: h, Epoch: e})
	}
}

// part1 writes no fenced request, so the leader notes nothing in the log
// on its own and the state hash is stable while promotions are refused.
var part1 = []step{
	{"create d.db", create("d.db", pb.DomainKind_DOMAIN_KIND_AERODB, policy)},
	{"create d.db again", create("d.db", pb.DomainKind_DOMAIN_KIND_AERODB, policy)},
	{"create d.lock", create("d.lock", pb.DomainKind_DOMAIN_KIND_LOCK, policy)},
	{"create d.pd (promotion disabled)", create("d.pd", pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: 60000, PromotionDisabled: true, Durability: pb.Durability_DURABILITY_AUTHORITY_GATED})},
	{"create with zero ttl", create("d.bad", pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{})},
	{"register n1", register("d.db", "n1")}, {"register n2", register("d.db", "n2")}, {"register n3", register("d.db", "n3")},
	{"register pd n1", register("d.pd", "n1")}, {"register pd n2", register("d.pd", "n2")},
	{"register in unknown domain", register("d.none", "n1")},
	{"assign d.db", assign("d.db", "n1")},
	{"assign d.pd", assign("d.pd", "n1")},
	{"create d.free", create("d.free", pb.DomainKind_DOMAIN_KIND_AERODB, policy)},
	{"assign a non-member", assign("d.free", "zz")},
	{"advance d.db 100", advance("d.db", "n1", 1, 100)},
	{"advance d.pd 100", advance("d.pd", "n1", 1, 100)},
	{"advance d.db 120", advance("d.db", "n1", 1, 120)},
	{"advance d.db 120 again", advance("d.db", "n1", 1, 120)},
	{"release d.pd", releaseStep("d.pd", "n1", 1)},
	{"report n2", func(ctx context.Context, r *rig, _ *testcluster.Server) (proto.Message, error) {
		wm, err := r.node("n2").ReportProgress(ctx, "d.db", &pb.ProgressReport{MemberId: "n2", Epoch: 1, FlushedLsn: 120, FlushedHash: lsnHash(120),
			WatermarkLsn: 120, HashAtWatermark: lsnHash(120), AppliedCommitId: 120, ReadSafe: true, State: pb.ReplicaState_REPLICA_STATE_STREAMING})
		return wm, err
	}},
}

var part2 = []step{
	{"advance d.db below the watermark", advance("d.db", "n1", 1, 90)},
	{"advance d.db at a stale epoch", advance("d.db", "n1", 2, 130)},
	{"advance by a non-holder", advance("d.db", "n2", 1, 130)},
	{"advance an unknown domain", advance("d.none", "n1", 1, 130)},
	{"update d.db policy", func(ctx context.Context, r *rig, s *testcluster.Server) (proto.Message, error) {
		return pbgrpc.NewDomainsClient(r.conns[s.ID]).UpdatePolicy(ctx, &pb.UpdatePolicyRequest{Name: "d.db", Policy: &pb.Policy{LeaseTtlMs: 30000}})
	}},
	{"acquire d.lock w1", acquire("d.lock", "w1")},
	{"acquire d.lock w2 while held", acquire("d.lock", "w2")},
	{"release d.lock w1", releaseStep("d.lock", "w1", 1)},
	{"acquire d.lock w2", acquire("d.lock", "w2")},
	{"release d.lock by a stale epoch", releaseStep("d.lock", "w2", 1)},
	{"release d.db", releaseStep("d.db", "n1", 1)},
	{"assign d.db again", assign("d.db", "n2")},
	{"get d.db", func(ctx context.Context, r *rig, s *testcluster.Server) (proto.Message, error) {
		return pbgrpc.NewDomainsClient(r.conns[s.ID]).GetDomain(ctx, &pb.GetDomainRequest{Name: "d.db"})
	}},
	{"list", func(ctx context.Context, r *rig, s *testcluster.Server) (proto.Message, error) {
		return pbgrpc.NewDomainsClient(r.conns[s.ID]).ListDomains(ctx, &pb.ListDomainsRequest{})
	}},
	{"history d.db", func(ctx context.Context, r *rig, s *testcluster.Server) (proto.Message, error) {
		return pbgrpc.NewPromotionClient(r.conns[s.ID]).History(ctx, &pb.HistoryRequest{Domain: "d.db", IncludeDenied: true})
	}},
	{"explain a request never made", func(ctx context.Context, r *rig, s *testcluster.Server) (proto.Message, error) {
		return pbgrpc.NewPromotionClient(r.conns[s.ID]).Explain(ctx, &pb.ExplainRequest{Domain: "d.db", RequestId: "never"})
	}},
}

// workload runs steps on r's leader (raw calls, no retries) and renders
// each result without what legitimately differs between clusters (log
// indexes, terms, time stamps, response headers).
func workload(t *testing.T, r *rig, steps []step) []string {
	t.Helper()
	var out []string
	for _, s := range steps {
		leader := r.ready(t)
		ctx, cancel := ctxT(rpcTimeout)
		m, err := s.do(ctx, r, leader)
		cancel()
		if err != nil {
			st, _ := status.FromError(err)
			if st.Code() == codes.PermissionDenied {
				t.Fatalf("%s: step %q refused by authorization (wrong identity in the test): %v", r.name, s.name, err)
			}
			out = append(out, fmt.Sprintf("%s: error %s %s", s.name, st.Code(), reasonOf(err)))
			continue
		}
		out = append(out, s.name+": ok "+render(m))
	}
	return out
}

// normalized renders a domain as the leader serves it, comparable across
// clusters.
func normalized(t *testing.T, r *rig, dom string) string {
	t.Helper()
	return render(r.nodeDomain(t, r.ready(t), dom))
}

// varying fields: log positions, terms, leader stamps, response headers.
var varying = map[protoreflect.Name]bool{"header": true, "log_index": true, "created_index": true, "updated_index": true,
	"epoch_index": true, "registered_index": true, "index": true, "term": true, "stamped_unix_ms": true}

func render(m proto.Message) string {
	if m == nil {
		return "<nil>"
	}
	c := proto.Clone(m)
	strip(c.ProtoReflect())
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(c)
	if err != nil {
		return "marshal: " + err.Error()
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

func strip(m protoreflect.Message) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case varying[fd.Name()]:
			m.Clear(fd)
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				strip(l.Get(i).Message())
			}
		case fd.Message() != nil && !fd.IsMap():
			strip(v.Message())
		}
		return true
	})
}
