package client_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/internal/testcluster"
	"github.com/aerodb/authority/tlsfiles"
	"google.golang.org/grpc"
)

// installIdentity copies id's certificate and key (of the test CA) to
// dir/node.crt and dir/node.key, each replaced by a rename, and returns the
// files: a node's certificate directory that can be rotated under it.
func installIdentity(t *testing.T, dir string, id identity.Identity) tlsfiles.Files {
	t.Helper()
	src := testcluster.Files(t, id)
	f := tlsfiles.Files{CA: src.CA, Cert: filepath.Join(dir, "node.crt"), Key: filepath.Join(dir, "node.key")}
	for from, to := range map[string]string{src.Cert: f.Cert, src.Key: f.Key} {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to+".tmp", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(to+".tmp", to); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// A node may renew only its own leases. A node client renewing another
// holder's lease is refused with ErrPermissionDenied, which ends the lease
// at once: it is final, so the client neither retries it until the
// caller's context ends (KeepLease) nor until the lease's local deadline
// (a running lease whose certificate turned into another node's).
func TestProcessRenewingAnotherHoldersLeaseIsDenied(t *testing.T) {
	cl := testcluster.Start(t, 3)
	ctx := timeout(t, 60*time.Second)
	const ttl = 6 * time.Second // long, so "at once" and "at the deadline" are far apart
	op := cl.Dial(testcluster.Operator)
	for _, d := range []string{"deploy", "rotated"} {
		if _, err := op.CreateDomain(ctx, d, pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: uint64(ttl.Milliseconds())}); err != nil {
			t.Fatal(err)
		}
	}
	a, err := cl.Dial(testcluster.Node("runner-a")).Acquire(ctx, "deploy", "runner-a")
	if err != nil {
		t.Fatal(err)
	}

	// runner-b keeps runner-a's lease: refused on its first renewal.
	runnerB := cl.Dial(testcluster.Node("runner-b"))
	start := time.Now()
	_, err = runnerB.KeepLease(ctx, "deploy", "runner-a", a.Epoch(), ttl)
	took := time.Since(start)
	if !errors.Is(err, client.ErrPermissionDenied) {
		t.Fatalf("runner-b keeping runner-a's lease: %v, want ErrPermissionDenied", err)
	}
	t.Logf("KeepLease of another holder's lease refused after %v: %v", took, err)
	if took >= ttl/2 {
		t.Fatalf("KeepLease took %v to give up: the refusal was retried", took)
	}

	// A running lease: runner-c acquires "rotated"; then its certificate
	// files are replaced by runner-b's and its connections drop. The
	// renewals on the new connections are runner-b's, acting as runner-c.
	dir := t.TempDir()
	src, err := tlsfiles.Load(installIdentity(t, dir, testcluster.Node("runner-c")), tlsfiles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	links := &cutter{}
	c := dial(t, client.Config{Endpoints: cl.Endpoints(), Credentials: src.Credentials(true),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(links.dial)}})
	lease, err := c.Acquire(ctx, "rotated", "runner-c")
	if err != nil {
		t.Fatal(err)
	}
	waitRenewed(t, lease)
	installIdentity(t, dir, testcluster.Node("runner-b"))
	if err := src.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := src.Self(); got != testcluster.Node("runner-b") {
		t.Fatalf("rotated certificate is %v", got)
	}
	dropAt := time.Now()
	links.dropAll()
	var lostAt time.Time
	select {
	case <-lease.Lost():
		lostAt = time.Now()
	case <-time.After(2 * ttl):
		t.Fatalf("lease not lost within %v of renewing as another node (err %v)", 2*ttl, lease.Err())
	}
	deadline := lease.Deadline()
	t.Logf("connections dropped at 0; lease lost at %v (%v), its deadline was at %v", lostAt.Sub(dropAt), lease.Err(), deadline.Sub(dropAt))
	if !errors.Is(lease.Err(), client.ErrPermissionDenied) {
		t.Fatalf("lease ended with %v, want ErrPermissionDenied", lease.Err())
	}
	if !lostAt.Before(deadline) {
		t.Fatalf("lease lost %v after its deadline: the refusal was retried until the deadline", lostAt.Sub(deadline))
	}
	if lease.Context().Err() == nil || !errors.Is(context.Cause(lease.Context()), client.ErrPermissionDenied) {
		t.Fatalf("lease context: %v (cause %v)", lease.Context().Err(), context.Cause(lease.Context()))
	}
	// runner-a's own lease was never disturbed.
	select {
	case <-a.Lost():
		t.Fatalf("runner-a's lease lost: %v", a.Err())
	default:
	}
}
