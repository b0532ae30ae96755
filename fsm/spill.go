package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"sync/atomic"
)

// Spilling: a server keeps its cold history segments in a file, not in its
// heap (as Prometheus keeps full head chunks in files): at a hundred
// thousand domains with a hundred attempts each, the segments are about
// 800 MB. In memory stay the domain records, the request index, each
// spilled segment's record count and first and last log index, and the
// open segments of the lists appended to recently (the tail cache's).
// What is spilled is a representation, not state: the state, its hash and
// its snapshot bytes are the same with or without it, and the file is
// rebuilt from the snapshot and the log at every start.
//
// A spilled segment is its snapshot records' bodies, each followed by its
// CRC-32C: the record table (log index, delta length and record CRC-32C of
// each record), then the deltas. Both checksums are checked whenever a
// segment is read back (a snapshot never copies damaged bytes), and every
// record decoded from it is checked against its own, as every record is.
//
// A segment is spilled when it fills, when its list leaves the tail cache,
// and as a snapshot is restored. Spilled bytes are never changed: a
// segment that changes again (its list is appended to, or its denied ring
// drops a record) is read back into memory and its spilled copy becomes
// garbage. When garbage is more than half of the file, the live segments
// are moved to a new file a step at a time, each step within an entry's
// apply and proportional to what that entry spilled or freed; once the old
// file holds nothing live, nothing refers to it and it is closed (a
// capture being written may hold on to it until it is done).
//
// The FSM does no I/O of its own: files come from the SpillFile maker the
// server injects (internal/spillfile: unlinked files in the data dir). A
// segment that cannot be read back, or does not match its checksums,
// stops the server (a panic, as a record that does not match its own
// does); the next start rebuilds the file from the snapshot and the log.

// SpillFile is a file of spilled segment bytes: read and written at
// offsets, concurrently (the FSM writes only beyond what it has written).
type SpillFile interface {
	io.ReaderAt
	io.WriterAt
}

var (
	// spillCompactMin: a file smaller than this is not compacted.
	spillCompactMin int64 = 64 << 20
	// spillStepMin: the least a compaction step moves.
	spillStepMin = 256 << 10
)

// spillWindow: what a capture's reader reads ahead of the segment asked
// for (segments spilled together are read together).
const spillWindow = 256 << 10

type spillFile struct {
	f SpillFile
	// size: bytes written. Every byte below it is complete; captures read
	// it without the FSM's lock.
	size atomic.Int64
	// live: bytes of segments not freed (FSM lock).
	live int64
	// pending: bytes written after size, not yet to f (a restore's file,
	// which nothing reads until it is adopted). If they cannot be written
	// the file is stuck: pending no longer changes and reads beyond size
	// are served from it.
	pending  []byte
	buffered bool
	stuck    bool
}

// spillFlushAt: a restore writes its file in pieces of about this size.
const spillFlushAt = 1 << 20

type spillPos struct {
	file *spillFile
	off  int64
	n    int
}

// spillLoc is where a spilled segment's bytes are. A compaction moves
// them (atomically: a capture may be reading), never changes them.
type spillLoc struct {
	pos         atomic.Pointer[spillPos]
	first, last uint64 // a segment's records' log indexes
	n           int32  // its records (a request index: its entries)
	bodyLen     int32  // a segment's record table's length, checksum excluded
	ids         bool   // a request index, not a segment
	freed       bool   // the live state no longer refers to it (FSM lock)
}

// A spilled request index is the request index part of its snapshot
// history record (uvarint n | n × (fixed64 key | uvarint log index)),
// followed by its CRC-32C.

// loadIDs reads a spilled request index back.
func (l *spillLoc) loadIDs() []idEnt {
	p := l.pos.Load()
	b := make([]byte, p.n)
	p.readInto(b)
	ids, err := parseIDsBlob(l.checkIDs(p, b), int(l.n))
	if err != nil {
		panic(fmt.Sprintf("fsm: history spill file: the request index at offset %d: %v", p.off, err))
	}
	return ids
}

// checkIDs checks a spilled request index's checksum and returns it
// without.
func (l *spillLoc) checkIDs(p *spillPos, b []byte) []byte {
	if len(b) < 5 || crc32.Checksum(b[:len(b)-4], crcTable) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		panic(fmt.Sprintf("fsm: history spill file: the request index at offset %d does not match its checksum", p.off))
	}
	return b[:len(b)-4]
}

