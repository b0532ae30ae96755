package fsm

import (
	"bytes"
	"encoding/hex"
	"fmt"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/validator"
)

// MaxWatermarkBatch bounds one AdvanceWatermark entry.
const MaxWatermarkBatch = 4096

// applyAdvanceWatermark applies a batch of advances; each succeeds or fails
// on its own (one fenced domain does not fail its neighbours in the batch).
func applyAdvanceWatermark(f *FSM, e entry) *Result {
	batch := e.cmd.GetAdvanceWatermark().GetAdvances()
	if len(batch) == 0 || len(batch) > MaxWatermarkBatch {
		return failed(e.index, fmt.Errorf("%w: watermark batch of %d advances (want 1..%d)", ErrInvalid, len(batch), MaxWatermarkBatch))
	}
	res := &Result{Watermarks: make([]WatermarkResult, len(batch))}
	for i, adv := range batch {
		res.Watermarks[i] = WatermarkResult{Domain: adv.Domain, Err: f.advanceWatermark(e, adv)}
	}
	if len(batch) == 1 {
		res.Err = res.Watermarks[0].Err
		if d, ok := f.peek(batch[0].Domain); ok {
			res.Epoch, res.Holder = d.Epoch, d.Holder
		}
	}
	return res
}

// advanceWatermark moves a domain's durable watermark forward. Only the
// current holder at the current epoch may (AU-12: a promoted-away primary
// can never acknowledge again). The watermark only grows and a known lsn
// keeps its hash, across epochs too: a promoted replica contained the old
// watermark (that is what the promotion checked), so its history continues
// it. Only a promotion that waived a check lifts the matching floor: after
// allow-data-loss the new primary's history may be shorter or different,
// after allow-visibility-regression its visible commit id may be lower.
func (f *FSM) advanceWatermark(e entry, adv *pb.WatermarkAdvance) error {
	d, err := f.lookup(adv.Domain)
	if err != nil {
		return err
	}
	if d.Kind != pb.DomainKind_DOMAIN_KIND_AERODB {
		return fmt.Errorf("%w: domain %q is not an aerodb domain", ErrInvalid, d.Name)
	}
	if err := fence(d, adv.Holder, adv.Epoch); err != nil {
		return err
	}
	if len(adv.Hash) == 0 && adv.Lsn > 0 {
		return fmt.Errorf("%w: watermark at lsn %d has no chain hash", ErrInvalid, adv.Lsn)
	}
	if wm := d.Watermark; wm != nil {
		lsnFloor, visibleFloor := true, true
		if wm.Epoch < adv.Epoch {
			lsnFloor, visibleFloor = f.floors(d)
		}
		if err := monotonic(wm, adv, lsnFloor, visibleFloor); err != nil {
			return fmt.Errorf("domain %q: %w", d.Name, err)
		}
	}
	d.Watermark = &pb.Watermark{Epoch: adv.Epoch, Lsn: adv.Lsn, Hash: bytes.Clone(adv.Hash), VisibleCommitId: adv.VisibleCommitId}
	d.UpdatedIndex = e.index
	f.emit(e, EventWatermarkAdvanced, d, "lsn", u(adv.Lsn), "visible_commit_id", u(adv.VisibleCommitId))
	return nil
}

func monotonic(wm *pb.Watermark, adv *pb.WatermarkAdvance, lsnFloor, visibleFloor bool) error {
	switch {
	case lsnFloor && adv.Lsn < wm.Lsn:
		return fmt.Errorf("%w: watermark lsn %d is below the recorded %d (epoch %d)", ErrConflict, adv.Lsn, wm.Lsn, wm.Epoch)
	case lsnFloor && adv.Lsn == wm.Lsn && !bytes.Equal(adv.Hash, wm.Hash):
		return fmt.Errorf("%w: lsn %d recorded with hash %s (epoch %d), advance carries %s", ErrConflict, wm.Lsn,
			hex.EncodeToString(wm.Hash), wm.Epoch, hex.EncodeToString(adv.Hash))
	case visibleFloor && adv.VisibleCommitId < wm.VisibleCommitId:
		return fmt.Errorf("%w: visible commit id %d is below the recorded %d (epoch %d)", ErrConflict, adv.VisibleCommitId, wm.VisibleCommitId, wm.Epoch)
	}
	return nil
}

// floors reports which watermark floors carry over into the current epoch:
// both, unless the promotion that granted it applied a waiver.
func (f *FSM) floors(d *pb.Domain) (lsnFloor, visibleFloor bool) {
	lsnFloor, visibleFloor = true, true
	// Only a promotion grants an aerodb domain an epoch after the first,
	// so the newest allowed attempt is the one that granted the current
	// epoch, if any did.
	epochAfter, waivers, ok := f.histories[d.Name].floors()
	if !ok || epochAfter != d.Epoch {
		return lsnFloor, visibleFloor
	}
	for _, w := range waivers {
		switch w {
		case validator.WaiverAllowDataLoss:
			lsnFloor = false
		case validator.WaiverAllowVisibilityRegression:
			visibleFloor = false
		}
	}
	return lsnFloor, visibleFloor
}
