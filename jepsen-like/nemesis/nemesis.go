// Package nemesis injects the faults of a fault-injection run into a
// cluster of real authorityd processes whose raft links all pass through
// per-link proxies (Network), and into lease-holder agent processes. Every
// fault records a nemesis start and stop in the history. The cluster runs
// on mutual TLS: the nemesis reads status as testcluster.Reader, asks for
// snapshots and arms failpoints (https) as testcluster.Operator, and the
// hostile renewer dials with a node certificate of its own name.
package nemesis

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/failpoint"
	"github.com/aerodb/authority/internal/testcluster"
	"github.com/aerodb/authority/jepsen-like/history"
	"github.com/aerodb/authority/jepsen-like/proxy"
	"google.golang.org/grpc"
)

// Network is one proxy per directed raft link: Links[i][j] carries server
// i's raft traffic to server j; one per directed forwarding link:
// Forward[i][j] carries the API calls server i forwards to server j when j
// leads; and one proxy per client link:
// Clients[c][j] carries client c's gRPC traffic to server j (the workload
// and each agent are separate clients, so one of them can be cut off).
type Network struct {
	Links   map[string]map[string]*proxy.Proxy
	Forward map[string]map[string]*proxy.Proxy

	t       testing.TB
	servers []*testcluster.Server
	mu      sync.Mutex
	Clients map[string]map[string]*proxy.Proxy
}

// ClientEndpoints returns client's gRPC endpoints, one proxy per server
// (created on first use; servers keep their addresses across restarts).
func (n *Network) ClientEndpoints(client string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.Clients[client] == nil {
		n.Clients[client] = map[string]*proxy.Proxy{}
		for _, s := range n.servers {
			p, err := proxy.Listen(client+"->"+s.ID, s.GRPCAddr)
			if err != nil {
				n.t.Fatal(err)
			}
			n.t.Cleanup(p.Close)
			n.Clients[client][s.ID] = p
		}
	}
	var out []string
	for _, s := range n.servers {
		out = append(out, n.Clients[client][s.ID].Addr())
	}
	return out
}

// IsolateClient sets every link of client to mode.
func (n *Network) IsolateClient(client string, mode proxy.Mode) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.Clients[client] {
		p.SetMode(mode)
	}
}

// Proxied starts a cluster of n servers, then restarts every server with
// its raft traffic and its forwarded API calls routed through a proxy per
// directed link (AUTHORITYD_RAFT_ROUTE, AUTHORITYD_FORWARD_ROUTE), so
// partitions need no root and no server-to-server path bypasses them. serverEnv is added
// to every server's environment (e.g. a test clock rate).
func Proxied(t testing.TB, n int, serverEnv []string, extraArgs ...string) (*testcluster.Cluster, *Network) {
	t.Helper()
	c := testcluster.StartStablePorts(t, n, extraArgs...)
	net := &Network{Links: map[string]map[string]*proxy.Proxy{}, Forward: map[string]map[string]*proxy.Proxy{}, t: t, servers: c.Servers,
		Clients: map[string]map[string]*proxy.Proxy{}}
	listen := func(name, target string) *proxy.Proxy {
		p, err := proxy.Listen(name, target)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		return p
	}
	if c.Env == nil {
		c.Env = map[string][]string{}
	}
	for _, a := range c.Servers {
		net.Links[a.ID] = map[string]*proxy.Proxy{}
		net.Forward[a.ID] = map[string]*proxy.Proxy{}
		routes := []string{a.ID + "=" + a.RaftAddr}
		var forward []string
		for _, b := range c.Servers {
			if a == b {
				continue
			}
			p := listen(a.ID+"->"+b.ID, b.RaftAddr)
			net.Links[a.ID][b.ID] = p
			routes = append(routes, b.ID+"="+p.Addr())
			f := listen(a.ID+"=>"+b.ID, b.GRPCAddr)
			net.Forward[a.ID][b.ID] = f
			forward = append(forward, b.ID+"="+f.Addr())
		}
		c.Env[a.ID] = append(c.Env[a.ID], "AUTHORITYD_RAFT_ROUTE="+strings.Join(routes, ","),
			"AUTHORITYD_FORWARD_ROUTE="+strings.Join(forward, ","))
		c.Env[a.ID] = append(c.Env[a.ID], serverEnv...)
	}
	for _, s := range c.Servers {
		c.Stop(s)
	}
	for _, s := range c.Servers {
		c.Restart(s)
	}
	c.WaitLeader()
	return c, net
}

