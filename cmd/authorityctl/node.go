package main

import (
	"context"
	"fmt"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/spf13/cobra"
)

// newNodeCmd: what a database node (or a lock holder) does, for drills and
// scripts: hold a lease, advance the watermark, report progress.
func newNodeCmd(o *options) *cobra.Command {
	return newGroupCmd("node", "Act as a node: hold a lease, advance the watermark, report progress",
		newNodeLeaseCmd(o), newNodeAdvanceWatermarkCmd(o), newNodeReportProgressCmd(o))
}

// Replica states as named on the command line.
var replicaStates = map[string]pb.ReplicaState{
	"streaming":   pb.ReplicaState_REPLICA_STATE_STREAMING,
	"catching-up": pb.ReplicaState_REPLICA_STATE_CATCHING_UP,
	"diverged":    pb.ReplicaState_REPLICA_STATE_DIVERGED,
	"rebuilding":  pb.ReplicaState_REPLICA_STATE_REBUILDING,
}

// Lease events of `node lease`.
const (
	leaseAcquired = "acquired"
	leaseRenewed  = "renewed"
	leaseLost     = "lost"
	leaseReleased = "released"
	leaseStopped  = "stopped"
)

func newNodeLeaseCmd(o *options) *cobra.Command {
	var (
		ttl           positiveDuration
		acquire       bool
		epoch         nonZeroUint64
		quiet         bool
		releaseOnExit bool
	)
	cmd := &cobra.Command{
		Use:   "lease DOMAIN NODE [--acquire | --epoch N]",
		Short: "Hold and renew NODE's lease on DOMAIN until killed or lost",
		Long: `Holds NODE's lease on DOMAIN and renews it, printing one line per event
(-o json: {"event","domain","node","epoch","deadline_ms_from_now"?,"error"?}):
acquired, then renewed (one line at most per renewal; --quiet-renewals
suppresses them), and at the end lost, released or stopped.

--acquire takes the lease through the log (a free or expired lock, or an
aerodb holder re-acquiring its own expired lease). Otherwise it keeps a lease
granted elsewhere (assign, a promotion) at --epoch, or at the domain's current
epoch when NODE is its holder; --ttl then gives the TTL the local deadline is
computed with (default: the domain's policy).

SIGTERM/SIGINT: releases the lease through the log (--release-on-exit, the
default) and exits 0; with --release-on-exit=false it stops renewing and the
lease expires on the service after its TTL. A lost lease exits 1.`,
		Args: exactArgs("DOMAIN", "NODE"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			domain, node := args[0], args[1]
			if err := checkNames("domain", domain, "node", node); err != nil {
				return err
			}
			if acquire && cmd.Flags().Changed("ttl") {
				return usagef("--ttl applies to a kept lease (--epoch): with --acquire the service grants the domain's TTL")
			}
			ctx := cmd.Context() // ends on SIGINT/SIGTERM
			o.cleansUp.Store(true)
			l, c, err := startLease(ctx, o, domain, node, acquire, uint64(epoch), time.Duration(ttl))
			if err != nil {
				return err
			}
			defer closeQuietly(c)
			return holdLease(ctx, o, l, quiet, releaseOnExit)
		}),
	}
	fs := cmd.Flags()
	fs.Var(&ttl, "ttl", "TTL of a kept lease (default: the domain's policy)")
	fs.BoolVar(&acquire, "acquire", false, "acquire the lease through the log")
	fs.Var(&epoch, "epoch", "keep the lease granted at this epoch (default: the domain's epoch, when NODE holds it)")
	fs.BoolVar(&quiet, "quiet-renewals", false, "print no line per renewal")
	fs.BoolVar(&releaseOnExit, "release-on-exit", true, "release the lease through the log on SIGTERM/SIGINT")
	cmd.MarkFlagsMutuallyExclusive("acquire", "epoch")
	return cmd
}

