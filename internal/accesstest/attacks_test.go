package accesstest

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/authz"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/internal/testcluster"
	"github.com/aerodb/authority/pki"
	"github.com/aerodb/authority/tlsfiles"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TestHostileClientsChangeNothing replays, with the generated stubs and
// certificates of the cluster's own CA, every attack that worked before
// authorization existed. Each is refused, and no server's state hash moves.
func TestHostileClientsChangeNothing(t *testing.T) {
	c := testcluster.Start(t, 3)
	ctx := ctxT(t)
	op := c.Dial(testcluster.Operator)
	_, err := op.CreateDomain(ctx, "db", pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: 5000, ReportMaxAgeMs: 30000, MinSyncReplicas: 1})
	mustOK(t, "create db", err)
	for _, m := range []string{"n1", "n2", "n3"} {
		_, err := op.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: "db", MemberId: m, State: pb.MemberState_MEMBER_STATE_ACTIVE})
		mustOK(t, "register "+m, err)
	}
	_, err = op.AssignInitial(ctx, "db", "n1")
	mustOK(t, "assign", err)
	_, err = op.CreateDomain(ctx, "lk", pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: 5000})
	mustOK(t, "create lk", err)

	// The legitimate holders: n1 keeps db's lease and advances its
	// watermark; "a" holds the lock.
	n1 := c.Dial(testcluster.Node("n1"))
	dbLease, err := n1.KeepLease(ctx, "db", "n1", 1, 5*time.Second)
	mustOK(t, "n1 keeps its lease", err)
	errs, err := n1.AdvanceWatermark(ctx, []*pb.WatermarkAdvance{{Domain: "db", Epoch: 1, Holder: "n1", Lsn: 10, Hash: []byte("h10"), VisibleCommitId: 5}})
	mustOK(t, "advance", err)
	mustOK(t, "advance result", errs[0])
	a := c.Dial(testcluster.Node("a"))
	lock, err := a.Acquire(ctx, "lk", "a")
	mustOK(t, "a acquires lk", err)
	before := converged(t, c)
	membersBefore, err := op.Members(ctx)
	mustOK(t, "members", err)

	// Every attack goes to a follower and to the leader: authorization holds
	// on the first hop and again on the leader.
	for _, s := range c.Servers {
		t.Run("via-"+s.ID, func(t *testing.T) {
			attack(t, c, s.GRPCAddr, lock.Epoch())
		})
	}

	// An operator may add servers, but not at dead addresses.
	for i, dead := range []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"} {
		_, err := op.AddServer(ctx, "dead"+string(rune('a'+i)), dead, dead)
		if err == nil || status.Code(err) != codes.FailedPrecondition {
			t.Errorf("operator adding a voter at dead address %s: %v, want FailedPrecondition", dead, err)
		}
	}
	membersAfter, err := op.Members(ctx)
	mustOK(t, "members", err)
	if len(membersAfter.GetServers()) != len(membersBefore.GetServers()) {
		t.Errorf("configuration changed: %v", membersAfter.GetServers())
	}
	if after := converged(t, c); after != before {
		t.Errorf("state hash moved: %s → %s", before, after)
	}
	select {
	case <-dbLease.Lost():
		t.Errorf("n1's lease was lost: %v", dbLease.Err())
	default:
	}
	assertDenialsCounted(t, c)
}

