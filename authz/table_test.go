package authz

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/identity"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// expected is the authorization policy written out a second time, by hand,
// per RPC: which roles may call it. For holder RPCs the role may call it
// only acting as itself (checked separately below). The test compares
// Decide, for every RPC of the API and every role, with this table.
var expected = map[string][]identity.Role{
	"Domains/CreateDomain":      {identity.Operator},
	"Domains/GetDomain":         identity.Roles,
	"Domains/ListDomains":       identity.Roles,
	"Domains/UpdatePolicy":      {identity.Operator},
	"Domains/RegisterMember":    {identity.Operator},
	"Domains/AssignInitial":     {identity.Operator},
	"Domains/LabelReleaseAbort": {identity.Operator},

	"Leases/Acquire":           {identity.Node, identity.Deployer, identity.Releaser},
	"Leases/KeepAlive":         {identity.Node, identity.Deployer, identity.Releaser},
	"Leases/Release":           {identity.Node, identity.Deployer, identity.Releaser},
	"Leases/DeployStep":        {identity.Node, identity.Deployer, identity.Releaser},
	"Leases/ReleaseTransition": {identity.Node, identity.Deployer, identity.Releaser},

	"Watermarks/Advance":        {identity.Node, identity.Deployer, identity.Releaser},
	"Watermarks/ReportProgress": {identity.Node, identity.Deployer, identity.Releaser},

	"Promotion/Promote":         {identity.Operator},
	"Promotion/RequestHandover": {identity.Operator},
	"Promotion/Explain":         identity.Roles,
	"Promotion/History":         identity.Roles,

	"Watch/Watch": identity.Roles,

	"Cluster/AddServer":          {identity.Operator, identity.Server},
	"Cluster/RemoveServer":       {identity.Operator},
	"Cluster/Status":             identity.Roles,
	"Cluster/Members":            identity.Roles,
	"Cluster/TransferLeadership": {identity.Operator},
	"Cluster/Snapshot":           {identity.Operator},
	"Cluster/SaveSnapshot":       {identity.Operator},
}

// apiMethods lists every RPC of authority.v1 from the protobuf descriptor,
// so an RPC added to the API without a rule fails this test.
func apiMethods(t *testing.T) []protoreflect.MethodDescriptor {
	t.Helper()
	var out []protoreflect.MethodDescriptor
	svcs := pbgrpc.File_authority_v1_service_proto.Services()
	for i := range svcs.Len() {
		ms := svcs.Get(i).Methods()
		for j := range ms.Len() {
			out = append(out, ms.Get(j))
		}
	}
	if len(out) != len(expected) {
		t.Errorf("the API has %d RPCs, the expected table %d", len(out), len(expected))
	}
	return out
}

func fullName(m protoreflect.MethodDescriptor) string {
	return "/" + string(m.Parent().FullName()) + "/" + string(m.Name())
}

// requestActingAs builds a request of the RPC whose every subject is holder
// in domain "d".
func requestActingAs(method, holder string) any {
	switch method {
	case svcLeases + "Acquire":
		return &pb.AcquireRequest{Domain: "d", Holder: holder}
	case svcLeases + "KeepAlive":
		return &pb.KeepAliveRequest{Domain: "d", Holder: holder, Epoch: 1}
	case svcLeases + "Release":
		return &pb.ReleaseRequest{Domain: "d", Holder: holder, Epoch: 1}
	case svcLeases + "ReleaseTransition":
		return &pb.ReleaseTransitionRequest{Transition: &pb.ReleaseTransition{Domain: "d", Holder: holder, Epoch: 1}}
	case svcLeases + "DeployStep":
		return &pb.DeployStepRequest{Step: &pb.DeployStep{Domain: "d", Holder: holder, Epoch: 1}}
	case svcWatermarks + "Advance":
		return &pb.AdvanceRequest{Advances: []*pb.WatermarkAdvance{{Domain: "d", Holder: holder, Epoch: 1}, {Domain: "e", Holder: holder, Epoch: 1}}}
	case svcWatermarks + "ReportProgress":
		return &pb.ProgressReportRequest{Domain: "d", Report: &pb.ProgressReport{MemberId: holder}}
	case svcCluster + "AddServer":
		return &pb.AddServerRequest{Id: holder, RaftAddress: "127.0.0.1:1", GrpcAddress: "127.0.0.1:2"}
	}
	return nil
}

