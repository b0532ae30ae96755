package refnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	rpb "github.com/aerodb/authority/api/refnode/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/internal/testcluster"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Process-test harness: real authorityd processes (testcluster, mutual
// TLS) and real refnode processes built with the failpoints tag. Each
// refnode reaches the authority with its own node:<id> certificate; the
// test acts as the operator (domain setup, promotions, reads). The
// refnodes' own gRPC (put, get, WAL shipping) is plaintext: it is the
// database's traffic, not an authority listener.

const testTTL = time.Second

type proc struct {
	id, addr, dir, logPath string
	env                    []string
	cmd                    *exec.Cmd
	done                   chan struct{}
	conn                   *grpc.ClientConn
}

type refCluster struct {
	t      testing.TB
	bin    string
	auth   *testcluster.Cluster
	ac     *client.Client // the operator
	domain string
	nodes  []*proc
}

// freeAddr is a free loopback port below the ephemeral range
// (testcluster.FreeAddr): a port from :0 lies in the range outgoing
// connections draw their source ports from, and a restarted node could
// find its address taken by one (a CI failure: "address already in use").
func freeAddr(t testing.TB) string { return testcluster.FreeAddr(t) }

// startAuthority starts 3 authority servers and returns them with an
// operator's client.
func startAuthority(t testing.TB) (*testcluster.Cluster, *client.Client) {
	auth := testcluster.Start(t, 3)
	return auth, auth.Dial(testcluster.Operator)
}

// newRefCluster prepares n refnodes n1..nn for domain: the operator (ac)
// creates the domain — authority-gated, named explicitly: the tests built
// on it exercise the gated path (replica-quorum, the default, has its own
// tests through newRefClusterWith) — registers every node at its address
// and assigns n1 as the initial primary (a node's certificate may not);
// env per node id adds to its environment. No refnode starts yet.
func newRefCluster(t testing.TB, auth *testcluster.Cluster, ac *client.Client, domain string, n int, env map[string][]string) *refCluster {
	return newRefClusterWith(t, auth, ac, Setup{Domain: domain, LeaseTTL: testTTL, InitialPrimary: "n1",
		Durability: pb.Durability_DURABILITY_AUTHORITY_GATED}, n, env)
}

// newRefClusterWith provisions setup's domain (its Members are filled in)
// for n refnode processes, not started yet.
func newRefClusterWith(t testing.TB, auth *testcluster.Cluster, ac *client.Client, setup Setup, n int, env map[string][]string) *refCluster {
	domain := setup.Domain
	c := &refCluster{t: t, bin: testcluster.Binaries(t), auth: auth, ac: ac, domain: domain}
	root := t.TempDir()
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("n%d", i)
		p := &proc{id: id, addr: freeAddr(t), dir: filepath.Join(root, id), logPath: filepath.Join(root, id+".log"), env: env[id]}
		c.nodes = append(c.nodes, p)
		setup.Members = append(setup.Members, Member{ID: id, Address: p.addr})
	}
	t.Cleanup(c.stopAll)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Provision(ctx, ac, setup); err != nil {
		t.Fatalf("provisioning %s as the operator: %v", domain, err)
	}
	return c
}

func (c *refCluster) node(id string) *proc {
	for _, p := range c.nodes {
		if p.id == id {
			return p
		}
	}
	c.t.Fatalf("no node %s", id)
	return nil
}

func (c *refCluster) startAll() {
	for _, p := range c.nodes {
		c.start(p)
	}
}

func (c *refCluster) start(p *proc) {
	c.t.Helper()
	if p.running() {
		c.t.Fatalf("%s already running", p.id)
	}
	var peers []string
	for _, q := range c.nodes {
		if q != p {
			peers = append(peers, q.addr)
		}
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	// The node's own certificate (node:<id>): it may act at the authority
	// only as itself.
	tls := testcluster.Files(c.t, testcluster.Node(p.id))
	cmd := exec.Command(filepath.Join(c.bin, "refnode"), "serve", "--authority", strings.Join(c.auth.Endpoints(), ","),
		"--authority-cacert", tls.CA, "--authority-cert", tls.Cert, "--authority-key", tls.Key,
		"--domain", c.domain, "--id", p.id, "--data-dir", p.dir, "--listen", p.addr, "--peers", strings.Join(peers, ","),
		"--poll-interval", "50ms", "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), p.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.t.Fatal(err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(p.done) }()
	if p.conn == nil {
		// Plaintext: the refnode's own listener, not the authority's.
		p.conn, err = grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			c.t.Fatal(err)
		}
	}
}

func (p *proc) running() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func (p *proc) rpc() rpb.RefNodeClient { return rpb.NewRefNodeClient(p.conn) }

func (c *refCluster) kill(p *proc) {
	if !p.running() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGCONT)
	p.cmd.Process.Kill()
	<-p.done
}

