// Package hostiletest holds the hostile-load table of process tests (issue
// 12, acceptance 2): three real authorityd processes on loopback with
// mutual TLS, one shared cluster, and one row per attack, run one after
// another:
//
//	a. oversized repeated fields (10,000 and 300,000 waivers, watermark
//	   advances, watch domains), from many goroutines;
//	b. 1 MiB in every string and bytes field of every RPC of the
//	   authorization table (authz.Table), one field at a time;
//	c. 1,000 KeepAlive streams that send renewals and never read;
//	d. 20,000 idle TCP connections to the leader's HTTP listener (spread
//	   over child processes when RLIMIT_NOFILE is too low for one);
//	e. one operator creating domains from 32 goroutines as fast as it can.
//
// While each attack runs: the leader keeps its id and term, its resident
// memory stays under a stated bound (the kernel's peak, VmHWM, reset per
// row), an honest holder (node:honest) renewing its lease on its own
// connection never sees a failed renewal nor loses the lease (the p99 of
// its renewal latency is reported per row, never asserted), and the state
// changes only by what the servers accepted: every refused row leaves every
// server's state hash and applied index unchanged; the flooding row leaves
// exactly the accepted domains; the three servers converge.
package hostiletest
