package fsm

import (
	"crypto/sha256"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"sort"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// The attempt history lives beside the domain records, not inside them:
// reading, changing or evaluating a domain never copies its history, so a
// promotion costs the same on a domain with ten thousand allowed attempts
// as on a new one.
//
// Each record's canonical form is its deterministic protobuf encoding (the
// state hash, the snapshot checksum and every reply are defined over it),
// but it is kept compact: a domain's records are grouped in segments of up
// to segmentRecords, the first stored as a delta (delta.go) of a fixed
// template, each next one as a delta of the record before it — about a
// tenth of the encoding, as consecutive records of a domain differ in a
// few dozen bytes. A segment is immutable once written except at its end,
// so a snapshot shares it with the live state; every record read back is
// checked against the CRC-32C of its canonical encoding.
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

	// segmentRecords bounds a segment: reading one record decodes at most
	// this many deltas.
	segmentRecords = 32
)

// storedAttempt is one decided attempt to keep: its canonical encoding and
// what the history indexes it by.
type storedAttempt struct {
	index     uint64
	requestID string
	allowed   bool
	raw       []byte // deterministic protobuf encoding of the AttemptRecord
}

// attemptEnt describes one record of a segment.
type attemptEnt struct {
	index uint64 // log index
	end   uint32 // end of its delta in the segment's data
	sum   uint32 // CRC-32C of its canonical encoding
}

// segment is a run of a list's records: data holds their deltas, the
// first against keyTemplate, each next one against the record before it.
type segment struct {
	data []byte       // nil while spilled
	ents []attemptEnt // nil while spilled
	disk *spillLoc    // non-nil: the records and data are in a spill file (spill.go)
}

// loaded returns the segment with its records and data in memory, read
// from its spill file if it is spilled (a copy: the list's segment stays
// as it is).
func (s segment) loaded() segment {
	if s.disk != nil {
		s.ents, s.data = s.disk.load()
	}
	return s
}

// count, firstIndex and lastIndex work on a spilled segment too.
func (s *segment) count() int {
	if s.disk != nil {
		return int(s.disk.n)
	}
	return len(s.ents)
}

func (s *segment) firstIndex() uint64 {
	if s.disk != nil {
		return s.disk.first
	}
	return s.ents[0].index
}

func (s *segment) lastIndex() uint64 {
	if s.disk != nil {
		return s.disk.last
	}
	return s.ents[len(s.ents)-1].index
}

func (s *segment) delta(i int) []byte {
	start := uint32(0)
	if i > 0 {
		start = s.ents[i-1].end
	}
	return s.data[start:s.ents[i].end]
}

// bases returns what record i is a delta of, given the two records before
// it (nil where there are none): the template for the first record of a
// segment, the one before for the second, the two before for the rest.
func bases(i int, prev2, prev1 []byte) ([]byte, []byte) {
	switch i {
	case 0:
		return nil, keyTemplate
	case 1:
		return nil, prev1
	}
	return prev2, prev1
}

// decode returns record i's canonical encoding, given the two records
// before it, checked against its checksum. A record that does not decode
// to its checksum is memory corruption, or a snapshot written wrong: stop
// rather than answer with a guess.
func (s *segment) decode(i int, prev2, prev1 []byte) []byte {
	raw := s.decodeInto(nil, i, prev2, prev1)
	s.check(i, raw)
	return raw
}

// decodeInto decodes record i into dst[:0], unchecked.
func (s *segment) decodeInto(dst []byte, i int, prev2, prev1 []byte) []byte {
	b1, b2 := bases(i, prev2, prev1)
	raw, err := applyDelta(dst[:0], b1, b2, s.delta(i))
	if err != nil {
		panic(fmt.Sprintf("fsm: stored attempt at index %d does not decode: %v", s.ents[i].index, err))
	}
	return raw
}

func (s *segment) check(i int, raw []byte) {
	if crc32.Checksum(raw, crcTable) != s.ents[i].sum {
		panic(fmt.Sprintf("fsm: stored attempt at index %d does not match its checksum", s.ents[i].index))
	}
}

