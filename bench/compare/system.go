// Package compare measures etcd 3.7.3 and authorityd side by side (issue
// 19): three server processes of each on loopback, default settings, fsync
// on, the same client concurrency, one system after the other within each
// row family of one run. `make bench-compare` runs every row; TestCompare's
// flags pick rows (-rows), sizes (-quick) and the output directory (-out).
//
// This is its own Go module so that etcd never becomes a dependency of the
// product module (the Makefile's etcd-guard checks that).
package compare

import (
	"testing"
	"time"
)

// Config sizes one run.
type Config struct {
	Quick bool
	// TLS runs both systems with mutual TLS (etcd: https with client
	// certificates on client and peer URLs; ours: its default, with an
	// identity per caller); otherwise both run plaintext.
	TLS bool
	// Keys is how many keys (etcd) or domains (ours) the scale rows load.
	Keys int
	// Rounds is the number of timed rounds of each latency row.
	Rounds int
	// Renewals is the number of renewals each system sends.
	Renewals int
	// WriteFor is how long each durable-write row writes.
	WriteFor time.Duration
	// Failovers is N of the leader kill -9 row (median of N).
	Failovers int
	// Takeovers is N of the holder SIGSTOP row (median of N).
	Takeovers int
	// Writers is the client concurrency of the write and load rows.
	Writers int
}

// NewConfig is the full run, or the quick one.
func NewConfig(quick bool) Config {
	if quick {
		return Config{Quick: true, Keys: 10_000, Rounds: 40, Renewals: 40_000, WriteFor: time.Second,
			Failovers: 1, Takeovers: 1, Writers: 64}
	}
	return Config{Keys: 100_000, Rounds: 300, Renewals: 400_000, WriteFor: 4 * time.Second,
		Failovers: 5, Takeovers: 3, Writers: 64}
}

// Better says which direction of a row's value wins.
type Better int

const (
	Higher Better = iota // throughputs
	Lower                // latencies, times, sizes
)

// Row is one line of the table.
type Row struct {
	ID    string
	Label string
	Unit  string // "/s", "ms", "s", "MiB"
	Better
	// Words for ours being better or worse ("faster"/"slower").
	Win, Lose string
}

// Family is a group of rows measured by one workload (one file each). Its
// Etcd and Ours functions return a value per row ID (and may add notes).
type Family struct {
	Name string
	Rows []Row
	Etcd func(tb testing.TB, s *Etcd, cfg Config) Values
	Ours func(tb testing.TB, s *Ours, cfg Config) Values
}

// Values are a family's results on one system.
type Values struct {
	V     map[string]float64
	Notes []string
}

// Runner is one system under test.
type Runner interface {
	Name() string
	// Setup builds the system and starts its three server processes.
	Setup(tb testing.TB, cfg Config)
	// Run measures one row family.
	Run(tb testing.TB, f Family, cfg Config) Values
	// Settings describe how the system runs (printed with the table).
	Settings() []string
}

// Families in table order; the scale family loads the clusters, so it runs
// last.
func Families() []Family {
	return []Family{renewFamily, casFamily, lockFamily, writesFamily, failoverFamily, takeoverFamily, scaleFamily}
}

// MarshalText writes "higher" or "lower" (the JSON report).
func (b Better) MarshalText() ([]byte, error) {
	if b == Lower {
		return []byte("lower"), nil
	}
	return []byte("higher"), nil
}

// UnmarshalText reads MarshalText's words.
func (b *Better) UnmarshalText(t []byte) error {
	*b = map[string]Better{"higher": Higher, "lower": Lower}[string(t)]
	return nil
}
