package accesstest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/internal/testcluster"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// converged waits until every running server reports the same applied
// index and state hash, and returns the hash.
func converged(t *testing.T, c *testcluster.Cluster) string {
	t.Helper()
	return convergedWith(t, c, c.Dial(testcluster.Reader))
}

// convergedWith is converged, asking through cl.
func convergedWith(t *testing.T, c *testcluster.Cluster, cl *client.Client) string {
	t.Helper()
	return c.WithT(t).WaitConverged(cl, 20*time.Second)
}

// stub connects the generated stubs to one server as id.
func stub(t *testing.T, c *testcluster.Cluster, addr string, id identity.Identity) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, c.DialOption(id))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantDenied asserts a PermissionDenied from the authorization table.
func wantDenied(t *testing.T, what string, err error) {
	t.Helper()
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("%s: got %v, want PermissionDenied", what, err)
		return
	}
	if !strings.Contains(status.Convert(err).Message(), "permission denied") {
		t.Errorf("%s: message %q", what, status.Convert(err).Message())
	}
}

func mustOK(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}