// check checks a spilled copy of either kind (a compaction moving it).
func (l *spillLoc) check(p *spillPos, b []byte) {
	if l.ids {
		l.checkIDs(p, b)
	} else {
		l.split(p, b)
	}
}

// appendIDs appends a request index as spilled and written in a snapshot's
// history record (without a checksum).
func appendIDs(buf []byte, ids []idEnt) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(ids)))
	for _, id := range ids {
		buf = binary.LittleEndian.AppendUint64(buf, id.key)
		buf = binary.AppendUvarint(buf, id.index)
	}
	return buf
}

// parseIDsBlob reads what appendIDs wrote, n entries.
func parseIDsBlob(b []byte, n int) ([]idEnt, error) {
	w := &wire{b: b}
	if got := w.uvarint(); w.bad || got != uint64(n) {
		return nil, errors.New("not the request index spilled")
	}
	ids, rest, err := parseIDs(w.b, n)
	if err == nil && len(rest) != 0 {
		err = errors.New("trailing bytes")
	}
	return ids, err
}

// writeIDs appends a request index given as its bytes (appendIDs'), and
// their checksum.
func (file *spillFile) writeIDs(blob []byte, n int) (*spillLoc, error) {
	var sum [4]byte
	binary.LittleEndian.PutUint32(sum[:], crc32.Checksum(blob, crcTable))
	p, err := file.write(blob, sum[:])
	if err != nil {
		return nil, err
	}
	loc := &spillLoc{n: int32(n), ids: true}
	loc.pos.Store(p)
	return loc, nil
}

// spillIDs moves a history's request index to the current file (a capture
// sharing the slice keeps it); on failure it stays in memory.
func (sp *spiller) spillIDs(h *history) {
	if !sp.enabled() || h.idsDisk != nil || len(h.ids) == 0 || sp.current() == nil {
		return
	}
	sp.blob = appendIDs(sp.blob[:0], h.ids)
	loc, err := sp.cur.writeIDs(sp.blob, len(h.ids))
	if err != nil {
		sp.fail(err)
		return
	}
	h.ids, h.idsDisk = nil, loc
	sp.debt += loc.pos.Load().n
}

// unspillIDs reads a spilled request index back into memory, to change
// it; the slice is the history's own.
func (sp *spiller) unspillIDs(h *history, gen uint64) {
	if h.idsDisk == nil {
		return
	}
	h.ids = h.idsDisk.loadIDs()
	sp.free(h.idsDisk)
	h.idsDisk, h.idsGen = nil, gen
}

// load reads the segment back: its records and data, in buffers of their
// own.
func (l *spillLoc) load() ([]attemptEnt, []byte) {
	p := l.pos.Load()
	b := make([]byte, p.n)
	p.readInto(b)
	body, data := l.split(p, b)
	ents, end, err := parseSegmentBody(nil, body)
	if err == nil && (len(ents) != int(l.n) || ents[0].index != l.first || ents[len(ents)-1].index != l.last || end != uint64(len(data))) {
		err = errors.New("it is not the segment spilled")
	}
	if err != nil {
		panic(fmt.Sprintf("fsm: history spill file: the segment at offset %d: %v", p.off, err))
	}
	return ents, data[:len(data):len(data)]
}

// split checks a spilled segment's two checksums and returns its record
// table and data (in b).
func (l *spillLoc) split(p *spillPos, b []byte) (body, data []byte) {
	bl := int(l.bodyLen)
	if len(b) < bl+8 || crc32.Checksum(b[:bl], crcTable) != binary.LittleEndian.Uint32(b[bl:]) ||
		crc32.Checksum(b[bl+4:len(b)-4], crcTable) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		panic(fmt.Sprintf("fsm: history spill file: the segment at offset %d does not match its checksum", p.off))
	}
	return b[:bl], b[bl+4 : len(b)-4]
}

