package main

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/internal/testcluster"
)

// Three real authorityd processes: SIGTERM stops each gracefully (exit 0),
// and restarted from their data dirs they serve the same state, identical
// on every server.
func TestGracefulStopAndRestartFromDisk(t *testing.T) {
	c := testcluster.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := client.DialConfig(ctx, c.ClientConfig(testcluster.Operator))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.CreateDomain(ctx, "db1", pb.DomainKind_DOMAIN_KIND_AERODB, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: "db1", MemberId: "n1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.AssignInitial(ctx, "db1", "n1"); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	for _, s := range c.Servers {
		c.Stop(s)
		if code := s.ExitCode(); code != 0 {
			t.Fatalf("%s exited %d on SIGTERM", s.ID, code)
		}
	}
	for _, s := range c.Servers {
		c.Restart(s)
	}
	c.WaitLeader()
	cl, err = client.DialConfig(ctx, c.ClientConfig(testcluster.Reader))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	d, err := cl.GetDomain(ctx, "db1")
	if err != nil || d.Epoch != 1 || d.Holder != "n1" {
		t.Fatalf("after restart: %v %v", d, err)
	}
	// Converged: every server reports the same state hash (poll until they
	// agree; a follower may still be applying when first asked).
	deadline := time.Now().Add(10 * time.Second)
	for {
		hashes := map[string]bool{}
		for _, s := range c.Servers {
			st, err := cl.Status(ctx, s.GRPCAddr)
			if err != nil {
				hashes["error: "+err.Error()] = true
				continue
			}
			hashes[st.StateHash] = true
		}
		if len(hashes) == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("servers disagree on the state hash: %v", hashes)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A fourth server started with --join becomes a voter, receives the state,
// and is known (with its gRPC address) to every server; restarting it
// rejoins idempotently.
func TestJoinAddsAVoter(t *testing.T) {
	c := testcluster.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	cl, err := client.DialConfig(ctx, c.ClientConfig(testcluster.Operator))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := cl.CreateDomain(ctx, "db1", pb.DomainKind_DOMAIN_KIND_LOCK, nil); err != nil {
		t.Fatal(err)
	}
	s4 := c.Join()
	waitFor(t, "s4 to be a voter with its gRPC address", func() bool {
		m, err := cl.Members(ctx)
		if err != nil {
			return false
		}
		for _, s := range m.Servers {
			if s.Id == "s4" && s.Suffrage == "Voter" && s.GrpcAddress == s4.GRPCAddr {
				return len(m.Servers) == 4
			}
		}
		return false
	})
	waitFor(t, "s4 to hold the replicated state", func() bool {
		one, err := client.DialConfig(ctx, client.Config{Endpoints: []string{s4.GRPCAddr}, Credentials: c.Creds(testcluster.Reader)})
		if err != nil {
			return false
		}
		defer one.Close()
		d, err := one.GetDomain(ctx, "db1", client.Stale())
		return err == nil && d.Name == "db1"
	})
	c.Kill(s4)
	c.Restart(s4)
	c.WaitLeader()
	m, err := cl.Members(ctx)
	if err != nil || len(m.Servers) != 4 {
		t.Fatalf("after s4 restarted: %v %v", m, err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// With a low snapshot threshold raft snapshots and compacts its log on its
// own; every server killed at once then recovers from snapshot + log with
// nothing lost.
func TestAutomaticSnapshotsSurviveKillAll(t *testing.T) {
	c := testcluster.Start(t, 3, "--snapshot-threshold", "8", "--snapshot-interval", "100ms", "--trailing-logs", "2")
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	cl, err := client.DialConfig(ctx, c.ClientConfig(testcluster.Operator))
	if err != nil {
		t.Fatal(err)
	}
	const n = 40
	for i := range n {
		if _, err := cl.CreateDomain(ctx, fmt.Sprintf("lock-%02d", i), pb.DomainKind_DOMAIN_KIND_LOCK, nil); err != nil {
			t.Fatal(err)
		}
	}
	cl.Close()
	waitFor(t, "every server to take a snapshot", func() bool {
		for _, s := range c.Servers {
			snaps, _ := filepath.Glob(filepath.Join(s.DataDir, "snapshots", "*", "state.bin"))
			if len(snaps) == 0 {
				return false
			}
		}
		return true
	})
	for _, s := range c.Servers {
		c.Kill(s)
	}
	for _, s := range c.Servers {
		c.Restart(s)
	}
	c.WaitLeader()
	cl, err = client.DialConfig(ctx, c.ClientConfig(testcluster.Reader))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	waitFor(t, "all domains on every server", func() bool {
		for _, s := range c.Servers {
			st, err := cl.Status(ctx, s.GRPCAddr)
			if err != nil || st.Domains != n {
				return false
			}
		}
		return true
	})
}
