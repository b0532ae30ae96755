package fsm

import (
	"fmt"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// grant moves a domain to a new epoch held by holder. It is the only place
// an epoch grows (AU-1): callers decided the grant is legal.
func grant(d *pb.Domain, holder string, index uint64) {
	d.Epoch++
	d.Holder = holder
	d.Released = false
	d.EpochIndex = index
	d.UpdatedIndex = index
	d.Fence = nil // a prepared fence is for the epoch just granted, or older
	if d.Work != nil {
		d.Work = &pb.WorkState{Status: pb.LockStatus_LOCK_STATUS_HELD, Epoch: d.Epoch}
	}
}

// applyAssignInitial names the first holder of a domain (epoch 0 → 1). It is
// the only way authority starts without a promotion (AU-3).
func applyAssignInitial(f *FSM, e entry) *Result {
	c := e.cmd.GetAssignInitial()
	d, err := f.lookup(c.Domain)
	if err != nil {
		return failed(e.index, err)
	}
	if err := ValidateName("holder", c.Holder); err != nil {
		return failed(e.index, err)
	}
	if d.Epoch != 0 {
		return failed(e.index, fmt.Errorf("%w: domain %q already has epoch %d (holder %q): use a promotion", ErrPrecondition, d.Name, d.Epoch, d.Holder))
	}
	if d.Kind == pb.DomainKind_DOMAIN_KIND_AERODB {
		m := member(d, c.Holder)
		if m == nil {
			return failed(e.index, fmt.Errorf("%w: %q is not a registered member of %q", ErrPrecondition, c.Holder, d.Name))
		}
		if m.State != pb.MemberState_MEMBER_STATE_ACTIVE {
			return failed(e.index, fmt.Errorf("%w: member %q of %q is %v", ErrPrecondition, c.Holder, d.Name, m.State))
		}
	}
	grant(d, c.Holder, e.index)
	f.emit(e, EventInitialAssignment, d, "holder", d.Holder, "epoch", u(d.Epoch))
	return done(d)
}

// applyAcquire takes a lock or release domain that is free (never held,
// released, or its holder's lease expired per the leader's recorded
// observation), bumping the epoch. On an aerodb domain it only re-grants the
// current holder's lease at the same epoch (how a holder whose lease expired
// on the leader takes it back); database authority moves only by promotion.
func applyAcquire(f *FSM, e entry) *Result {
	c := e.cmd.GetAcquire()
	d, err := f.lookup(c.Domain)
	if err != nil {
		return failed(e.index, err)
	}
	if err := ValidateName("holder", c.Holder); err != nil {
		return failed(e.index, err)
	}
	if c.ExpectedEpoch != nil && *c.ExpectedEpoch != d.Epoch {
		return failed(e.index, fmt.Errorf("%w: expected epoch %d, domain %q is at %d", ErrEpochStale, *c.ExpectedEpoch, d.Name, d.Epoch))
	}
	if d.Kind == pb.DomainKind_DOMAIN_KIND_AERODB {
		if d.Epoch == 0 || d.Holder != c.Holder || d.Released {
			return failed(e.index, fmt.Errorf("%w: only the current holder of aerodb domain %q may re-acquire; authority moves by promotion", ErrPrecondition, d.Name))
		}
		d.UpdatedIndex = e.index
		f.emit(e, EventLeaseAcquired, d, "holder", d.Holder, "epoch", u(d.Epoch), "reacquire", "true")
		return done(d)
	}
	if !free(d, c.Lease) {
		return failed(e.index, fmt.Errorf("%w: domain %q is held by %q at epoch %d and its lease has not expired", ErrPrecondition, d.Name, d.Holder, d.Epoch))
	}
	if !d.Released && c.Lease.GetState() == pb.LeaseState_LEASE_STATE_EXPIRED {
		// A deploy lock taken over after its holder's lease expired: the
		// failure was detected when the lease expired on the leader.
		deployLost(d, d.Holder, d.Epoch, e.cmd.GetStampedUnixMs()-int64(min(c.Lease.GetExpiredForMs(), uint64(MaxLeaseTTLms))))
	}
	grant(d, c.Holder, e.index)
	f.emit(e, EventLeaseAcquired, d, "holder", d.Holder, "epoch", u(d.Epoch), "reacquire", "false")
	return done(d)
}

// free reports whether a lock can be taken: never held, released, or the
// leader observed the current holder's lease expired.
func free(d *pb.Domain, obs *pb.LeaseObservation) bool {
	if d.Epoch == 0 || d.Released {
		return true
	}
	return obs.GetState() == pb.LeaseState_LEASE_STATE_EXPIRED &&
		obs.GetHolder() == d.Holder && obs.GetEpoch() == d.Epoch
}

// fence rejects anything not stamped with the current (holder, epoch). A
// rejected command changes nothing, not even the event log: fencing
// rejections are reported by the leader that refused them.
func fence(d *pb.Domain, holder string, epoch uint64) error {
	if epoch != d.Epoch || holder != d.Holder || d.Released || d.Epoch == 0 {
		return fmt.Errorf("%w: domain %q is at epoch %d held by %q (released=%t); caller %q at epoch %d",
			ErrFenced, d.Name, d.Epoch, d.Holder, d.Released, holder, epoch)
	}
	return nil
}

func applyRelease(f *FSM, e entry) *Result {
	c := e.cmd.GetRelease()
	d, err := f.lookup(c.Domain)
	if err != nil {
		return failed(e.index, err)
	}
	if err := fence(d, c.Holder, c.Epoch); err != nil {
		return failed(e.index, err)
	}
	d.Released = true
	d.UpdatedIndex = e.index
	deployLost(d, c.Holder, c.Epoch, e.cmd.GetStampedUnixMs())
	if d.Work != nil && d.Work.Status == pb.LockStatus_LOCK_STATUS_HELD {
		d.Work.Status = pb.LockStatus_LOCK_STATUS_FREE
	}
	f.emit(e, EventLeaseReleased, d, "holder", c.Holder, "epoch", u(c.Epoch))
	return done(d)
}

func applyComplete(f *FSM, e entry) *Result {
	c := e.cmd.GetComplete()
	return finishWork(f, e, c.Domain, c.Holder, c.Epoch, c.WorkId, c.Detail, pb.LockStatus_LOCK_STATUS_COMPLETED, EventWorkCompleted)
}

func applyAbort(f *FSM, e entry) *Result {
	c := e.cmd.GetAbort()
	return finishWork(f, e, c.Domain, c.Holder, c.Epoch, c.WorkId, c.Detail, pb.LockStatus_LOCK_STATUS_ABORTED, EventWorkAborted)
}

// finishWork records the end of a lock/release domain's work for the current
// epoch, fenced by epoch; the lock stays held until released.
func finishWork(f *FSM, e entry, domain, holder string, epoch uint64, workID, detail string, status pb.LockStatus, event string) *Result {
	d, err := f.lookup(domain)
	if err != nil {
		return failed(e.index, err)
	}
	if d.Work == nil {
		return failed(e.index, fmt.Errorf("%w: domain %q is an aerodb domain; complete/abort apply to lock and release domains", ErrInvalid, d.Name))
	}
	if err := fence(d, holder, epoch); err != nil {
		return failed(e.index, err)
	}
	if d.Work.Status != pb.LockStatus_LOCK_STATUS_HELD {
		return failed(e.index, fmt.Errorf("%w: work of domain %q at epoch %d is already %v", ErrPrecondition, d.Name, d.Epoch, d.Work.Status))
	}
	d.Work = &pb.WorkState{Status: status, WorkId: workID, Detail: detail, Epoch: d.Epoch}
	d.UpdatedIndex = e.index
	f.emit(e, event, d, "work_id", workID, "epoch", u(d.Epoch))
	return done(d)
}