func (c *refCluster) pause(p *proc)  { p.cmd.Process.Signal(syscall.SIGSTOP) }
func (c *refCluster) resume(p *proc) { p.cmd.Process.Signal(syscall.SIGCONT) }

func (c *refCluster) stopAll() {
	for _, p := range c.nodes {
		c.kill(p)
		if p.conn != nil {
			p.conn.Close()
		}
	}
	if c.t.Failed() {
		for _, p := range c.nodes {
			if b, err := os.ReadFile(p.logPath); err == nil {
				c.t.Logf("---- %s log (last 3 KiB) ----\n%s", p.id, tailBytes(b, 3072))
			}
		}
	}
}

func tailBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func (c *refCluster) status(p *proc) (*rpb.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return p.rpc().Status(ctx, &rpb.StatusRequest{})
}

// eventually polls cond (bounded) — the only way tests wait.
func eventually(t testing.TB, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for time.Now().Before(deadline) {
		ok, s := cond()
		if ok {
			return
		}
		last = s
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s (last: %s)", d, what, last)
}

func (c *refCluster) waitRole(p *proc, role string, epoch uint64) *rpb.StatusResponse {
	c.t.Helper()
	var st *rpb.StatusResponse
	eventually(c.t, 20*time.Second, fmt.Sprintf("%s %s at epoch %d", p.id, role, epoch), func() (bool, string) {
		s, err := c.status(p)
		if err != nil {
			return false, err.Error()
		}
		st = s
		return s.Role == role && s.Epoch == epoch, fmt.Sprintf("%s epoch %d", s.Role, s.Epoch)
	})
	return st
}

// waitCaughtUp waits until every running replica flushed the primary's
// last lsn and the domain's watermark reached it.
func (c *refCluster) waitCaughtUp(primary *proc) {
	c.t.Helper()
	eventually(c.t, 20*time.Second, "replicas and watermark caught up", func() (bool, string) {
		ps, err := c.status(primary)
		if err != nil {
			return false, err.Error()
		}
		for _, p := range c.nodes {
			if p == primary || !p.running() {
				continue
			}
			s, err := c.status(p)
			if err != nil || s.GetLast().GetLsn() != ps.GetLast().GetLsn() {
				return false, fmt.Sprintf("%s behind: %v %v", p.id, s.GetLast(), err)
			}
		}
		d, err := c.domainState()
		if err != nil || d.GetWatermark().GetLsn() != ps.GetLast().GetLsn() {
			return false, fmt.Sprintf("watermark %v, primary last %d", d.GetWatermark(), ps.GetLast().GetLsn())
		}
		return true, ""
	})
}

func (c *refCluster) domainState() (*pb.Domain, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.ac.GetDomain(ctx, c.domain)
}

// mostAdvanced is the operator's choice: the running replica with the
// highest flushed lsn (then lowest id).
func (c *refCluster) mostAdvanced(exclude *proc) *proc {
	var best *proc
	var bestLSN uint64
	for _, p := range c.nodes {
		if p == exclude || !p.running() {
			continue
		}
		s, err := c.status(p)
		if err != nil || s.Role != RoleReplica {
			continue
		}
		if best == nil || s.GetLast().GetLsn() > bestLSN {
			best, bestLSN = p, s.GetLast().GetLsn()
		}
	}
	if best == nil {
		c.t.Fatal("no replica to promote")
	}
	c.t.Logf("most advanced replica: %s (lsn %d)", best.id, bestLSN)
	return best
}

// transientReasons are denials that clear by themselves once the old
// lease expires and the candidate's next report names the final
// watermark.
var transientReasons = map[string]bool{"PrimaryStillActive": true, "StaleReport": true, "MetadataMissing": true}

// dryRun evaluates a promotion of cand without committing.
func (c *refCluster) dryRun(cand string, epoch uint64) (*pb.AttemptRecord, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.ac.Promote(ctx, &pb.PromotionRequest{Domain: c.domain, Candidate: cand, ExpectedEpoch: &epoch,
		Reason: "test", DryRun: true, InitiatedBy: pb.Initiator_INITIATOR_OPERATOR})
	return resp.GetRecord(), err
}

// settledDenial polls dry runs of cand until the denial is no longer
// transient and returns its reason ("" when allowed).
func (c *refCluster) settledDenial(cand string, epoch uint64) (string, *pb.AttemptRecord) {
	c.t.Helper()
	var reason string
	var rec *pb.AttemptRecord
	eventually(c.t, 20*time.Second, "a settled dry run for "+cand, func() (bool, string) {
		r, err := c.dryRun(cand, epoch)
		var denied *client.DeniedError
		switch {
		case err == nil:
			reason, rec = "", r
			return true, ""
		case errors.As(err, &denied):
			reason, rec = denied.Reason(), r
			return !transientReasons[reason], reason
		}
		return false, err.Error()
	})
	return reason, rec
}

// promote runs an operator promotion: wait until a dry run allows it, then
// commit it with expected_epoch. It returns the committed record.
func (c *refCluster) promote(cand *proc, epoch uint64) *pb.AttemptRecord {
	c.t.Helper()
	if reason, rec := c.settledDenial(cand.id, epoch); reason != "" {
		c.t.Fatalf("promotion of %s denied: %s\n%v", cand.id, reason, rec.GetDecision())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.ac.Promote(ctx, &pb.PromotionRequest{Domain: c.domain, Candidate: cand.id, ExpectedEpoch: &epoch,
		Reason: "operator: primary gone", InitiatedBy: pb.Initiator_INITIATOR_OPERATOR})
	if err != nil || resp.GetRecord().GetEpochAfter() != epoch+1 {
		c.t.Fatalf("promote %s: %v %v", cand.id, resp.GetRecord().GetDecision(), err)
	}
	return resp.GetRecord()
}

// ack is one acknowledged write.
type ack struct {
	key, value string
	epoch      uint64
	commitID   uint64
	lsn        uint64
	sent, at   time.Time
	node       string
}

type ackLog struct {
	mu    sync.Mutex
	acks  []ack
	fails int
}

func (l *ackLog) add(a ack) {
	l.mu.Lock()
	l.acks = append(l.acks, a)
	l.mu.Unlock()
}

func (l *ackLog) all() []ack {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]ack(nil), l.acks...)
}

