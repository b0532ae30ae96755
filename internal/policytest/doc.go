// Package policytest holds the process test of the automatic promotion
// policy (issue 13): three real authorityd processes on mutual TLS, an
// automatic aerodb domain whose members are played by the test (node
// identities: the holder keeps its lease and advances the watermark, the
// replicas report progress), the holder stopping its renewals, and a
// replica promoted by the leader's policy without any operator call; a
// second expiry within the dwell time promotes nothing; and the same with
// the raft leader killed (kill -9) right after the holder stopped: the new
// leader's policy promotes, exactly once.
package policytest