// encode returns record i's delta, given the two records before it.
func encode(dst []byte, i int, prev2, prev1, raw []byte) []byte {
	b1, b2 := bases(i, prev2, prev1)
	return appendDelta(dst, b1, b2, raw)
}

// last2 decodes the segment up to record i and returns records i-1 and i,
// checked (the records before are bases only: damage in them shows in
// these). Record i gets a buffer of its own.
func (s *segment) last2(i int) (prev, raw []byte) {
	var bufs [3][]byte
	for j := 0; j <= i; j++ {
		if j == i {
			bufs[j%3] = nil
		}
		bufs[j%3] = s.decodeInto(bufs[j%3], j, bufs[(j+1)%3], bufs[(j+2)%3])
	}
	raw = bufs[i%3]
	s.check(i, raw)
	if i > 0 {
		prev = bufs[(i+2)%3]
		s.check(i-1, prev)
	}
	return prev, raw
}

// rawAt decodes the segment up to record i and returns record i.
func (s *segment) rawAt(i int) []byte {
	_, raw := s.last2(i)
	return raw
}

// attemptList is a log-ordered list of records: a domain's allowed ones,
// or its ring of denied ones. Its segments only grow at the end or drop
// from the front (a front segment that loses its first record is replaced,
// never changed).
type attemptList struct {
	segs  []segment
	n     int
	owner *history // whose list it is (its request index cools with it)
}

func (l *attemptList) len() int { return l.n }

// push appends a record. tails (may be nil) spares decoding the open
// segment's last two records when they were appended recently; sp (may be
// nil) spills the segment when it fills.
func (l *attemptList) push(index uint64, raw []byte, sum uint32, tails *tailCache, sp *spiller) {
	if k := len(l.segs); k > 0 && l.segs[k-1].count() < segmentRecords {
		s := &l.segs[k-1]
		if s.disk != nil {
			sp.unspill(s) // to grow it
		}
		last := len(s.ents) - 1
		prev2, prev1, ok := tails.get(l, s.ents[last].index)
		if !ok {
			prev2, prev1 = s.last2(last)
		}
		// The open segment grows by what it needs (data by at most an
		// eighth more): at a hundred thousand domains, append's doubling
		// would reserve about a fifth of the history's memory unused.
		// Copying is cheap beside the apply, and a capture may share the
		// old arrays.
		delta := encode(scratchOf(tails), len(s.ents), prev2, prev1, raw)
		s.data = appendTight(s.data, delta)
		s.ents = appendEnts(s.ents, attemptEnt{index: index, end: uint32(len(s.data)), sum: sum})
		if len(s.ents) == segmentRecords {
			// Full: it only changes again by being dropped.
			s.data = slices.Clip(s.data)
			if cap(s.data) > len(s.data) {
				s.data = slices.Clone(s.data)
			}
			if sp != nil {
				sp.spill(s)
			}
		}
		keepScratch(tails, delta)
		sp.coolEvicted(tails.put(l, index, prev1, raw))
	} else {
		data := encode(nil, 0, nil, nil, raw)
		if cap(data) > len(data) {
			data = slices.Clone(data)
		}
		l.segs = appendSeg(l.segs, segment{data: data, ents: []attemptEnt{{index: index, end: uint32(len(data)), sum: sum}}})
		sp.coolEvicted(tails.put(l, index, nil, raw))
	}
	l.n++
}

// appendTight appends b to a segment's data, growing it by at most an
// eighth beyond what it needs.
func appendTight(data, b []byte) []byte {
	if len(data)+len(b) <= cap(data) {
		return append(data, b...)
	}
	n := len(data) + len(b)
	out := make([]byte, n, n+n/8)
	copy(out[copy(out, data):], b)
	return out
}

// appendEnts appends to an open segment's records, to exactly the size
// needed (at most segmentRecords of them: a small copy).
func appendEnts(ents []attemptEnt, e attemptEnt) []attemptEnt {
	out := make([]attemptEnt, len(ents)+1)
	copy(out, ents)
	out[len(ents)] = e
	return out
}