// attack runs every hostile call against one server.
func attack(t *testing.T, c *testcluster.Cluster, addr string, lockEpoch uint64) {
	ctx := ctxT(t)
	n2 := stub(t, c, addr, testcluster.Node("n2"))
	b := stub(t, c, addr, testcluster.Node("b"))
	reader := stub(t, c, addr, testcluster.Reader)
	deployer := stub(t, c, addr, identity.Identity{Role: identity.Deployer, Name: "a"})

	for i := range 3 {
		_, err := pbgrpc.NewClusterClient(n2).AddServer(ctx, &pb.AddServerRequest{Id: "evil" + string(rune('0'+i)),
			RaftAddress: "127.0.0.1:1", GrpcAddress: "127.0.0.1:1"})
		wantDenied(t, "node adds a server", err)
	}
	_, err := pbgrpc.NewClusterClient(reader).RemoveServer(ctx, &pb.RemoveServerRequest{Id: "s3"})
	wantDenied(t, "reader removes a server", err)
	_, err = pbgrpc.NewLeasesClient(b).Release(ctx, &pb.ReleaseRequest{Domain: "lk", Holder: "a", Epoch: lockEpoch})
	wantDenied(t, "b releases a's lock", err)
	_, err = pbgrpc.NewLeasesClient(b).Acquire(ctx, &pb.AcquireRequest{Domain: "lk", Holder: "a"})
	wantDenied(t, "b acquires as a", err)
	// A deployer may act only on lock domains, as itself: "a" on the aerodb
	// domain is refused by kind.
	_, err = pbgrpc.NewLeasesClient(deployer).Release(ctx, &pb.ReleaseRequest{Domain: "db", Holder: "a", Epoch: 1})
	wantDenied(t, "deployer on an aerodb domain", err)

	ka, err := pbgrpc.NewLeasesClient(n2).KeepAlive(ctx)
	mustOK(t, "open keep-alive", err)
	mustOK(t, "send", ka.Send(&pb.KeepAliveRequest{Domain: "db", Holder: "n1", Epoch: 1, Seq: 1}))
	_, err = ka.Recv()
	wantDenied(t, "n2 renews n1's lease", err)

	// A batch renewing n1's lease among n2's is refused whole (the stream
	// ends), on a follower and on the leader alike.
	kb, err := pbgrpc.NewLeasesClient(n2).KeepAlive(ctx)
	mustOK(t, "open keep-alive", err)
	mustOK(t, "send", kb.Send(&pb.KeepAliveRequest{Holder: "n1", Domains: []string{"lk", "db"}, Epochs: []uint64{lockEpoch, 1}, Seq: 1}))
	_, err = kb.Recv()
	wantDenied(t, "n2 renews a batch as n1", err)
	// A deployer's batch as itself: the aerodb domain's lease fails alone
	// (PERMISSION_DENIED for its index), the lock's is judged as usual.
	kd, err := pbgrpc.NewLeasesClient(deployer).KeepAlive(ctx)
	mustOK(t, "open keep-alive", err)
	mustOK(t, "send", kd.Send(&pb.KeepAliveRequest{Holder: "a", Domains: []string{"lk", "db"}, Epochs: []uint64{lockEpoch, 1}, Seq: 1}))
	if resp, err := kd.Recv(); err != nil {
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "not the leader") {
			t.Errorf("deployer's batch on a follower: %v, want NOT_LEADER", err)
		}
	} else if f := resp.GetFailures(); len(f) != 1 || f[0].GetIndex() != 1 || f[0].GetErrorReason() != pb.ReasonPermissionDenied ||
		len(resp.GetBatchRemainingMs()) != 2 || resp.GetBatchRemainingMs()[0] == 0 {
		t.Errorf("deployer's batch on the leader: %v, want the aerodb lease alone denied", resp)
	}

	pr, err := pbgrpc.NewWatermarksClient(n2).ReportProgress(ctx)
	mustOK(t, "open progress", err)
	mustOK(t, "send", pr.Send(&pb.ProgressReportRequest{Domain: "db", Report: &pb.ProgressReport{MemberId: "n3", Epoch: 1,
		FlushedLsn: 1 << 40, FlushedHash: []byte("x"), AppliedCommitId: 1 << 40, ReadSafe: true}}))
	_, err = pr.Recv()
	wantDenied(t, "n2 reports as n3", err)

	_, err = pbgrpc.NewWatermarksClient(n2).Advance(ctx, &pb.AdvanceRequest{Advances: []*pb.WatermarkAdvance{
		{Domain: "db", Epoch: 1, Holder: "n1", Lsn: 11, Hash: []byte("h11"), VisibleCommitId: 6}}})
	wantDenied(t, "n2 advances n1's watermark", err)
	_, err = pbgrpc.NewLeasesClient(n2).Release(ctx, &pb.ReleaseRequest{Domain: "db", Holder: "n1", Epoch: 1})
	wantDenied(t, "n2 releases n1", err)
	_, err = pbgrpc.NewPromotionClient(n2).Promote(ctx, &pb.PromoteRequest{Request: &pb.PromotionRequest{Domain: "db", Candidate: "n2",
		RequestId: "evil-1", Reason: "takeover"}})
	wantDenied(t, "n2 promotes itself", err)
	for name, conn := range map[string]*grpc.ClientConn{"node": n2, "reader": reader} {
		_, err = pbgrpc.NewDomainsClient(conn).UpdatePolicy(ctx, &pb.UpdatePolicyRequest{Name: "db", Policy: &pb.Policy{LeaseTtlMs: 100}})
		wantDenied(t, name+" sets a 100 ms TTL", err)
		_, err = pbgrpc.NewDomainsClient(conn).UpdatePolicy(ctx, &pb.UpdatePolicyRequest{Name: "db", Policy: &pb.Policy{LeaseTtlMs: 5000, PromotionDisabled: true}})
		wantDenied(t, name+" disables promotion", err)
		_, err = pbgrpc.NewClusterClient(conn).TransferLeadership(ctx, &pb.TransferLeadershipRequest{})
		wantDenied(t, name+" moves leadership", err)
		_, err = pbgrpc.NewClusterClient(conn).Snapshot(ctx, &pb.SnapshotRequest{})
		wantDenied(t, name+" snapshots", err)
		// A backup holds every domain's state: operators only.
		if save, err := pbgrpc.NewClusterClient(conn).SaveSnapshot(ctx, &pb.SaveSnapshotRequest{}); err != nil {
			wantDenied(t, name+" saves a backup", err)
		} else {
			_, err = save.Recv()
			wantDenied(t, name+" saves a backup", err)
		}
		_, err = pbgrpc.NewDomainsClient(conn).CreateDomain(ctx, &pb.CreateDomainRequest{Name: "evil", Kind: pb.DomainKind_DOMAIN_KIND_LOCK})
		wantDenied(t, name+" creates a domain", err)
		_, err = pbgrpc.NewDomainsClient(conn).RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: "db", MemberId: "evil"})
		wantDenied(t, name+" registers a member", err)
	}

	// Forging the forwarding metadata: only servers may speak for others.
	forged := metadata.AppendToOutgoingContext(ctx, authz.MetaOnBehalfOf, "operator:admin")
	_, err = pbgrpc.NewDomainsClient(n2).CreateDomain(forged, &pb.CreateDomainRequest{Name: "evil", Kind: pb.DomainKind_DOMAIN_KIND_LOCK})
	wantDenied(t, "node forges on-behalf-of", err)
	// A server certificate of our CA from another cluster cannot forward.
	other := stub(t, c, addr, identity.Identity{Role: identity.Server, Name: "s9"})
	otherCtx := metadata.AppendToOutgoingContext(ctx, authz.MetaOnBehalfOf, "operator:admin", authz.MetaClusterID, "0000000000000000")
	_, err = pbgrpc.NewDomainsClient(other).CreateDomain(otherCtx, &pb.CreateDomainRequest{Name: "evil", Kind: pb.DomainKind_DOMAIN_KIND_LOCK})
	wantDenied(t, "server of another cluster forwards", err)

	// No certificate, or no TLS at all: no call gets through.
	plain, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	mustOK(t, "plaintext client", err)
	defer plain.Close()
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := pbgrpc.NewDomainsClient(plain).CreateDomain(short, &pb.CreateDomainRequest{Name: "evil", Kind: pb.DomainKind_DOMAIN_KIND_LOCK}); err == nil {
		t.Error("a plaintext client created a domain")
	}
}