// Isolate holds every link between the servers of side a and those not in
// it (both directions).
func (n *Network) Isolate(a []string, mode proxy.Mode) {
	in := map[string]bool{}
	for _, id := range a {
		in[id] = true
	}
	for _, links := range []map[string]map[string]*proxy.Proxy{n.Links, n.Forward} {
		for from, m := range links {
			for to, p := range m {
				if in[from] != in[to] {
					p.SetMode(mode)
				}
			}
		}
	}
}

// ForwardAccepts counts the connections the forwarding proxies accepted
// (proof that forwarded calls took the proxied path).
func (n *Network) ForwardAccepts() int {
	total := 0
	for _, m := range n.Forward {
		for _, p := range m {
			total += p.AcceptCount()
		}
	}
	return total
}

// Heal makes every link pass, raft and client links alike.
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, links := range []map[string]map[string]*proxy.Proxy{n.Links, n.Forward, n.Clients} {
		for _, m := range links {
			for _, p := range m {
				p.SetMode(proxy.Pass)
				p.SetDelay(0)
			}
		}
	}
}

// Agent is a lease-holder process (cmd/jepsen-agent).
type Agent struct {
	Holder, Domain, HistoryPath string
	Process                     int
	cmd                         *exec.Cmd
	done                        chan struct{}
}

// StartAgent launches an agent process. extraArgs carry its TLS flags
// (AgentTLSArgs) and any others.
func StartAgent(t testing.TB, bin string, endpoints []string, domain, holder string, process int, fencedURL, dir string, extraArgs ...string) *Agent {
	t.Helper()
	a := &Agent{Holder: holder, Domain: domain, Process: process, HistoryPath: filepath.Join(dir, "agent-"+holder+".jsonl")}
	logf, err := os.Create(filepath.Join(dir, "agent-"+holder+".log"))
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--endpoints", strings.Join(endpoints, ","), "--domain", domain,
		"--holder", holder, "--process", fmt.Sprint(process), "--fenced", fencedURL, "--history", a.HistoryPath}
	a.cmd = exec.Command(filepath.Join(bin, "jepsen-agent"), append(args, extraArgs...)...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a.done = make(chan struct{})
	go func() { a.cmd.Wait(); logf.Close(); close(a.done) }()
	t.Cleanup(func() { a.Stop() })
	return a
}

// AgentTLSArgs are the flags that make an agent dial cl's servers as
// node:<holder> (--insecure for an insecure cluster).
func AgentTLSArgs(t testing.TB, cl *testcluster.Cluster, holder string) []string {
	t.Helper()
	if cl.Insecure() {
		return []string{"--insecure"}
	}
	f := testcluster.Files(t, testcluster.Node(holder))
	return []string{"--cacert", f.CA, "--cert", f.Cert, "--key", f.Key}
}

// Pause and Resume send SIGSTOP / SIGCONT.
func (a *Agent) Pause()  { a.cmd.Process.Signal(syscall.SIGSTOP) }
func (a *Agent) Resume() { a.cmd.Process.Signal(syscall.SIGCONT) }

// Stop ends the agent with SIGTERM (it records its last belief and flushes
// its history), SIGKILL after 5 s.
func (a *Agent) Stop() {
	select {
	case <-a.done:
		return
	default:
	}
	a.cmd.Process.Signal(syscall.SIGCONT)
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(5 * time.Second):
		a.cmd.Process.Kill()
		<-a.done
	}
}

// Env is what faults act on.
type Env struct {
	T       testing.TB
	Cluster *testcluster.Cluster
	Net     *Network
	H       *history.Writer
	Rng     *rand.Rand
	Agents  []*Agent
	// Armed lists the failpoints armed (for checker.Input).
	Armed []string
	// FaultNodes lists servers killed by failpoints (to read their hits).
	FaultNodes []*testcluster.Server
	// Log receives one line per fault action.
	Log func(format string, args ...any)
	// Counters are the faults' own proof that they happened (e.g.
	// slow-disk hits), copied into the run's result.
	Counters map[string]int

	// mu serializes process control (testcluster's Server is not safe for
	// concurrent Kill/Restart/Running), so faults may overlap.
	mu sync.Mutex

	// The nemesis's own credentials (loaded on first use).
	credsOnce        sync.Once
	reader, operator grpc.DialOption
	https            *http.Client
}