// appendSeg appends a segment to a list, growing it by about a quarter.
func appendSeg(segs []segment, s segment) []segment {
	if len(segs) < cap(segs) {
		return append(segs, s)
	}
	out := make([]segment, len(segs)+1, len(segs)+1+len(segs)/4)
	copy(out, segs)
	out[len(segs)] = s
	return out
}

// scratchOf and keepScratch lend the tail cache's scratch buffer for one
// delta (nil cache: a fresh one).
func scratchOf(c *tailCache) []byte {
	if c == nil {
		return nil
	}
	return c.scratch[:0]
}

func keepScratch(c *tailCache, b []byte) {
	if c != nil {
		c.scratch = b[:0]
	}
}

// tailCache keeps the last two records of the lists appended to most
// recently, as appended, so that the next append to one of them need not
// decode its open segment. Derived and bounded; the bytes it yields are
// the same a decode would: the state does not depend on it.
type tailCache struct {
	scratch []byte // push's delta buffer
	m       map[*attemptList]*tail
	fifo    []*attemptList // tailCacheLists of them
	next    int
}

// tailCacheLists: lists the cache keeps (a variable for tests).
var tailCacheLists = 256

// tail: the list's newest record (at index) and the one before it in the
// same segment (nil when it is the segment's first). Records leave a list
// only from the front, so while the newest is the same record the one
// before it is either still there or no longer a base.
type tail struct {
	index        uint64
	prev2, prev1 []byte
}

func (c *tailCache) get(l *attemptList, index uint64) ([]byte, []byte, bool) {
	if c == nil {
		return nil, nil, false
	}
	if t := c.m[l]; t != nil && t.index == index {
		return t.prev2, t.prev1, true
	}
	return nil, nil, false
}

// put returns the list it evicted, if any.
func (c *tailCache) put(l *attemptList, index uint64, prev2, prev1 []byte) (evicted *attemptList) {
	if c == nil {
		return nil
	}
	if c.m == nil {
		c.m = make(map[*attemptList]*tail, tailCacheLists)
		c.fifo = make([]*attemptList, tailCacheLists)
	}
	if t := c.m[l]; t != nil {
		*t = tail{index, prev2, prev1}
		return nil
	}
	if old := c.fifo[c.next]; old != nil {
		delete(c.m, old)
		evicted = old
	}
	c.fifo[c.next], c.next = l, (c.next+1)%len(c.fifo)
	c.m[l] = &tail{index, prev2, prev1}
	return evicted
}

// reset forgets every list (a restore replaces them all).
func (c *tailCache) reset() { *c = tailCache{} }

// popFront drops the oldest record and returns its canonical encoding and
// log index. The front segment is rebuilt, not changed, with its new first
// two records re-encoded (their bases change): a snapshot being written
// may share the old one.
func (l *attemptList) popFront(sp *spiller) ([]byte, uint64) {
	s := l.segs[0].loaded()
	if s.disk != nil {
		sp.free(s.disk)
	}
	raw := s.decode(0, nil, nil)
	l.n--
	if len(s.ents) == 1 {
		l.segs = l.segs[1:]
		return raw, s.ents[0].index
	}
	r1 := s.decode(1, nil, raw)
	head := encode(nil, 0, nil, nil, r1)
	ends := []uint32{uint32(len(head))}
	if len(s.ents) > 2 {
		head = encode(head, 1, nil, r1, s.decode(2, raw, r1))
		ends = append(ends, uint32(len(head)))
	}
	// Old records 1..len(ends) are re-encoded in head; the rest moves.
	rest := s.data[s.ents[len(ends)].end:]
	data := make([]byte, len(head)+len(rest))
	copy(data[copy(data, head):], rest)
	shift := int64(len(head)) - int64(s.ents[len(ends)].end)
	ents := slices.Clone(s.ents[1:])
	for i := range ents {
		if i < len(ends) {
			ents[i].end = ends[i]
		} else {
			ents[i].end = uint32(int64(ents[i].end) + shift)
		}
	}
	l.segs[0] = segment{data: data, ents: ents}
	return raw, s.ents[0].index
}

