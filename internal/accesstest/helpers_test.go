package accesstest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
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
	deadline := time.Now().Add(20 * time.Second)
	var last []string
	for time.Now().Before(deadline) {
		last = last[:0]
		hash, index, same := "", uint64(0), true
		for _, s := range c.Servers {
			if !s.Running() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			st, err := cl.Status(ctx, s.GRPCAddr)
			cancel()
			if err != nil {
				same = false
				last = append(last, s.ID+": "+err.Error())
				break
			}
			last = append(last, s.ID+": "+st.GetStateHash()[:12])
			if hash == "" {
				hash, index = st.GetStateHash(), st.GetAppliedIndex()
			} else if st.GetStateHash() != hash || st.GetAppliedIndex() != index {
				same = false
			}
		}
		if same && hash != "" {
			return hash
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("servers did not converge: %v", last)
	return ""
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

func leaderOf(t *testing.T, c *testcluster.Cluster) *testcluster.Server { return c.WaitLeader() }

func mustOK(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func isPermissionDenied(err error) bool { return errors.Is(err, client.ErrPermissionDenied) }

var _ = pb.DomainKind_DOMAIN_KIND_AERODB
