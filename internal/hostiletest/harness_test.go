package hostiletest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/internal/testcluster"
	"google.golang.org/grpc"
)

// leaderOf asks every server for its status and returns the leader they
// all name and its term; the named leader must report itself Leader.
func leaderOf(t *testing.T, c *testcluster.Cluster, rd *client.Client) (*testcluster.Server, uint64) {
	t.Helper()
	var (
		id   string
		term uint64
		self *pb.StatusResponse
	)
	for _, s := range c.Servers {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := rd.Status(ctx, s.GRPCAddr)
		cancel()
		if err != nil {
			t.Fatalf("status of %s: %v", s.ID, err)
		}
		h := st.GetHeader()
		if id == "" {
			id, term = h.GetLeaderId(), h.GetTerm()
		} else if h.GetLeaderId() != id || h.GetTerm() != term {
			t.Fatalf("servers disagree on the leader: %s says %s in term %d, another %s in term %d", s.ID, h.GetLeaderId(), h.GetTerm(), id, term)
		}
		if st.GetNodeId() == h.GetLeaderId() {
			self = st
		}
	}
	if self == nil || self.GetRaftState() != "Leader" || !self.GetReady() {
		t.Fatalf("leader %q does not report itself a ready leader: %v", id, self)
	}
	for _, s := range c.Servers {
		if s.ID == id {
			return s, term
		}
	}
	t.Fatalf("leader %q is not a server of the cluster", id)
	return nil, 0
}

// appliedIndex of one server.
func appliedIndex(t *testing.T, rd *client.Client, s *testcluster.Server) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := rd.Status(ctx, s.GRPCAddr)
	if err != nil {
		t.Fatalf("status of %s: %v", s.ID, err)
	}
	return st.GetAppliedIndex()
}

// memWatch follows a process's resident memory during a row: the kernel's
// high-water mark (VmHWM), reset at the start through clear_refs, and a
// sampled VmRSS when the reset is not permitted; and its open descriptors.
type memWatch struct {
	pid      int
	hwmReset bool
	stop     chan struct{}
	done     chan struct{}
	mu       sync.Mutex
	peakKB   int64
	peakFDs  int
}

