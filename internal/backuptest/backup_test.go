package backuptest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/internal/testcluster"
)

const writers = 3

// ctl runs authorityctl against c as the operator and returns its
// stdout, stderr and exit code.
func ctl(t *testing.T, c *testcluster.Cluster, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(testcluster.Binaries(t), "authorityctl"), args...)
	cmd.Env = append(os.Environ(), c.CtlEnv(testcluster.Operator)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return out.String(), errb.String(), exit.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

var hashLine = regexp.MustCompile(`(?m)^state hash:\s+([0-9a-f]{64})$`)
var indexLine = regexp.MustCompile(`(?m)^last index:\s+([0-9]+)$`)

// TestSaveUnderLoadRestoreIntoNewCluster: three writers create domains on
// a three-server cluster while authorityctl snapshot save runs, and go on
// after it; the backup checks out (snapshot status); three fresh servers
// started with --restore-from and a new cluster token form a new cluster
// whose state hash is the saved one, holding every domain acknowledged
// before the save began and none created after it ended, readable and
// writable; a restarted restored server rejoins (the restore is not
// repeated); a truncated or corrupted backup is refused by snapshot
// status and by authorityd with one line.
func TestSaveUnderLoadRestoreIntoNewCluster(t *testing.T) {
	start := time.Now()
	old := testcluster.Start(t, 3)
	t.Logf("binaries built and first cluster up in %v", time.Since(start).Round(time.Millisecond))
	op := old.Dial(testcluster.Operator)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Writers: each creates w<i>-<n> one after the other and records
	// which it saw acknowledged, when it sent it and when the answer came.
	// A failed create (a leader change on a loaded machine: its outcome
	// may be unknown) is logged and left out of the checks.
	type ack struct {
		name      string
		began, at time.Time
	}
	var mu sync.Mutex
	var acks []ack
	var stop atomic.Bool
	var wg sync.WaitGroup
	var count, failed atomic.Int64
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; !stop.Load() && ctx.Err() == nil; n++ {
				name := fmt.Sprintf("w%d-%d", w, n)
				began := time.Now()
				if _, err := op.CreateDomain(ctx, name, pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: 10_000}); err != nil {
					if ctx.Err() == nil && !stop.Load() {
						t.Logf("writer %d: %s: %v", w, name, err)
						failed.Add(1)
					}
					continue
				}
				mu.Lock()
				acks = append(acks, ack{name, began, time.Now()})
				mu.Unlock()
				count.Add(1)
			}
		}()
	}
	waitFor(t, "writes before the save", func() bool { return count.Load() >= 30 })
	file := filepath.Join(t.TempDir(), "authority.backup")
	saveStart := time.Now()
	out, errOut, code := ctl(t, old, "snapshot", "save", file)
	saveEnd := time.Now()
	if code != 0 {
		t.Fatalf("snapshot save: exit %d\n%s%s", code, out, errOut)
	}
	atSave := count.Load()
	waitFor(t, "writes after the save", func() bool { return count.Load() >= atSave+30 })
	stop.Store(true)
	wg.Wait()
	m := hashLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no state hash in\n%s", out)
	}
	savedHash := m[1]
	t.Logf("saved during %d writes (%d before it returned) in %v:\n%s", count.Load(), atSave, saveEnd.Sub(saveStart).Round(time.Millisecond), out)

	// snapshot status verifies it offline and prints the same hash.
	st, errOut, code := ctl(t, old, "snapshot", "status", file)
	if code != 0 || !strings.Contains(st, savedHash) {
		t.Fatalf("snapshot status: exit %d\n%s%s", code, st, errOut)
	}
	savedIndex := indexLine.FindStringSubmatch(st)[1]

	// Damaged copies: refused by status and by authorityd, one line each.
	good, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	truncated, corrupted := filepath.Join(dir, "truncated.backup"), filepath.Join(dir, "corrupted.backup")
	writeFile(t, truncated, good[:len(good)*2/3])
	bad := bytes.Clone(good)
	bad[len(bad)-100] ^= 0x40
	writeFile(t, corrupted, bad)
	for _, tc := range []struct{ path, want string }{{truncated, "is truncated"}, {corrupted, "does not decode"}} {
		_, errOut, code := ctl(t, old, "snapshot", "status", tc.path)
		if code != 1 || !strings.Contains(errOut, tc.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("status of %s: exit %d, %q; want one line with %q", filepath.Base(tc.path), code, errOut, tc.want)
		}
		line := refusedStart(t, tc.path)
		if !strings.Contains(line, tc.want) || strings.Count(strings.TrimSpace(line), "\n") != 0 {
			t.Errorf("authorityd --restore-from %s: %q; want one line with %q", filepath.Base(tc.path), line, tc.want)
		}
	}
	t.Logf("damaged copies refused at %v", time.Since(start).Round(time.Millisecond))
	old.StopAll()

	// A new cluster from the backup.
	restoreStart := time.Now()
	nc := testcluster.StartWith(t, testcluster.Options{Servers: 3, ExtraArgs: []string{"--restore-from", file, "--cluster-token", "restored"}})
	nop := nc.Dial(testcluster.Operator)
	for _, s := range nc.Servers {
		st, err := nop.Status(ctx, s.GRPCAddr)
		if err != nil {
			t.Fatal(err)
		}
		if st.GetStateHash() != savedHash {
			t.Fatalf("%s after restore: state hash %s; saved %s", s.ID, st.GetStateHash(), savedHash)
		}
	}
	t.Logf("restored cluster serving with the saved hash %.16s (index %s) in %v", savedHash, savedIndex, time.Since(restoreStart).Round(time.Millisecond))
	names, err := nop.ListDomains(ctx)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, d := range names {
		have[d.GetName()] = true
	}
	before, after := 0, 0
	for _, a := range acks {
		switch {
		case a.at.Before(saveStart):
			before++
			if !have[a.name] {
				t.Errorf("%s, acknowledged before the save began, is missing", a.name)
			}
		case a.began.After(saveEnd):
			after++
			if have[a.name] {
				t.Errorf("%s, sent after the save ended, is in the backup", a.name)
			}
		}
	}
	t.Logf("%d domains in the backup: %d acknowledged before the save (all present), %d sent after it (none present); %d creates failed",
		len(have), before, after, failed.Load())
	if before < 30 || after < 20 {
		t.Fatalf("%d writes acknowledged before the save, %d sent after it: too few to tell", before, after)
	}
	d, err := nop.GetDomain(ctx, acks[0].name)
	if err != nil || d.GetName() != acks[0].name {
		t.Fatalf("read %s: %v %v", acks[0].name, d, err)
	}
	if _, err := nop.CreateDomain(ctx, "after-restore", pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: 10_000}); err != nil {
		t.Fatal(err)
	}
	holder := nc.Dial(testcluster.Node("h1"))
	lease, err := holder.Acquire(ctx, acks[1].name, "h1")
	if err != nil {
		t.Fatalf("acquire a restored domain: %v", err)
	}
	if lease.Epoch() == 0 {
		t.Fatal("no epoch")
	}
	if err := lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("checks of the restored cluster done at %v", time.Since(start).Round(time.Millisecond))
	// A restart with the same flags starts from the data dir.
	s := nc.Servers[0]
	nc.Stop(s)
	nc.Restart(s)
	h := nc.WaitConverged(nop, 30*time.Second)
	if h == savedHash {
		t.Fatal("the writes after the restore changed nothing")
	}
	if log, _ := os.ReadFile(s.LogPath); bytes.Count(log, []byte("RESTORED:")) != 1 || !bytes.Contains(log, []byte("already restored from this backup")) {
		t.Fatalf("%s restored %d times", s.ID, bytes.Count(log, []byte("RESTORED:")))
	}
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}

// refusedStart runs authorityd --restore-from path on a fresh data dir and
// returns its stderr's last line; it must exit 1 before serving.
func refusedStart(t *testing.T, path string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := testcluster.Files(t, identity.Identity{Role: identity.Server, Name: "s1"})
	a := testcluster.FreeAddr(t)
	cmd := exec.CommandContext(ctx, filepath.Join(testcluster.Binaries(t), "authorityd"), "--node-id", "s1", "--data-dir", filepath.Join(t.TempDir(), "s1"),
		"--raft-addr", a, "--grpc-addr", testcluster.FreeAddr(t), "--http-addr", testcluster.FreeAddr(t),
		"--bootstrap", "--peer", "s1,"+a+",127.0.0.1:1", "--cluster-token", "other", "--restore-from", path,
		"--cacert", f.CA, "--cert", f.Cert, "--key", f.Key)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("authorityd with %s: %v\n%s", path, err, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
	return lines[len(lines)-1]
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond (bounded: 60 s).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