func (p *spillPos) readInto(b []byte) {
	// A restore's file not yet flushed (the invariants build checks what
	// it restored first), or stuck: what lies beyond size is in pending.
	if p.file.buffered || p.file.stuck {
		if size := p.file.size.Load(); p.off >= size {
			copy(b, p.file.pending[p.off-size:])
			return
		}
	}
	if n, err := p.file.f.ReadAt(b, p.off); n != len(b) {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		panic(fmt.Sprintf("fsm: history spill file: reading %d bytes at offset %d: %v", len(b), p.off, err))
	}
}

// spiller owns the spill files (FSM lock).
type spiller struct {
	newFile  func() (SpillFile, error)
	cur, old *spillFile
	drain    []*spillLoc // old's live segments still to move
	// debt: bytes spilled or freed since the last compaction step.
	debt int
	err  error  // the first failure: from then on nothing more is spilled
	blob []byte // writeSegment's buffer
}

// SetSpill makes the FSM keep cold history segments in files newFile
// makes (nil: in memory). Set it before the first entry or restore.
func (f *FSM) SetSpill(newFile func() (SpillFile, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.spill = spiller{newFile: newFile}
}

// SpillStats describes the spill files.
type SpillStats struct {
	Enabled bool
	// FileBytes: bytes the FSM's current files hold (the old one too while
	// a compaction moves its segments); LiveBytes: those the state uses.
	FileBytes, LiveBytes int64
	Compacting           bool
	Err                  error // the failure that stopped spilling
}

// SpillStats returns the spill files' sizes.
func (f *FSM) SpillStats() SpillStats {
	f.mu.RLock()
	defer f.mu.RUnlock()
	sp := &f.spill
	st := SpillStats{Enabled: sp.newFile != nil, Compacting: sp.old != nil, Err: sp.err}
	for _, file := range []*spillFile{sp.cur, sp.old} {
		if file != nil {
			st.FileBytes += file.size.Load()
			st.LiveBytes += file.live
		}
	}
	return st
}

func (sp *spiller) enabled() bool { return sp.newFile != nil && sp.err == nil }

func (sp *spiller) fail(err error) {
	if sp.err == nil {
		sp.err = err
	}
}

// makeFile returns a new, empty spill file.
func (sp *spiller) makeFile() (*spillFile, error) {
	f, err := sp.newFile()
	if err != nil {
		return nil, err
	}
	if f == nil {
		return nil, errors.New("no spill file")
	}
	return &spillFile{f: f}, nil
}

// write appends b to file.
func (file *spillFile) write(parts ...[]byte) (*spillPos, error) {
	if file.stuck {
		return nil, errors.New("history spill file: an earlier write failed")
	}
	off := file.size.Load() + int64(len(file.pending))
	n := 0
	for _, b := range parts {
		n += len(b)
	}
	if file.buffered {
		// Straight into the pending buffer. If a flush fails the file is
		// stuck and serves these bytes from it; the next write or finish
		// reports the failure.
		for _, b := range parts {
			file.pending = append(file.pending, b...)
		}
		if len(file.pending) >= spillFlushAt {
			_ = file.flush()
		}
	} else {
		b := parts[0]
		if len(parts) > 1 {
			b = slices.Concat(parts...)
		}
		if _, err := file.f.WriteAt(b, off); err != nil {
			return nil, fmt.Errorf("history spill file: writing %d bytes at offset %d: %w", len(b), off, err)
		}
		file.size.Store(off + int64(len(b)))
	}
	file.live += int64(n)
	return &spillPos{file: file, off: off, n: n}, nil
}

// flush writes what a buffered file holds back.
func (file *spillFile) flush() error {
	if file.stuck {
		return errors.New("history spill file: an earlier write failed")
	}
	if len(file.pending) == 0 {
		return nil
	}
	off := file.size.Load()
	if _, err := file.f.WriteAt(file.pending, off); err != nil {
		file.stuck = true
		return fmt.Errorf("history spill file: writing %d bytes at offset %d: %w", len(file.pending), off, err)
	}
	file.size.Store(off + int64(len(file.pending)))
	file.pending = file.pending[:0]
	return nil
}

// writeSegment appends a segment (built in *blob, a reused buffer).
func (file *spillFile) writeSegment(blob *[]byte, ents []attemptEnt, data []byte) (*spillLoc, error) {
	b := appendSegmentBody((*blob)[:0], ents)
	bodyLen := len(b)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
	b = append(b, data...)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(data, crcTable))
	*blob = b
	p, err := file.write(b)
	return segmentLoc(p, ents, bodyLen), err
}

