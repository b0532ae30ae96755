// Package history is the record of a fault-injection run: Jepsen-shaped
// operations (invoke / ok / fail / info) from logical clients, plus the
// other observations the checkers need — nemesis faults, lease-holder agent
// beliefs, the fenced resource's accepts and rejects, and each node's
// applied authority log. Everything is timestamped on the machine's shared
// CLOCK_MONOTONIC, so records from every process merge on one timeline.
// A history is stored as JSON lines, one Record per line.
package history

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Kinds of record.
const (
	KindOp      = "op"      // a client operation event (Type invoke|ok|fail|info)
	KindNemesis = "nemesis" // a fault started or ended
	KindAgent   = "agent"   // a lease-holder agent's belief changed
	KindFenced  = "fenced"  // the fenced resource accepted or rejected a write
	KindApplied = "applied" // one node's applied authority state for a domain, read after the run
	KindLeader  = "leader"  // a server observed as leader of a term
	// KindPolicy is a decided promotion attempt of an automatic domain,
	// read from the domain's History after the run (not a client
	// operation: the leader's policy made it). Time is the leader's stamp
	// mapped onto the monotonic clock; RequestID, Stamped, Checks, Info
	// (the initiator) and Value (ExpectedEpoch: epoch before, Epoch and
	// Holder: after, Outcome, Term) come from the record.
	KindPolicy = "policy"
	// KindDB is the simulated database of a replica-quorum domain
	// (workload, dbsim): Type DBAck is a write its holder acknowledged
	// (Value: Epoch, Lsn, Hash, Holder); DBTakeover is a holder starting at
	// its epoch (Value: Epoch, Holder, Lsn and Hash of its last record; Info:
	// its WAL as dbsim.Segments).
	KindDB = "db"
)

// Op types (Jepsen's): invoke, then exactly one of ok (it happened), fail
// (it certainly did not), info (unknown: timeout, reset after send).
const (
	Invoke = "invoke"
	OK     = "ok"
	Fail   = "fail"
	Info   = "info"
)

// Operation names (Record.F).
const (
	FRead    = "read"    // read (epoch, holder) of a domain
	FPromote = "promote" // promote with expected epoch (compare-and-set)
	FAcquire = "acquire" // acquire a lock domain
	FRenew   = "renew"   // renew a lease
	FRelease = "release" // release a lease
	FAdvance = "advance" // advance the watermark
	FWrite   = "write"   // an agent's write to the fenced resource
)

// Record.Type values of the non-op kinds, and promote outcomes.
const (
	NemesisStart   = "start"    // nemesis: a fault began
	NemesisStop    = "stop"     // nemesis: the fault was healed
	AgentHolds     = "holds"    // agent: believes it holds (domain, epoch)
	AgentLost      = "lost"     // agent: stopped believing it holds the domain
	FencedAccept   = "accept"   // fenced resource accepted a write
	FencedReject   = "reject"   // fenced resource rejected a write
	OutcomeAllowed = "allowed"  // promote outcome (Value.Outcome)
	OutcomeDenied  = "denied"   // promote outcome (Value.Outcome)
	DBAck          = "ack"      // db: a write acknowledged to its client
	DBTakeover     = "takeover" // db: a new holder's WAL when it took over
)

// Record is one line of a history.
type Record struct {
	Kind    string `json:"kind"`
	Time    int64  `json:"time"` // CLOCK_MONOTONIC, nanoseconds
	Process int    `json:"process,omitempty"`
	Type    string `json:"type,omitempty"` // op: invoke|ok|fail|info; nemesis: start|stop; agent: holds|lost; fenced: accept|reject
	F       string `json:"f,omitempty"`
	Domain  string `json:"domain,omitempty"`
	Node    string `json:"node,omitempty"`
	// RequestID identifies a write op across invoke/completion and against
	// the nodes' logs (unknown ops are resolved by it).
	RequestID string `json:"request_id,omitempty"`
	Value     Value  `json:"value,omitzero"`
	Error     string `json:"error,omitempty"`
	// Nemesis: the fault's name and details.
	Fault string `json:"fault,omitempty"`
	Info  string `json:"info,omitempty"`
	// Policy: the record's leader-stamped wall clock (Unix ms) and the
	// validator checks it passed (satisfied, not waived).
	Stamped int64    `json:"stamped_unix_ms,omitempty"`
	Checks  []string `json:"checks,omitempty"`
}

// Value carries an op's arguments and results.
type Value struct {
	Epoch         uint64 `json:"epoch,omitempty"`          // read/promote/acquire result; agent/fenced epoch
	Holder        string `json:"holder,omitempty"`         // read result; promote candidate; agent/fenced holder
	ExpectedEpoch uint64 `json:"expected_epoch,omitempty"` // promote/acquire argument (0 = none)
	Lsn           uint64 `json:"lsn,omitempty"`            // advance argument
	Seq           uint64 `json:"seq,omitempty"`            // fenced write sequence
	Term          uint64 `json:"term,omitempty"`           // leader records
	Outcome       string `json:"outcome,omitempty"`        // promote: allowed|denied
	Hash          string `json:"hash,omitempty"`           // db: chain hash (hex)
}

// Now is the shared monotonic clock (the same for every process on the
// machine; SIGSTOP does not stop it).
func Now() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err)
	}
	return ts.Nano()
}

// Writer appends records as JSON lines; safe for concurrent use.
type Writer struct {
	mu  sync.Mutex
	w   *bufio.Writer
	c   io.Closer
	err error
}

// Create opens path for appending records.
func Create(path string) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	return &Writer{w: bufio.NewWriter(f), c: f}, nil
}

// NewWriter writes to w (tests).
func NewWriter(w io.Writer) *Writer { return &Writer{w: bufio.NewWriter(w)} }

// Add writes one record (Time is set when zero).
func (h *Writer) Add(r Record) {
	if r.Time == 0 {
		r.Time = Now()
	}
	b, err := json.Marshal(r)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err == nil {
		_, err = h.w.Write(append(b, '\n'))
	}
	if err != nil && h.err == nil {
		h.err = err
	}
}

// Close flushes and closes.
func (h *Writer) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.w.Flush(); err != nil && h.err == nil {
		h.err = err
	}
	if h.c != nil {
		if err := h.c.Close(); err != nil && h.err == nil {
			h.err = err
		}
	}
	return h.err
}

// Read parses a JSON-lines history.
func Read(r io.Reader) ([]Record, error) {
	var out []Record
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for n := 1; sc.Scan(); n++ {
		var rec Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return nil, fmt.Errorf("history line %d: %w", n, err)
		}
		out = append(out, rec)
	}
	return out, sc.Err()
}

// ReadFile parses a history file.
func ReadFile(path string) ([]Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Read(f)
}
