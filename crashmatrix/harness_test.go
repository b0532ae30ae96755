package crashmatrix_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/internal/replay"
	"github.com/aerodb/authority/internal/testcluster"
	"github.com/aerodb/authority/observability"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Bounds: every wait in this package is bounded by one of these and fails
// the test with context when it runs out.
const (
	rpcTimeout      = 5 * time.Second  // one RPC
	convergeTimeout = 20 * time.Second // all nodes reach the same state hash
	deathTimeout    = 15 * time.Second // an armed kill point fires
	readyTimeout    = 20 * time.Second // a leader is elected and ready
)

var (
	walHash = []byte{0xca, 0xfe, 0x01, 0x00} // the holder's chain hash at lsn 100
	members = []string{"n1", "n2", "n3"}
)

// rig is one 3-process cluster (mutual TLS) plus what the tests learned
// about it: per-server raw connections as the operator (for stale,
// per-node reads and for raw calls whose retries the test controls), an
// operator client for administration, a node:<id> client per member for
// what only the holder itself may do (watermarks, progress reports,
// releases), the highest epoch each domain ever showed on a converged
// node, and the final authority each domain must keep.
type rig struct {
	name  string
	cl    *testcluster.Cluster
	cli   *client.Client              // operator
	conns map[string]*grpc.ClientConn // server id → raw connection as the operator
	nodes map[string]*client.Client   // member id → client as node:<member>
	http  *http.Client                // operator, for /debug/failpoints

	mu      sync.Mutex
	high    map[string]uint64    // domain → highest epoch seen
	expect  map[string]authority // domain → authority that must stand
	asConns map[asKey]*grpc.ClientConn
}

// asKey names a raw connection to one server as one identity.
type asKey struct {
	server string
	id     identity.Identity
}

// authority is a domain's (epoch, holder, released) as every node must show it.
type authority struct {
	Epoch    uint64
	Holder   string
	Released bool
}

func (a authority) String() string {
	return fmt.Sprintf("epoch %d holder %s released %t", a.Epoch, a.Holder, a.Released)
}

func newRig(t *testing.T, name string, args ...string) *rig {
	t.Helper()
	cl := testcluster.StartStablePorts(t, 3, args...)
	r := &rig{name: name, cl: cl, conns: map[string]*grpc.ClientConn{}, nodes: map[string]*client.Client{},
		http: cl.HTTPClient(testcluster.Operator), high: map[string]uint64{}, expect: map[string]authority{},
		asConns: map[asKey]*grpc.ClientConn{}}
	t.Cleanup(func() {
		for _, c := range r.nodes {
			c.Close()
		}
		if r.cli != nil {
			r.cli.Close()
		}
		for _, c := range r.conns {
			c.Close()
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, c := range r.asConns {
			c.Close()
		}
	})
	for _, s := range cl.Servers {
		conn, err := grpc.NewClient(s.GRPCAddr, cl.DialOption(testcluster.Operator))
		if err != nil {
			t.Fatal(err)
		}
		r.conns[s.ID] = conn
	}
	r.cli = r.dial(t, testcluster.Operator)
	for _, m := range members {
		r.nodes[m] = r.dial(t, testcluster.Node(m))
	}
	r.ready(t)
	return r
}

// dial connects a client as id (every server's endpoint, 3 s per attempt).
func (r *rig) dial(t testing.TB, id identity.Identity) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg := r.cl.ClientConfig(id)
	cfg.RequestTimeout = 3 * time.Second
	cli, err := client.DialConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cli
}

// node is the client of member m (node:<m>), which alone may act as m.
func (r *rig) node(m string) *client.Client {
	c, ok := r.nodes[m]
	if !ok {
		panic("crashmatrix: no client for member " + m)
	}
	return c
}

