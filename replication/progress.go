package replication

import (
	"context"
	"sync"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
)

// ReplicaProgress is what a replica knows about itself.
type ReplicaProgress struct {
	Member string
	// Epoch is the authority epoch the replica follows (its fence): the
	// leader only accepts evidence from the domain's current epoch.
	Epoch           uint64
	Flushed         Position
	AppliedCommitID uint64
	// ReadSafe: everything flushed is applied, so reads at the visible
	// commit id are consistent.
	ReadSafe bool
	State    pb.ReplicaState
}

// BuildReport builds a progress report against the domain watermark wm
// (nil: unknown). The report names exactly wm's lsn and carries the
// replica's own chain hash there, or no hash when the replica has no
// record at that lsn (it is behind): naming another lsn would make the
// report stale evidence. hashAt returns the replica's hash at an lsn.
func BuildReport(p ReplicaProgress, wm *pb.Watermark, hashAt func(lsn uint64) ([]byte, bool)) *pb.ProgressReport {
	r := &pb.ProgressReport{MemberId: p.Member, Epoch: p.Epoch, FlushedLsn: p.Flushed.LSN, FlushedHash: p.Flushed.Hash,
		WatermarkLsn: wm.GetLsn(), AppliedCommitId: p.AppliedCommitID, ReadSafe: p.ReadSafe, State: p.State}
	if lsn := wm.GetLsn(); lsn > 0 && lsn <= p.Flushed.LSN {
		if h, ok := hashAt(lsn); ok {
			r.HashAtWatermark = h
		}
	}
	return r
}

// Reporter keeps a replica's progress flowing to the authority through a
// client.ProgressReporter, each report built by BuildReport against the
// watermark of the leader's latest reply (or the one given to
// NoteWatermark before the first reply).
type Reporter struct {
	r      *client.ProgressReporter
	source func() ReplicaProgress
	hashAt func(uint64) ([]byte, bool)

	mu    sync.Mutex
	noted *pb.Watermark
}

// NewReporter reports source() every interval and on Report.
func NewReporter(c *client.Client, domain string, interval time.Duration, source func() ReplicaProgress,
	hashAt func(uint64) ([]byte, bool)) *Reporter {
	rep := &Reporter{source: source, hashAt: hashAt}
	rep.r = client.NewProgressReporter(c, domain, interval, rep.build)
	return rep
}

func (r *Reporter) build() *pb.ProgressReport {
	return BuildReport(r.source(), r.Watermark(), r.hashAt)
}

// NoteWatermark records a watermark read elsewhere (e.g. GetDomain) for
// reports sent before the leader's first reply.
func (r *Reporter) NoteWatermark(wm *pb.Watermark) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.noted = wm
}

// Watermark is the watermark the next report is built against.
func (r *Reporter) Watermark() *pb.Watermark {
	if wm := r.r.Watermark(); wm != nil {
		return wm
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.noted
}

// Start starts reporting until ctx ends or Close.
func (r *Reporter) Start(ctx context.Context) { r.r.Start(ctx) }

// Report asks for a report at once.
func (r *Reporter) Report() { r.r.Report() }

// Err is the latest report's error.
func (r *Reporter) Err() error { return r.r.Err() }

// Close stops the reporter.
func (r *Reporter) Close() { r.r.Close() }