// search returns the segment holding the first record with an index at or
// above index, loaded, and that record's position in it (ok false when
// there is none).
func (l *attemptList) search(index uint64) (si int, s segment, pi int, ok bool) {
	si = sort.Search(len(l.segs), func(k int) bool { return l.segs[k].lastIndex() >= index })
	if si == len(l.segs) {
		return si, segment{}, 0, false
	}
	s = l.segs[si].loaded()
	pi = sort.Search(len(s.ents), func(k int) bool { return s.ents[k].index >= index })
	return si, s, pi, true
}

// get returns the canonical encoding of the record at a log index.
func (l *attemptList) get(index uint64) ([]byte, bool) {
	_, s, pi, ok := l.search(index)
	if !ok || s.ents[pi].index != index {
		return nil, false
	}
	return s.rawAt(pi), true
}

// cursor reads a list forward from a position, decoding each record once.
type cursor struct {
	l      *attemptList
	si, pi int
	seg    segment // segment si, loaded
	// The two records before (si, pi) in its segment, once decoded.
	prev2, prev1 []byte
}

func (l *attemptList) from(after uint64) *cursor {
	if after == math.MaxUint64 {
		return &cursor{l: l, si: len(l.segs)}
	}
	si, s, pi, _ := l.search(after + 1)
	return &cursor{l: l, si: si, seg: s, pi: pi}
}

func (c *cursor) done() bool { return c.si >= len(c.l.segs) }

func (c *cursor) index() uint64 { return c.seg.ents[c.pi].index }

func (c *cursor) next() []byte {
	s := &c.seg
	if c.prev1 == nil && c.pi > 0 {
		c.prev2, c.prev1 = s.last2(c.pi - 1)
	}
	raw := s.decode(c.pi, c.prev2, c.prev1)
	c.prev2, c.prev1 = c.prev1, raw
	if c.pi++; c.pi == len(s.ents) {
		c.si, c.pi, c.prev2, c.prev1 = c.si+1, 0, nil, nil
		if !c.done() {
			c.seg = c.l.segs[c.si].loaded()
		}
	}
	return raw
}

// each calls fn with every record of the list, in log order.
func (l *attemptList) each(fn func(index uint64, raw []byte)) {
	for c := l.from(0); !c.done(); {
		i := c.index()
		fn(i, c.next())
	}
}

// idEnt indexes a request id: key is requestKey(id), index the log index
// of its record. A domain's ids are sorted by (key, index); a hit is
// verified against the record itself.
type idEnt struct{ key, index uint64 }

// requestKey is FNV-1a, 64 bits: deterministic, so the index is the same
// on every replica and can be written into a snapshot.
func requestKey(id string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= 1099511628211
	}
	return h
}

// history is one domain's attempts.
type history struct {
	allowed     attemptList
	denied      attemptList // ring: the oldest are dropped from the front
	deniedBytes int
	ids         []idEnt
	// idsDisk: the request index is spilled (ids is nil; spill.go).
	idsDisk *spillLoc
	// idsGen: the FSM's capture generation when ids was last copied; a
	// capture taken since shares it, so the next change copies it first.
	idsGen uint64
	// The newest allowed record's epoch_after and waivers, for the
	// watermark floors (watermark.go); decoded on first use after a
	// restore.
	floorsKnown bool
	lastEpoch   uint64
	lastWaivers []string
}

func (f *FSM) historyOf(domain string) *history {
	h := f.histories[domain]
	if h == nil {
		h = &history{idsGen: f.captureGen.Load()}
		h.own()
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
		h := f.histories[d.Name]
		h.floorsKnown, h.lastEpoch, h.lastWaivers = true, rec.EpochAfter, rec.GetDecision().GetWaiversApplied()
		d.AllowedCount++
	} else {
		d.DeniedCount++
	}
}

