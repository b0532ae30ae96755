package validator

import (
	"strconv"
	"strings"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// Describe renders a decision as stable text: one header line, then one line
// per check in the decision's (fixed) order, observed values in their fixed
// key order. It reads no maps and prints no pointers, so equal decisions
// render byte-identically on every node; tests, logs and the CLI share it.
//
//	decision: denied reason=ReplicaBehindWal invariant="AU-4 [P6-S1]" waivers_applied=none
//	check candidate_contains_watermark: failed reason=ReplicaBehindWal invariant="AU-4 [P6-S1]" observed{flushed_lsn=90 watermark_lsn=100} detail="..."
//
// Every decision explainable, naming each invariant checked (AU-11 [P6-O2]).
func Describe(d *pb.Decision) string {
	if d == nil {
		return "decision: none\n"
	}
	var b strings.Builder
	b.WriteString("decision: ")
	if d.GetAllowed() {
		b.WriteString("allowed")
	} else {
		b.WriteString("denied reason=" + quote(d.GetDenialReason()) + " invariant=" + quote(d.GetFailedInvariant()))
	}
	b.WriteString(" waivers_applied=" + quote(joinOrNone(d.GetWaiversApplied())) + "\n")
	for _, c := range d.GetChecks() {
		describeCheck(&b, c)
	}
	return b.String()
}

func describeCheck(b *strings.Builder, c *pb.Check) {
	b.WriteString("check " + quote(c.GetName()) + ": ")
	switch {
	case c.GetSatisfied():
		b.WriteString("ok")
	case c.GetWaivedBy() != "":
		b.WriteString("waived by=" + quote(c.GetWaivedBy()) + " reason=" + quote(c.GetReason()))
	default:
		b.WriteString("failed reason=" + quote(c.GetReason()))
	}
	b.WriteString(" invariant=" + quote(c.GetInvariant()) + " observed{")
	for i, o := range c.GetObserved() {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(quote(o.GetKey()) + "=" + quote(o.GetValue()))
	}
	b.WriteString("} detail=" + strconv.Quote(c.GetDetail()) + "\n")
}

// quote leaves plain tokens bare for readability and quotes anything that
// could break the one-line-per-check layout or be misparsed (spaces, '=',
// braces, quotes, control or non-ASCII characters, empty strings).
func quote(s string) string {
	if s == "" {
		return `""`
	}
	for _, r := range s {
		if r <= ' ' || r > '~' || strings.ContainsRune(`"=\{}`, r) {
			return strconv.Quote(s)
		}
	}
	return s
}
