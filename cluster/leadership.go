package cluster

import (
	"context"
	"time"

	"github.com/aerodb/authority/promotion"
	"github.com/hashicorp/go-hclog"
)

// RunLeadership connects raft's leadership notifications to the leader-side
// service: on gaining leadership it runs the service's barrier and lease
// reset (retrying while this node stays leader), on losing it the service
// steps down at once.
//
// It is the one long-lived goroutine a server starts for this; it owns the
// service's leader/follower transitions and returns when ctx is cancelled
// (after stepping the service down).
func RunLeadership(ctx context.Context, n *Node, svc *promotion.Service, logger hclog.Logger) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	defer svc.StepDown()
	for {
		select {
		case <-ctx.Done():
			return
		case leader := <-n.LeadershipChanges():
			if !leader {
				svc.StepDown()
				continue
			}
			becomeLeader(ctx, n, svc, logger)
		}
	}
}

func becomeLeader(ctx context.Context, n *Node, svc *promotion.Service, logger hclog.Logger) {
	backoff := 10 * time.Millisecond
	for n.IsLeader() && ctx.Err() == nil {
		bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := svc.BecomeLeader(bctx)
		cancel()
		if err == nil {
			return
		}
		logger.Warn("leader barrier failed; retrying", "error", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return
		case leader := <-n.LeadershipChanges():
			if !leader {
				svc.StepDown()
				return
			}
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}
