package testcluster

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/pki"
	"github.com/aerodb/authority/tlsfiles"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Identities the process tests use.
var (
	// Operator administers domains, promotions and membership.
	Operator = identity.Identity{Role: identity.Operator, Name: "admin"}
	// Reader reads (status page, metrics, reads, watch).
	Reader = identity.Identity{Role: identity.Reader, Name: "viewer"}
)

// Node is the identity of a database node (or any lease holder) that acts
// as holder / member id.
func Node(id string) identity.Identity { return identity.Identity{Role: identity.Node, Name: id} }

// One CA per test process, and a certificate per identity, issued on
// first use into the binaries' directory (removed with it).
var (
	pkiMu    sync.Mutex
	pkiCA    *pki.CA
	pkiDir   string
	pkiFiles = map[identity.Identity]tlsfiles.Files{}
)

// Files returns the CA bundle, certificate and key of an identity, issued
// by the test process's CA.
func Files(t testing.TB, id identity.Identity) tlsfiles.Files {
	t.Helper()
	dir := filepath.Join(Binaries(t), "pki")
	pkiMu.Lock()
	defer pkiMu.Unlock()
	if f, ok := pkiFiles[id]; ok {
		return f
	}
	if pkiCA == nil {
		ca, err := pki.NewCA("authority test CA", 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := ca.Write(dir); err != nil {
			t.Fatal(err)
		}
		pkiCA, pkiDir = ca, dir
	}
	cert, key, err := pkiCA.WriteLeaf(pkiDir, pki.LeafOptions{Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	f := tlsfiles.Files{CA: filepath.Join(pkiDir, pki.CACertFile), Cert: cert, Key: key}
	pkiFiles[id] = f
	return f
}

// CA is the test process's CA (to issue special certificates: expired,
// other trust domains).
func CA(t testing.TB) *pki.CA {
	t.Helper()
	Files(t, Reader)
	pkiMu.Lock()
	defer pkiMu.Unlock()
	return pkiCA
}

// Insecure reports whether the cluster runs --insecure (no TLS).
func (c *Cluster) Insecure() bool { return slices.Contains(c.ExtraArgs, "--insecure") }

// Creds are gRPC client credentials for an identity (nil for an insecure
// cluster).
func (c *Cluster) Creds(id identity.Identity) credentials.TransportCredentials {
	c.t.Helper()
	if c.Insecure() {
		return nil
	}
	return CredsFor(c.t, id)
}

// CredsFor are gRPC client credentials for an identity of the test CA.
func CredsFor(t testing.TB, id identity.Identity) credentials.TransportCredentials {
	t.Helper()
	return Source(t, id).Credentials(true)
}

// Source loads an identity's certificate files.
func Source(t testing.TB, id identity.Identity) *tlsfiles.Source {
	t.Helper()
	src, err := tlsfiles.Load(Files(t, id), tlsfiles.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// DialOption is the grpc transport credentials option for id (plaintext
// for an insecure cluster), for tests that use the generated stubs.
func (c *Cluster) DialOption(id identity.Identity) grpc.DialOption {
	c.t.Helper()
	if c.Insecure() {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	return grpc.WithTransportCredentials(CredsFor(c.t, id))
}

// ClientConfig is a client.Config for the cluster's endpoints as id.
func (c *Cluster) ClientConfig(id identity.Identity) client.Config {
	return client.Config{Endpoints: c.Endpoints(), Credentials: c.Creds(id)}
}

// Dial connects a client as id, closed when the test ends.
func (c *Cluster) Dial(id identity.Identity) *client.Client {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl, err := client.DialConfig(ctx, c.ClientConfig(id))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// HTTPClient reaches the servers' HTTP port as id.
func (c *Cluster) HTTPClient(id identity.Identity) *http.Client {
	c.t.Helper()
	if c.Insecure() {
		return &http.Client{Timeout: 10 * time.Second}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: Source(c.t, id).ClientConfig("127.0.0.1")}}
}

// URL of a path on a server's HTTP port (https unless insecure).
func (c *Cluster) URL(s *Server, path string) string {
	if c.Insecure() {
		return "http://" + s.HTTPAddr + path
	}
	return "https://" + s.HTTPAddr + path
}

// CtlEnv is the environment that makes authorityctl talk to this cluster
// as id (AUTHORITY_ENDPOINTS and the certificate files).
func (c *Cluster) CtlEnv(id identity.Identity) []string {
	c.t.Helper()
	env := []string{"AUTHORITY_ENDPOINTS=" + joinComma(c.Endpoints())}
	if c.Insecure() {
		return append(env, "AUTHORITY_INSECURE=true")
	}
	f := Files(c.t, id)
	return append(env, "AUTHORITY_CACERT="+f.CA, "AUTHORITY_CERT="+f.Cert, "AUTHORITY_KEY="+f.Key)
}

func joinComma(v []string) string {
	out := ""
	for i, s := range v {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return out
}

// serverTLSArgs are the certificate flags of a server (none when
// insecure).
func (c *Cluster) serverTLSArgs(s *Server) []string {
	if c.Insecure() {
		return nil
	}
	f := Files(c.t, identity.Identity{Role: identity.Server, Name: s.ID})
	if s.TLS != nil {
		f = *s.TLS
	}
	return []string{"--cacert", f.CA, "--cert", f.Cert, "--key", f.Key}
}

// WaitConverged waits (up to within) until every running server reports
// the same applied index and state hash through cl, and returns the hash.
func (c *Cluster) WaitConverged(cl *client.Client, within time.Duration) string {
	c.t.Helper()
	deadline := time.Now().Add(within)
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
			last = append(last, fmt.Sprintf("%s: %d %.12s", s.ID, st.GetAppliedIndex(), st.GetStateHash()))
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
	c.t.Fatalf("servers did not converge: %v", last)
	return ""
}