// startLease dials and takes or keeps the lease, bounded by --timeout.
func startLease(ctx context.Context, o *options, domain, node string, acquire bool, epoch uint64,
	ttl time.Duration) (*client.Lease, *client.Client, error) {
	sctx, cancel := o.withTimeout(ctx)
	defer cancel()
	c, err := o.connect(sctx)
	if err != nil {
		return nil, nil, err
	}
	l, err := func() (*client.Lease, error) {
		if acquire {
			return c.Acquire(sctx, domain, node)
		}
		if epoch == 0 {
			d, err := c.GetDomain(sctx, domain)
			if err != nil {
				return nil, err
			}
			if d.GetHolder() != node || d.GetReleased() {
				return nil, fmt.Errorf("%s does not hold domain %q (holder %s, epoch %d, released %t): pass --epoch or --acquire",
					node, domain, orDash(d.GetHolder()), d.GetEpoch(), d.GetReleased())
			}
			epoch = d.GetEpoch()
		}
		return c.KeepLease(sctx, domain, node, epoch, ttl)
	}()
	if err != nil {
		closeQuietly(c)
		return nil, nil, err
	}
	return l, c, nil
}

// holdLease prints the lease's events until it is lost (an error: exit 1)
// or ctx ends (SIGTERM/SIGINT: release or stop, exit 0).
func holdLease(ctx context.Context, o *options, l *client.Lease, quiet, releaseOnExit bool) error {
	p := o.streamPrinter()
	event := func(name string, withDeadline bool, err error) leaseEvent {
		e := leaseEvent{Event: name, Domain: l.Domain(), Node: l.Holder(), Epoch: l.Epoch(), Err: err}
		if withDeadline {
			ms := l.Deadline().Sub(o.now()).Milliseconds()
			e.DeadlineMs = &ms
		}
		return e
	}
	if err := p.LeaseEvent(event(leaseAcquired, true, nil)); err != nil {
		return err
	}
	// The client has no renewal notification: a renewal shows as a later
	// local deadline, checked more often than renewals happen (TTL/3).
	poll := min(o.pollInterval, max(l.TTL()/10, 10*time.Millisecond))
	tick := time.NewTicker(poll)
	defer tick.Stop()
	last := l.Deadline()
	for {
		select {
		case <-l.Lost():
			lerr := l.Err()
			_ = p.LeaseEvent(event(leaseLost, false, lerr))
			return fmt.Errorf("lease of %s on %q at epoch %d lost: %w", l.Holder(), l.Domain(), l.Epoch(), lerr)
		case <-ctx.Done():
			if !releaseOnExit {
				return p.LeaseEvent(event(leaseStopped, false, nil))
			}
			rctx, cancel := o.withTimeout(context.WithoutCancel(ctx))
			defer cancel()
			if err := l.Release(rctx); err != nil {
				_ = p.LeaseEvent(event(leaseReleased, false, err))
				return fmt.Errorf("releasing %q: %w", l.Domain(), err)
			}
			return p.LeaseEvent(event(leaseReleased, false, nil))
		case <-tick.C:
			if d := l.Deadline(); d.After(last) {
				last = d
				if !quiet {
					if err := p.LeaseEvent(event(leaseRenewed, true, nil)); err != nil {
						return err
					}
				}
			}
		}
	}
}

