package main

import (
	"runtime/debug"
	"strconv"
	"strings"
)

// A server in a container with a memory limit gets a Go soft memory limit
// (GOMEMLIMIT) of 90% of it unless GOMEMLIMIT is set: without one, the
// garbage collector lets the heap grow to twice the live state before it
// collects (GOGC=100), so a large state (issue 12's 100,000 domains × 100
// attempts) would meet the kernel's OOM killer with half its memory
// garbage. With it, the collector runs more often as the limit nears
// instead. An explicit GOMEMLIMIT (including "off") always wins.

// cgroupMemoryFiles: cgroup v2, then v1.
var cgroupMemoryFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// defaultMemoryLimit returns 90% of the container's memory limit, and
// whether there is one. v2's "max" and v1's page-rounded MaxInt64 mean no
// limit; so does anything above a petabyte.
func defaultMemoryLimit(readFile func(string) ([]byte, error)) (int64, bool) {
	for _, path := range cgroupMemoryFiles {
		raw, err := readFile(path)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(raw))
		if s == "max" {
			return 0, false
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 || n >= 1<<50 {
			return 0, false
		}
		return n / 10 * 9, true
	}
	return 0, false
}

// applyMemoryLimit sets the default soft memory limit when GOMEMLIMIT is
// unset; it returns the limit set (0: none).
func applyMemoryLimit(getenv func(string) string, readFile func(string) ([]byte, error)) int64 {
	if getenv("GOMEMLIMIT") != "" {
		return 0
	}
	n, ok := defaultMemoryLimit(readFile)
	if !ok {
		return 0
	}
	debug.SetMemoryLimit(n)
	return n
}