// TestEveryRPCEveryRole walks every RPC of the API × every role: each cell
// is allowed or denied exactly as the hand-written table says, acting as
// itself; and no holder role may act as anyone else.
func TestEveryRPCEveryRole(t *testing.T) {
	for _, m := range apiMethods(t) {
		method := fullName(m)
		short := strings.TrimPrefix(method, "/authority.v1.")
		want, ok := expected[short]
		if !ok {
			t.Errorf("%s: no expected row", method)
			continue
		}
		if _, ok := Table[method]; !ok {
			t.Errorf("%s: no rule in Table", method)
			continue
		}
		for _, role := range identity.Roles {
			id := identity.Identity{Role: role, Name: "me"}
			err := Decide(id, method, requestActingAs(method, "me"), nil)
			allowed := slices.Contains(want, role)
			if allowed != (err == nil) {
				t.Errorf("%s as %s: allowed=%v, want %v (err %v)", short, id, err == nil, allowed, err)
			}
			if req := requestActingAs(method, "someone-else"); req != nil && role != identity.Operator {
				if err := Decide(id, method, req, nil); err == nil {
					t.Errorf("%s as %s acting as someone-else: allowed", short, id)
				}
			}
		}
	}
	if len(Table) != len(expected) {
		t.Errorf("Table has %d rules, the API %d RPCs: a rule names no RPC", len(Table), len(expected))
	}
}

func TestHolderRolesAreLimitedByDomainKind(t *testing.T) {
	kinds := func(d string) (pb.DomainKind, bool) {
		switch d {
		case "db":
			return pb.DomainKind_DOMAIN_KIND_AERODB, true
		case "lock":
			return pb.DomainKind_DOMAIN_KIND_LOCK, true
		case "rel":
			return pb.DomainKind_DOMAIN_KIND_RELEASE, true
		}
		return 0, false
	}
	cases := []struct {
		role   identity.Role
		domain string
		ok     bool
	}{
		{identity.Node, "db", true}, {identity.Node, "lock", true}, {identity.Node, "rel", false},
		{identity.Deployer, "db", false}, {identity.Deployer, "lock", true}, {identity.Deployer, "rel", false},
		{identity.Releaser, "db", false}, {identity.Releaser, "lock", false}, {identity.Releaser, "rel", true},
		// Unknown here: left to the server that serves it (NOT_FOUND).
		{identity.Deployer, "unknown", true},
	}
	for _, c := range cases {
		id := identity.Identity{Role: c.role, Name: "h"}
		err := Decide(id, svcLeases+"Acquire", &pb.AcquireRequest{Domain: c.domain, Holder: "h"}, kinds)
		if (err == nil) != c.ok {
			t.Errorf("%s acquiring in %s: err %v, want ok=%v", id, c.domain, err, c.ok)
		}
	}
}

// One advance acting as someone else spoils the whole batch.
func TestAdvanceBatchNeedsEverySubject(t *testing.T) {
	id := identity.Identity{Role: identity.Node, Name: "n1"}
	req := &pb.AdvanceRequest{Advances: []*pb.WatermarkAdvance{{Domain: "a", Holder: "n1"}, {Domain: "b", Holder: "n2"}}}
	err := Decide(id, svcWatermarks+"Advance", req, nil)
	var d *Denied
	if !errors.As(err, &d) || !strings.Contains(d.Why, `"n2"`) {
		t.Fatalf("got %v, want a denial naming n2", err)
	}
}

func TestUnknownMethodAndNoIdentityAreDenied(t *testing.T) {
	op := identity.Identity{Role: identity.Operator, Name: "a"}
	if err := Decide(op, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", nil, nil); err == nil {
		t.Error("a method outside the table was allowed")
	}
	if err := Decide(identity.Identity{}, svcDomains+"GetDomain", nil, nil); err == nil {
		t.Error("no identity was allowed to read")
	}
}

// Denial messages bound what a hostile client put in the request.
func TestDenialIsBounded(t *testing.T) {
	id := identity.Identity{Role: identity.Node, Name: "n1"}
	huge := strings.Repeat("x", 1<<20)
	err := Decide(id, svcLeases+"Acquire", &pb.AcquireRequest{Domain: huge, Holder: huge}, nil)
	if err == nil || len(err.Error()) > 1024 {
		t.Fatalf("denial of %d bytes: %.200v", len(fmt.Sprint(err)), err)
	}
}

