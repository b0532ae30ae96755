package fsm

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/internal/spillfile"
)

// Benchmarks of the apply path (decoded commands: ApplyCommand, without
// the protobuf decode Apply adds) and of snapshots.

// BenchmarkApplyPromotionAttempt: a denied attempt with a fresh request id
// per iteration, on a domain whose denied ring is full, so every apply also
// evicts the oldest record and its request id.
func BenchmarkApplyPromotionAttempt(b *testing.B) {
	h, attempt := readyToPromote(b)
	attempt.Lease.State = pb.LeaseState_LEASE_STATE_HELD // PrimaryStillActive
	for i := range DeniedHistory {
		a := cloneAttempt(attempt)
		a.Request.RequestId = "fill-" + strconv.Itoa(i)
		h.ok(attemptCmd(a))
	}
	cmd := attemptCmd(attempt)
	req := attempt.Request
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		req.RequestId = "bench-" + strconv.Itoa(i)
		h.index++
		if res := h.f.ApplyCommand(h.index, 1, cmd); res.Err != nil || res.Attempt.Decision.Allowed {
			b.Fatalf("iteration %d: %v", i, res.Err)
		}
	}
}

// BenchmarkApplyPromotionAllowed promotes back and forth between n2 and n3,
// with evidence for the current (holder, epoch) each iteration. Allowed
// records are permanent, so the domain is rebuilt (untimed) now and then.
func BenchmarkApplyPromotionAllowed(b *testing.B) {
	const rebuildEvery = 4096
	var h *harness
	var attempt *pb.PromotionAttempt
	cmd := &pb.Command{}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i%rebuildEvery == 0 {
			b.StopTimer()
			h, attempt = readyToPromote(b)
			// n1 → n2 first, then n2 ↔ n3.
			cmd.Body = &pb.Command_PromotionAttempt{PromotionAttempt: attempt}
			b.StartTimer()
		}
		d, _ := h.f.AuthorityOf("db1")
		cand := "n2"
		if d.Holder == "n2" {
			cand = "n3"
		}
		attempt.Request.RequestId = "p-" + strconv.Itoa(i)
		attempt.Request.Candidate = cand
		attempt.Lease.Holder, attempt.Lease.Epoch = d.Holder, d.Epoch
		attempt.CandidateReport.MemberId, attempt.CandidateReport.Epoch = cand, d.Epoch
		h.index++
		if res := h.f.ApplyCommand(h.index, 1, cmd); res.Err != nil || !res.Attempt.Decision.Allowed {
			b.Fatalf("iteration %d: %v %s", i, res.Err, DescribeAttempt(res.Attempt))
		}
	}
}

// BenchmarkApplyWatermarkAdvance: one advance per entry, lsn increasing.
func BenchmarkApplyWatermarkAdvance(b *testing.B) {
	h, _ := readyToPromote(b)
	adv := wmAdv("db1", "n1", 1, 100, h100, 50)
	cmd := advanceCmd(adv)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		adv.Lsn, adv.VisibleCommitId = uint64(101+i), uint64(51+i)
		h.index++
		if res := h.f.ApplyCommand(h.index, 1, cmd); res.Err != nil {
			b.Fatal(res.Err)
		}
	}
}

// BenchmarkApplyWatermarkBatch64: one entry advancing 64 domains (group
// commit across domains).
func BenchmarkApplyWatermarkBatch64(b *testing.B) {
	h := newHarness(b)
	advs := make([]*pb.WatermarkAdvance, 64)
	for i := range advs {
		name := fmt.Sprintf("db%02d", i)
		h.ok(createDB(name))
		h.ok(registerCmd(name, "n1"))
		h.ok(assignCmd(name, "n1"))
		advs[i] = wmAdv(name, "n1", 1, 0, h100, 0)
	}
	cmd := advanceCmd(advs...)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		for _, a := range advs {
			a.Lsn, a.VisibleCommitId = uint64(1+i), uint64(1+i)
		}
		h.index++
		res := h.f.ApplyCommand(h.index, 1, cmd)
		if w := res.Watermarks[63]; w.Err != nil {
			b.Fatal(w.Err)
		}
	}
}

