package corruptiontest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/internal/testcluster"
)

// fault is one way a data dir gets damaged. tag names the case: the
// domains created for it carry it, so a damage can find their bytes.
type fault struct {
	name   string
	damage func(t *testing.T, dataDir, tag string)
	file   string // the refusal names this file
	what   string // and this fault
	// mayRecover: the damage can leave the data intact (a truncation that
	// cuts only free pages); the server may then run, at its peers' hash.
	mayRecover bool
	// mayRecoverKilled: the same, but only for a server killed with
	// SIGKILL (the leader's case): a cut wal/ segment whose lost entries
	// were stored after the last durable mark (cluster.walStore, written
	// at most every 250 ms) is what a torn write leaves, and the server
	// catches up from its peers. A server stopped cleanly recorded its
	// mark on the way out and must refuse.
	mayRecoverKilled bool
}

var faults = []fault{
	{"entry byte flipped in a wal segment", func(t *testing.T, dir, tag string) {
		flipAll(t, segmentWith(t, dir, "after2-"+tag), "after2-"+tag)
	}, "wal", "checksum mismatch", false, false},
	{"wal segment cut short", func(t *testing.T, dir, tag string) {
		seg := segmentWith(t, dir, "after2-"+tag)
		b, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(seg, int64(bytes.Index(b, []byte("after2-"+tag)))); err != nil {
			t.Fatal(err)
		}
	}, "wal", "were stored durably", false, true},
	{"raft.db truncated", func(t *testing.T, dir, tag string) {
		p := filepath.Join(dir, "raft.db")
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
	}, "raft.db", "truncated", true, true},
	{"raft.db emptied, snapshots left", func(t *testing.T, dir, tag string) {
		if err := os.Truncate(filepath.Join(dir, "raft.db"), 0); err != nil {
			t.Fatal(err)
		}
	}, "raft.db", "no current term", false, false},
	{"snapshot state byte flipped", func(t *testing.T, dir, tag string) {
		flipAll(t, filepath.Join(newestSnapshot(t, dir), "state.bin"), "before-"+tag)
	}, "state.bin", "does not match the CRC", false, false},
	{"meta.json index edited", func(t *testing.T, dir, tag string) {
		editMetaIndex(t, newestSnapshot(t, dir), 3, false)
	}, "meta.json", "disagree with the snapshot's id", false, false},
	{"meta.json index and id edited", func(t *testing.T, dir, tag string) {
		editMetaIndex(t, newestSnapshot(t, dir), 3, true)
	}, "meta.json", "would be skipped", false, false},
	{"snapshot directory removed", func(t *testing.T, dir, tag string) {
		if err := os.RemoveAll(filepath.Join(dir, "snapshots")); err != nil {
			t.Fatal(err)
		}
	}, "wal", "no snapshot covers", false, false},
}

// TestCorruptionTable: every fault, on a follower (stopped with SIGTERM)
// and on the leader (killed), in one shared cluster. The damaged server
// refuses to start with one line naming the file and the fault; its peers
// keep one state hash; the rebuild procedure brings it back to that hash
// as a voter.
func TestCorruptionTable(t *testing.T) {
	start := time.Now()
	// --trailing-logs 2: a snapshot compacts the log, so the snapshot is
	// the only copy of what came before it.
	c := testcluster.Start(t, 3, "--trailing-logs", "2")
	n := 0
	for _, f := range faults {
		for _, role := range []string{"follower", "leader"} {
			n++
			tag := fmt.Sprintf("c%02d", n)
			t.Run(f.name+"/"+role, func(t *testing.T) {
				// Fresh clients: a connection to a killed server backs off.
				cc := c.WithT(t)
				runCase(t, cc, cc.Dial(testcluster.Operator), cc.Dial(testcluster.Reader), f, role, tag)
			})
		}
	}
	t.Logf("%d cases in %v", n, time.Since(start).Round(time.Millisecond))
}