// writeRaw appends a segment as a snapshot holds it: its segment and data
// record bodies, each ending in its CRC-32C (checked by the reader).
func (file *spillFile) writeRaw(segRaw, dataRaw []byte, ents []attemptEnt) (*spillLoc, error) {
	p, err := file.write(segRaw, dataRaw)
	return segmentLoc(p, ents, len(segRaw)-4), err
}

// segmentLoc is where a segment of these records was written (nil if it
// was not).
func segmentLoc(p *spillPos, ents []attemptEnt, bodyLen int) *spillLoc {
	if p == nil {
		return nil
	}
	loc := &spillLoc{first: ents[0].index, last: ents[len(ents)-1].index, n: int32(len(ents)), bodyLen: int32(bodyLen)}
	loc.pos.Store(p)
	return loc
}

// spill moves a segment to the current file; on failure it stays in
// memory and spilling stops.
func (sp *spiller) spill(s *segment) {
	if !sp.enabled() || s.disk != nil || len(s.ents) == 0 || sp.current() == nil {
		return
	}
	loc, err := sp.cur.writeSegment(&sp.blob, s.ents, s.data)
	if err != nil {
		sp.fail(err)
		return
	}
	s.ents, s.data, s.disk = nil, nil, loc
	sp.debt += loc.pos.Load().n
}

// current returns the file to append to, made on first use (nil: making
// it failed, and spilling stopped).
func (sp *spiller) current() *spillFile {
	if sp.cur == nil {
		cur, err := sp.makeFile()
		if err != nil {
			sp.fail(err)
			return nil
		}
		sp.cur = cur
	}
	return sp.cur
}

// unspill reads a spilled segment back into memory, to change it.
func (sp *spiller) unspill(s *segment) {
	if s.disk == nil {
		return
	}
	s.ents, s.data = s.disk.load()
	sp.free(s.disk)
	s.disk = nil
}

// free marks a spilled copy unused by the live state.
func (sp *spiller) free(loc *spillLoc) {
	if loc.freed {
		return
	}
	loc.freed = true
	p := loc.pos.Load()
	p.file.live -= int64(p.n)
	sp.debt += p.n
}

// cool spills every in-memory segment of a list that left the tail cache.
func (sp *spiller) cool(l *attemptList) {
	for i := range l.segs {
		sp.spill(&l.segs[i])
	}
	if l.owner != nil {
		sp.spillIDs(l.owner)
	}
}

// adopt makes a restored state's file the current one; the files before
// are dropped (captures may still hold them).
func (sp *spiller) adopt(file *spillFile) {
	sp.cur, sp.old, sp.drain, sp.debt = file, nil, nil, 0
}

// maintainSpill starts a compaction when the current file is more than half
// garbage, and moves a step of a running one: at least twice what was
// spilled or freed since the last step, so a compaction ends before the
// new file needs one.
func (f *FSM) maintainSpill() {
	sp := &f.spill
	if sp.debt == 0 || sp.newFile == nil {
		return
	}
	if sp.old == nil && sp.enabled() && sp.cur != nil {
		size := sp.cur.size.Load()
		if size >= spillCompactMin && size-sp.cur.live > sp.cur.live {
			f.startCompaction()
		}
	}
	if sp.old != nil {
		sp.step(max(2*sp.debt, spillStepMin))
	}
	sp.debt = 0
}

// startCompaction makes a new current file and lists the old one's live
// segments to move.
func (f *FSM) startCompaction() {
	sp := &f.spill
	next, err := sp.makeFile()
	if err != nil {
		sp.fail(err)
		return
	}
	sp.old, sp.cur, sp.drain = sp.cur, next, nil
	for _, name := range f.sortedNames() {
		h := f.histories[name]
		if h == nil {
			continue
		}
		if h.idsDisk != nil && h.idsDisk.pos.Load().file == sp.old {
			sp.drain = append(sp.drain, h.idsDisk)
		}
		for _, l := range []*attemptList{&h.allowed, &h.denied} {
			for _, s := range l.segs {
				if s.disk != nil && s.disk.pos.Load().file == sp.old {
					sp.drain = append(sp.drain, s.disk)
				}
			}
		}
	}
}

