//go:build failpoints

package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/aerodb/authority/promotion"
)

// clockRateEnv makes a test build's leader clock (leases, report ages,
// stamped times) run at a rate relative to real time, e.g. 1.05 for a clock
// 5 % fast: the fault-injection harness's clock-rate skew. Raft's own
// timers are unaffected.
const clockRateEnv = "AUTHORITYD_TEST_CLOCK_RATE"

// rateClock advances rate times as fast as the machine's monotonic clock.
type rateClock struct {
	base time.Time
	rate float64
}

func (c rateClock) Now() time.Time {
	return c.base.Add(time.Duration(float64(time.Since(c.base)) * c.rate))
}

// serverClock returns the wall clock, or a rate-skewed one when
// AUTHORITYD_TEST_CLOCK_RATE is set; the string describes it for the log.
func serverClock() (promotion.Clock, string, error) {
	v := os.Getenv(clockRateEnv)
	if v == "" {
		return wallClock{}, "", nil
	}
	rate, err := strconv.ParseFloat(v, 64)
	if err != nil || !(rate >= 0.1 && rate <= 10) {
		return nil, "", fmt.Errorf("%s=%q: want a rate in [0.1, 10]", clockRateEnv, v)
	}
	return rateClock{base: time.Now(), rate: rate}, fmt.Sprintf("%s=%g: the leader clock runs at %g× real time", clockRateEnv, rate, rate), nil
}