// A batched renewal acts as its holder on every lease it names: the holder
// must be the caller. The kind of each lease's domain is left to the
// handler, per lease (MayActOn), so one lease of a forbidden kind fails
// alone; the single-lease field of the same message is still checked here.
func TestKeepAliveBatchNeedsEveryLease(t *testing.T) {
	looked := 0
	kinds := func(d string) (pb.DomainKind, bool) {
		looked++
		if strings.HasPrefix(d, "rel") {
			return pb.DomainKind_DOMAIN_KIND_RELEASE, true
		}
		return pb.DomainKind_DOMAIN_KIND_LOCK, true
	}
	id := identity.Identity{Role: identity.Node, Name: "n1"}
	method := svcLeases + "KeepAlive"
	batch := func(holder string, domains ...string) *pb.KeepAliveRequest {
		return &pb.KeepAliveRequest{Holder: holder, Domains: domains, Epochs: make([]uint64, len(domains))}
	}
	if err := Decide(id, method, batch("n1", "a", "rel-1", "c"), kinds); err != nil || looked != 0 {
		t.Fatalf("own leases: %v (%d kind lookups)", err, looked)
	}
	long := strings.Repeat("x", 1<<20)
	err := Decide(id, method, batch(long, "a", "b"), kinds)
	var d *Denied
	if !errors.As(err, &d) || len(err.Error()) > 1024 {
		t.Fatalf("another holder's batch: %.300v", err)
	}
	both := batch("n1", "a")
	both.Domain = "rel-1"
	if err := Decide(id, method, both, kinds); err == nil {
		t.Fatal("the single-lease field escaped the kind check")
	}
	if !MayActOn(identity.Node, pb.DomainKind_DOMAIN_KIND_LOCK) || MayActOn(identity.Node, pb.DomainKind_DOMAIN_KIND_RELEASE) ||
		MayActOn(identity.Operator, pb.DomainKind_DOMAIN_KIND_LOCK) || !MayActOn(identity.Releaser, pb.DomainKind_DOMAIN_KIND_RELEASE) {
		t.Fatal("MayActOn disagrees with the roles' kinds")
	}
}

// A request naming more than MaxSubjects subjects is refused as too many,
// after looking at MaxSubjects+1 of them.
func TestTooManySubjects(t *testing.T) {
	id := identity.Identity{Role: identity.Node, Name: "n1"}
	looked := 0
	kinds := func(string) (pb.DomainKind, bool) { looked++; return pb.DomainKind_DOMAIN_KIND_LOCK, true }
	domains := make([]string, 100_000)
	for i := range domains {
		domains[i] = "d"
	}
	req := &pb.KeepAliveRequest{Holder: "n1", Domains: domains}
	err := Decide(id, svcLeases+"KeepAlive", req, kinds)
	var many *TooMany
	if !errors.As(err, &many) || len(err.Error()) > 256 {
		t.Fatalf("keep-alive: got %v", err)
	}
	adv := &pb.AdvanceRequest{}
	for range 100_000 {
		adv.Advances = append(adv.Advances, &pb.WatermarkAdvance{Domain: "d", Holder: "n1"})
	}
	if err := Decide(id, svcWatermarks+"Advance", adv, kinds); !errors.As(err, &many) || looked != MaxSubjects {
		t.Fatalf("advance: got %v after %d kind lookups", err, looked)
	}
	req.Domains = domains[:MaxSubjects]
	if err := Decide(id, svcLeases+"KeepAlive", req, kinds); err != nil {
		t.Fatalf("a full batch: %v", err)
	}
}

// Authorizing a batch allocates nothing per lease.
func TestKeepAliveBatchAuthorizationAllocations(t *testing.T) {
	id := identity.Identity{Role: identity.Node, Name: "n1"}
	kinds := func(string) (pb.DomainKind, bool) { return pb.DomainKind_DOMAIN_KIND_LOCK, true }
	small := &pb.KeepAliveRequest{Holder: "n1", Domains: []string{"a"}}
	big := &pb.KeepAliveRequest{Holder: "n1", Domains: make([]string, 1000)}
	for i := range big.Domains {
		big.Domains[i] = "a"
	}
	a1 := testing.AllocsPerRun(50, func() { _ = Decide(id, svcLeases+"KeepAlive", small, kinds) })
	a1000 := testing.AllocsPerRun(50, func() { _ = Decide(id, svcLeases+"KeepAlive", big, kinds) })
	if a1000 != a1 {
		t.Fatalf("%v allocations for 1 lease, %v for 1,000", a1, a1000)
	}
}
