package promotion

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"github.com/hashicorp/go-hclog"
)

// Config of the leader-side service.
type Config struct {
	// Log is the replicated log (cluster.Node).
	Log Log
	// FSM is the state machine the log applies to on this node.
	FSM *fsm.FSM
	// Clock gives monotonic time for leases and report ages, and the wall
	// time stamped into entries for audit.
	Clock Clock
	// PromotionDisabled turns promotion off on this server (AU-14): every
	// promotion path is refused, everything else behaves unchanged.
	PromotionDisabled bool
	Logger            hclog.Logger
	// Observer sees every decision, renewal and fencing rejection after the
	// fact (metrics); nil means none.
	Observer Observer
	// Policy tunes the automatic promotion policy (zero: defaults).
	Policy PolicyConfig
	// FenceWait bounds a replica-quorum promotion's wait for fenced
	// reports (zero: DefaultFenceWait).
	FenceWait time.Duration
	// WatermarkEntryPerCall gives every AdvanceWatermark call a log entry
	// of its own instead of merging concurrent calls into one entry
	// (wmbatch.go); for A/B measurement.
	WatermarkEntryPerCall bool
}

// Service is the leader side of AeroDB Authority: it turns requests into log
// entries, owns the leader-local lease table and progress reports, and runs
// the promotion lifecycle. Every method is safe for concurrent use.
//
// Only the leader serves, and only after BecomeLeader's barrier: a new
// leader that served renewals before applying the previous term's entries
// could renew a lease that a committed promotion already moved (DESIGN §5).
type Service struct {
	log     Log
	fsm     *fsm.FSM
	clock   Clock
	logger  hclog.Logger
	leases  *LeaseTable
	reports *reportTable
	locks   domainLocks
	obs     Observer

	promotionDisabled bool

	mu    sync.RWMutex
	ready bool   // barrier done in the current term
	term  uint64 // term the barrier was done in
	// notes is the current term's notebook of observations waiting for
	// the next write (nil while a follower); read without s.mu from the
	// lease table's expiry callback.
	notes atomic.Pointer[notebook]
	// waits holds the current term's Acquire(wait) calls (nil while a
	// follower).
	waits atomic.Pointer[waitRoom]
	// policy is the current term's automatic promotion policy (nil while a
	// follower).
	policy    atomic.Pointer[policyTerm]
	policyCfg PolicyConfig
	// undecided remembers the attempts this node led that returned without
	// a decision (for the abort's last_known_state); kept across terms.
	undecided undecided
	fenceWait time.Duration
	// policyRun runs a policy evaluation off the caller's goroutine (nil:
	// go f(); tests queue and drain).
	policyRun func(func())
	// wm merges concurrent watermark advances into one entry (wmbatch.go).
	wm             wmCommitter
	wmEntryPerCall bool
}

// NewService wires a service; it starts as a follower.
func NewService(cfg Config) *Service {
	logger := cfg.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	obs := cfg.Observer
	if obs == nil {
		obs = noopObserver{}
	}
	leases := NewLeaseTable(cfg.Clock)
	s := &Service{
		log:               cfg.Log,
		fsm:               cfg.FSM,
		clock:             cfg.Clock,
		logger:            logger,
		leases:            leases,
		reports:           newReportTable(),
		obs:               obs,
		promotionDisabled: cfg.PromotionDisabled,
		policyCfg:         cfg.Policy.withDefaults(),
		fenceWait:         cfg.FenceWait,
		wmEntryPerCall:    cfg.WatermarkEntryPerCall,
	}
	leases.onExpire = s.leaseExpired
	return s
}

// leaseExpired is told (under the lease table's lock) when the leader first
// finds a lease expired: count it and note it, without blocking.
func (s *Service) leaseExpired(domain string) {
	s.obs.LeaseExpired(domain)
	s.notes.Load().note(noteLeaseExpired, domain)
}

// fenced counts and notes a request refused for a stale (holder, epoch).
func (s *Service) fenced(domain, kind string) {
	s.obs.Fenced(kind)
	s.notes.Load().fencedOnce(domain, kind)
}

// BecomeLeader is called when raft reports leadership. It waits for the
// barrier, then resets every lease to a full TTL (a new leader cannot know
// the last renewal) and starts serving.
func (s *Service) BecomeLeader(ctx context.Context) error {
	term := s.log.Term()
	if err := s.log.Barrier(ctx); err != nil {
		return fmt.Errorf("promotion: leader barrier: %w", err)
	}
	if err := s.abortUndecided(ctx); err != nil {
		return fmt.Errorf("promotion: recording aborted attempts: %w", err)
	}
	// The leader change is written before serving, so it precedes every
	// entry this leader writes (one entry per term, not a steady-state
	// write).
	s.writeNote(ctx, &pb.Note{Kind: noteLeaderChanged, Fields: []*pb.Observed{
		{Key: "leader_id", Value: s.log.ID()}, {Key: "term", Value: fmt.Sprint(term)}}})
	var grants []Grant
	for _, a := range s.fsm.Authorities() {
		if a.Holder != "" && !a.Released {
			grants = append(grants, Grant{Domain: a.Domain, Holder: a.Holder, Epoch: a.Epoch, TTL: ms(a.TTLms)})
		}
	}
	s.mu.Lock()
	s.stopNotes()
	s.waits.Swap(nil).close()
	s.policy.Swap(nil).close()
	s.leases.Promote(grants)
	s.reports.reset()
	s.ready, s.term = true, term
	s.startNotes()
	s.waits.Store(newWaitRoom(s.clock))
	policy := s.newPolicyTerm()
	s.policy.Store(policy)
	s.mu.Unlock()
	policy.start() // a timer per automatic domain, at its lease's expiry
	s.logger.Info("serving as leader", "term", term, "leases", len(grants))
	return nil
}

// StepDown is called when raft reports the loss of leadership: leases and
// reports are leader-local soft state and go with it.
func (s *Service) StepDown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ready = false
	s.stopNotes()
	s.waits.Swap(nil).close() // waiters answer ErrNotLeader
	s.policy.Swap(nil).close()
	s.leases.Demote()
	s.reports.reset()
}

// Ready reports whether this node serves leader requests.
func (s *Service) Ready() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.ready
}

func (s *Service) checkReady() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.ready {
		return ErrNotLeader
	}
	if s.log.Term() != s.term {
		return ErrNotReady
	}
	return nil
}

// Leases exposes the leader-local lease table (for status and tests).
func (s *Service) Leases() *LeaseTable { return s.leases }

// propose replicates a command, after the observations waiting in the
// notebook (they precede the write that carries them).
func (s *Service) propose(ctx context.Context, cmd *pb.Command) (*fsm.Result, error) {
	defer s.notesAhead(ctx)()
	return s.proposeOne(ctx, cmd)
}

// proposeOne stamps a command with the leader's wall time and term and
// replicates it.
func (s *Service) proposeOne(ctx context.Context, cmd *pb.Command) (*fsm.Result, error) {
	cmd.StampedUnixMs = s.clock.Now().UnixMilli()
	cmd.Term = s.log.Term()
	cmd.Proposer = s.log.ID()
	return s.log.Propose(ctx, cmd)
}

func ms(v uint64) time.Duration { return time.Duration(v) * time.Millisecond }
