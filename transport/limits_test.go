package transport

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/validator"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// retryNotLeader runs call until it answers something other than
// NOT_LEADER (an election under the test's load), for at most 5 s.
func retryNotLeader(call func() error) error {
	err := call()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); err = call() {
		if _, r := reasonOfStatus(err); r != pb.ReasonNotLeader {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// retryUnavailable runs an idempotent call until it answers something other
// than Unavailable (NOT_LEADER or an outcome lost to an election), for at
// most 10 s.
func retryUnavailable(call func() error) error {
	err := call()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && status.Code(err) == codes.Unavailable; err = call() {
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// Each input limit: a request at the limit is accepted, one past it is
// refused with InvalidArgument naming the field and the limit, and the
// refusal leaves the state hash unchanged.
func TestInputLimits(t *testing.T) {
	nodes := startAPI(t, 3)
	l := leaderOf(t, nodes)
	seed(t, l.conn)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dom, wm, promo := pbgrpc.NewDomainsClient(l.conn), pbgrpc.NewWatermarksClient(l.conn), pbgrpc.NewPromotionClient(l.conn)
	if _, err := dom.CreateDomain(ctx, &pb.CreateDomainRequest{Name: "big", Kind: pb.DomainKind_DOMAIN_KIND_AERODB,
		Policy: &pb.Policy{LeaseTtlMs: 10_000, Durability: pb.Durability_DURABILITY_AUTHORITY_GATED}}); err != nil {
		t.Fatal(err)
	}
	for i := range MaxMembersPerDomain - 1 {
		// Registering is idempotent: an outcome lost to an election under
		// the test's load is simply asked again.
		err := retryUnavailable(func() error {
			_, err := dom.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: "big", MemberId: fmt.Sprintf("m%02d", i)})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	known := validator.KnownWaivers()
	promote := func(id string, mut func(*pb.PromotionRequest)) func() error {
		return func() error {
			q := &pb.PromotionRequest{RequestId: id, Domain: "db1", Candidate: "n2", Reason: "limits test"}
			mut(q)
			_, err := promo.Promote(ctx, &pb.PromoteRequest{Request: q})
			return err
		}
	}
	create := func(name string, kind pb.DomainKind, p *pb.Policy) func() error {
		return func() error {
			_, err := dom.CreateDomain(ctx, &pb.CreateDomainRequest{Name: name, Kind: kind, Policy: p})
			return err
		}
	}
	register := func(domain, id, addr string, st pb.MemberState) func() error {
		return func() error {
			_, err := dom.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: domain, MemberId: id, Address: addr, State: st})
			return err
		}
	}
	advances := func(n int, hash []byte) func() error {
		return func() error {
			req := &pb.AdvanceRequest{}
			for range n {
				req.Advances = append(req.Advances, &pb.WatermarkAdvance{Domain: "db1", Epoch: 1, Holder: "n1", Lsn: 100, Hash: hash})
			}
			_, err := wm.Advance(ctx, req)
			return err
		}
	}
	report := func(st pb.ReplicaState) func() error {
		return func() error {
			s, err := pbgrpc.NewWatermarksClient(l.conn).ReportProgress(ctx)
			if err != nil {
				return err
			}
			defer s.CloseSend()
			if err := s.Send(&pb.ProgressReportRequest{Domain: "db1", Report: &pb.ProgressReport{MemberId: "n2", Epoch: 1, State: st}}); err != nil {
				return err
			}
			resp, err := s.Recv()
			if err != nil {
				return err
			}
			if resp.GetErrorReason() != "" {
				return status.Error(codes.InvalidArgument, resp.GetErrorMessage()) // as the client maps it
			}
			return nil
		}
	}
	watchN := func(n int) func() error {
		return func() error {
			wctx, wcancel := context.WithCancel(ctx)
			defer wcancel()
			req := &pb.WatchRequest{FromIndex: 1}
			for i := range n {
				req.Domains = append(req.Domains, fmt.Sprintf("w%d", i))
			}
			req.Domains[0] = "db1"
			s, err := pbgrpc.NewWatchClient(l.conn).Watch(wctx, req)
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}
	}
	list := func(after string, limit uint32) func() error {
		return func() error {
			_, err := dom.ListDomains(ctx, &pb.ListDomainsRequest{After: after, Limit: limit})
			return err
		}
	}
	policy := func(p *pb.Policy) *pb.Policy {
		out := &pb.Policy{LeaseTtlMs: 60_000}
		proto.Merge(out, p)
		return out
	}
	aero := pb.DomainKind_DOMAIN_KIND_AERODB
	cases := []struct {
		name     string
		atLimit  func() error
		past     func() error
		mentions string
	}{
		{"waivers per request", promote("wv1", func(q *pb.PromotionRequest) { q.Waivers = known }),
			promote("wv2", func(q *pb.PromotionRequest) {
				for range MaxWaivers + 1 {
					q.Waivers = append(q.Waivers, known[0])
				}
			}), "waivers has 9 entries, more than the limit of 8"},
		{"each waiver once", promote("wv3", func(q *pb.PromotionRequest) { q.Waivers = known[:1] }),
			promote("wv4", func(q *pb.PromotionRequest) { q.Waivers = []string{known[0], known[0]} }), "named twice"},
		{"reason bytes", promote("rs1", func(q *pb.PromotionRequest) { q.Reason = strings.Repeat("r", MaxReasonBytes) }),
			promote("rs2", func(q *pb.PromotionRequest) { q.Reason = strings.Repeat("r", MaxReasonBytes+1) }), "reason is 1025 bytes, more than 1024"},
		{"request id bytes", promote(strings.Repeat("q", MaxNameBytes), func(*pb.PromotionRequest) {}),
			promote(strings.Repeat("q", MaxNameBytes+1), func(*pb.PromotionRequest) {}), "request_id is 129 bytes, longer than 128"},
		{"initiator enum", promote("in1", func(q *pb.PromotionRequest) { q.InitiatedBy = pb.Initiator_INITIATOR_SWITCHOVER }),
			promote("in2", func(q *pb.PromotionRequest) { q.InitiatedBy = 4 }), "initiated_by 4 is not a known value"},
		{"the policy's initiator is reserved", promote("in3", func(q *pb.PromotionRequest) { q.InitiatedBy = pb.Initiator_INITIATOR_OPERATOR }),
			promote("in4", func(q *pb.PromotionRequest) { q.InitiatedBy = pb.Initiator_INITIATOR_POLICY }), "initiated_by POLICY is reserved"},
		{"the policy's request ids are reserved", promote("policy1-2", func(*pb.PromotionRequest) {}),
			promote("policy-1-2", func(*pb.PromotionRequest) {}), `prefix "policy-" is reserved`},
		{"domain name bytes", create(strings.Repeat("d", MaxNameBytes), aero, nil),
			create(strings.Repeat("d", MaxNameBytes+1), aero, nil), "domain is 129 bytes, longer than 128"},
		{"history page", func() error {
			_, err := promo.History(ctx, &pb.HistoryRequest{Domain: "db1", Limit: 1000})
			return err
		}, func() error {
			_, err := promo.History(ctx, &pb.HistoryRequest{Domain: "db1", Limit: 1001})
			return err
		}, "history page of 1001 records: at most 1000"},
		{"domain kind enum", create("k3", pb.DomainKind_DOMAIN_KIND_RELEASE, nil), create("k4", 4, nil), "domain kind 4"},
		{"promotion mode enum", create("pm2", aero, policy(&pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_AUTOMATIC})),
			create("pm3", aero, policy(&pb.Policy{Mode: 3})), "policy.mode 3 is not a known value"},
		{"lease ttl max", create("ttl1", aero, &pb.Policy{LeaseTtlMs: 3_600_000}),
			create("ttl2", aero, &pb.Policy{LeaseTtlMs: 3_600_001}), "policy.lease_ttl_ms 3600001 is outside [100, 3600000]"},
		{"lease ttl min", create("ttl3", aero, &pb.Policy{LeaseTtlMs: 100}),
			create("ttl4", aero, &pb.Policy{LeaseTtlMs: 99}), "policy.lease_ttl_ms 99 is outside [100, 3600000]"},
		{"report max age", create("ra1", aero, policy(&pb.Policy{ReportMaxAgeMs: 3_600_000})),
			create("ra2", aero, policy(&pb.Policy{ReportMaxAgeMs: 3_600_001})), "policy.report_max_age_ms 3600001 is outside"},
		{"min sync replicas", create("ms1", aero, policy(&pb.Policy{MinSyncReplicas: MaxMembersPerDomain})),
			create("ms2", aero, policy(&pb.Policy{MinSyncReplicas: 1<<32 - 1})), "policy.min_sync_replicas 4294967295 is more than the members per domain limit of 256"},
		{"members per domain", register("big", "m255", "", 0), register("big", "m256", "", 0), `domain "big" has 256 members, the members per domain limit is 256`},
		{"member id bytes", register("db1", strings.Repeat("m", MaxNameBytes), "", 0),
			register("db1", strings.Repeat("m", MaxNameBytes+1), "", 0), "member id is 129 bytes, longer than 128"},
		{"address bytes", register("db1", "n3", strings.Repeat("a", MaxAddressBytes), 0),
			register("db1", "n3", strings.Repeat("a", MaxAddressBytes+1), 0), "address is 257 bytes, more than 256"},
		{"member state enum", register("db1", "n3", "", pb.MemberState_MEMBER_STATE_ACTIVE),
			register("db1", "n3", "", 3), "state 3 is not a known value"},
		{"advances per request", advances(MaxAdvancesPerRequest, h100), advances(MaxAdvancesPerRequest+1, h100),
			"1001 advances in one call (want 1..1000, the advances per request limit)"},
		{"hash bytes", advances(1, h100), advances(1, make([]byte, MaxHashBytes+1)), "advances[0].hash is 65 bytes, more than 64"},
		{"replica state enum", report(pb.ReplicaState_REPLICA_STATE_REBUILDING), report(5), "report.state 5 is not a known value"},
		{"watch domains", watchN(MaxWatchDomains), watchN(MaxWatchDomains + 1), "domains has 1001 entries, more than the limit of 1000"},
		{"list after bytes", list(strings.Repeat("a", MaxNameBytes), 0), list(strings.Repeat("a", MaxNameBytes+1), 0), "after is 129 bytes, more than 128"},
		{"list limit", list("", maxListLimit), list("", maxListLimit+1), "limit 10001 exceeds 10000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := retryNotLeader(tc.atLimit); err != nil {
				t.Fatalf("at the limit: %v", err)
			}
			before := stateHash(t, l)
			err := retryNotLeader(tc.past)
			if code := status.Code(err); code != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.mentions) {
				t.Fatalf("past the limit: %v %q; want InvalidArgument mentioning %q", code, status.Convert(err).Message(), tc.mentions)
			}
			if after := stateHash(t, l); after != before {
				t.Fatal("a refused request changed the state")
			}
		})
	}
}

