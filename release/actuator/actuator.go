// Package actuator moves release traffic: the "Actuators" of the rollout
// controller (issue 16). An Actuator sets the canary's share of traffic for
// a release domain; every call carries the epoch of the controller's lease.
//
// The targets (HAProxy's runtime API, a script, a webhook) know nothing about
// epochs, so none is used bare: each sits behind a Gateway, a fenced gateway
// that keeps the highest epoch it accepted per domain in a state file
// (exclusive flock, temporary file, fsync, rename, directory fsync) and
// refuses any call with a lower epoch before touching the target. See
// docs/RELEASE-ACTUATORS.md for the argument.
package actuator

import (
	"context"
	"errors"
	"fmt"
	"unicode"
)

// Limits on a call's fields.
const (
	MaxDomainLen = 253
	MaxCanaryLen = 256
	MaxWeight    = 100
)

// Call is one actuation: give Canary Weight percent of Domain's traffic (the
// stable release gets the rest), under the controller's lease epoch.
type Call struct {
	Domain string
	Epoch  uint64
	Canary string
	Weight uint32 // 0..100
}

// Actuator sets the canary's traffic weight.
type Actuator interface {
	SetWeight(ctx context.Context, c Call) error
}

// ErrInvalidCall: a call's fields are out of bounds (nothing was touched).
var ErrInvalidCall = errors.New("actuator: invalid call")

// Validate checks a call's bounds.
func (c Call) Validate() error {
	if err := checkName(c.Domain); err != nil {
		return fmt.Errorf("%w: domain: %v", ErrInvalidCall, err)
	}
	if c.Epoch == 0 {
		return fmt.Errorf("%w: epoch 0 (a lease epoch starts at 1)", ErrInvalidCall)
	}
	if c.Weight > MaxWeight {
		return fmt.Errorf("%w: weight %d out of 0..%d", ErrInvalidCall, c.Weight, MaxWeight)
	}
	if len(c.Canary) > MaxCanaryLen {
		return fmt.Errorf("%w: canary is %d bytes (at most %d)", ErrInvalidCall, len(c.Canary), MaxCanaryLen)
	}
	for _, r := range c.Canary {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return fmt.Errorf("%w: canary holds a space, control or invalid character", ErrInvalidCall)
		}
	}
	return nil
}

// checkName: 1..253 bytes of [A-Za-z0-9._:/-].
func checkName(s string) error {
	if s == "" || len(s) > MaxDomainLen {
		return fmt.Errorf("length %d out of 1..%d", len(s), MaxDomainLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.' || c == '_' || c == ':' || c == '/' || c == '-':
		default:
			return fmt.Errorf("byte %d is not in [A-Za-z0-9._:/-]", i)
		}
	}
	return nil
}

// truncate bounds text quoted in an error message.
func truncate(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	return string(b[:n]) + "…(truncated)"
}

// ActuatorFunc adapts a function.
type ActuatorFunc func(ctx context.Context, c Call) error

// SetWeight calls f.
func (f ActuatorFunc) SetWeight(ctx context.Context, c Call) error { return f(ctx, c) }