// creds loads the nemesis's credentials once: reads as testcluster.Reader,
// snapshots and failpoints as testcluster.Operator.
func (e *Env) creds() {
	e.credsOnce.Do(func() {
		e.reader = e.Cluster.DialOption(testcluster.Reader)
		e.operator = e.Cluster.DialOption(testcluster.Operator)
		e.https = e.Cluster.HTTPClient(testcluster.Operator)
	})
}

func (e *Env) running(s *testcluster.Server) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return s.Running()
}

func (e *Env) kill(s *testcluster.Server) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.Cluster.Kill(s)
}

func (e *Env) restart(s *testcluster.Server) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !s.Running() {
		e.Cluster.Restart(s)
	}
}

// RestartAll restarts every server that is down.
func (e *Env) RestartAll() {
	for _, s := range e.Cluster.Servers {
		e.restart(s)
	}
}

func (e *Env) start(fault, info string) {
	e.H.Add(history.Record{Kind: history.KindNemesis, Type: history.NemesisStart, Fault: fault, Info: info})
	e.Log("nemesis start %s: %s", fault, info)
}

func (e *Env) stop(fault, info string) {
	e.H.Add(history.Record{Kind: history.KindNemesis, Type: history.NemesisStop, Fault: fault, Info: info})
	e.Log("nemesis stop %s: %s", fault, info)
}