// keep adds a stored attempt to the history, the request index and the
// state digest, evicting denied attempts beyond the bounds.
func (f *FSM) keep(domain string, s *storedAttempt) {
	h := f.historyOf(domain)
	dig := attemptDigest(s.raw)
	f.digest.add(dig)
	f.attemptSum.add(dig)
	sum := crc32.Checksum(s.raw, crcTable)
	f.ownIDs(h)
	h.ids = insertID(h.ids, idEnt{key: requestKey(s.requestID), index: s.index})
	if s.allowed {
		h.allowed.push(s.index, s.raw, sum, &f.tails, &f.spill)
		h.floorsKnown = false
		return
	}
	h.denied.push(s.index, s.raw, sum, &f.tails, &f.spill)
	h.deniedBytes += len(s.raw)
	for h.denied.len() > 1 && (h.denied.len() > DeniedHistory || h.deniedBytes > DeniedHistoryBytes) {
		raw, index := h.denied.popFront(&f.spill)
		h.deniedBytes -= len(raw)
		f.ownIDs(h) // the push may have cooled it (its other list left the tail cache)
		h.ids = removeID(h.ids, idEnt{key: requestKey(requestIDOf(raw, index)), index: index})
		dig := attemptDigest(raw)
		f.digest.sub(dig)
		f.attemptSum.sub(dig)
	}
}

// ownIDs reads a domain's request index back if it is spilled, and copies
// it if a capture may share it.
func (f *FSM) ownIDs(h *history) {
	f.spill.unspillIDs(h, f.captureGen.Load())
	if gen := f.captureGen.Load(); h.idsGen != gen {
		h.ids = append(make([]idEnt, 0, len(h.ids)+1), h.ids...)
		h.idsGen = gen
	}
}

func insertID(ids []idEnt, e idEnt) []idEnt {
	i := sort.Search(len(ids), func(k int) bool {
		return ids[k].key > e.key || ids[k].key == e.key && ids[k].index >= e.index
	})
	if len(ids) == cap(ids) {
		// Grow by an eighth: a domain's ids are most of the index.
		ids = append(make([]idEnt, 0, len(ids)+1+len(ids)/8), ids...)
	}
	ids = append(ids, idEnt{})
	copy(ids[i+1:], ids[i:])
	ids[i] = e
	return ids
}

func removeID(ids []idEnt, e idEnt) []idEnt {
	i := sort.Search(len(ids), func(k int) bool {
		return ids[k].key > e.key || ids[k].key == e.key && ids[k].index >= e.index
	})
	if i == len(ids) || ids[i] != e {
		panic(fmt.Sprintf("fsm: request index has no entry for the record at index %d", e.index))
	}
	return append(ids[:i], ids[i+1:]...)
}

// requestIDOf reads the request id out of a record's canonical encoding
// (AttemptRecord.request = 1, PromotionRequest.request_id = 1) without
// decoding the rest.
func requestIDOf(raw []byte, index uint64) string {
	id, ok := "", false
	for b := raw; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			break
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			msg, m := protowire.ConsumeBytes(b)
			if m < 0 {
				break
			}
			for r := msg; len(r) > 0; {
				num, typ, n := protowire.ConsumeTag(r)
				if n < 0 {
					break
				}
				r = r[n:]
				if num == 1 && typ == protowire.BytesType {
					v, m := protowire.ConsumeBytes(r)
					if m < 0 {
						break
					}
					id, ok = string(v), true // the last one wins, as in proto.Unmarshal
					r = r[m:]
					continue
				}
				m := protowire.ConsumeFieldValue(num, typ, r)
				if m < 0 {
					break
				}
				r = r[m:]
			}
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			break
		}
		b = b[m:]
	}
	if !ok {
		panic(fmt.Sprintf("fsm: stored attempt at index %d has no request id", index))
	}
	return id
}

func attemptDigest(raw []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte("attempt\x00"))
	h.Write(raw)
	return [32]byte(h.Sum(nil))
}

// record decodes a stored record; it was checked against its checksum.
func record(raw []byte, index uint64) *pb.AttemptRecord {
	rec := &pb.AttemptRecord{}
	if err := proto.Unmarshal(raw, rec); err != nil {
		panic(fmt.Sprintf("fsm: stored attempt at index %d does not decode: %v", index, err))
	}
	return rec
}

// rawAt returns the canonical encoding of a domain's record at a log
// index.
func (h *history) rawAt(index uint64) ([]byte, bool) {
	if raw, ok := h.allowed.get(index); ok {
		return raw, true
	}
	return h.denied.get(index)
}