// BenchmarkSnapshot1000Domains: 1000 aerodb domains, each with three
// members, a watermark, and one allowed and one denied attempt.
func BenchmarkSnapshot1000Domains(b *testing.B) {
	h := newHarness(b)
	for i := range 1000 {
		name := fmt.Sprintf("db%04d", i)
		h.ok(createDB(name))
		for _, m := range []string{"n1", "n2", "n3"} {
			h.ok(registerCmd(name, m))
		}
		h.ok(assignCmd(name, "n1"))
		h.ok(advanceCmd(wmAdv(name, "n1", 1, 100, h100, 50)))
		a := &pb.PromotionAttempt{
			Request:         &pb.PromotionRequest{RequestId: "r1", Domain: name, Candidate: "n2", Reason: "bench"},
			Lease:           leaseObs("n1", 1, pb.LeaseState_LEASE_STATE_HELD),
			CandidateReport: report("n2", 1),
		}
		h.ok(attemptCmd(a))
		a.Request.RequestId = "r2"
		a.Lease.State = pb.LeaseState_LEASE_STATE_EXPIRED
		h.ok(attemptCmd(a))
	}
	snap, err := h.f.Snapshot()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(snap)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := h.f.Snapshot(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLargeState: the state of the integrity issue's sizing question —
// many domains, each with a long attempt history — built by applying real
// entries: per domain three members, an initial holder, a watermark and
// BENCH_ATTEMPTS attempts (half allowed promotions back and forth, half
// denied). BENCH_DOMAINS sets the domain count (default 10,000; the aim is
// stated for 100,000 × 100). The FSM spills its history to files as a
// server's does (BENCH_SPILL=0: all in memory). It reports GetDomain p99,
// heap after build, snapshot size, snapshot and restore time, bytes of
// heap per stored attempt, and the restore, heap and RSS of a fresh
// process that restores the snapshot, as a restarting server does.
func BenchmarkLargeState(b *testing.B) {
	domains := envInt(b, "BENCH_DOMAINS", 10_000)
	attempts := envInt(b, "BENCH_ATTEMPTS", 100)
	h := newHarness(b)
	benchSpill(b, h.f)
	for i := range domains {
		buildHistory(b, h, fmt.Sprintf("db%06d", i), attempts)
	}
	measureState(b, h, "db%06d", domains, attempts)
}

// BenchmarkPlainDomains: the 100,000-keys row of the etcd comparison
// (issue 19) at the FSM's level: BENCH_PLAIN_DOMAINS (default 100,000) lock
// domains, each created and acquired once — no members, no attempts. Same
// metrics as BenchmarkLargeState.
func BenchmarkPlainDomains(b *testing.B) {
	domains := envInt(b, "BENCH_PLAIN_DOMAINS", 100_000)
	h := newHarness(b)
	benchSpill(b, h.f)
	for i := range domains {
		name := fmt.Sprintf("key%06d", i)
		h.ok(createLock(name))
		h.ok(acquireCmd(name, "c1", leaseObs("", 0, pb.LeaseState_LEASE_STATE_UNSPECIFIED), nil))
	}
	measureState(b, h, "key%06d", domains, 0)
}

// measureState reports the sizing metrics of a built state; it consumes h.
func measureState(b *testing.B, h *harness, nameFormat string, domains, attempts int) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	heap := ms.HeapAlloc

	lat := make([]time.Duration, 0, 10_000)
	for i := range 10_000 {
		name := fmt.Sprintf(nameFormat, (i*7919)%domains)
		start := time.Now()
		if _, ok := h.f.Domain(name); !ok {
			b.Fatal(name)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)

	// As the cluster does: capture, stream to a file, restore from it.
	path := filepath.Join(b.TempDir(), "state.bin")
	if keep := os.Getenv("BENCH_KEEP_SNAPSHOT"); keep != "" {
		path = keep // to restore again: BENCH_RESTORE_CHILD=path go test -run TestBenchRestoreChild -v ./fsm
	}
	b.ResetTimer()
	stopProfile := startProfile(b, "snapshot")
	start, cpu := time.Now(), cpuTime(b)
	c, err := h.f.Capture()
	if err != nil {
		b.Fatal(err)
	}
	file, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	size, err := c.WriteTo(file)
	if err == nil {
		err = file.Close()
	}
	if err != nil {
		b.Fatal(err)
	}
	snapTime, snapCPU := time.Since(start), cpuTime(b)-cpu
	stopProfile()
	spilled := h.f.SpillStats()
	buildRSS := procStatusKiB(b, "VmRSS")
	c, h.f = nil, nil
	restart := restoreInChild(b, path) // writes restore.pprof
	b.StopTimer()
	stored := restart.Stored
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1000, "get-p99-µs")
	b.ReportMetric(float64(heap)/(1<<20), "heap-MiB")
	b.ReportMetric(float64(size)/(1<<20), "snapshot-MiB")
	b.ReportMetric(snapTime.Seconds(), "snapshot-s")
	b.ReportMetric(restart.Restore.Seconds(), "restore-s")
	// CPU time (user + system, all threads) says more than wall time on
	// a loaded machine.
	b.ReportMetric(snapCPU.Seconds(), "snapshot-cpu-s")
	b.ReportMetric(restart.RestoreCPU.Seconds(), "restore-cpu-s")
	if stored > 0 {
		b.ReportMetric(float64(heap)/float64(stored), "heap-B/attempt")
	} else {
		b.ReportMetric(float64(heap)/float64(domains), "heap-B/domain")
	}
	b.ReportMetric(float64(spilled.FileBytes)/(1<<20), "spill-MiB")
	b.ReportMetric(float64(buildRSS)/1024, "build-RSS-MiB")
	b.ReportMetric(float64(restart.Heap)/(1<<20), "restart-heap-MiB")
	b.ReportMetric(float64(restart.RSS)/1024, "restart-RSS-MiB")
	b.ReportMetric(float64(restart.PeakRSS)/1024, "restart-peak-RSS-MiB")
	b.Logf("%d domains × %d attempts (%d stored): GetDomain p99 %v, heap %d MiB (spill files %d MiB, %d live), RSS %d MiB; "+
		"snapshot %d MiB in %v (CPU %v); a fresh process restores it in %v (CPU %v): heap %d MiB, RSS %d MiB (peak %d MiB)",
		domains, attempts, stored, lat[len(lat)*99/100], heap>>20, spilled.FileBytes>>20, spilled.LiveBytes>>20, buildRSS>>10,
		size>>20, snapTime, snapCPU, restart.Restore, restart.RestoreCPU, restart.Heap>>20, restart.RSS>>10, restart.PeakRSS>>10)
}

// benchSpill makes the FSM spill as a server's does, unless BENCH_SPILL=0.
func benchSpill(b testing.TB, f *FSM) {
	if os.Getenv("BENCH_SPILL") == "0" {
		return
	}
	dir := b.TempDir()
	f.SetSpill(func() (SpillFile, error) {
		file, err := spillfile.New(dir)
		if err != nil {
			return nil, err
		}
		return file, nil
	})
}

// restartStats is what a fresh process measured restoring a snapshot.
type restartStats struct {
	Restore, RestoreCPU time.Duration
	Heap                uint64
	RSS, PeakRSS        int64 // KiB
	Stored              int
}

// restoreInChild runs this test binary again to restore the snapshot at
// path in a process of its own (TestBenchRestoreChild), as a restarting
// server does: its heap and RSS hold only the restored state.
func restoreInChild(b *testing.B, path string) restartStats {
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchRestoreChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "BENCH_RESTORE_CHILD="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("restore in a child process: %v\n%s", err, out)
	}
	line := ""
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "restart-stats "); ok {
			line = v
		}
	}
	var st restartStats
	if err := json.Unmarshal([]byte(line), &st); err != nil {
		b.Fatalf("restore in a child process printed %q: %v", out, err)
	}
	return st
}

