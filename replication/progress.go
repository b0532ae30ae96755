package replication

import (
	"context"
	"slices"
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
	// FencedEpoch is the highest epoch the replica is fenced at (its
	// FenceGuard): it accepts no WAL of a lower epoch. Above Epoch once a
	// replica-quorum promotion's prepare fenced it: Flushed is then final
	// for the epochs below.
	FencedEpoch uint64
}

// BuildReport builds a progress report against the domain watermark wm
// (nil: unknown). The report names exactly wm's lsn and carries the
// replica's own chain hash there, or no hash when the replica has no
// record at that lsn (it is behind): naming another lsn would make the
// report stale evidence. hashAt returns the replica's hash at an lsn.
//
// The report also carries the fenced epoch, the epoch of the last flushed
// record, and the replica's chain hash at each of chainLSNs it holds (the
// leader asks for them to check that fenced replicas' histories agree);
// lsns beyond its flushed position are left out.
func BuildReport(p ReplicaProgress, wm *pb.Watermark, chainLSNs []uint64, hashAt func(lsn uint64) ([]byte, bool)) *pb.ProgressReport {
	r := &pb.ProgressReport{MemberId: p.Member, Epoch: p.Epoch, FlushedLsn: p.Flushed.LSN, FlushedHash: p.Flushed.Hash,
		WatermarkLsn: wm.GetLsn(), AppliedCommitId: p.AppliedCommitID, ReadSafe: p.ReadSafe, State: p.State,
		FencedEpoch: p.FencedEpoch, FlushedEpoch: p.Flushed.Epoch}
	if lsn := wm.GetLsn(); lsn > 0 && lsn <= p.Flushed.LSN {
		if h, ok := hashAt(lsn); ok {
			r.HashAtWatermark = h
		}
	}
	for _, lsn := range chainLSNs {
		if lsn == 0 || lsn > p.Flushed.LSN {
			continue
		}
		if h, ok := hashAt(lsn); ok {
			r.Chain = append(r.Chain, &pb.ChainPoint{Lsn: lsn, Hash: h})
		}
	}
	return r
}

// Reporter keeps a replica's progress flowing to the authority through a
// client.ProgressReporter, each report built by BuildReport against the
// watermark of the leader's latest reply (or the one given to
// NoteWatermark before the first reply) and with the chain lsns of the
// latest reply.
//
// replica-quorum fencing: when a reply carries a fence above the highest
// one handled, the Reporter first calls the fence callback (OnFence: the
// replica durably raises its FenceGuard, so it rejects all WAL below the
// fence) and only once it succeeded asks for a report at once, so the
// leader's next report from this replica is its final position, marked
// fenced. A change of the chain lsns also asks for a report at once.
type Reporter struct {
	r      *client.ProgressReporter
	source func() ReplicaProgress
	hashAt func(uint64) ([]byte, bool)

	mu      sync.Mutex
	noted   *pb.Watermark
	chain   []uint64
	onFence func(*pb.Fence) error
	fenced  uint64 // highest fence epoch OnFence accepted
}

// NewReporter reports source() every interval and on Report.
func NewReporter(c *client.Client, domain string, interval time.Duration, source func() ReplicaProgress,
	hashAt func(uint64) ([]byte, bool)) *Reporter {
	rep := &Reporter{source: source, hashAt: hashAt}
	rep.r = client.NewProgressReporter(c, domain, interval, rep.build)
	rep.r.OnResponse(rep.HandleResponse)
	return rep
}

// OnFence sets the callback that fences the replica (call before Start).
// It must return only once the fence is durable and in force; an error
// leaves the fence unhandled (retried on the next reply).
func (r *Reporter) OnFence(f func(*pb.Fence) error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onFence = f
}

// HandleResponse processes a leader's reply: the fence (see Reporter) and
// the chain lsns. The client's reporter calls it from its goroutine; it is
// exported so tests can feed replies without a leader.
func (r *Reporter) HandleResponse(resp *pb.ProgressReportResponse) {
	r.mu.Lock()
	onFence, handled := r.onFence, r.fenced
	chainChanged := !slices.Equal(r.chain, resp.GetChainLsns())
	if chainChanged {
		r.chain = slices.Clone(resp.GetChainLsns())
	}
	r.mu.Unlock()
	report := chainChanged && len(resp.GetChainLsns()) > 0
	if f := resp.GetFence(); f.GetEpoch() > handled && onFence != nil {
		if err := onFence(f); err == nil {
			r.mu.Lock()
			r.fenced = max(r.fenced, f.GetEpoch())
			r.mu.Unlock()
			report = true
		}
	}
	if report {
		r.r.Report()
	}
}

// ChainLSNs are the lsns the next report carries chain hashes at.
func (r *Reporter) ChainLSNs() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.chain)
}

// Build is the report the reporter would send now.
func (r *Reporter) Build() *pb.ProgressReport { return r.build() }

func (r *Reporter) build() *pb.ProgressReport {
	return BuildReport(r.source(), r.Watermark(), r.ChainLSNs(), r.hashAt)
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