func assertDenialsCounted(t *testing.T, c *testcluster.Cluster) {
	t.Helper()
	hc := c.HTTPClient(testcluster.Reader)
	resp, err := hc.Get(c.URL(c.Servers[0], "/metrics"))
	mustOK(t, "metrics", err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), `authority_authz_denied_total{method="/authority.v1.Leases/KeepAlive",role="node"}`) {
		t.Errorf("no KeepAlive denial counted on %s", c.Servers[0].ID)
	}
}

// TestBadCertificatesAreRefusedAndLogged: a certificate of another CA, an
// expired one, and one without an identity are refused at the handshake,
// each with one clear log line on the server (at most one a second per
// peer host, however often the client retries).
func TestBadCertificatesAreRefusedAndLogged(t *testing.T) {
	c := testcluster.Start(t, 3)
	s := c.Servers[0]
	dir := t.TempDir()
	foreignCA, err := pki.NewCA("foreign CA", time.Hour)
	mustOK(t, "ca", err)
	mustOK(t, "write", foreignCA.Write(dir))
	foreignCert, foreignKey, err := foreignCA.WriteLeaf(dir, pki.LeafOptions{Identity: testcluster.Operator})
	mustOK(t, "leaf", err)
	ours := testcluster.Files(t, testcluster.Reader)
	expiredDir := t.TempDir()
	expiredCert, expiredKey, err := testcluster.CA(t).WriteLeaf(expiredDir, pki.LeafOptions{Identity: identity.Identity{Role: identity.Operator, Name: "old"},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	mustOK(t, "expired leaf", err)
	cases := []struct {
		name, cert, key, log string
	}{
		{"another CA", foreignCert, foreignKey, "certificate signed by unknown authority"},
		{"expired", expiredCert, expiredKey, "certificate has expired"},
	}
	for _, tc := range cases {
		before := strings.Count(readFile(s.LogPath), "connection refused")
		// The client trusts our CA (so it accepts the server) but presents
		// the bad certificate; it retries several times within a second.
		src, err := tlsfiles.Load(tlsfiles.Files{CA: ours.CA, Cert: tc.cert, Key: tc.key}, tlsfiles.Options{})
		if err != nil {
			// An expired certificate still loads; anything else is a test bug.
			t.Fatalf("%s: %v", tc.name, err)
		}
		for range 10 {
			conn, err := grpc.NewClient(s.GRPCAddr, grpc.WithTransportCredentials(src.Credentials(true)))
			mustOK(t, "client", err)
			short, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = pbgrpc.NewDomainsClient(conn).CreateDomain(short, &pb.CreateDomainRequest{Name: "evil", Kind: pb.DomainKind_DOMAIN_KIND_LOCK})
			cancel()
			conn.Close()
			if err == nil {
				t.Fatalf("%s: a call went through", tc.name)
			}
		}
		waitLog(t, s.LogPath, tc.log, 10*time.Second)
		if n := strings.Count(readFile(s.LogPath), "connection refused") - before; n < 1 || n > 3 {
			t.Errorf("%s: %d refusal lines for 10 attempts in about a second, want 1..3", tc.name, n)
		}
	}
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
