package fsm

// keyTemplate is the base of the first record of every history segment
// (history.go). Part of snapshot format version 3: never change it.
var keyTemplate = []byte{}
