package validator

import (
	"encoding/hex"
	"strconv"
	"strings"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// Helpers that build checks and render observed values. Values are always
// decimal, lowercase hex, "true"/"false", enum names, or "none"/"unknown"
// for absent data, so the explanation is byte-identical everywhere.

func newCheck(name, invariant string, observed ...*pb.Observed) *pb.Check {
	return &pb.Check{Name: name, Invariant: invariant, Observed: observed}
}

func pass(c *pb.Check, detail string) *pb.Check {
	c.Satisfied = true
	c.Detail = detail
	return c
}

func deny(c *pb.Check, reason, detail string) *pb.Check {
	c.Satisfied = false
	c.Reason = reason
	c.Detail = detail
	return c
}

func kv(key, value string) *pb.Observed {
	return &pb.Observed{Key: key, Value: value}
}

func u64(v uint64) string { return strconv.FormatUint(v, 10) }

func boolStr(b bool) string { return strconv.FormatBool(b) }

// present picks v when the source exists and missing otherwise. v is
// computed either way; that is safe because generated getters are nil-safe.
func present(ok bool, v, missing string) string {
	if ok {
		return v
	}
	return missing
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func hexOrNone(b []byte) string {
	if len(b) == 0 {
		return "none"
	}
	return hex.EncodeToString(b)
}

func joinOrNone(ss []string) string {
	if len(ss) == 0 {
		return "none"
	}
	return strings.Join(ss, ",")
}