// Leader finds the current leader (asking every running server), or nil.
func (e *Env) Leader() *testcluster.Server {
	for range 100 {
		for _, s := range e.Cluster.Servers {
			if !e.running(s) {
				continue
			}
			st, err := e.status(s.GRPCAddr)
			if err == nil && st.GetRaftState() == "Leader" && st.GetReady() {
				return s
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

func (e *Env) status(addr string) (*pb.StatusResponse, error) {
	e.creds()
	conn, err := grpc.NewClient(addr, e.reader)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	return pbgrpc.NewClusterClient(conn).Status(ctx, &pb.StatusRequest{})
}

func ids(ss []*testcluster.Server) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.ID)
	}
	return out
}

// PartitionLeader holds every link to and from the leader for d.
func (e *Env) PartitionLeader(d time.Duration) {
	l := e.Leader()
	if l == nil {
		e.T.Fatal("no leader to partition")
	}
	e.start("partition-leader", "hold all raft links of "+l.ID)
	e.Net.Isolate([]string{l.ID}, proxy.Hold)
	time.Sleep(d)
	e.Net.Heal()
	e.stop("partition-leader", "healed")
}

// MajorityMinority splits the servers into a random minority (containing
// the leader) and the rest, for d.
func (e *Env) MajorityMinority(d time.Duration) {
	l := e.Leader()
	minority := []string{l.ID}
	n := len(e.Cluster.Servers)
	for _, s := range e.Rng.Perm(n) {
		if len(minority) >= (n-1)/2 {
			break
		}
		if id := e.Cluster.Servers[s].ID; id != l.ID {
			minority = append(minority, id)
		}
	}
	e.start("majority-minority", fmt.Sprintf("minority %v (with leader %s) | rest", minority, l.ID))
	e.Net.Isolate(minority, proxy.Hold)
	time.Sleep(d)
	e.Net.Heal()
	e.stop("majority-minority", "healed")
}

// KillRandom kills a random server (kill -9), waits d, restarts it.
func (e *Env) KillRandom(d time.Duration) {
	s := e.Cluster.Servers[e.Rng.IntN(len(e.Cluster.Servers))]
	e.start("kill-random", "kill -9 "+s.ID)
	e.kill(s)
	time.Sleep(d)
	e.restart(s)
	e.stop("kill-random", "restarted "+s.ID)
}

// KillAll kills every server, waits d, restarts them all.
func (e *Env) KillAll(d time.Duration) {
	e.start("kill-all", "kill -9 "+strings.Join(ids(e.Cluster.Servers), ","))
	for _, s := range e.Cluster.Servers {
		e.kill(s)
	}
	time.Sleep(d)
	e.RestartAll()
	e.stop("kill-all", "restarted all")
}

// PauseLeader SIGSTOPs the leader for d.
func (e *Env) PauseLeader(d time.Duration) {
	l := e.Leader()
	if l == nil {
		e.T.Fatal("no leader to pause")
	}
	e.start("pause-leader", "SIGSTOP "+l.ID)
	e.mu.Lock()
	e.Cluster.Pause(l)
	e.mu.Unlock()
	time.Sleep(d)
	e.mu.Lock()
	e.Cluster.Resume(l)
	e.mu.Unlock()
	e.stop("pause-leader", "SIGCONT "+l.ID)
}

// PauseHolder SIGSTOPs the agent named holder (the one holding its
// domain, as the fenced resource last saw it) for d (past its TTL).
func (e *Env) PauseHolder(holder string, d time.Duration) {
	a := e.Agents[0]
	for _, ag := range e.Agents {
		if ag.Holder == holder {
			a = ag
		}
	}
	// The records name the domain and holder: a holder that stopped
	// renewing (checker.Input.HandoverBound).
	e.H.Add(history.Record{Kind: history.KindNemesis, Type: history.NemesisStart, Fault: "pause-holder", Info: "SIGSTOP agent " + a.Holder,
		Domain: a.Domain, Value: history.Value{Holder: a.Holder}})
	e.Log("nemesis start pause-holder: SIGSTOP agent %s", a.Holder)
	a.Pause()
	time.Sleep(d)
	a.Resume()
	e.stop("pause-holder", "SIGCONT agent "+a.Holder)
}

// FailpointKill arms point=kill on the leader, waits until it died (up
// to d), restarts it.
func (e *Env) FailpointKill(point string, d time.Duration) {
	l := e.Leader()
	if l == nil {
		e.T.Fatal("no leader to arm")
	}
	e.FailpointKillOn(l, "leader", point, d)
}

// FailpointKillOn arms point=kill on server s (in role, for the record),
// makes the point reachable (a snapshot point needs a snapshot: it asks s
// for one), waits until s died (up to d) and restarts it. It reports
// whether the point fired.
func (e *Env) FailpointKillOn(s *testcluster.Server, role, point string, d time.Duration) bool {
	// A server restarted by the previous fault may not listen yet.
	hitsBefore := killLines(s, point)
	err := e.armFailpoint(s, point+"=kill")
	for deadline := time.Now().Add(10 * time.Second); err != nil && time.Now().Before(deadline); {
		if !e.running(s) && killLines(s, point) > hitsBefore {
			// Armed, and it fired before the answer to the arming request
			// got back: the request failed, the fault happened.
			err = nil
			break
		}
		time.Sleep(50 * time.Millisecond)
		err = e.armFailpoint(s, point+"=kill")
	}
	if err != nil {
		// (An overlapping fault may have taken s down: not this fault's
		// doing, and the point does not count as armed.)
		e.Log("could not arm %s on %s: %v", point, s.ID, err)
		return false
	}
	e.mu.Lock()
	e.Armed = append(e.Armed, point)
	e.FaultNodes = append(e.FaultNodes, s)
	e.mu.Unlock()
	e.start("failpoint-kill", fmt.Sprintf("%s=kill on %s %s", point, role, s.ID))
	stop := make(chan struct{})
	if point == failpoint.SnapshotBeforePersist {
		// Ask until it dies inside (a server that restarted moments ago
		// has applied nothing yet: "nothing new to snapshot").
		go func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				e.snapshot(s.GRPCAddr)
				time.Sleep(200 * time.Millisecond)
			}
		}()
	}
	deadline := time.Now().Add(d)
	for e.running(s) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	if e.running(s) {
		e.Log("%s still running after %v: the failpoint did not fire", s.ID, d)
		// Disarm, so the restart does not depend on it.
		e.armFailpoint(s, point+"=off")
		e.stop("failpoint-kill", "not fired")
		return false
	}
	time.Sleep(300 * time.Millisecond)
	e.restart(s)
	e.stop("failpoint-kill", "restarted "+s.ID)
	return true
}