// leaf is a path to a string or bytes field of a request, through message
// and repeated message fields.
type leaf []protoreflect.FieldDescriptor

func (p leaf) String() string {
	var parts []string
	for _, f := range p {
		parts = append(parts, string(f.Name()))
	}
	return strings.Join(parts, ".")
}

func leaves(md protoreflect.MessageDescriptor, prefix leaf, depth int) []leaf {
	var out []leaf
	fields := md.Fields()
	for i := range fields.Len() {
		f := fields.Get(i)
		path := append(append(leaf{}, prefix...), f)
		switch f.Kind() {
		case protoreflect.StringKind, protoreflect.BytesKind:
			out = append(out, path)
		case protoreflect.MessageKind:
			if depth < 3 && !f.IsMap() {
				out = append(out, leaves(f.Message(), path, depth+1)...)
			}
		}
	}
	return out
}

// set puts v into the field at path, creating messages (and one element of
// a repeated field) on the way.
func set(m protoreflect.Message, path leaf, v []byte) {
	f := path[0]
	if len(path) == 1 {
		val := protoreflect.ValueOfString(string(v))
		if f.Kind() == protoreflect.BytesKind {
			val = protoreflect.ValueOfBytes(v)
		}
		if f.IsList() {
			m.Mutable(f).List().Append(val)
		} else {
			m.Set(f, val)
		}
		return
	}
	if f.IsList() {
		l := m.Mutable(f).List()
		if l.Len() == 0 {
			l.Append(l.NewElement())
		}
		set(l.Get(0).Message(), path[1:], v)
		return
	}
	set(m.Mutable(f).Message(), path[1:], v)
}

