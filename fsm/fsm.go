// Package fsm is the replicated state machine of AeroDB Authority: domains,
// epochs, holders, members, watermarks and the permanent record of every
// promotion attempt.
//
// It is a pure core: no clock reads, no randomness, no I/O, no goroutines, no
// map-order-dependent output. Time enters only as values stamped into a
// command by the leader. cluster.Node adapts it to hashicorp/raft's FSM
// interface; everything here is a function of (state, log entry).
package fsm

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/protobuf/proto"
)

// FSM holds the replicated state. Apply is called from one goroutine (raft's
// FSM goroutine); reads may come from any goroutine, hence the lock.
type FSM struct {
	mu        sync.RWMutex
	recs      map[string]domainRec // domain records, encoded (records.go)
	names     []string             // recs' names, sorted
	work      map[string]*pb.Domain
	hot       hotDomains
	histories map[string]*history // attempt history per domain
	lastIndex uint64
	servers   map[string]string // raft server id → gRPC address
	events    eventLog
	checker   invariantChecker

	// State hash upkeep (statehash.go): the sum of every record's digest,
	// and the domains the entry being applied works on (in work).
	digest     digestSum
	attemptSum digestSum // the attempts' share of digest
	touched    []string
	// captureGen counts captures: a domain's request index copied before
	// the newest capture is shared with it (history.go, ownIDs).
	captureGen atomic.Uint64
	tails      tailCache // history.go
	spill      spiller   // spill.go
}

// New returns an empty state machine.
func New() *FSM {
	return &FSM{recs: map[string]domainRec{}, work: map[string]*pb.Domain{}, histories: map[string]*history{},
		servers: map[string]string{}}
}

// Apply decodes one log entry and applies it. A malformed entry changes
// nothing and returns ErrInvalid deterministically on every replica.
func (f *FSM) Apply(index, term uint64, data []byte) *Result {
	var cmd pb.Command
	if err := proto.Unmarshal(data, &cmd); err != nil {
		f.advance(index)
		return failed(index, fmt.Errorf("%w: undecodable command: %v", ErrInvalid, err))
	}
	return f.ApplyCommand(index, term, &cmd)
}

// ApplyCommand applies a decoded command at a log index.
func (f *FSM) ApplyCommand(index, term uint64, cmd *pb.Command) *Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	apply, err := applierFor(cmd)
	if err == nil && !bodySet(cmd) {
		err = fmt.Errorf("%w: command body %T is empty", ErrInvalid, cmd.Body)
	}
	if err != nil {
		f.lastIndex = max(f.lastIndex, index)
		return failed(index, err)
	}
	f.events.beginEntry()
	res := apply(f, entry{index: index, term: term, cmd: cmd})
	f.commitTouched()
	f.maintainSpill()
	res.Index = index
	f.lastIndex = max(f.lastIndex, index)
	f.events.wake(f.events.seq > 0)
	f.checker.afterApply(f, f.touched)
	f.touched = f.touched[:0]
	return res
}

func (f *FSM) advance(index uint64) {
	f.mu.Lock()
	f.lastIndex = max(f.lastIndex, index)
	f.mu.Unlock()
}

// entry is what an applier sees of a log entry.
type entry struct {
	index, term uint64
	cmd         *pb.Command
}

type applyFunc func(f *FSM, e entry) *Result

// applierFor is the one dispatch table: every Command body case has exactly
// one applier. An entry whose body is unknown to this build (written by a
// newer version) must not be skipped silently, or replicas would diverge:
// it panics, as Consul's FSM does for unknown message types.
func applierFor(cmd *pb.Command) (applyFunc, error) {
	switch cmd.Body.(type) {
	case *pb.Command_CreateDomain:
		return applyCreateDomain, nil
	case *pb.Command_UpdateDomainPolicy:
		return applyUpdatePolicy, nil
	case *pb.Command_RegisterMember:
		return applyRegisterMember, nil
	case *pb.Command_AssignInitial:
		return applyAssignInitial, nil
	case *pb.Command_Acquire:
		return applyAcquire, nil
	case *pb.Command_Release:
		return applyRelease, nil
	case *pb.Command_AdvanceWatermark:
		return applyAdvanceWatermark, nil
	case *pb.Command_PromotionAttempt:
		return applyPromotionAttempt, nil
	case *pb.Command_Complete:
		return applyComplete, nil
	case *pb.Command_Abort:
		return applyAbort, nil
	case *pb.Command_PromotionIntent:
		return applyPromotionIntent, nil
	case *pb.Command_PromotionAbort:
		return applyPromotionAbort, nil
	case *pb.Command_RegisterServer:
		return applyRegisterServer, nil
	case *pb.Command_Note:
		return applyNote, nil
	case *pb.Command_PreparePromotion:
		return applyPreparePromotion, nil
	case *pb.Command_DeployStep:
		return applyDeployStep, nil
	case *pb.Command_ReleaseTransition:
		return applyReleaseTransition, nil
	case *pb.Command_LabelReleaseAbort:
		return applyLabelReleaseAbort, nil
	case nil:
		if len(cmd.ProtoReflect().GetUnknown()) > 0 {
			panic("fsm: log entry carries a command unknown to this version; refusing to diverge")
		}
		return nil, fmt.Errorf("%w: command has no body", ErrInvalid)
	}
	panic(fmt.Sprintf("fsm: no applier for %T", cmd.Body))
}

