// Package catchupbench measures a follower's restart → caught-up time the
// way bench/compare's scale row does (SIGTERM a follower, 1% more writes,
// restart, poll its /readyz applied index until it reaches the leader's),
// and prints the restarted follower's log lines with their times since
// the restart. A benchmark only (make test does not run it):
//
//	go test -run '^$' -bench FollowerCatchup -benchtime=1x ./internal/catchupbench -args -domains=100000 -cpuprofile=/tmp/f.prof
package catchupbench

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/internal/testcluster"
)

var (
	domains    = flag.Int("domains", 10000, "lock domains created before the follower stops")
	writers    = flag.Int("writers", 64, "concurrent writers")
	cpuProfile = flag.String("cpuprofile", "", "write the restarted follower's CPU profile (its first 8 s) here")
	rounds     = flag.Int("restarts", 2, "follower restarts measured (each after 1% more writes)")
	kill       = flag.Bool("kill", false, "stop the follower with SIGKILL instead of SIGTERM (no snapshot before stopping)")
	extra      = flag.String("server-args", "", "extra authorityd flags, space-separated (e.g. --snapshot-interval 5s)")
)

func BenchmarkFollowerCatchup(b *testing.B) {
	args := []string{"--insecure", "--event-log", ""}
	args = append(args, strings.Fields(*extra)...)
	c := testcluster.Start(b, 3, args...)
	op := c.Dial(testcluster.Operator)
	ctx := context.Background()
	create := func(i int) error {
		_, err := op.CreateDomain(ctx, fmt.Sprintf("k-%06d", i), pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: 60_000})
		return err
	}
	start := time.Now()
	load(b, *writers, 0, *domains, create)
	b.Logf("loaded %d domains in %v", *domains, time.Since(start).Round(time.Millisecond))
	leader := c.WaitLeader()
	if _, err := op.Snapshot(ctx, leader.GRPCAddr); err != nil {
		b.Fatal(err)
	}
	var follower *testcluster.Server
	for _, s := range c.Servers {
		if s != leader {
			follower = s
			break
		}
	}
	next := *domains
	for r := range *rounds {
		logOffset := fileSize(follower.LogPath) // its stop's lines too
		if *kill {
			c.Kill(follower)
		} else {
			c.Stop(follower)
		}
		n := max(*domains/100, 1)
		load(b, *writers, next, next+n, create)
		next += n
		target, ok := applied(c, leader)
		if !ok {
			b.Fatal("leader's /readyz failed")
		}
		if *cpuProfile != "" && r == 0 {
			c.Env = map[string][]string{follower.ID: {"AUTHORITYD_TEST_CPUPROFILE=" + *cpuProfile, "AUTHORITYD_TEST_CPUPROFILE_SECONDS=8"}}
		} else {
			c.Env = nil
		}
		restart := time.Now()
		c.Restart(follower)
		var firstReady time.Duration
		for {
			idx, ok := applied(c, follower)
			if ok && firstReady == 0 {
				firstReady = time.Since(restart)
			}
			if ok && idx >= target {
				break
			}
			if time.Since(restart) > 2*time.Minute {
				b.Fatal("follower did not catch up within 2 min")
			}
			time.Sleep(10 * time.Millisecond)
		}
		took := time.Since(restart)
		b.Logf("restart %d: caught up to %d in %v (first /readyz answer at %v)", r, target, took.Round(time.Millisecond), firstReady.Round(time.Millisecond))
		b.ReportMetric(took.Seconds(), fmt.Sprintf("s/catchup%d", r))
		printLog(b, follower.LogPath, logOffset, restart)
		if *cpuProfile != "" && r == 0 {
			for deadline := time.Now().Add(30 * time.Second); fileSize(*cpuProfile) == 0 && time.Now().Before(deadline); {
				time.Sleep(100 * time.Millisecond) // the server writes it 8 s after its start
			}
		}
	}
}

// applied reads a server's applied index from /readyz.
func applied(c *testcluster.Cluster, s *testcluster.Server) (uint64, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	body, ok := c.Readyz(ctx, s)
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

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// printLog logs the follower's log lines written since offset (at most 80).
func printLog(b *testing.B, path string, offset int64, restart time.Time) {
	f, err := os.Open(path)
	if err != nil {
		b.Log(err)
		return
	}
	defer f.Close()
	f.Seek(offset, 0)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	n := 0
	b.Logf("restart wall time %s", restart.UTC().Format(time.RFC3339Nano))
	for sc.Scan() && n < 80 {
		line := sc.Text()
		if strings.Contains(line, "DEBUG") && (strings.Contains(line, "appendEntries") || strings.Contains(line, "transport")) {
			continue
		}
		b.Log(line)
		n++
	}
}

// load runs write(i) for i in [from, to) on writers goroutines.
func load(b *testing.B, writers, from, to int, write func(i int) error) {
	var next atomic.Int64
	next.Store(int64(from))
	var wg sync.WaitGroup
	var failed atomic.Value
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < to; i = int(next.Add(1) - 1) {
				if err := write(i); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
}
