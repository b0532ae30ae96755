package compare

import (
	"slices"
	"time"
)

// percentile of durations, in milliseconds.
func percentile(d []time.Duration, p float64) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return ms(s[min(len(s)-1, int(float64(len(s))*p))])
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// median of durations, in seconds.
func medianSeconds(d []time.Duration) float64 { return percentile(d, 0.5) / 1000 }

func must(tb interface{ Fatal(...any) }, err error) {
	if err != nil {
		tb.Fatal(err)
	}
}