func runCase(t *testing.T, c *testcluster.Cluster, op, rd *client.Client, f fault, role, tag string) {
	caseStart := time.Now()
	leader := c.WaitLeader()
	target := leader
	if role == "follower" {
		for _, s := range c.Servers {
			if s != leader && s.Running() {
				target = s
				break
			}
		}
	}
	// State the damaged file holds: a domain in the snapshot, three after it
	// in the log.
	createDomain(t, op, "before-"+tag+".example")
	converged(t, c, rd)
	snapshot(t, op, target)
	for i := 1; i <= 3; i++ {
		createDomain(t, op, fmt.Sprintf("after%d-%s.example", i, tag))
	}
	want := converged(t, c, rd)
	if role == "leader" {
		c.Kill(target)
	} else {
		c.Stop(target)
	}
	f.damage(t, target.DataDir, tag)

	logFrom := fileSize(t, target.LogPath)
	c.Restart(target)
	rd = c.Dial(testcluster.Reader) // the old one's connection to target backs off
	if !exitedOrAnswers(t, rd, target, 20*time.Second) {
		// It runs: it must agree with its peers, with every acknowledged
		// domain, and only a fault that may leave its data valid may run.
		got := converged(t, c, rd)
		if !f.mayRecover && !(f.mayRecoverKilled && role == "leader") {
			t.Fatalf("%s started on damaged data (state hash %s, peers had %s)", target.ID, got[:12], want[:12])
		}
		if got != want {
			t.Fatalf("%s recovered to state hash %s, peers had %s", target.ID, got[:12], want[:12])
		}
		t.Logf("%s recovered from its own valid data (the cut-off part held no live bbolt pages, or wal/ entries stored after its last durable mark) and caught up from its peers", target.ID)
		return
	}
	if code := target.ExitCode(); code == 0 {
		t.Fatalf("%s exited 0 on damaged data", target.ID)
	}
	out := readFrom(t, target.LogPath, logFrom)
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "is damaged") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("want one line saying what is damaged, got %d:\n%s", len(lines), out)
	}
	line := lines[0]
	for _, w := range []string{filepath.Join(target.DataDir), f.file, f.what, "docs/INTEGRITY.md", "rebuild this server from its peers"} {
		if !strings.Contains(line, w) {
			t.Fatalf("refusal %q does not name %q", line, w)
		}
	}
	if strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
		t.Fatalf("refusal with a panic:\n%s", out)
	}
	// The peers are unaffected.
	if got := converged(t, c, rd); got != want {
		t.Fatalf("peers' state hash changed: %s, was %s", got[:12], want[:12])
	}
	t.Logf("refused: %s", strings.TrimSpace(line[strings.Index(line, "authorityd:"):]))

	rebuildStart := time.Now()
	rebuild(t, c, op, target)
	rd = c.Dial(testcluster.Reader)
	waitVoter(t, op, target.ID)
	// converged counts only running servers: the rebuilt one must be one.
	converged(t, c, rd)
	if !target.Running() {
		t.Fatalf("rebuilt %s exited", target.ID)
	}
	t.Logf("%s rebuilt from its peers in %v (whole case %v)", target.ID, time.Since(rebuildStart).Round(time.Millisecond), time.Since(caseStart).Round(time.Millisecond))
}

// rebuild is docs/INTEGRITY.md's procedure: remove the server from the
// configuration, wipe its data dir, start it with --join to the others: it
// is added back, receives a snapshot and the log after it, and is promoted
// to voter once caught up.
func rebuild(t *testing.T, c *testcluster.Cluster, op *client.Client, s *testcluster.Server) {
	t.Helper()
	if _, err := op.RemoveServer(ctxT(t), s.ID); err != nil {
		t.Fatalf("member remove %s: %v", s.ID, err)
	}
	if err := os.RemoveAll(s.DataDir); err != nil {
		t.Fatal(err)
	}
	var others []string
	for _, o := range c.Servers {
		if o != s {
			others = append(others, o.GRPCAddr)
		}
	}
	s.NoBootstrap = true
	s.Args = []string{"--join", strings.Join(others, ",")}
	c.Restart(s)
}

