//go:build !failpoints

package main

import "github.com/aerodb/authority/promotion"

// serverClock is the wall clock (with its monotonic reading) in production
// builds; test builds may run it at another rate (clock_failpoints.go).
func serverClock() (promotion.Clock, string, error) { return wallClock{}, "", nil }
