package transport

import (
	"fmt"
	"unicode/utf8"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
)

// Input limits of the API edge (docs/LIMITS.md). Each is checked before a
// request reaches the log or a forwarding hop, and a refusal is
// InvalidArgument naming the field and the limit. The FSM stays the
// authority on what it applies; these bounds keep hostile input cheap.
const (
	// MaxNameBytes bounds names: domains, members, holders, request ids,
	// server ids (fsm.MaxNameLen).
	MaxNameBytes = fsm.MaxNameLen
	// MaxWaivers bounds the waivers of one promotion request; each must be
	// a known waiver, named once.
	MaxWaivers = 8
	// MaxMembersPerDomain bounds the members of one domain: registering a
	// new member in a domain that has this many is refused. Members are
	// never removed (a decommissioned one stays on record), so the bound
	// leaves room for years of replaced replicas; a domain record stays
	// under about 100 KB of members even with maximal ids and addresses.
	MaxMembersPerDomain = fsm.MaxMembersPerDomain
	// MaxAdvancesPerRequest bounds the watermark advances of one Advance
	// call (below the FSM's own bound on one entry, fsm.MaxWatermarkBatch).
	MaxAdvancesPerRequest = 1000
	// MaxRenewalsPerMessage bounds the leases one KeepAlive message renews
	// (a batch); a larger batch is refused whole with InvalidArgument.
	MaxRenewalsPerMessage = pb.MaxRenewalsPerKeepAlive
	// MaxWatchDomains bounds the domain filter of one Watch call.
	MaxWatchDomains = 1000
	// MaxQuotedBytes is the most of a caller's input an error message
	// quotes.
	MaxQuotedBytes = 128
	// maxReportedProblems bounds the problems listed in one refusal.
	maxReportedProblems = 6
)

// clip returns at most MaxQuotedBytes of s (cut at a rune boundary), with
// a note of the full length when it cut: for quoting input in errors.
func clip(s string) string {
	if len(s) <= MaxQuotedBytes {
		return s
	}
	n := MaxQuotedBytes
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return fmt.Sprintf("%s…(%d bytes)", s[:n], len(s))
}

// quote is %q of clip(s).
func quote(s string) string { return fmt.Sprintf("%q", clip(s)) }

func (c *check) add(format string, a ...any) {
	c.errs = append(c.errs, errorf(fsm.ErrInvalid, format, a...))
}

// enum refuses a value outside the enum's declared numbers.
func (c *check) enum(field string, v int32, names map[int32]string) {
	if _, ok := names[v]; !ok {
		c.add("%s %d is not a known value (limit: one of the declared enum values)", field, v)
	}
}

func (c *check) count(field string, n, limit int) bool {
	if n > limit {
		c.add("%s has %d entries, more than the limit of %d", field, n, limit)
		return false
	}
	return true
}

// The enum values a request may carry (the generated name tables).
var (
	memberStates  = pb.MemberState_name
	promotionMode = pb.PromotionMode_name
	durabilities  = pb.Durability_name
	replicaStates = pb.ReplicaState_name
	initiators    = pb.Initiator_name
)