// step moves up to budget bytes of the old file's live segments.
func (sp *spiller) step(budget int) {
	for budget > 0 && len(sp.drain) > 0 {
		loc := sp.drain[len(sp.drain)-1]
		sp.drain = sp.drain[:len(sp.drain)-1]
		if loc.freed {
			continue
		}
		old := loc.pos.Load()
		b := make([]byte, old.n)
		old.readInto(b)
		loc.check(old, b) // a compaction does not carry damage on
		moved, err := sp.cur.write(b)
		if err != nil {
			// The old file keeps what was not moved; it stays current
			// for nothing new, and spilling stops.
			sp.fail(err)
			sp.drain = nil
			return
		}
		loc.pos.Store(moved)
		old.file.live -= int64(old.n)
		budget -= old.n
	}
	if len(sp.drain) == 0 {
		if sp.err == nil && sp.old != nil && sp.old.live != 0 {
			panic(fmt.Sprintf("fsm: history spill compaction left %d live bytes behind", sp.old.live))
		}
		sp.old = nil
	}
}

// spillReader reads a capture's spilled segments through a few windows,
// so that segments spilled one after another cost one read together. A
// restored state's file is in snapshot order; a state built live has a
// few such runs interleaved (full segments as they filled, open ones as
// their lists left the tail cache), each followed by a window of its own.
type spillReader struct {
	wins [spillReaderWindows]readWindow
	tick int
}

const spillReaderWindows = 4

type readWindow struct {
	file  *spillFile
	start int64
	buf   []byte
	used  int // tick of the last use
}

func (w *readWindow) end() int64 { return w.start + int64(len(w.buf)) }

// read returns a spilled segment's record table and data, checked; they
// are valid until the next read.
func (r *spillReader) read(loc *spillLoc) (body, data []byte) {
	p := loc.pos.Load()
	return loc.split(p, r.window(p))
}

// readIDs returns a spilled request index's bytes (appendIDs'), checked;
// valid until the next read.
func (r *spillReader) readIDs(loc *spillLoc) []byte {
	p := loc.pos.Load()
	return loc.checkIDs(p, r.window(p))
}

func (r *spillReader) window(p *spillPos) []byte {
	r.tick++
	victim := &r.wins[0]
	for i := range r.wins {
		w := &r.wins[i]
		if w.file == p.file && p.off >= w.start && p.off+int64(p.n) <= w.end() {
			w.used = r.tick
			return w.buf[p.off-w.start:][:p.n]
		}
		if w.used < victim.used {
			victim = w
		}
	}
	// Read ahead only where a run goes on: from the end of a window.
	// Every byte below size was written before it was stored, and the
	// segment's own bytes lie below it.
	want := int64(p.n)
	for i := range r.wins {
		if w := &r.wins[i]; w.file == p.file && w.end() == p.off {
			victim = w
			want = max(want, min(spillWindow, p.file.size.Load()-p.off))
			break
		}
	}
	if int64(cap(victim.buf)) < want {
		victim.buf = make([]byte, want)
	}
	victim.buf = victim.buf[:want]
	p.readInto(victim.buf)
	victim.file, victim.start, victim.used = p.file, p.off, r.tick
	return victim.buf[:p.n]
}

// coolEvicted spills the segments of a list the tail cache let go of.
func (sp *spiller) coolEvicted(l *attemptList) {
	if sp != nil && l != nil {
		sp.cool(l)
	}
}

// restoreSpill returns a new file for a restore to spill into (nil: keep
// the restored history in memory).
func (f *FSM) restoreSpill() *spillFile {
	f.mu.RLock()
	sp := f.spill
	f.mu.RUnlock()
	if !sp.enabled() {
		return nil
	}
	file, err := sp.makeFile()
	if err != nil {
		f.mu.Lock()
		f.spill.fail(err)
		f.mu.Unlock()
		return nil
	}
	file.buffered = true // until the restore is done with it
	return file
}

// finish writes what a restore's file holds back; from then on it is
// written directly.
func (file *spillFile) finish() error {
	err := file.flush()
	file.buffered = false
	if err == nil {
		file.pending = nil
	}
	return err
}