// LastIndex is the log index of the last applied entry.
func (f *FSM) LastIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.lastIndex
}

// Domain returns a copy of a domain's state.
func (f *FSM) Domain(name string) (*pb.Domain, bool) {
	f.mu.RLock()
	rec, ok := f.recs[name]
	f.mu.RUnlock()
	if !ok {
		return nil, false
	}
	return decodeDomain(rec.raw), true // immutable bytes: decoded outside the lock
}

// DomainNames returns every domain name, sorted.
func (f *FSM) DomainNames() []string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return slices.Clone(f.names)
}

// sortedNames is every domain name, sorted: the FSM's own slice, to read
// under the lock and not to change.
func (f *FSM) sortedNames() []string { return f.names }

// Authority is the (epoch, holder) summary of a domain, as the leader's lease
// table needs it.
type Authority struct {
	Domain   string
	Kind     pb.DomainKind
	Epoch    uint64
	Holder   string
	Released bool
	TTLms    uint64
}

// Authorities lists every domain's current authority, sorted by name.
func (f *FSM) Authorities() []Authority {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]Authority, 0, len(f.recs))
	for _, n := range f.sortedNames() {
		out = append(out, authorityOf(n, f.recs[n]))
	}
	return out
}

// AuthorityOf returns one domain's authority summary.
func (f *FSM) AuthorityOf(name string) (Authority, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	rec, ok := f.recs[name]
	if !ok {
		return Authority{}, false
	}
	return authorityOf(name, rec), true
}

func authorityOf(name string, r domainRec) Authority {
	return Authority{Domain: name, Kind: r.kind, Epoch: r.epoch, Holder: r.holder, Released: r.released, TTLms: r.ttlMs}
}

// Attempt returns the recorded attempt of (domain, request id), if any.
func (f *FSM) Attempt(domain, requestID string) (*pb.AttemptRecord, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.histories[domain].attempt(requestID)
}

// Watermark returns a copy of a domain's watermark (nil when unknown).
func (f *FSM) Watermark(name string) (*pb.Watermark, bool) {
	f.mu.RLock()
	rec, ok := f.recs[name]
	f.mu.RUnlock()
	if !ok {
		return nil, false
	}
	raw, ok := recField(rec.raw, 8) // Domain.watermark
	if !ok {
		return nil, true
	}
	wm := &pb.Watermark{}
	if err := proto.Unmarshal(raw, wm); err != nil {
		panic(fmt.Sprintf("fsm: the watermark of domain %q does not decode: %v", name, err))
	}
	return wm, true
}

// Summaries lists up to limit domains whose names sort after `after`, and
// whether more follow. Used by list APIs; no attempt history is copied.
func (f *FSM) Summaries(after string, limit int) ([]*pb.DomainSummary, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	names := f.sortedNames()
	start, _ := slices.BinarySearch(names, after)
	if start < len(names) && names[start] == after {
		start++
	}
	var out []*pb.DomainSummary
	for _, n := range names[start:] {
		if len(out) == limit {
			return out, true
		}
		d := decodeDomain(f.recs[n].raw)
		s := &pb.DomainSummary{Name: d.Name, Kind: d.Kind, Epoch: d.Epoch, Holder: d.Holder, Released: d.Released, Members: uint32(len(d.Members))}
		s.Watermark = d.Watermark // d is this call's own copy
		out = append(out, s)
	}
	return out, false
}

// bodySet reports whether the command's body message is present (a Go
// caller can build a oneof wrapper holding a nil message; the wire format
// cannot).
func bodySet(cmd *pb.Command) bool {
	m := cmd.ProtoReflect()
	fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("body"))
	return fd != nil && m.Get(fd).Message().IsValid()
}