// call sends req to the method (unary or streaming) and returns the error
// it reports: the status, or for keep-alive and progress streams the error
// carried in the response body.
func call(ctx context.Context, conn *grpc.ClientConn, m protoreflect.MethodDescriptor, req proto.Message) (string, codes.Code, error) {
	full := "/" + string(m.Parent().FullName()) + "/" + string(m.Name())
	rt, err := protoregistry.GlobalTypes.FindMessageByName(m.Output().FullName())
	if err != nil {
		return "", 0, err
	}
	resp := rt.New().Interface()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if !m.IsStreamingClient() && !m.IsStreamingServer() {
		err := conn.Invoke(ctx, full, req, resp)
		return status.Convert(err).Message(), status.Code(err), nil
	}
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{StreamName: string(m.Name()), ServerStreams: m.IsStreamingServer(), ClientStreams: m.IsStreamingClient()}, full)
	if err != nil {
		return status.Convert(err).Message(), status.Code(err), nil
	}
	if err := s.SendMsg(req); err != nil {
		return "", 0, fmt.Errorf("send: %w", err)
	}
	_ = s.CloseSend()
	if err := s.RecvMsg(resp); err != nil {
		return status.Convert(err).Message(), status.Code(err), nil
	}
	r := resp.ProtoReflect()
	reason, msg := r.Descriptor().Fields().ByName("error_reason"), r.Descriptor().Fields().ByName("error_message")
	if reason == nil || r.Get(reason).String() == "" {
		return "", codes.OK, nil
	}
	if r.Get(reason).String() != pb.ReasonInvalidArgument {
		return r.Get(msg).String(), codes.Unknown, nil
	}
	return r.Get(msg).String(), codes.InvalidArgument, nil
}

