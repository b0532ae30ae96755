package main

import (
	"fmt"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/spf13/pflag"
)

// Durability names as the flags spell them (authorityctl's too).
const (
	durabilityGated  = "authority-gated"
	durabilityQuorum = "replica-quorum"
)

// durabilityFlags are --durability (default replica-quorum, the
// authority's default for a new aerodb domain) and --replica-quorum, its
// older spelling, kept as an alias.
type durabilityFlags struct {
	name   string
	quorum bool
}

func (d *durabilityFlags) add(fs *pflag.FlagSet, what string) {
	fs.StringVar(&d.name, "durability", durabilityQuorum, what+" durability: "+durabilityQuorum+
		" (the primary acknowledges once 1 replica flushed, no authority round per write) or "+durabilityGated+
		" (once the authority committed the watermark); docs/DURABILITY.md. An existing domain keeps its own")
	fs.BoolVar(&d.quorum, "replica-quorum", false, "the same as --durability "+durabilityQuorum+" (the default)")
}

// resolve is the chosen durability, always named explicitly.
func (d *durabilityFlags) resolve() (pb.Durability, error) {
	switch {
	case d.quorum && d.name != durabilityQuorum:
		return 0, fmt.Errorf("--replica-quorum contradicts --durability %s", d.name)
	case d.name == durabilityQuorum:
		return pb.Durability_DURABILITY_REPLICA_QUORUM, nil
	case d.name == durabilityGated:
		return pb.Durability_DURABILITY_AUTHORITY_GATED, nil
	}
	return 0, fmt.Errorf("--durability %q: want %s or %s", truncate(d.name, 64), durabilityQuorum, durabilityGated)
}

// truncate bounds an echoed flag value.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
