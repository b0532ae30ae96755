//go:build !failpoints

package failpoint

import (
	"errors"
	"net/http"
)

// Enabled reports whether this binary was built with failpoints.
const Enabled = false

// Eval does nothing in builds without the failpoints tag.
func Eval(string) error { return nil }

// Armed is always false without the failpoints tag.
func Armed(...string) bool { return false }

// Arm refuses: this build has no failpoints.
func Arm(string) error { return errors.New("failpoint: binary built without the failpoints tag") }

// Hits is always empty in builds without failpoints.
func Hits() map[string]int { return nil }

// Handler answers 404 in builds without failpoints.
func Handler() http.Handler { return http.NotFoundHandler() }
