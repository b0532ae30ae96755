package accesstest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/internal/testcluster"
)

// process starts an authorityd outside a testcluster (a server of another
// cluster, a misconfigured one) and returns it with its log path.
func process(t *testing.T, id string, args ...string) (*exec.Cmd, string) {
	t.Helper()
	f := testcluster.Files(t, identity.Identity{Role: identity.Server, Name: id})
	logPath := filepath.Join(t.TempDir(), id+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	all := append([]string{"--node-id", id, "--cacert", f.CA, "--cert", f.Cert, "--key", f.Key, "--log-level", "debug"}, args...)
	cmd := exec.Command(filepath.Join(testcluster.Binaries(t), "authorityd"), all...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
	})
	return cmd, logPath
}

func logHas(path, text string) bool {
	b, _ := os.ReadFile(path)
	return bytes.Contains(b, []byte(text))
}

// waitLog waits until a log file contains text.
func waitLog(t *testing.T, path, text string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(path); bytes.Contains(b, []byte(text)) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	b, _ := os.ReadFile(path)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	t.Fatalf("%s never logged %q; last lines:\n%s", filepath.Base(path), text, b)
}

// TestAnotherClusterCannotTakeOverAServer: a second cluster bootstrapped
// with a peer list naming one of our servers forms without it; our server
// refuses its raft connections (one clear log line), and neither cluster's
// state changes.
func TestAnotherClusterCannotTakeOverAServer(t *testing.T) {
	a := testcluster.Start(t, 3)
	op := a.Dial(testcluster.Operator)
	ctx := ctxT(t)
	for _, name := range []string{"x1", "x2", "x3"} {
		_, err := op.CreateDomain(ctx, name, 2, nil)
		mustOK(t, "create", err)
	}
	before := converged(t, a)
	target := a.Servers[0]
	addr := func() string { return testcluster.FreeAddr(t) }
	b1r, b1g, b2r, b2g := addr(), addr(), addr(), addr()
	peers := "b1," + b1r + "," + b1g + ";b2," + b2r + "," + b2g + ";" + target.ID + "," + target.RaftAddr + "," + target.GRPCAddr
	dir := t.TempDir()
	_, log1 := process(t, "b1", "--data-dir", filepath.Join(dir, "b1"), "--raft-addr", b1r, "--grpc-addr", b1g,
		"--http-addr", testcluster.FreeAddr(t), "--bootstrap", "--peer", peers)
	_, log2 := process(t, "b2", "--data-dir", filepath.Join(dir, "b2"), "--raft-addr", b2r, "--grpc-addr", b2g,
		"--http-addr", testcluster.FreeAddr(t), "--bootstrap", "--peer", peers)
	// The other cluster elects a leader of its own (b1 and b2 are two of
	// its three voters) and tries to replicate to our server: refused.
	// Until our server logs the refusal, its state must not move (without
	// the cluster-id handshake, the other leader overwrites its log here).
	reader := a.Dial(testcluster.Reader)
	deadline := time.Now().Add(30 * time.Second)
	for !logHas(target.LogPath, "presents cluster id") {
		st, err := reader.Status(ctx, target.GRPCAddr)
		if err == nil && st.GetStateHash() != before {
			t.Fatalf("our server %s was taken over: state hash %s → %s, leader %q", target.ID, before, st.GetStateHash(), st.GetHeader().GetLeaderId())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never refused the other cluster", target.ID)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// And the other cluster's leader (b1 or b2) sees why.
	deadline = time.Now().Add(30 * time.Second)
	for !logHas(log1, "belongs to another cluster") && !logHas(log2, "belongs to another cluster") {
		if time.Now().After(deadline) {
			t.Fatal("neither b1 nor b2 logged that our server belongs to another cluster")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if after := converged(t, a); after != before {
		t.Fatalf("our state hash moved: %s → %s", before, after)
	}
	if v := voters(t, op); strings.Join(v, ",") != "s1,s2,s3" {
		t.Fatalf("our voters: %v", v)
	}
	// The other cluster is intact too: it never got our server.
	b, err := client.DialConfig(ctx, client.Config{Endpoints: []string{b1g}, PinEndpoints: true, Credentials: a.Creds(testcluster.Reader)})
	mustOK(t, "dial the other cluster", err)
	defer b.Close()
	st, err := b.Status(ctx, b1g)
	mustOK(t, "status of b1", err)
	if st.GetDomains() != 0 || st.GetClusterId() == "" || st.GetClusterId() == clusterIDOf(t, a) {
		t.Fatalf("other cluster: %d domains, cluster id %q (ours %q)", st.GetDomains(), st.GetClusterId(), clusterIDOf(t, a))
	}
}

func clusterIDOf(t *testing.T, c *testcluster.Cluster) string {
	t.Helper()
	st, err := c.Dial(testcluster.Reader).Status(ctxT(t), c.Servers[0].GRPCAddr)
	mustOK(t, "status", err)
	return st.GetClusterId()
}

// TestDataDirRefusesAnotherNodeID: a data dir opened under another
// --node-id refuses to start, with a clear error.
func TestDataDirRefusesAnotherNodeID(t *testing.T) {
	c := testcluster.Start(t, 3)
	s := c.Servers[2]
	c.Stop(s)
	cmd, logPath := process(t, "s9", "--data-dir", s.DataDir, "--raft-addr", s.RaftAddr, "--grpc-addr", s.GRPCAddr,
		"--http-addr", s.HTTPAddr, "--bootstrap", "--peer", "s9,"+s.RaftAddr+","+s.GRPCAddr)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("authorityd with a wrong --node-id did not exit")
	}
	if cmd.ProcessState.ExitCode() == 0 {
		t.Fatal("exit 0")
	}
	b, _ := os.ReadFile(logPath)
	if !bytes.Contains(b, []byte(`was created for server "s3", not "s9"`)) {
		t.Fatalf("log: %s", b)
	}
	// The real server still starts from it.
	c.Restart(s)
	converged(t, c)
}