func newNodeAdvanceWatermarkCmd(o *options) *cobra.Command {
	var (
		epoch      nonZeroUint64
		lsn        uint64
		hash       hexValue
		visibleCID uint64
	)
	cmd := &cobra.Command{
		Use:   "advance-watermark DOMAIN NODE --epoch N --lsn N --hash HEX",
		Short: "Advance DOMAIN's watermark as its holder NODE at epoch N",
		Long: `Commits a watermark advance (the holder's durable position: lsn and chain hash,
and the highest commit id visible at it). Advancing to a position already
recorded is a no-op, so on an unknown outcome (exit 1, OUTCOME_UNKNOWN) run
the same command again. FENCED / EPOCH_STALE: NODE is no longer the holder
at that epoch.`,
		Args: exactArgs("DOMAIN", "NODE"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if err := checkNames("domain", args[0], "node", args[1]); err != nil {
				return err
			}
			if lsn > 0 && len(hash) == 0 {
				return usagef("--hash is empty at lsn %d: a position needs its chain hash", lsn)
			}
			adv := &pb.WatermarkAdvance{Domain: args[0], Holder: args[1], Epoch: uint64(epoch), Lsn: lsn, Hash: hash,
				VisibleCommitId: visibleCID}
			ctx, cancel := o.withTimeout(cmd.Context())
			defer cancel()
			c, err := o.connect(ctx)
			if err != nil {
				return err
			}
			defer closeQuietly(c)
			errs, err := c.AdvanceWatermark(ctx, []*pb.WatermarkAdvance{adv})
			if err != nil {
				return err
			}
			if errs[0] != nil {
				return errs[0]
			}
			return o.printer().Advance(adv)
		}),
	}
	fs := cmd.Flags()
	fs.Var(&epoch, "epoch", "the holder's epoch")
	fs.Uint64Var(&lsn, "lsn", 0, "the durable lsn")
	fs.Var(&hash, "hash", "chain hash at lsn, in hex")
	fs.Uint64Var(&visibleCID, "visible", 0, "highest commit id visible at lsn")
	markRequired(cmd, "epoch", "lsn", "hash")
	return cmd
}

func newNodeReportProgressCmd(o *options) *cobra.Command {
	var (
		epoch       nonZeroUint64
		flushedLSN  uint64
		flushedHash hexValue
		wmLSN       uint64
		wmHash      hexValue
		applied     uint64
		readSafe    bool
	)
	state := enumValue{value: "streaming", allowed: []string{"streaming", "catching-up", "diverged", "rebuilding"}}
	cmd := &cobra.Command{
		Use:   "report-progress DOMAIN NODE --epoch N --flushed-lsn N --flushed-hash HEX",
		Short: "Send one progress report of replica NODE to the leader",
		Long: `Sends one progress report (soft state on the leader, not logged; a new leader
has none until replicas report again) and prints the domain's watermark.
--wm-lsn/--wm-hash give the replica's own chain hash at the watermark's lsn.`,
		Args: exactArgs("DOMAIN", "NODE"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if err := checkNames("domain", args[0], "node", args[1]); err != nil {
				return err
			}
			if flushedLSN > 0 && len(flushedHash) == 0 {
				return usagef("--flushed-hash is empty at lsn %d: a position needs its chain hash", flushedLSN)
			}
			r := &pb.ProgressReport{MemberId: args[1], Epoch: uint64(epoch), FlushedLsn: flushedLSN, FlushedHash: flushedHash,
				WatermarkLsn: wmLSN, HashAtWatermark: wmHash, AppliedCommitId: applied, ReadSafe: readSafe,
				State: replicaStates[state.value]}
			ctx, cancel := o.withTimeout(cmd.Context())
			defer cancel()
			c, err := o.connect(ctx)
			if err != nil {
				return err
			}
			defer closeQuietly(c)
			wm, err := c.ReportProgress(ctx, args[0], r)
			if err != nil {
				return err
			}
			return o.printer().Watermark(args[0], wm)
		}),
	}
	fs := cmd.Flags()
	fs.Var(&epoch, "epoch", "epoch of the WAL the replica follows")
	fs.Uint64Var(&flushedLSN, "flushed-lsn", 0, "the replica's flushed lsn")
	fs.Var(&flushedHash, "flushed-hash", "chain hash at the flushed lsn, in hex")
	fs.Uint64Var(&wmLSN, "wm-lsn", 0, "the watermark lsn the replica was told about")
	fs.Var(&wmHash, "wm-hash", "the replica's own chain hash at --wm-lsn, in hex")
	fs.Uint64Var(&applied, "applied", 0, "highest commit id the replica applied")
	fs.BoolVar(&readSafe, "read-safe", false, "the replica can serve reads consistently")
	fs.Var(&state, "state", "replica state: streaming, catching-up, diverged or rebuilding")
	markRequired(cmd, "epoch", "flushed-lsn", "flushed-hash")
	cmd.MarkFlagsRequiredTogether("wm-lsn", "wm-hash")
	return cmd
}
