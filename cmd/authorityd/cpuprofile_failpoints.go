//go:build failpoints

package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"time"
)

// cpuProfileEnv makes a test build write a CPU profile of its first
// seconds (AUTHORITYD_TEST_CPUPROFILE_SECONDS, default 10) to the named
// file: startup and catch-up profiling (internal/catchupbench).
const cpuProfileEnv = "AUTHORITYD_TEST_CPUPROFILE"

func init() {
	path := os.Getenv(cpuProfileEnv)
	if path == "" {
		return
	}
	secs, err := strconv.ParseFloat(os.Getenv(cpuProfileEnv+"_SECONDS"), 64)
	if err != nil || secs <= 0 || secs > 600 {
		secs = 10
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "authorityd:", cpuProfileEnv, err)
		return
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "authorityd:", cpuProfileEnv, err)
		f.Close()
		return
	}
	time.AfterFunc(time.Duration(secs*float64(time.Second)), func() {
		pprof.StopCPUProfile()
		f.Close()
	})
}
