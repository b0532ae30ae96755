//go:build jepsen_mutants

package fenced

import "github.com/aerodb/authority/jepsen-like/history"

// NewMutant starts a fenced resource that ignores epochs: it accepts every
// write (a negative control: NoOverlappingPrimaries must catch it).
func NewMutant(h *history.Writer) (*Server, error) { return start(h, true) }