// TestBenchRestoreChild is restoreInChild's child; it does nothing in a
// normal test run.
func TestBenchRestoreChild(t *testing.T) {
	path := os.Getenv("BENCH_RESTORE_CHILD")
	if path == "" {
		return // not a child
	}
	g := New()
	benchSpill(t, g)
	if dir := os.Getenv("BENCH_PROFILE_DIR"); dir != "" {
		file, err := os.Create(filepath.Join(dir, "restore.pprof"))
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(file); err != nil {
			t.Fatal(err)
		}
		defer file.Close()
		defer pprof.StopCPUProfile()
	}
	start := time.Now()
	var before syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	file, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Restore(file); err != nil {
		t.Fatal(err)
	}
	file.Close()
	st := restartStats{Restore: time.Since(start)}
	var after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	st.RestoreCPU = time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st.Heap = ms.HeapAlloc
	st.RSS, st.PeakRSS = procStatusKiB(t, "VmRSS"), procStatusKiB(t, "VmHWM")
	for _, hist := range g.histories {
		st.Stored += hist.allowed.len() + hist.denied.len()
	}
	out, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("restart-stats %s\n", out)
	runtime.KeepAlive(g)
}

// buildHistory creates an aerodb domain and applies n attempts to it: even
// ones allowed promotions between n2 and n3, odd ones denied.
func buildHistory(b testing.TB, h *harness, name string, n int) {
	benchDomain(h, name)
	addAttempts(b, h, name, n)
}