// as is a raw connection to server s as id (for raw holder calls with no
// retries; the operator's raw connections are r.conns).
func (r *rig) as(s *testcluster.Server, id identity.Identity) *grpc.ClientConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := asKey{s.ID, id}
	if c := r.asConns[k]; c != nil {
		return c
	}
	c, err := grpc.NewClient(s.GRPCAddr, r.cl.DialOption(id))
	if err != nil {
		panic(err) // only a malformed target fails here
	}
	r.asConns[k] = c
	return c
}

func ctxT(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func (r *rig) server(id string) *testcluster.Server {
	for _, s := range r.cl.Servers {
		if s.ID == id {
			return s
		}
	}
	return nil
}

func (r *rig) running() []*testcluster.Server {
	var out []*testcluster.Server
	for _, s := range r.cl.Servers {
		if s.Running() {
			out = append(out, s)
		}
	}
	return out
}

// status asks one server for its status (one attempt).
func (r *rig) status(s *testcluster.Server) (*pb.StatusResponse, error) {
	ctx, cancel := ctxT(rpcTimeout)
	defer cancel()
	return pbgrpc.NewClusterClient(r.conns[s.ID]).Status(ctx, &pb.StatusRequest{})
}

// ready waits until the running servers agree on a leader and that leader
// has done its barrier (serves writes), and returns it.
func (r *rig) ready(t testing.TB) *testcluster.Server {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		l := r.cl.WithT(t).WaitLeader()
		if st, err := r.status(l); err == nil && st.Ready {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no ready leader within %v", r.name, readyTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *rig) followers(leader *testcluster.Server) []*testcluster.Server {
	var out []*testcluster.Server
	for _, s := range r.cl.Servers {
		if s != leader && s.Running() {
			out = append(out, s)
		}
	}
	return out
}

// heal restarts every server that is down and waits for a ready leader and
// converged state.
func (r *rig) heal(t testing.TB) {
	t.Helper()
	for _, s := range r.cl.Servers {
		if !s.Running() {
			r.restart(t, s)
		}
	}
	r.ready(t)
	r.converge(t)
}

// restart starts a stopped server from its data dir and waits until it
// serves (its log says so after the restart), failing with its log if it
// exits instead.
func (r *rig) restart(t testing.TB, s *testcluster.Server) {
	t.Helper()
	off := logSize(s)
	r.cl.WithT(t).Restart(s)
	deadline := time.Now().Add(readyTimeout)
	for {
		f, err := os.Open(s.LogPath)
		if err == nil {
			f.Seek(off, io.SeekStart)
			b, _ := io.ReadAll(f)
			f.Close()
			if bytes.Contains(b, []byte("authorityd: serving:")) {
				return
			}
			if !s.Running() {
				t.Fatalf("%s: restarted %s exited with %d:\n%s", r.name, s.ID, s.ExitCode(), tail(b, 2048))
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: restarted %s is not serving after %v", r.name, s.ID, readyTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// converge waits until every server answers with the same state hash and
// commit index (nothing in flight), and returns the hash.
func (r *rig) converge(t testing.TB) string {
	t.Helper()
	deadline := time.Now().Add(convergeTimeout)
	var last string
	for {
		hashes := map[string]string{}
		commits := map[uint64]bool{}
		ok := true
		for _, s := range r.cl.Servers {
			if !s.Running() {
				b, _ := os.ReadFile(s.LogPath)
				t.Fatalf("%s: %s is down (exit code %d); its log ends:\n%s", r.name, s.ID, s.ExitCode(), tail(b, 2048))
			}
			st, err := r.status(s)
			if err != nil {
				ok = false
				last = fmt.Sprintf("%s: %v", s.ID, err)
				break
			}
			hashes[s.ID] = st.StateHash
			commits[st.CommitIndex] = true
		}
		if ok {
			distinct := map[string]bool{}
			for _, h := range hashes {
				distinct[h] = true
			}
			if len(distinct) == 1 && len(commits) == 1 {
				return hashes[r.cl.Servers[0].ID]
			}
			last = fmt.Sprintf("hashes %v commit indexes %v", hashes, commits)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: servers did not converge within %v: %s", r.name, convergeTimeout, last)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// ---- failpoints ----

// arm arms a failpoint spec on a live server through its loopback admin
// endpoint (HTTPS, as the operator).
func (r *rig) arm(t testing.TB, s *testcluster.Server, spec string) {
	t.Helper()
	resp, err := r.http.Post(r.cl.URL(s, "/debug/failpoints"), "text/plain", strings.NewReader(spec))
	if err != nil {
		t.Fatalf("arming %q on %s: %v", spec, s.ID, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("arming %q on %s: %s %s", spec, s.ID, resp.Status, b)
	}
}

// disarm turns a point off on a server if it is still alive (best effort:
// used when a case fails before its point fired).
func (r *rig) disarm(s *testcluster.Server, point string) {
	if !s.Running() {
		return
	}
	resp, err := r.http.Post(r.cl.URL(s, "/debug/failpoints"), "text/plain", strings.NewReader(point+"=off"))
	if err == nil {
		resp.Body.Close()
	}
}

// failpointHits reads a live server's hit counts.
func (r *rig) failpointHits(t testing.TB, s *testcluster.Server) map[string]int {
	t.Helper()
	resp, err := r.http.Get(r.cl.URL(s, "/debug/failpoints"))
	if err != nil {
		t.Fatalf("failpoint hits of %s: %v", s.ID, err)
	}
	defer resp.Body.Close()
	var body struct {
		Hits map[string]int `json:"hits"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("failpoint hits of %s: %v", s.ID, err)
	}
	return body.Hits
}

func logSize(s *testcluster.Server) int64 {
	fi, err := os.Stat(s.LogPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// awaitKilledAt waits (bounded) for s to die, and checks that it died by
// SIGKILL and that its log, after offset, says the point fired. This is
// the proof that the armed point fired (its hit counter died with it).
func (r *rig) awaitKilledAt(t testing.TB, s *testcluster.Server, point string, offset int64) {
	t.Helper()
	deadline := time.Now().Add(deathTimeout)
	for s.Running() {
		if time.Now().After(deadline) {
			hits := r.failpointHits(t, s)
			r.disarm(s, point)
			t.Fatalf("failpoint %s armed on %s did not fire within %v (hits %v)", point, s.ID, deathTimeout, hits)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code := s.ExitCode(); code != -1 {
		t.Fatalf("%s exited with code %d, want death by SIGKILL at %s", s.ID, code, point)
	}
	f, err := os.Open(s.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(f)
	if !bytes.Contains(b, []byte("failpoint "+point+": SIGKILL")) {
		t.Fatalf("%s died but its log does not say failpoint %s fired:\n%s", s.ID, point, tail(b, 2048))
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// ---- errors ----

// reasonOf returns the ErrorInfo reason of a gRPC error ("" when none).
func reasonOf(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.Reason
		}
	}
	return ""
}

// ---- domains and reads ----

// setupDomain creates an aerodb domain with members n1..n3 (as the
// operator), n1 holding epoch 1 with a watermark at lsn 100 (advanced by
// node:n1), then released by n1 (so no lease
// timing is involved: a released holder is inactive by the log's account).
func (r *rig) setupDomain(t testing.TB, dom string, ttl time.Duration, release bool) {
	t.Helper()
	r.setupDomainWith(t, dom, ttl, release, nil)
}

// setupDomainWith is setupDomain with the policy adjusted by mutate first
// (nil: none), e.g. to permit waivers on a domain that is strict by default.
func (r *rig) setupDomainWith(t testing.TB, dom string, ttl time.Duration, release bool, mutate func(*pb.Policy)) {
	t.Helper()
	ctx, cancel := ctxT(30 * time.Second)
	defer cancel()
	policy := &pb.Policy{LeaseTtlMs: uint64(ttl.Milliseconds()), Durability: pb.Durability_DURABILITY_AUTHORITY_GATED}
	if mutate != nil {
		mutate(policy)
	}
	if _, err := r.cli.CreateDomain(ctx, dom, pb.DomainKind_DOMAIN_KIND_AERODB, policy); err != nil {
		t.Fatalf("create %s: %v", dom, err)
	}
	for _, m := range members {
		if _, err := r.cli.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: dom, MemberId: m}); err != nil {
			t.Fatalf("register %s in %s: %v", m, dom, err)
		}
	}
	if _, err := r.cli.AssignInitial(ctx, dom, "n1"); err != nil {
		t.Fatalf("assign %s: %v", dom, err)
	}
	errs, err := r.node("n1").AdvanceWatermark(ctx, []*pb.WatermarkAdvance{{Domain: dom, Epoch: 1, Holder: "n1", Lsn: 100, Hash: walHash, VisibleCommitId: 7}})
	if err := errors.Join(append(errs, err)...); err != nil {
		t.Fatalf("watermark %s: %v", dom, err)
	}
	want := authority{Epoch: 1, Holder: "n1"}
	if release {
		r.release(t, dom, "n1", 1)
		want.Released = true
	}
	r.setExpect(dom, want)
}

// release gives up (holder, epoch) through the log (raw Release as
// node:<holder>, forwarded by any server to the leader).
func (r *rig) release(t testing.TB, dom, holder string, epoch uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := ctxT(rpcTimeout)
		_, err := pbgrpc.NewLeasesClient(r.node(holder).Conn()).Release(ctx, &pb.ReleaseRequest{Domain: dom, Holder: holder, Epoch: epoch})
		cancel()
		if err == nil {
			return
		}
		// Unknown outcome or no leader: read back whether it happened.
		if d, derr := r.cli.GetDomain(context.Background(), dom); derr == nil && d.Released && d.Epoch == epoch && d.Holder == holder {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("release %s by %s at %d: %v", dom, holder, epoch, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// report sends a progress report of member for dom, as node:<member>, to
// the current leader (reports are leader-local soft state: resend after
// every leader change).
// flushed below 100 puts the member behind the watermark.
func (r *rig) report(t testing.TB, dom, member string, epoch, flushed uint64) {
	t.Helper()
	ctx, cancel := ctxT(20 * time.Second)
	defer cancel()
	if _, err := r.node(member).ReportProgress(ctx, dom, &pb.ProgressReport{MemberId: member, Epoch: epoch, FlushedLsn: flushed, FlushedHash: walHash,
		WatermarkLsn: 100, HashAtWatermark: walHash, AppliedCommitId: 7, ReadSafe: true, State: pb.ReplicaState_REPLICA_STATE_STREAMING}); err != nil {
		t.Fatalf("report of %s for %s: %v", member, dom, err)
	}
}

func (r *rig) setExpect(dom string, a authority) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.expect[dom] = a
}

// nodeDomain reads a domain from one server's applied state (stale read,
// never forwarded).
func (r *rig) nodeDomain(t testing.TB, s *testcluster.Server, dom string) *pb.Domain {
	t.Helper()
	ctx, cancel := ctxT(rpcTimeout)
	defer cancel()
	resp, err := pbgrpc.NewDomainsClient(r.conns[s.ID]).GetDomain(ctx, &pb.GetDomainRequest{Name: dom, Read: &pb.ReadOptions{Stale: true}})
	if err != nil {
		t.Fatalf("%s: stale read of %s: %v", s.ID, dom, err)
	}
	return resp.Domain
}

// nodeHistory reads every attempt record of a domain (allowed and kept
// denied ones, all pages) from one server's applied state.
func (r *rig) nodeHistory(t testing.TB, s *testcluster.Server, dom string) []*pb.AttemptRecord {
	t.Helper()
	var out []*pb.AttemptRecord
	for after := uint64(0); ; {
		ctx, cancel := ctxT(rpcTimeout)
		resp, err := pbgrpc.NewPromotionClient(r.conns[s.ID]).History(ctx, &pb.HistoryRequest{Domain: dom, IncludeDenied: true,
			AfterIndex: after, Read: &pb.ReadOptions{Stale: true}})
		cancel()
		if err != nil {
			t.Fatalf("%s: stale history of %s: %v", s.ID, dom, err)
		}
		out = append(out, resp.Records...)
		if !resp.More {
			return out
		}
		after = resp.NextAfterIndex
	}
}

// nodeExplain reads one attempt record from one server's applied state.
func (r *rig) nodeExplain(s *testcluster.Server, dom, id string) (*pb.AttemptRecord, error) {
	ctx, cancel := ctxT(rpcTimeout)
	defer cancel()
	resp, err := pbgrpc.NewPromotionClient(r.conns[s.ID]).Explain(ctx, &pb.ExplainRequest{Domain: dom, RequestId: id, Read: &pb.ReadOptions{Stale: true}})
	if err != nil {
		return nil, err
	}
	return resp.Record, nil
}

// nodeEpochs lists every domain's epoch on one server (stale, all pages).
func (r *rig) nodeEpochs(t testing.TB, s *testcluster.Server) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	after := ""
	for {
		ctx, cancel := ctxT(rpcTimeout)
		resp, err := pbgrpc.NewDomainsClient(r.conns[s.ID]).ListDomains(ctx, &pb.ListDomainsRequest{Read: &pb.ReadOptions{Stale: true}, After: after})
		cancel()
		if err != nil {
			t.Fatalf("%s: list domains: %v", s.ID, err)
		}
		for _, d := range resp.Domains {
			out[d.Name] = d.Epoch
		}
		if resp.NextAfter == "" {
			return out
		}
		after = resp.NextAfter
	}
}

// checkAuthority asserts dom's authority on every server (converged).
func (r *rig) checkAuthority(t testing.TB, dom string, want authority) {
	t.Helper()
	for _, s := range r.cl.Servers {
		d := r.nodeDomain(t, s, dom)
		got := authority{Epoch: d.Epoch, Holder: d.Holder, Released: d.Released}
		if got != want {
			t.Fatalf("%s: domain %s has %v, want %v", s.ID, dom, got, want)
		}
		if len(d.Pending) != 0 {
			t.Fatalf("%s: domain %s still has undecided intents %v", s.ID, dom, d.Pending)
		}
	}
}

// checkExpected asserts every domain's recorded authority on every server.
func (r *rig) checkExpected(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	doms := make([]string, 0, len(r.expect))
	for d := range r.expect {
		doms = append(doms, d)
	}
	r.mu.Unlock()
	sort.Strings(doms)
	for _, d := range doms {
		r.mu.Lock()
		want := r.expect[d]
		r.mu.Unlock()
		r.checkAuthority(t, d, want)
	}
}

// checkEpochsGrew asserts that no server shows any domain at an epoch below
// the highest it ever showed, and records the new highs.
func (r *rig) checkEpochsGrew(t testing.TB) {
	t.Helper()
	r.converge(t) // a lagging follower is not a rollback
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.cl.Servers {
		for dom, e := range r.nodeEpochs(t, s) {
			if e < r.high[dom] {
				t.Fatalf("%s: domain %s rolled back from epoch %d to %d", s.ID, dom, r.high[dom], e)
			}
			r.high[dom] = e
		}
	}
}

// ---- event logs ----

// eventLog reads a server's --event-log file. A SIGKILL can cut the last
// line short and the next run appends after it, so undecodable lines are
// skipped: the sink rewrites every retained event from the start after a
// restart (at least once), so nothing is lost by skipping them.
func eventLog(t testing.TB, s *testcluster.Server) []observability.EventJSON {
	t.Helper()
	f, err := os.Open(s.EventLogPath())
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []observability.EventJSON
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev observability.EventJSON
		if json.Unmarshal(sc.Bytes(), &ev) == nil {
			out = append(out, ev)
		} else if debugEvents {
			t.Logf("%s: undecodable event-log line %.200q", s.ID, sc.Text())
		}
	}
	return out
}

// debugEvents logs the event-log lines a SIGKILL cut short.
var debugEvents = os.Getenv("CRASHMATRIX_DEBUG_EVENTS") != ""

func field(ev observability.EventJSON, key string) string {
	for _, f := range ev.Fields {
		if f.Key == key {
			return f.Value
		}
	}
	return ""
}

// checkEvents merges every server's event log and asserts: an event
// (index, seq) is byte-identical wherever and however often it was written
// (identical committed prefixes, replays after restarts included), and no
// (domain, epoch) ever names two holders (AU-1 / P6-A1).
func (r *rig) checkEvents(t testing.TB) map[string][]observability.EventJSON {
	t.Helper()
	type key struct {
		index uint64
		seq   uint32
	}
	seen := map[key]string{}
	holders := map[string]string{}
	logs := map[string][]observability.EventJSON{}
	for _, s := range r.cl.Servers {
		evs := eventLog(t, s)
		logs[s.ID] = evs
		for _, ev := range evs {
			b, _ := json.Marshal(ev)
			k := key{ev.Index, ev.Seq}
			if prev, ok := seen[k]; ok && prev != string(b) {
				t.Fatalf("event (%d,%d) differs between writes:\n%s\n%s", ev.Index, ev.Seq, prev, b)
			}
			seen[k] = string(b)
			if ev.Domain == "" || ev.Epoch == 0 || ev.Holder == "" {
				continue
			}
			de := fmt.Sprintf("%s@%d", ev.Domain, ev.Epoch)
			if h, ok := holders[de]; ok && h != ev.Holder {
				t.Fatalf("domain %s epoch %d has two holders: %s and %s (event %s at %d)", ev.Domain, ev.Epoch, h, ev.Holder, ev.Type, ev.Index)
			}
			holders[de] = ev.Holder
		}
	}
	return logs
}

// awaitEvent waits until s's event log holds an event of type typ for
// request id in dom, and returns it.
func awaitEvent(t testing.TB, s *testcluster.Server, dom, typ, id string) observability.EventJSON {
	t.Helper()
	deadline := time.Now().Add(convergeTimeout)
	for {
		for _, ev := range eventLog(t, s) {
			if ev.Domain == dom && ev.Type == typ && field(ev, "request_id") == id {
				return ev
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s for %s/%s in its event log", s.ID, typ, dom, id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countEvents counts the distinct events of type typ for request reqID in
// server id's event log.
func countEvents(logs map[string][]observability.EventJSON, id, dom, typ, reqID string) int {
	// The event-log file is at least once across restarts (the sink
	// rewrites every retained event after one), so an event is counted
	// once per (index, seq), however often it was written.
	type key struct {
		index uint64
		seq   uint32
	}
	seen := map[key]bool{}
	for _, ev := range logs[id] {
		if ev.Domain == dom && ev.Type == typ && field(ev, "request_id") == reqID {
			seen[key{ev.Index, ev.Seq}] = true
		}
	}
	return len(seen)
}

// ---- restarts and replay ----

// killAll SIGKILLs every running server at once (signals first, then
// waits), so none of them sees another's death first.
func (r *rig) killAll(t testing.TB) {
	t.Helper()
	for _, s := range r.running() {
		syscallKill(s.Pid())
	}
	for _, s := range r.cl.Servers {
		r.cl.Kill(s)
	}
}

// restartAll kills every server at once, restarts them all from their data
// dirs, and checks that the recorded authority of every domain stands and
// no epoch went back. rounds times.
func (r *rig) restartAll(t testing.TB, rounds int) {
	t.Helper()
	det := proto.MarshalOptions{Deterministic: true}
	encode := func(recs []*pb.AttemptRecord) []byte {
		var out []byte
		for _, rec := range recs {
			b, _ := det.Marshal(rec)
			out = append(out, b...)
		}
		return out
	}
	for range rounds {
		// The state hash itself moves on a restart (the new leader notes its
		// leader change in the log); the records and authorities must not.
		r.converge(t)
		before := encode(r.nodeRecords(t, r.cl.Servers[0]))
		r.killAll(t)
		r.heal(t)
		for _, s := range r.cl.Servers {
			if !bytes.Equal(encode(r.nodeRecords(t, s)), before) {
				t.Fatalf("%s: attempt records changed across a full restart", s.ID)
			}
		}
		r.checkExpected(t)
		r.checkEpochsGrew(t)
	}
}

// nodeRecords collects every attempt record a server stores, through its
// own stale API: GetDomain for the list, Explain for each record.
func (r *rig) nodeRecords(t testing.TB, s *testcluster.Server) []*pb.AttemptRecord {
	t.Helper()
	var out []*pb.AttemptRecord
	doms := make([]string, 0)
	for d := range r.nodeEpochs(t, s) {
		doms = append(doms, d)
	}
	sort.Strings(doms)
	for _, dom := range doms {
		for _, rec := range r.nodeHistory(t, s, dom) {
			ex, err := r.nodeExplain(s, dom, rec.GetRequest().GetRequestId())
			if err != nil {
				t.Fatalf("%s: explain %s/%s: %v", s.ID, dom, rec.GetRequest().GetRequestId(), err)
			}
			if !proto.Equal(ex, rec) {
				t.Fatalf("%s: Explain and GetDomain disagree on %s/%s", s.ID, dom, rec.GetRequest().GetRequestId())
			}
			out = append(out, ex)
		}
	}
	return out
}

// stopAndReplay (acceptance 3) records each server's state hash and every
// stored explanation, stops the cluster with SIGTERM, replays each data
// dir's log from empty (internal/replay) and requires the same hash and
// every record byte for byte (deterministic marshalling and the JSON
// explanation artifact).
func (r *rig) stopAndReplay(t testing.TB) {
	t.Helper()
	r.converge(t)
	hashes := map[string]string{}
	records := map[string][]*pb.AttemptRecord{}
	for _, s := range r.cl.Servers {
		st, err := r.status(s)
		if err != nil {
			t.Fatal(err)
		}
		hashes[s.ID] = st.StateHash
		records[s.ID] = r.nodeRecords(t, s)
	}
	for _, s := range r.cl.Servers {
		r.cl.WithT(t).Stop(s)
		if code := s.ExitCode(); code != 0 {
			t.Fatalf("%s exited with %d on SIGTERM", s.ID, code)
		}
	}
	det := proto.MarshalOptions{Deterministic: true}
	for _, s := range r.cl.Servers {
		res, err := replay.Dir(s.DataDir)
		if err != nil {
			t.Fatalf("%s: %v", s.ID, err)
		}
		if got := hex.EncodeToString(res.StateHash[:]); got != hashes[s.ID] {
			t.Fatalf("%s: replaying %d log entries (log %d..%d, snapshot %d) gives state hash %s, the node reported %s",
				s.ID, res.Applied, res.FirstIndex, res.LastIndex, res.SnapshotIndex, got, hashes[s.ID])
		}
		if res.FromSnapshot() {
			t.Logf("%s: log compacted (first index %d): replay restored snapshot %d first", s.ID, res.FirstIndex, res.SnapshotIndex)
		}
		want := records[s.ID]
		if len(res.Records) != len(want) {
			t.Fatalf("%s: replay has %d attempt records, the node served %d", s.ID, len(res.Records), len(want))
		}
		for i := range want {
			a, _ := det.Marshal(want[i])
			b, _ := det.Marshal(res.Records[i])
			ja, _ := observability.ExplanationJSON(want[i])
			jb, _ := observability.ExplanationJSON(res.Records[i])
			if !proto.Equal(want[i], res.Records[i]) || !bytes.Equal(a, b) || !bytes.Equal(ja, jb) {
				t.Fatalf("%s: record %s/%s differs after replay", s.ID, want[i].GetRequest().GetDomain(), want[i].GetRequest().GetRequestId())
			}
		}
		t.Logf("%s: replayed %d entries (log %d..%d): state hash and %d explanations identical", s.ID, res.Applied,
			res.FirstIndex, res.LastIndex, len(want))
	}
}

func syscallKill(pid int) { _ = syscall.Kill(pid, syscall.SIGKILL) }
