package compare

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/internal/testcluster"
	"google.golang.org/grpc"
)

// oursArgs are added to internal/testcluster's command line: info logging
// and no event log (testcluster's test defaults are debug logging and an
// event log), and --insecure unless the run is TLS. A TLS run turns off the
// per-identity write rate limit (default 1000/s, a guard against hostile
// clients that etcd does not have, and that an --insecure server does not
// apply): one bench identity writes the 64-writer and 100,000-domain rows.
// testcluster also
// passes --min-lease-ttl 100ms, which the 2 s TTL of the takeover row
// needs (the default minimum is derived from the raft timeouts, 4.4 s).
//
// BENCH_OURS_FLAGS (space-separated) adds flags to every authorityd, for
// before/after runs of a setting (e.g. "--raft-log-store bolt"); the
// settings line of the results names them.
func oursArgs(cfg Config) []string {
	args := []string{"--log-level", "info", "--event-log", ""}
	args = append(strings.Fields(os.Getenv("BENCH_OURS_FLAGS")), args...)
	if cfg.TLS {
		return append([]string{"--write-rate-per-identity", "0"}, args...)
	}
	return append([]string{"--insecure"}, args...)
}

// Ours is three authorityd processes (internal/testcluster) on loopback.
type Ours struct {
	tb  testing.TB
	cfg Config
	C   *testcluster.Cluster
	Op  *client.Client
}

func (o *Ours) Name() string { return "authority" }

func (o *Ours) Settings() []string {
	transport := "plaintext (--insecure)"
	if o.cfg.TLS {
		transport = "mutual TLS (the default; the test CA, an identity per caller)"
	}
	args := oursArgs(o.cfg)
	return []string{"authorityd of this tree (built by internal/testcluster, -tags failpoints: none armed)",
		"3 servers, loopback, " + transport + ", default raft settings, fsync on; flags: " + strings.Join(args[:len(args)-1], " ") + ` "" --min-lease-ttl 100ms`,
		"client: github.com/aerodb/authority/client and the generated gRPC stubs"}
}

func (o *Ours) Run(tb testing.TB, f Family, cfg Config) Values { return f.Ours(tb, o, cfg) }

var binOnce sync.Once

// Setup builds authorityd (once per process) and starts three servers.
// testcluster builds ./cmd/... of the module it runs in, so the build runs
// from the product module's root.
func (o *Ours) Setup(tb testing.TB, cfg Config) {
	o.tb, o.cfg = tb, cfg
	binOnce.Do(func() {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/aerodb/authority").Output()
		if err != nil {
			tb.Fatalf("go list -m github.com/aerodb/authority: %v", err)
		}
		wd, _ := os.Getwd()
		if err := os.Chdir(strings.TrimSpace(string(out))); err != nil {
			tb.Fatal(err)
		}
		defer os.Chdir(wd)
		testcluster.Binaries(tb)
	})
	o.C = testcluster.Start(tb, 3, oursArgs(cfg)...)
	o.Op = o.C.Dial(testcluster.Operator)
}

// Node is a client acting as holder.
func (o *Ours) Node(holder string) *client.Client { return o.C.Dial(testcluster.Node(holder)) }

// Leader waits for an agreed leader and returns it.
func (o *Ours) Leader() *testcluster.Server { return o.C.WaitLeader() }

// LeaderConn is a raw connection to the current leader as id.
func (o *Ours) LeaderConn(id identity.Identity) *grpc.ClientConn {
	conn, err := grpc.NewClient(o.Leader().GRPCAddr, o.C.DialOption(id))
	if err != nil {
		o.tb.Fatal(err)
	}
	o.tb.Cleanup(func() { conn.Close() })
	return conn
}

// appliedIndex reads a server's applied index from its /readyz.
func (o *Ours) appliedIndex(s *testcluster.Server) (uint64, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	body, ok := o.C.Readyz(ctx, s)
	if !ok {
		return 0, false
	}
	for _, f := range strings.Fields(body) {
		if v, found := strings.CutPrefix(f, "applied_index="); found {
			n, err := strconv.ParseUint(v, 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// dirSize is the apparent size of every file under dir.
func dirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// rssMiB is a process's resident set size.
func rssMiB(pid int) float64 {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kb float64
			fmt.Sscan(v, &kb) // "  123456 kB"
			return kb / 1024
		}
	}
	return 0
}