// attempt returns the recorded attempt of a request id, if it is kept.
func (h *history) attempt(id string) (*pb.AttemptRecord, bool) {
	if h == nil {
		return nil, false
	}
	key := requestKey(id)
	ids := h.idIndex()
	i := sort.Search(len(ids), func(k int) bool { return ids[k].key >= key })
	var found *pb.AttemptRecord
	for ; i < len(ids) && ids[i].key == key; i++ {
		raw, ok := h.rawAt(ids[i].index)
		if !ok {
			panic(fmt.Sprintf("fsm: request index names index %d, which holds no record", ids[i].index))
		}
		if requestIDOf(raw, ids[i].index) == id {
			found = record(raw, ids[i].index) // the newest wins
		}
	}
	return found, found != nil
}

// idIndex returns the request index, read back if it is spilled.
func (h *history) idIndex() []idEnt {
	if h.idsDisk != nil {
		return h.idsDisk.loadIDs()
	}
	return h.ids
}

// own points the history's lists at it.
func (h *history) own() { h.allowed.owner, h.denied.owner = h, h }

// floors returns the newest allowed record's epoch_after and waivers.
func (h *history) floors() (uint64, []string, bool) {
	if h == nil || h.allowed.len() == 0 {
		return 0, nil, false
	}
	if !h.floorsKnown {
		l := &h.allowed
		s := l.segs[len(l.segs)-1].loaded()
		rec := record(s.rawAt(len(s.ents)-1), s.ents[len(s.ents)-1].index)
		h.floorsKnown, h.lastEpoch, h.lastWaivers = true, rec.EpochAfter, rec.GetDecision().GetWaiversApplied()
	}
	return h.lastEpoch, h.lastWaivers, true
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
	if _, ok := f.recs[domain]; !ok {
		return HistoryPage{}, false
	}
	if limit <= 0 {
		limit = DefaultHistoryPage
	}
	h := f.histories[domain]
	if h == nil {
		return HistoryPage{}, true
	}
	allowed, denied := h.allowed.from(after), &cursor{l: &attemptList{}}
	if withDenied {
		denied = h.denied.from(after)
	}
	var page HistoryPage
	size := 0
	for !allowed.done() || !denied.done() {
		if len(page.Records) == limit || size >= HistoryPageBytes {
			page.More = true
			break
		}
		c := allowed
		if allowed.done() || !denied.done() && denied.index() < allowed.index() {
			c = denied
		}
		index := c.index()
		raw := c.next()
		page.Records = append(page.Records, record(raw, index))
		page.Next = index
		size += len(raw)
	}
	if !page.More {
		page.Next = 0
	}
	return page, true
}

// NewestAttempts returns up to n of a domain's newest attempts, allowed
// and kept denied ones, newest first.
func (f *FSM) NewestAttempts(domain string, n int) []*pb.AttemptRecord {
	f.mu.RLock()
	defer f.mu.RUnlock()
	h := f.histories[domain]
	if h == nil || n <= 0 {
		return nil
	}
	a, d := h.allowed.newest(n), h.denied.newest(n)
	var out []*pb.AttemptRecord
	for len(out) < n && len(a)+len(d) > 0 {
		var r indexedRaw
		if len(d) == 0 || len(a) > 0 && a[0].index > d[0].index {
			r, a = a[0], a[1:]
		} else {
			r, d = d[0], d[1:]
		}
		out = append(out, record(r.raw, r.index))
	}
	return out
}

type indexedRaw struct {
	index uint64
	raw   []byte
}

// newest returns up to n of the list's newest records, newest first.
func (l *attemptList) newest(n int) []indexedRaw {
	var out []indexedRaw
	for si := len(l.segs) - 1; si >= 0 && len(out) < n; si-- {
		s := l.segs[si].loaded()
		seg := make([]indexedRaw, len(s.ents))
		var prev2, prev1 []byte
		for i := range s.ents {
			raw := s.decode(i, prev2, prev1)
			seg[i] = indexedRaw{s.ents[i].index, raw}
			prev2, prev1 = prev1, raw
		}
		for i := len(seg) - 1; i >= 0 && len(out) < n; i-- {
			out = append(out, seg[i])
		}
	}
	return out
}
