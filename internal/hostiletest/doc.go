// Package hostiletest holds the hostile-load table of process tests (issue
// 12, acceptance 2): three real authorityd processes on loopback with
// mutual TLS, one shared cluster, and one row per attack, run one after
// another (TestHostileLoad; -rows=LETTERS runs some of them):
//
//  0. no attack: the reference for the honest renewals' latency;
//     a. every repeated field of every RPC request (waivers, watermark
//     advances, watch domains) with 10,000 entries (refused by count) and
//     with more than the largest message (refused by size), 8 callers;
//     b. 1 MiB in every string and bytes field of every RPC of the
//     authorization table (authz.Table), one field at a time, to the
//     leader and to a follower: INVALID_ARGUMENT or RESOURCE_EXHAUSTED
//     (PERMISSION_DENIED for a holder that is not the caller) with a
//     message of at most 1 KiB that quotes at most 128 bytes of input;
//     d. 20,000 idle TCP connections to the leader's HTTP listener, spread
//     over as many attacker processes as the hard RLIMIT_NOFILE needs;
//     e. one operator creating domains from 32 goroutines as fast as it can;
//     c. 1,000 KeepAlive streams of one node identity that send renewals
//     and never read (run last: the leader keeps the heap it grows).
//
// The attackers of rows c and d are separate processes (./attacker, built
// without the race detector, under nice 19): clients on other machines,
// whose own CPU does not starve the servers of a small test machine.
//
// While each attack runs: the leader keeps its id and term, its resident
// memory stays under a stated bound (the kernel's peak, VmHWM, reset per
// row), an honest holder (node:honest) renewing its lease on its own
// connection never sees a failed renewal nor loses the lease (the p99 of
// its renewal latency is reported per row, never asserted), and the state
// changes only by what the servers accepted: every refused row leaves every
// server's state hash and applied index unchanged; the flooding row leaves
// exactly the domains there were plus those acknowledged; the three servers
// converge.
package hostiletest
