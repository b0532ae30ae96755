package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/protobuf/proto"
)

// ErrSwitchoverTimeout: the holder did not hand over within the timeout.
// Nothing was promoted and the request was withdrawn: the holder keeps its
// authority.
var ErrSwitchoverTimeout = errors.New("authority: switchover timed out: nothing was promoted")

// Switchover is a planned handover of Request.Domain to Request.Candidate.
type Switchover struct {
	// Request is the promotion to make once the holder released
	// (Domain, Candidate, RequestId, Reason, ...). ExpectedEpoch is set
	// to the epoch seen at the start; InitiatedBy defaults to SWITCHOVER.
	Request *pb.PromotionRequest
	// Timeout bounds the whole handover (the holder's drain and release,
	// and the candidate catching up to the final watermark).
	Timeout time.Duration
	// Poll is how often the domain is read (default 20ms).
	Poll time.Duration
	// Progress, when set, is told each step.
	Progress func(format string, args ...any)
}

// transientDenials clear by themselves once the candidate's next progress
// report names the holder's final watermark.
var transientDenials = map[string]bool{"PrimaryStillActive": true, "StaleReport": true, "MetadataMissing": true}

// Switchover runs a planned handover: it asks the holder, through its
// lease stream (RequestHandover, repeated every poll so a leader change
// does not drop it), to stop writing, drain, advance its final watermark
// and release; waits for the release at the epoch it saw; waits until a
// dry run of the promotion is allowed (the candidate reported the final
// watermark); and promotes with expected epoch = the epoch seen, so
// nothing else can have happened in between.
//
// When the holder has not released by the timeout, the request is
// withdrawn and ErrSwitchoverTimeout returned: nothing was promoted and the
// holder keeps its authority (a holder stops writing only when it can
// release at once, see refnode). A promotion denied for good is returned
// as from Promote (a *DeniedError).
func (c *Client) Switchover(ctx context.Context, s Switchover) (*pb.PromoteResponse, error) {
	req := proto.Clone(s.Request).(*pb.PromotionRequest)
	if req.RequestId == "" {
		req.RequestId = c.randomID()
	}
	if req.InitiatedBy == pb.Initiator_INITIATOR_UNSPECIFIED {
		req.InitiatedBy = pb.Initiator_INITIATOR_SWITCHOVER
	}
	progress := s.Progress
	if progress == nil {
		progress = func(string, ...any) {}
	}
	poll := s.Poll
	if poll <= 0 {
		poll = 20 * time.Millisecond
	}
	if s.Timeout <= 0 {
		return nil, fmt.Errorf("%w: switchover needs a positive timeout", ErrInvalidArgument)
	}
	deadline := time.Now().Add(s.Timeout)
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	domain, cand := req.GetDomain(), req.GetCandidate()
	d, err := c.GetDomain(wctx, domain)
	if err != nil {
		return nil, err
	}
	epoch, holder := d.GetEpoch(), d.GetHolder()
	switch {
	case holder == "":
		return nil, fmt.Errorf("%w: domain %q has no holder: assign its first holder", ErrFailedPrecondition, domain)
	case holder == cand && !d.GetReleased():
		return nil, fmt.Errorf("%w: %q already holds domain %q at epoch %d", ErrFailedPrecondition, holder, domain, epoch)
	}
	req.ExpectedEpoch = &epoch
	withdraw := func() {
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer ccancel()
		if _, err := c.RequestHandover(cctx, domain, epoch, "", 0); err != nil {
			progress("switchover: withdrawing the request: %v (it expires on its own)", err)
		}
	}
	if !d.GetReleased() {
		progress("switchover: asking %s (epoch %d) to hand domain %s over to %s; waiting up to %v for its release", holder, epoch, domain, cand, s.Timeout)
		tick := time.NewTicker(poll)
		defer tick.Stop()
		asked := time.Time{}
		for {
			if now := time.Now(); now.Sub(asked) >= 10*poll {
				// Repeated: the request is leader-local and a leader change drops it.
				if _, err := c.RequestHandover(wctx, domain, epoch, cand, time.Until(deadline)); err == nil {
					asked = now
				} else if errors.Is(err, ErrFenced) || errors.Is(err, ErrNoLease) || errors.Is(err, ErrLeaseExpired) {
					asked = now // the lease is no longer held: the read below tells why
				} else if wctx.Err() == nil {
					progress("switchover: request: %v", err)
				}
			}
			if d2, err := c.GetDomain(wctx, domain); err == nil {
				d = d2
				if d.GetEpoch() != epoch {
					withdraw()
					return nil, fmt.Errorf("%w: domain %q moved from epoch %d to %d (holder %s) meanwhile; nothing was promoted",
						ErrConflict, domain, epoch, d.GetEpoch(), d.GetHolder())
				}
				if d.GetReleased() {
					break
				}
			}
			select {
			case <-tick.C:
			case <-wctx.Done():
				withdraw()
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				return nil, fmt.Errorf("%w: %s did not release domain %q within %v (epoch %d); it keeps its authority",
					ErrSwitchoverTimeout, holder, domain, s.Timeout, epoch)
			}
		}
	}
	wm := d.GetWatermark()
	progress("switchover: %s released domain %s at epoch %d (final watermark lsn %d); promoting %s (request id %s, expected epoch %d)",
		holder, domain, epoch, wm.GetLsn(), cand, req.RequestId, epoch)
	// Wait until the candidate's report names the final watermark (a dry
	// run is allowed), then commit.
	dry := proto.Clone(req).(*pb.PromotionRequest)
	dry.DryRun = true
	last := ""
	for {
		_, err := c.Promote(wctx, dry)
		var denied *DeniedError
		if err == nil || errors.As(err, &denied) && !transientDenials[denied.Reason()] {
			break // allowed, or denied for good: the real attempt records it
		}
		if denied != nil && denied.Reason() != last {
			last = denied.Reason()
			progress("switchover: %s not promotable yet (%s); waiting for its report of the final watermark", cand, last)
		}
		select {
		case <-time.After(poll):
		case <-wctx.Done():
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("%w: %s released domain %q at epoch %d but %s could not be promoted within %v (last: %v); "+
				"promote it (or another member) with 'promote --expected-epoch %d'", ErrSwitchoverTimeout, holder, domain, epoch, cand, s.Timeout, err, epoch)
		}
	}
	pctx, pcancel := context.WithTimeout(context.WithoutCancel(ctx), max(time.Until(deadline), 5*time.Second))
	defer pcancel()
	return c.Promote(pctx, req)
}