// runWriters starts k writers putting unique keys to p until ctx ends;
// every acknowledged write is recorded.
func runWriters(ctx context.Context, p *proc, k int, prefix string, log *ackLog) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				key, val := fmt.Sprintf("%s-w%d-%06d", prefix, w, i), fmt.Sprintf("val-%d-%d", w, i)
				sent := time.Now()
				pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				r, err := p.rpc().Put(pctx, &rpb.PutRequest{Key: []byte(key), Value: []byte(val)})
				cancel()
				if err != nil {
					log.mu.Lock()
					log.fails++
					log.mu.Unlock()
					select {
					case <-ctx.Done():
					case <-time.After(10 * time.Millisecond):
					}
					continue
				}
				log.add(ack{key: key, value: val, epoch: r.Epoch, commitID: r.CommitId, lsn: r.Lsn, sent: sent, at: time.Now(), node: p.id})
			}
		}()
	}
	return &wg
}

// checkAcked reads every acknowledged write on p: present, same value,
// same commit id.
func checkAcked(t testing.TB, p *proc, acks []ack) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, a := range acks {
		r, err := p.rpc().Get(ctx, &rpb.GetRequest{Key: []byte(a.key)})
		if err != nil {
			t.Fatalf("get %s on %s: %v", a.key, p.id, err)
		}
		if !r.Found || string(r.Value) != a.value || r.CommitId != a.commitID {
			t.Fatalf("LOST acknowledged write %s=%s (commit %d, acked by %s at epoch %d): %s has found=%v value=%q commit=%d (bound %d)",
				a.key, a.value, a.commitID, a.node, a.epoch, p.id, r.Found, r.Value, r.CommitId, r.ReadBound)
		}
	}
}