// A 1 MiB string (or bytes) in any field of any request, alone or in every
// field at once, through the leader and a follower: refused with
// InvalidArgument and an error message of at most 512 bytes; nothing
// changes.
func TestHugeFieldsGiveSmallErrors(t *testing.T) {
	nodes := startAPI(t, 3)
	l := leaderOf(t, nodes)
	seed(t, l.conn)
	before := stateHash(t, l)
	defer func() {
		if after := stateHash(t, leaderOf(t, nodes)); after != before {
			t.Fatal("a refused request changed the state")
		}
	}()
	huge := []byte(strings.Repeat("\x00é1", 1<<20/4))
	ctx := context.Background()
	services := pbgrpc.File_authority_v1_service_proto.Services()
	tried, longest := 0, 0
	// RPCs whose requests have no string or bytes field: nothing to
	// oversize here (their bounded numbers are checked by their own
	// tests). A new RPC must be listed here or have a field tried below.
	noStrings := map[string]bool{"authority.v1.Cluster.Status": true, "authority.v1.Cluster.Members": true,
		"authority.v1.Cluster.Snapshot": true, "authority.v1.Cluster.SaveSnapshot": true}
	for i := range services.Len() {
		methods := services.Get(i).Methods()
		for j := range methods.Len() {
			m := methods.Get(j)
			rt, err := protoregistry.GlobalTypes.FindMessageByName(m.Input().FullName())
			if err != nil {
				t.Fatal(err)
			}
			paths := leaves(m.Input(), nil, 0)
			if (len(paths) == 0) != noStrings[string(m.FullName())] {
				t.Errorf("%s: %d string or bytes fields; listed without any: %v", m.FullName(), len(paths), noStrings[string(m.FullName())])
			}
			if len(paths) == 0 {
				continue
			}
			var variants []leaf
			variants = append(variants, paths...)
			variants = append(variants, nil) // every field at once
			for _, p := range variants {
				req := rt.New().Interface()
				name := p.String()
				if p == nil {
					// Every field at once, each still far above any
					// field's bound, the whole within the client's 8 MiB
					// send limit (a larger message never reaches the
					// server's handlers: gRPC refuses it first).
					name = "all fields"
					each := huge[:min(len(huge), (7<<20)/len(paths))/4*4] // whole "\x00é1" units: valid UTF-8
					for _, q := range paths {
						set(req.ProtoReflect(), q, each)
					}
				} else {
					set(req.ProtoReflect(), p, huge)
				}
				via := []func() *apiNode{func() *apiNode { return leaderOf(t, nodes) }, func() *apiNode { return follower(t, nodes) }}
				if m.IsStreamingClient() {
					via = via[:1] // served by the leader only: a follower answers NOT_LEADER first
				}
				for _, pick := range via {
					var msg string
					var code codes.Code
					var n *apiNode
					err := retryNotLeader(func() error {
						var err error
						n = pick()
						msg, code, err = call(ctx, n.conn, m, req)
						if err != nil {
							return err
						}
						if code == codes.Unavailable {
							return status.Error(code, msg)
						}
						return nil
					})
					if err != nil {
						t.Fatalf("%s %s via %s: %v", m.FullName(), name, n.node.ID(), err)
					}
					tried++
					longest = max(longest, len(msg))
					if code != codes.InvalidArgument || len(msg) > 512 {
						t.Errorf("%s %s via %s: %v, %d-byte message %.600q; want InvalidArgument within 512 bytes",
							m.FullName(), name, n.node.ID(), code, len(msg), msg)
					}
				}
			}
		}
	}
	t.Logf("%d calls with 1 MiB fields refused; longest message %d bytes", tried, longest)
}

