package fsm

import (
	"crypto/sha256"
	"fmt"
	"slices"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/protobuf/proto"
)

// The attempt history lives beside the domain records, not inside them:
// reading, changing or evaluating a domain never copies its history, so a
// promotion costs the same on a domain with ten thousand allowed attempts
// as on a new one. Each record is kept as its deterministic encoding —
// immutable once stored, so a snapshot shares it with the live state and a
// read decodes only the page it returns.
const (
	// DeniedHistory bounds the per-domain ring of denied attempts by count.
	// Allowed attempts are kept forever (AU-2: records are permanent).
	DeniedHistory = 64
	// DeniedHistoryBytes bounds the same ring by encoded bytes; the newest
	// denied attempt is always kept, whatever its size.
	DeniedHistoryBytes = 256 << 10
	// DefaultHistoryPage and MaxHistoryPage: records per History page.
	DefaultHistoryPage = 100
	MaxHistoryPage     = 1000
	// HistoryPageBytes ends a page early once its records' encodings reach
	// it, so a page stays well inside a 4 MiB gRPC message.
	HistoryPageBytes = 1 << 20
)

// storedAttempt is one recorded attempt. Never modified after it is stored.
type storedAttempt struct {
	index     uint64
	requestID string
	allowed   bool
	raw       []byte // deterministic protobuf encoding of the AttemptRecord
}

// record decodes the stored bytes. They were produced by this process's
// own marshalling (or verified when a snapshot was restored), so a decode
// failure is memory corruption: stop rather than answer with a guess.
func (s *storedAttempt) record() *pb.AttemptRecord {
	rec := &pb.AttemptRecord{}
	if err := proto.Unmarshal(s.raw, rec); err != nil {
		panic(fmt.Sprintf("fsm: stored attempt at index %d does not decode: %v", s.index, err))
	}
	return rec
}

// history is one domain's attempts, each list in log order.
type history struct {
	allowed     []*storedAttempt
	denied      []*storedAttempt // ring: the oldest are dropped from the front
	deniedBytes int
	// lastAllowed is the newest allowed record, decoded: the watermark
	// floors depend on the waivers of the promotion that granted the epoch.
	lastAllowed *pb.AttemptRecord
}

func (f *FSM) historyOf(domain string) *history {
	h := f.histories[domain]
	if h == nil {
		h = &history{}
		f.histories[domain] = h
	}
	return h
}

// store records a decided attempt: appends it to the domain's history,
// indexes its request id, counts it in the domain record and adds its
// digest to the state hash. A denied attempt may evict the oldest denied
// ones (their request ids are then forgotten).
func (f *FSM) store(d *pb.Domain, rec *pb.AttemptRecord) {
	raw, err := marshal.Marshal(rec)
	if err != nil {
		panic(fmt.Sprintf("fsm: marshal attempt record: %v", err))
	}
	s := &storedAttempt{index: rec.LogIndex, requestID: rec.GetRequest().GetRequestId(), allowed: rec.GetDecision().GetAllowed(), raw: raw}
	f.keep(d.Name, s)
	if s.allowed {
		f.histories[d.Name].lastAllowed = proto.Clone(rec).(*pb.AttemptRecord)
		d.AllowedCount++
	} else {
		d.DeniedCount++
	}
}

// keep adds a stored attempt to the history, the request index and the
// state digest, evicting denied attempts beyond the bounds.
func (f *FSM) keep(domain string, s *storedAttempt) {
	h := f.historyOf(domain)
	f.requests.put(domain, s)
	f.digest.add(attemptDigest(s.raw))
	if s.allowed {
		h.allowed = append(h.allowed, s)
		return
	}
	h.denied = append(h.denied, s)
	h.deniedBytes += len(s.raw)
	for len(h.denied) > 1 && (len(h.denied) > DeniedHistory || h.deniedBytes > DeniedHistoryBytes) {
		old := h.denied[0]
		// Reslice, never shift: a snapshot being written may share the
		// old backing array.
		h.denied = h.denied[1:]
		h.deniedBytes -= len(old.raw)
		f.requests.drop(domain, old.requestID)
		f.digest.sub(attemptDigest(old.raw))
	}
}

func attemptDigest(raw []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte("attempt\x00"))
	h.Write(raw)
	return [32]byte(h.Sum(nil))
}

// HistoryPage is one page of a domain's attempts.
type HistoryPage struct {
	Records []*pb.AttemptRecord
	// More: records after the last one returned exist; ask again with
	// After = Next.
	More bool
	Next uint64
}

// History returns up to limit attempts (fewer when they reach
// HistoryPageBytes) of a domain with a log index above after, in log order
// (denied ones only when withDenied). Its cost is that of the page, not of
// the domain's whole history.
func (f *FSM) History(domain string, after uint64, limit int, withDenied bool) (HistoryPage, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if _, ok := f.domains[domain]; !ok {
		return HistoryPage{}, false
	}
	if limit <= 0 {
		limit = DefaultHistoryPage
	}
	h := f.histories[domain]
	if h == nil {
		return HistoryPage{}, true
	}
	allowed, denied := from(h.allowed, after), []*storedAttempt(nil)
	if withDenied {
		denied = from(h.denied, after)
	}
	var page HistoryPage
	size := 0
	for len(allowed)+len(denied) > 0 {
		if len(page.Records) == limit || size >= HistoryPageBytes {
			page.More = true
			break
		}
		var s *storedAttempt
		if len(denied) == 0 || len(allowed) > 0 && allowed[0].index < denied[0].index {
			s, allowed = allowed[0], allowed[1:]
		} else {
			s, denied = denied[0], denied[1:]
		}
		page.Records = append(page.Records, s.record())
		page.Next = s.index
		size += len(s.raw)
	}
	if !page.More {
		page.Next = 0
	}
	return page, true
}

// from returns the suffix of a log-ordered list with indexes above after.
func from(list []*storedAttempt, after uint64) []*storedAttempt {
	i, _ := slices.BinarySearchFunc(list, after+1, func(s *storedAttempt, idx uint64) int {
		switch {
		case s.index < idx:
			return -1
		case s.index > idx:
			return 1
		}
		return 0
	})
	return list[i:]
}

// requestIndex maps (domain, request id) to the recorded attempt. It is
// derived state: rebuilt from the histories on restore, never snapshotted.
type requestIndex map[string]map[string]*storedAttempt

func (r requestIndex) get(domain, id string) (*storedAttempt, bool) {
	s, ok := r[domain][id]
	return s, ok
}

func (r requestIndex) put(domain string, s *storedAttempt) {
	m := r[domain]
	if m == nil {
		m = map[string]*storedAttempt{}
		r[domain] = m
	}
	m[s.requestID] = s
}

func (r requestIndex) drop(domain, id string) { delete(r[domain], id) }

// NewestAttempts returns up to n of a domain's newest attempts, allowed
// and kept denied ones, newest first.
func (f *FSM) NewestAttempts(domain string, n int) []*pb.AttemptRecord {
	f.mu.RLock()
	defer f.mu.RUnlock()
	h := f.histories[domain]
	if h == nil {
		return nil
	}
	var out []*pb.AttemptRecord
	a, d := h.allowed, h.denied
	for len(out) < n && len(a)+len(d) > 0 {
		var s *storedAttempt
		if len(d) == 0 || len(a) > 0 && a[len(a)-1].index > d[len(d)-1].index {
			s, a = a[len(a)-1], a[:len(a)-1]
		} else {
			s, d = d[len(d)-1], d[:len(d)-1]
		}
		out = append(out, s.record())
	}
	return out
}