// FailpointBoundaries kills a server at each point in turn: on the leader
// (role "leader") or on a follower (role "follower"), restarting it and
// waiting for a ready leader and a second of traffic before the next point.
func (e *Env) FailpointBoundaries(role string, points []string, perPoint time.Duration) {
	for _, point := range points {
		l := e.Leader()
		if l == nil {
			e.T.Fatal("no leader")
		}
		target := l
		if role == "follower" {
			var fs []*testcluster.Server
			for _, s := range e.Cluster.Servers {
				if s != l && e.running(s) {
					fs = append(fs, s)
				}
			}
			target = fs[e.Rng.IntN(len(fs))]
		}
		e.FailpointKillOn(target, role, point, perPoint)
		// Let the cluster serve again before the next point, so every
		// boundary is crossed by a working cluster, not one that never
		// recovered from the previous kill.
		e.Leader()
		time.Sleep(time.Second)
	}
}

// SlowDisk makes every server sleep delay before each raft log store for
// d (raftlog/before-store=sleep), then disarms it; Counters["slow_disk_hits"]
// counts the log stores that slept.
func (e *Env) SlowDisk(delay, d time.Duration) {
	e.start("slow-disk", fmt.Sprintf("raftlog/before-store=sleep(%dms) on every server", delay.Milliseconds()))
	before := map[string]int{}
	for _, s := range e.Cluster.Servers {
		before[s.ID] = e.failpointHits(s)[failpoint.RaftLogBeforeStore]
		if err := e.armFailpoint(s, fmt.Sprintf("%s=sleep(%d)", failpoint.RaftLogBeforeStore, delay.Milliseconds())); err != nil {
			e.Log("slow disk: %s not armed (down?): %v", s.ID, err) // an overlapping fault's doing
		}
	}
	time.Sleep(d)
	hits := 0
	for _, s := range e.Cluster.Servers {
		e.armFailpoint(s, failpoint.RaftLogBeforeStore+"=off")
		after := e.failpointHits(s)[failpoint.RaftLogBeforeStore]
		if after < before[s.ID] {
			before[s.ID] = 0 // restarted meanwhile: its counters began again
		}
		hits += after - before[s.ID]
	}
	e.count("slow_disk_hits", hits)
	e.stop("slow-disk", fmt.Sprintf("disarmed; %d slow log stores", hits))
}

// PartitionHolder holds every client link of the agent named holder for
// d: it can neither renew nor learn anything, while its writes to the
// fenced resource (not behind a proxy) still arrive.
func (e *Env) PartitionHolder(holder string, d time.Duration) {
	e.start("partition-holder", "hold all client links of agent "+holder)
	e.Net.IsolateClient(holder, proxy.Hold)
	time.Sleep(d)
	e.Net.IsolateClient(holder, proxy.Pass)
	e.stop("partition-holder", "healed "+holder)
}

func (e *Env) count(name string, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.Counters == nil {
		e.Counters = map[string]int{}
	}
	e.Counters[name] += n
}

// Count adds n to a proof counter (for scenarios' own fault functions).
func (e *Env) Count(name string, n int) { e.count(name, n) }

// killLines counts the lines in s's log saying point killed it.
func killLines(s *testcluster.Server, point string) int {
	b, _ := os.ReadFile(s.LogPath)
	return strings.Count(string(b), "failpoint "+point+": SIGKILL")
}

func (e *Env) armFailpoint(s *testcluster.Server, spec string) error {
	e.creds()
	resp, err := e.https.Post(e.Cluster.URL(s, "/debug/failpoints"), "text/plain", strings.NewReader(spec))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	return nil
}

// failpointHits reads s's hit counters (empty when s does not answer).
func (e *Env) failpointHits(s *testcluster.Server) map[string]int {
	var out struct {
		Hits map[string]int `json:"hits"`
	}
	e.creds()
	c := *e.https
	c.Timeout = time.Second
	resp, err := c.Get(e.Cluster.URL(s, "/debug/failpoints"))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(&out)
	return out.Hits
}

// snapshot asks the server at addr for a snapshot (best effort: the
// caller watches the server die, not the reply).
func (e *Env) snapshot(addr string) {
	e.creds()
	conn, err := grpc.NewClient(addr, e.operator)
	if err != nil {
		return
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	pbgrpc.NewClusterClient(conn).Snapshot(ctx, &pb.SnapshotRequest{})
}
