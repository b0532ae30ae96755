// Package corruptiontest holds the process tests of data integrity: three
// real authorityd processes; one server at a time (a follower, then the
// leader) is stopped, one file of its data dir damaged the way a failing
// disk or a careless operator would (a byte flipped inside a log entry in
// a wal/ segment, a segment cut short, raft.db truncated, raft.db emptied
// with snapshots left, a byte
// of snapshot state flipped, a meta.json index edited, the snapshot
// directory removed), and restarted. It must refuse to start with one line
// naming the file and the fault, or recover correctly from its own valid
// data — never serve a state hash that differs from its peers'. Then the
// documented rebuild procedure (docs/INTEGRITY.md: remove the server, wipe
// its data dir, restart it with --join) brings it back to the peers' state.
package corruptiontest