func TestClip(t *testing.T) {
	if clip("short") != "short" {
		t.Fatal("short strings are kept")
	}
	long := strings.Repeat("é", 200) // 2 bytes a rune
	c := clip(long)
	if !strings.HasPrefix(c, strings.Repeat("é", 64)) || !strings.HasSuffix(c, "…(400 bytes)") || len(c) > MaxQuotedBytes+20 {
		t.Fatalf("clip: %q", c)
	}
}

// A read forwarded to the leader that fails in transit is NOT_LEADER
// (nothing changed; the client goes elsewhere) or RESOURCE_EXHAUSTED for a
// size limit, never OUTCOME_UNKNOWN; a write that fails in transit stays
// OUTCOME_UNKNOWN.
func TestForwardedReadNeverOutcomeUnknown(t *testing.T) {
	nodes := startAPI(t, 3)
	f := follower(t, nodes)
	ctx := context.Background()
	broken := func(err error) func(context.Context, *grpc.ClientConn) (*pb.ExplainResponse, error) {
		return func(context.Context, *grpc.ClientConn) (*pb.ExplainResponse, error) { return nil, err }
	}
	cut := status.Error(codes.Unavailable, "connection reset by peer")
	big := status.Error(codes.ResourceExhausted, "grpc: received message larger than max (9000000 vs. 4194304)")
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var ok bool
		if _, ok, err = forwardRead(ctx, f.api, broken(cut)); ok {
			break
		}
	}
	if code, reason := reasonOfStatus(err); code != codes.Unavailable || reason != pb.ReasonNotLeader {
		t.Fatalf("read cut in transit: %v %s (%v); want Unavailable NOT_LEADER", code, reason, err)
	}
	_, _, err = forwardRead(ctx, f.api, broken(big))
	if code, reason := reasonOfStatus(err); code != codes.ResourceExhausted || reason == pb.ReasonOutcomeUnknown {
		t.Fatalf("read too large: %v %s (%v); want ResourceExhausted", code, reason, err)
	}
	_, _, err = forward(ctx, f.api, broken(cut))
	if code, reason := reasonOfStatus(err); code != codes.Unavailable || reason != pb.ReasonOutcomeUnknown {
		t.Fatalf("write cut in transit: %v %s (%v); want OUTCOME_UNKNOWN", code, reason, err)
	}
}
