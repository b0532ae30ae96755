package accesstest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/internal/testcluster"
	"github.com/aerodb/authority/pki"
	"github.com/aerodb/authority/tlsfiles"
)

// identityFiles is one identity's certificate files in a directory of its
// own, rewritten in place by the rotation.
type identityFiles struct {
	id    identity.Identity
	files tlsfiles.Files
}

func writeIdentity(t *testing.T, ca *pki.CA, bundle []byte, f identityFiles) {
	t.Helper()
	leaf, err := ca.Issue(pki.LeafOptions{Identity: f.id})
	if err != nil {
		t.Fatal(err)
	}
	// Key first, then certificate, then the bundle: a reader that sees a
	// new certificate with the old key fails to load and keeps the old pair.
	replace(t, f.files.Key, leaf.KeyPEM)
	replace(t, f.files.Cert, leaf.CertPEM)
	replace(t, f.files.CA, bundle)
}

func replace(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func newIdentityFiles(t *testing.T, root string, id identity.Identity) identityFiles {
	dir := filepath.Join(root, string(id.Role)+"-"+id.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return identityFiles{id: id, files: tlsfiles.Files{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "tls.crt"),
		Key: filepath.Join(dir, "tls.key")}}
}

// TestCertificateRotationUnderLoad rotates the whole PKI — a new CA,
// reissued server and client certificates, then the old CA dropped from
// every bundle — while a holder renews its lease and advances its
// watermark, without restarting anything. No renewal or advance fails;
// afterwards the old certificates are refused.
func TestCertificateRotationUnderLoad(t *testing.T) {
	root := t.TempDir()
	oldCA, err := pki.NewCA("rotation old CA", time.Hour)
	mustOK(t, "old CA", err)
	newCA, err := pki.NewCA("rotation new CA", time.Hour)
	mustOK(t, "new CA", err)
	oldBundle, newBundle := oldCA.CertPEM(), newCA.CertPEM()
	both := append(append([]byte{}, oldBundle...), newBundle...)

	servers := map[string]identityFiles{}
	for _, id := range []string{"s1", "s2", "s3"} {
		f := newIdentityFiles(t, root, identity.Identity{Role: identity.Server, Name: id})
		writeIdentity(t, oldCA, oldBundle, f)
		servers[id] = f
	}
	holder := newIdentityFiles(t, root, testcluster.Node("n1"))
	writeIdentity(t, oldCA, oldBundle, holder)
	operator := newIdentityFiles(t, root, testcluster.Operator)
	writeIdentity(t, oldCA, oldBundle, operator)
	reader := newIdentityFiles(t, root, testcluster.Reader)
	writeIdentity(t, oldCA, oldBundle, reader)
	oldOperator := newIdentityFiles(t, filepath.Join(root, "kept"), testcluster.Operator)
	for _, p := range []string{operator.files.Cert, operator.files.Key} {
		b, _ := os.ReadFile(p)
		dst := oldOperator.files.Cert
		if p == operator.files.Key {
			dst = oldOperator.files.Key
		}
		os.WriteFile(dst, b, 0o600)
	}

	c := testcluster.StartWith(t, testcluster.Options{Servers: 3, TLS: func(id string) tlsfiles.Files { return servers[id].files },
		ReadyTLS: reader.files})
	ctx := ctxT(t)
	creds := func(f tlsfiles.Files) client.Config {
		src, err := tlsfiles.Load(f, tlsfiles.Options{})
		mustOK(t, "load", err)
		return client.Config{Endpoints: c.Endpoints(), Credentials: src.Credentials(true)}
	}
	op, err := client.DialConfig(ctx, creds(operator.files))
	mustOK(t, "operator", err)
	defer op.Close()
	_, err = op.CreateDomain(ctx, "db", pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: 4000, ReportMaxAgeMs: 30000, MinSyncReplicas: 1})
	mustOK(t, "create", err)
	_, err = op.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: "db", MemberId: "n1", State: pb.MemberState_MEMBER_STATE_ACTIVE})
	mustOK(t, "register", err)
	_, err = op.AssignInitial(ctx, "db", "n1")
	mustOK(t, "assign", err)

	n1, err := client.DialConfig(ctx, creds(holder.files))
	mustOK(t, "holder", err)
	defer n1.Close()
	lease, err := n1.KeepLease(ctx, "db", "n1", 1, 4*time.Second)
	mustOK(t, "lease", err)
	var advanced, failed atomic.Int64
	var hold atomic.Bool // set while the servers' hashes are compared
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for lsn := uint64(1); ; lsn++ {
			select {
			case <-stop:
				return
			default:
			}
			if hold.Load() {
				time.Sleep(10 * time.Millisecond) // pacing, not synchronisation
				lsn--
				continue
			}
			actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			errs, err := n1.AdvanceWatermark(actx, []*pb.WatermarkAdvance{{Domain: "db", Epoch: 1, Holder: "n1", Lsn: lsn,
				Hash: []byte{byte(lsn), byte(lsn >> 8)}, VisibleCommitId: lsn}})
			cancel()
			if err != nil || errs[0] != nil {
				failed.Add(1)
				t.Logf("advance %d: %v %v", lsn, err, errs)
			} else {
				advanced.Add(1)
			}
			time.Sleep(10 * time.Millisecond) // pacing of the load, not synchronisation
		}
	}()
	progress := func(n int64) {
		t.Helper()
		target := advanced.Load() + n
		deadline := time.Now().Add(20 * time.Second)
		for advanced.Load() < target {
			if time.Now().After(deadline) {
				t.Fatalf("advances stalled at %d (failed %d)", advanced.Load(), failed.Load())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	reloads := func(want int) {
		t.Helper()
		for _, s := range c.Servers {
			syscall.Kill(s.Pid(), syscall.SIGHUP)
		}
		for _, s := range c.Servers {
			waitCount(t, s.LogPath, "certificates reloaded", want)
		}
	}
	progress(20)

	// Step 1: every bundle trusts both CAs; every certificate is reissued
	// by the new CA (servers on SIGHUP, the client by watching its files).
	for _, f := range servers {
		writeIdentity(t, newCA, both, f)
	}
	writeIdentity(t, newCA, both, holder)
	writeIdentity(t, newCA, both, operator)
	writeIdentity(t, newCA, both, reader)
	reloads(1)
	progress(20)
	// Step 2: the old CA leaves every bundle.
	for _, f := range servers {
		writeIdentity(t, newCA, newBundle, f)
	}
	writeIdentity(t, newCA, newBundle, holder)
	writeIdentity(t, newCA, newBundle, operator)
	writeIdentity(t, newCA, newBundle, reader)
	reloads(2)
	progress(20)
	// New connections everywhere: a follower restarts (its raft and
	// forwarding connections are new both ways), and leadership moves.
	var follower *testcluster.Server
	for _, s := range c.Servers {
		if s != c.WaitLeader() {
			follower = s
		}
	}
	c.Kill(follower)
	c.Restart(follower)
	op2, err := client.DialConfig(ctx, creds(operator.files))
	mustOK(t, "operator with the new certificate", err)
	defer op2.Close()
	// The restarted follower catches up: compare hashes with the load held
	// (a write every 10 ms never lets three polls agree on a busy machine).
	hold.Store(true)
	convergedWith(t, c, op2)
	hold.Store(false)
	_, err = op2.TransferLeadership(ctx, "")
	mustOK(t, "transfer leadership", err)
	progress(20)
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d watermark advances failed during the rotation (%d succeeded)", n, advanced.Load())
	}
	select {
	case <-lease.Lost():
		t.Fatalf("the lease was lost during the rotation: %v", lease.Err())
	default:
	}
	// The old certificate (kept aside) is refused now.
	oldSrc := tlsfiles.Files{CA: operator.files.CA, Cert: oldOperator.files.Cert, Key: oldOperator.files.Key}
	cfg := creds(oldSrc)
	cfg.DialTimeout = 2 * time.Second
	if cl, err := client.DialConfig(ctx, cfg); err == nil {
		_, err = cl.Members(ctx)
		cl.Close()
		if err == nil {
			t.Fatal("an old-CA certificate was accepted after the rotation")
		}
	}
	t.Logf("rotation: %d advances, 0 failed; lease held throughout", advanced.Load())
}

// waitCount waits until a log holds text at least n times.
func waitCount(t *testing.T, path, text string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(path)
		if strings.Count(string(b), text) >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: fewer than %d %q", filepath.Base(path), n, text)
}