func watchMemory(pid int) *memWatch {
	w := &memWatch{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	w.hwmReset = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0) == nil
	go func() {
		defer close(w.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			w.sample()
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

func (w *memWatch) sample() {
	rss := procStatusKB(w.pid, "VmRSS")
	fds := countFDs(w.pid)
	w.mu.Lock()
	w.peakKB = max(w.peakKB, rss)
	w.peakFDs = max(w.peakFDs, fds)
	w.mu.Unlock()
}

// end returns the peak resident set (KiB) and the peak of open descriptors.
func (w *memWatch) end() (peakKB int64, peakFDs int) {
	close(w.stop)
	<-w.done
	w.sample()
	w.mu.Lock()
	defer w.mu.Unlock()
	peakKB = w.peakKB
	if w.hwmReset {
		peakKB = max(peakKB, procStatusKB(w.pid, "VmHWM"))
	}
	return peakKB, w.peakFDs
}

func procStatusKB(pid int, key string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

func countFDs(pid int) int {
	d, err := os.Open(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0
	}
	defer d.Close()
	n := 0
	for {
		names, err := d.Readdirnames(1024)
		n += len(names)
		if err != nil {
			return n
		}
	}
}

// honest is a lease holder that renews every interval on its own
// connection to the leader, with the generated stub, and records every
// renewal's latency and every failure.
type honest struct {
	domain string
	holder string
	epoch  uint64
	ttl    time.Duration

	mu        sync.Mutex
	sent      map[uint64]time.Time
	lat       []time.Duration
	lastOK    time.Time
	maxGap    time.Duration // longest time without a successful renewal
	failures  []string
	responses int
}

// startHonest acquires the lease and renews it until the test ends.
func startHonest(t *testing.T, c *testcluster.Cluster, leader *testcluster.Server, domain, holder string, ttl, every time.Duration) *honest {
	t.Helper()
	conn := dialStub(t, c, leader.GRPCAddr, testcluster.Node(holder))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	res, err := pbgrpc.NewLeasesClient(conn).Acquire(ctx, &pb.AcquireRequest{Domain: domain, Holder: holder})
	cancel()
	if err != nil {
		t.Fatalf("honest acquire: %v", err)
	}
	h := &honest{domain: domain, holder: holder, epoch: res.GetEpoch(), ttl: ttl, sent: map[uint64]time.Time{}, lastOK: time.Now()}
	sctx, stop := context.WithCancel(context.Background())
	stream, err := pbgrpc.NewLeasesClient(conn).KeepAlive(sctx)
	if err != nil {
		t.Fatalf("honest keepalive: %v", err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // sender
		defer wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for seq := uint64(1); ; seq++ {
			h.mu.Lock()
			h.sent[seq] = time.Now()
			h.mu.Unlock()
			if err := stream.Send(&pb.KeepAliveRequest{Domain: domain, Holder: holder, Epoch: h.epoch, Seq: seq}); err != nil {
				if sctx.Err() == nil {
					h.fail("send %d: %v", seq, err)
				}
				return
			}
			select {
			case <-sctx.Done():
				stream.CloseSend()
				return
			case <-tick.C:
			}
		}
	}()
	go func() { // receiver
		defer wg.Done()
		for {
			resp, err := stream.Recv()
			now := time.Now()
			if err != nil {
				if sctx.Err() == nil {
					h.fail("keepalive stream ended: %v", err)
				}
				return
			}
			h.mu.Lock()
			h.responses++
			if sent, ok := h.sent[resp.GetSeq()]; ok {
				delete(h.sent, resp.GetSeq())
				h.lat = append(h.lat, now.Sub(sent))
			}
			if resp.GetErrorReason() != "" || resp.GetRemainingMs() == 0 {
				h.failLocked("renewal %d refused: %s %s", resp.GetSeq(), resp.GetErrorReason(), resp.GetErrorMessage())
			} else {
				h.maxGap = max(h.maxGap, now.Sub(h.lastOK))
				h.lastOK = now
			}
			h.mu.Unlock()
		}
	}()
	t.Cleanup(func() { stop(); wg.Wait() })
	return h
}

func (h *honest) fail(format string, a ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failLocked(format, a...)
}

func (h *honest) failLocked(format string, a ...any) {
	h.failures = append(h.failures, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, a...))
}

// mark starts a row's measurement.
func (h *honest) mark() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lat = nil
	h.maxGap = time.Since(h.lastOK)
	h.responses = 0
}

// rowStats are the honest renewals of one row.
type rowStats struct {
	n                  int
	p50, p99, max, gap time.Duration
	failures           []string
	oldestPending      time.Duration
}

// collect ends a row's measurement.
func (h *honest) collect() rowStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	lat := slices.Clone(h.lat)
	slices.Sort(lat)
	s := rowStats{n: len(lat), failures: slices.Clone(h.failures), gap: max(h.maxGap, time.Since(h.lastOK))}
	if len(lat) > 0 {
		s.p50 = lat[len(lat)/2]
		s.p99 = lat[min(len(lat)-1, len(lat)*99/100)]
		s.max = lat[len(lat)-1]
	}
	for _, sent := range h.sent {
		s.oldestPending = max(s.oldestPending, time.Since(sent))
	}
	return s
}

// dialStub connects the generated stubs to one server as id.
func dialStub(t *testing.T, c *testcluster.Cluster, addr string, id identity.Identity, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{c.DialOption(id)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// cpuTime is a process's user+system CPU time, with its waited-for
// children's ("self" for this process).
func cpuTime(pid string) time.Duration {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	var ticks int64
	for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
		n, _ := strconv.ParseInt(fields[i], 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// stallProbe measures how late a 10 ms ticker fires in this (unniced)
// process: the longest time the machine left a runnable process waiting.
// It tells a leader change caused by the machine's load (other test
// binaries on a small box) from one the attack caused; reported, never
// asserted.
type stallProbe struct {
	stop chan struct{}
	done chan time.Duration
}

func probeStalls() *stallProbe {
	p := &stallProbe{stop: make(chan struct{}), done: make(chan time.Duration, 1)}
	go func() {
		const every = 10 * time.Millisecond
		tick := time.NewTicker(every)
		defer tick.Stop()
		last, worst := time.Now(), time.Duration(0)
		for {
			select {
			case <-p.stop:
				p.done <- worst
				return
			case now := <-tick.C:
				worst = max(worst, time.Since(last)-every)
				last = now
			}
		}
	}()
	return p
}

func (p *stallProbe) end() time.Duration {
	close(p.stop)
	return <-p.done
}