// snapshot forces a snapshot on s, retrying while the client's connection
// to a restarted server is still backing off.
func snapshot(t *testing.T, op *client.Client, s *testcluster.Server) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := op.Snapshot(ctx, s.GRPCAddr)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("snapshot on %s: %v", s.ID, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitVoter(t *testing.T, op *client.Client, id string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last []*pb.ServerInfo
	for time.Now().Before(deadline) {
		m, err := op.Members(ctxT(t))
		if err == nil {
			last = m.GetServers()
			for _, s := range last {
				if s.GetId() == id && s.GetSuffrage() == "Voter" {
					return
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s is not a voter again: %v", id, last)
}

func createDomain(t *testing.T, op *client.Client, name string) {
	t.Helper()
	_, err := op.CreateDomain(ctxT(t), name, pb.DomainKind_DOMAIN_KIND_AERODB,
		&pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL, LeaseTtlMs: 2000, ReportMaxAgeMs: 1000, Durability: pb.Durability_DURABILITY_AUTHORITY_GATED})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
}

func converged(t *testing.T, c *testcluster.Cluster, cl *client.Client) string {
	t.Helper()
	return c.WithT(t).WaitConverged(cl, 30*time.Second)
}

// exitedOrAnswers polls until s has exited (true) or answers Status
// (false: it started), failing after d.
func exitedOrAnswers(t *testing.T, cl *client.Client, s *testcluster.Server, d time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for s.Running() {
		if time.Now().After(deadline) {
			t.Fatalf("%s neither exited nor answered within %v", s.ID, d)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_, err := cl.Status(ctx, s.GRPCAddr)
		cancel()
		if err == nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func fileSize(t *testing.T, p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func readFrom(t *testing.T, p string, off int64) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[off:])
}

// newestSnapshot is the snapshot directory raft would restore first.
func newestSnapshot(t *testing.T, dataDir string) string {
	t.Helper()
	dirs, _ := filepath.Glob(filepath.Join(dataDir, "snapshots", "*-*-*"))
	best, bestIdx := "", uint64(0)
	for _, d := range dirs {
		parts := strings.Split(filepath.Base(d), "-")
		if len(parts) != 3 || strings.HasSuffix(d, ".tmp") {
			continue
		}
		if idx, err := strconv.ParseUint(parts[1], 10, 64); err == nil && idx >= bestIdx {
			best, bestIdx = d, idx
		}
	}
	if best == "" {
		t.Fatalf("no snapshot in %s", dataDir)
	}
	return best
}

// segmentWith returns the wal/ segment file holding needle.
func segmentWith(t *testing.T, dataDir, needle string) string {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dataDir, "wal", "*.wal"))
	for _, s := range segs {
		b, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(needle)) {
			return s
		}
	}
	t.Fatalf("%q in none of %d segment files under %s", needle, len(segs), dataDir)
	return ""
}

// flipAll flips one byte inside every copy of needle in file (bbolt may
// keep an old copy of a page in a free page; the live one is among them).
func flipAll(t *testing.T, file, needle string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for off := 0; ; {
		i := bytes.Index(b[off:], []byte(needle))
		if i < 0 {
			break
		}
		b[off+i+2] ^= 0x01
		n++
		off += i + 1
	}
	if n == 0 {
		t.Fatalf("%q not in %s", needle, file)
	}
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// editMetaIndex moves a snapshot's meta.json index forward by delta (its
// CRC covers only state.bin, so it stays valid). With consistent, the id
// and directory name are changed to match, as a careful forger would.
func editMetaIndex(t *testing.T, snap string, delta uint64, consistent bool) {
	t.Helper()
	p := filepath.Join(snap, "meta.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		t.Fatal(err)
	}
	idx, err := strconv.ParseUint(string(m["Index"].(json.Number)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	idx += delta
	m["Index"] = idx
	newDir := snap
	if consistent {
		parts := strings.Split(m["ID"].(string), "-")
		id := fmt.Sprintf("%s-%d-%s", parts[0], idx, parts[2])
		m["ID"] = id
		newDir = filepath.Join(filepath.Dir(snap), id)
	}
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if newDir != snap {
		if err := os.Rename(snap, newDir); err != nil {
			t.Fatal(err)
		}
	}
}