// benchDomain creates an aerodb domain with three members, n1 holding
// epoch 1, and a watermark.
func benchDomain(h *harness, name string) {
	h.ok(createDB(name))
	for _, m := range []string{"n1", "n2", "n3"} {
		h.ok(registerCmd(name, m))
	}
	h.ok(assignCmd(name, "n1"))
	h.ok(advanceCmd(wmAdv(name, "n1", 1, 100, h100, 50)))
}

// addAttempts applies n attempts to a bench domain: even ones allowed
// promotions between n2 and n3, odd ones denied.
func addAttempts(b testing.TB, h *harness, name string, n int) {
	cmd := &pb.Command{}
	for i := range n {
		d, _ := h.f.AuthorityOf(name)
		cand := map[string]string{"n1": "n2", "n2": "n3", "n3": "n2"}[d.Holder]
		a := &pb.PromotionAttempt{
			Request:         &pb.PromotionRequest{RequestId: "r" + strconv.Itoa(i), Domain: name, Candidate: cand, Reason: "bench"},
			Lease:           leaseObs(d.Holder, d.Epoch, pb.LeaseState_LEASE_STATE_EXPIRED),
			CandidateReport: report(cand, d.Epoch),
		}
		if i%2 == 1 {
			a.Lease.State = pb.LeaseState_LEASE_STATE_HELD
		}
		cmd.Body = &pb.Command_PromotionAttempt{PromotionAttempt: a}
		h.index++
		if res := h.f.ApplyCommand(h.index, 1, cmd); res.Err != nil || res.Attempt.Decision.Allowed != (i%2 == 0) {
			b.Fatalf("%s attempt %d: %v %s", name, i, res.Err, DescribeAttempt(res.Attempt))
		}
	}
}

// startProfile writes a CPU profile of one phase to
// $BENCH_PROFILE_DIR/<phase>.pprof when that variable is set.
func startProfile(b *testing.B, phase string) func() {
	dir := os.Getenv("BENCH_PROFILE_DIR")
	if dir == "" {
		return func() {}
	}
	file, err := os.Create(filepath.Join(dir, phase+".pprof"))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(file); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := file.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// cpuTime is the process's user + system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procStatusKiB reads one "Name: N kB" line of /proc/self/status (Linux).
func procStatusKiB(b testing.TB, name string) int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				b.Fatalf("/proc/self/status %s: %v", name, err)
			}
			return n
		}
	}
	b.Fatalf("/proc/self/status has no %s", name)
	return 0
}

func envInt(b *testing.B, key string, def int) int {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", key, v)
	}
	return n
}
