package fsm

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/protobuf/proto"
)

// Snapshot format (as Consul's: a versioned header, then typed records in a
// fixed order):
//
//	magic "AUTHSNAP" | record* | trailer
//	record  = type byte | uvarint length | body
//	records = one header (SnapshotHeader), then per domain, sorted by name,
//	          its record (Domain) followed by its history, then the sum of
//	          the attempts' digests (32 bytes), then the server directory
//	          (ServerDirectory), then the retained event log (EventLog)
//	trailer = type byte 0xFF | CRC-32C (Castagnoli) of every byte before it
//
// A domain's history (version 3) is written as it is kept (history.go),
// not re-encoded: a history record, then a segment record and a data
// record per segment, allowed ones first, then the denied ring. Each of
// these bodies ends in the CRC-32C of the rest of it:
//
//	history  = uvarint denied bytes | uvarint allowed segments |
//	           uvarint denied segments | uvarint n | n × (fixed64 request
//	           key | uvarint log index), sorted | crc
//	segment  = uvarint n | n × (uvarint log index | uvarint delta length |
//	           fixed32 record CRC-32C) | crc
//	data     = the segment's deltas | crc
//
// Restore checks the checksums and the structure (counts against the
// domain record, log order, lengths, the request index against the
// records) and takes the state hash's attempt share from the digest
// record; it does not decode the records — each is checked against its
// own CRC-32C whenever it is read, and the invariants build decodes every
// record at restore and compares the digests.
//
// Marshalling and the delta codec are deterministic, so equal states give
// equal bytes on every replica. Version 2 wrote every attempt record as
// its protobuf encoding (type 5) after its domain; version 1 (before
// attempts had records of their own) kept the history inside each domain
// record; Restore still reads both.
const (
	snapshotMagic   = "AUTHSNAP"
	snapshotVersion = 3

	recHeader  byte = 1
	recDomain  byte = 2
	recEvents  byte = 3
	recServers byte = 4
	recAttempt byte = 5 // version 2
	recHistory byte = 6
	recSegment byte = 7
	recData    byte = 8
	recDigest  byte = 9
	recTrailer byte = 0xFF

	// maxRecord bounds one record so a corrupt length cannot allocate
	// gigabytes before the checksum is verified.
	maxRecord = 256 << 20
)

// ErrCorruptSnapshot is returned by Restore for any malformed snapshot; the
// state is left exactly as it was.
var ErrCorruptSnapshot = errors.New("corrupt snapshot")

var crcTable = crc32.MakeTable(crc32.Castagnoli)

var marshal = proto.MarshalOptions{Deterministic: true}

// Capture is a point-in-time view of the state, taken under the FSM's lock
// and written out later without it, while entries keep applying: the
// domain records, directory and events are encoded at capture, the
// attempts are shared (stored attempts are immutable and their lists only
// grow at the end or drop from the front, and a request index is copied
// before it next changes).
type Capture struct {
	lastIndex uint64
	header    []byte
	domains   []capturedDomain
	servers   []byte
	events    []byte
	digest    digestSum
	attempts  uint64
}

type capturedDomain struct {
	raw  []byte
	hist *capturedHistory // nil: no attempts
}

var noHistory capturedHistory // read only

type capturedHistory struct {
	allowed, denied []segment
	ids             []idEnt
	idsDisk         *spillLoc // the request index, spilled (ids nil)
	deniedBytes     int
}

// Capture takes a point-in-time view for WriteTo. raft calls FSM.Snapshot
// on its FSM goroutine, so no Apply runs while it is taken.
func (f *FSM) Capture() (*Capture, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.captureLocked()
}

// CaptureWithHash is Capture and StateHash of the same point in time (one
// read lock): a backup carries the hash of exactly the state it holds.
func (f *FSM) CaptureWithHash() (*Capture, [32]byte, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	c, err := f.captureLocked()
	if err != nil {
		return nil, [32]byte{}, err
	}
	h, err := f.stateHashLocked()
	return c, h, err
}

// LastIndex is the applied index the capture was taken at.
func (c *Capture) LastIndex() uint64 { return c.lastIndex }

// Domains is the number of domains in the capture.
func (c *Capture) Domains() int { return len(c.domains) }

func (f *FSM) captureLocked() (*Capture, error) {
	names := f.sortedNames()
	c := &Capture{lastIndex: f.lastIndex, domains: make([]capturedDomain, len(names)), digest: f.attemptSum}
	f.captureGen.Add(1) // every request index is now shared
	var err error
	for i, n := range names {
		cd := &c.domains[i]
		cd.raw = f.recs[n].raw // immutable: shared, not encoded again
		if h := f.histories[n]; h != nil {
			cd.hist = &capturedHistory{allowed: slices.Clone(h.allowed.segs), denied: slices.Clone(h.denied.segs),
				ids: h.ids, idsDisk: h.idsDisk, deniedBytes: h.deniedBytes}
			c.attempts += uint64(h.allowed.len() + h.denied.len())
		}
	}
	hdr := &pb.SnapshotHeader{Version: snapshotVersion, LastIndex: f.lastIndex, DomainCount: uint64(len(names)), AttemptCount: c.attempts}
	if c.header, err = marshal.Marshal(hdr); err != nil {
		return nil, err
	}
	if c.servers, err = marshal.Marshal(f.serverDirectory()); err != nil {
		return nil, err
	}
	evs := &pb.EventLog{Events: f.events.events, DroppedThrough: f.events.droppedThrough}
	if c.events, err = marshal.Marshal(evs); err != nil {
		return nil, err
	}
	return c, nil
}

// WriteTo streams the captured state in snapshot format.
func (c *Capture) WriteTo(w io.Writer) (int64, error) {
	sw := &snapshotWriter{w: bufio.NewWriterSize(w, 256<<10)}
	sw.write([]byte(snapshotMagic))
	sw.record(recHeader, c.header)
	var buf []byte
	var spilled spillReader
	for _, cd := range c.domains {
		sw.record(recDomain, cd.raw)
		d := cd.hist
		if d == nil {
			d = &noHistory
		}
		buf = binary.AppendUvarint(buf[:0], uint64(d.deniedBytes))
		buf = binary.AppendUvarint(buf, uint64(len(d.allowed)))
		buf = binary.AppendUvarint(buf, uint64(len(d.denied)))
		if d.idsDisk != nil {
			buf = append(buf, spilled.readIDs(d.idsDisk)...)
		} else {
			buf = appendIDs(buf, d.ids)
		}
		sw.checkedRecord(recHistory, buf)
		for _, s := range slices.Concat(d.allowed, d.denied) {
			body, data := buf[:0], s.data
			if s.disk != nil {
				body, data = spilled.read(s.disk)
			} else {
				body = appendSegmentBody(body, s.ents)
				buf = body
			}
			sw.checkedRecord(recSegment, body)
			sw.checkedRecord(recData, data)
		}
	}
	sw.record(recDigest, c.digest.bytes())
	sw.record(recServers, c.servers)
	sw.record(recEvents, c.events)
	sw.write([]byte{recTrailer})
	sw.write(binary.BigEndian.AppendUint32(nil, sw.crc))
	if sw.err == nil {
		sw.err = sw.w.Flush()
	}
	return sw.n, sw.err
}

// snapshotWriter checksums and counts what it writes; the first error
// sticks.
type snapshotWriter struct {
	w      *bufio.Writer
	crc    uint32
	n      int64
	err    error
	lenBuf [binary.MaxVarintLen64 + 1]byte
	sumBuf [4]byte
}

func (s *snapshotWriter) write(b []byte) {
	if s.err != nil {
		return
	}
	s.crc = crc32.Update(s.crc, crcTable, b)
	var n int
	n, s.err = s.w.Write(b)
	s.n += int64(n)
}

func (s *snapshotWriter) record(typ byte, body []byte) {
	s.lenBuf[0] = typ
	n := binary.PutUvarint(s.lenBuf[1:], uint64(len(body)))
	s.write(s.lenBuf[:1+n])
	s.write(body)
}

// checkedRecord writes a record whose body ends in its own CRC-32C.
func (s *snapshotWriter) checkedRecord(typ byte, body []byte) {
	s.lenBuf[0] = typ
	n := binary.PutUvarint(s.lenBuf[1:], uint64(len(body)+4))
	s.write(s.lenBuf[:1+n])
	s.write(body)
	s.write(binary.LittleEndian.AppendUint32(s.sumBuf[:0], crc32.Checksum(body, crcTable)))
}

// Snapshot serialises the whole state into memory (tests, tools; the
// cluster streams a Capture instead).
func (f *FSM) Snapshot() ([]byte, error) {
	c, err := f.Capture()
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if _, err := c.WriteTo(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Restore replaces the state with a snapshot. The new state is built aside
// and swapped in only when the whole snapshot, checksum included, is valid.
func (f *FSM) Restore(r io.Reader) error {
	st, err := decode(bufio.NewReaderSize(r, 256<<10), f.restoreSpill())
	if err != nil {
		return err
	}
	if st.spill != nil {
		if err := st.spill.finish(); err != nil {
			st.spillErr = err // served from memory; nothing more is spilled
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.spill.adopt(st.spill) // the old state's files are dropped
	if st.spillErr != nil {
		f.spill.fail(st.spillErr)
	}
	f.lastIndex = st.lastIndex
	f.servers = map[string]string{}
	for _, s := range st.servers.Servers {
		f.servers[s.Id] = s.GrpcAddress
	}
	f.digest = digestSum{}
	f.tails.reset()
	if st.histories != nil { // version 3: the histories as they were kept
		gen := f.captureGen.Load()
		for _, h := range st.histories {
			h.idsGen = gen
		}
		f.histories, f.attemptSum, f.digest = st.histories, st.attemptSum, st.attemptSum
	} else {
		f.histories, f.attemptSum = map[string]*history{}, digestSum{}
		for _, a := range st.attempts {
			f.keep(a.domain, a.stored) // adds each attempt's digest
		}
	}
	f.setRecords(st.recs, st.names, st.recSum)
	f.events.events, f.events.droppedThrough = st.events.Events, st.events.DroppedThrough
	f.events.wake(true) // watchers re-read from the restored log
	f.checker.reset(f)
	return nil
}

func corrupt(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrCorruptSnapshot, fmt.Sprintf(format, a...))
}

// crcReader checksums every byte read through it.
type crcReader struct {
	r   *bufio.Reader
	crc uint32
}

func (c *crcReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.crc = crc32.Update(c.crc, crcTable, []byte{b})
	}
	return b, err
}

func (c *crcReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.crc = crc32.Update(c.crc, crcTable, p[:n])
	return n, err
}

// restored is a decoded snapshot, not yet swapped in.
type restored struct {
	recs       map[string]domainRec
	names      []string          // sorted, as the snapshot lists them
	recSum     digestSum         // the domain records' share of the state hash
	attempts   []restoredAttempt // versions 1 and 2: per domain in log order, domains sorted
	histories  map[string]*history
	attemptSum digestSum // version 3
	servers    *pb.ServerDirectory
	events     *pb.EventLog
	lastIndex  uint64
	// Version 3 into a spill file: the file the histories' segments were
	// written to, the failure that stopped writing more (spill.go).
	spill    *spillFile
	spillErr error
	// The segment being read: its two records' bodies, checksums
	// included, and its record table (buffers reused for every segment).
	segRaw, dataRaw []byte
	ents            []attemptEnt
	histRaw         []byte // a history record's body, checksum included
}

func newRestored(hdr *pb.SnapshotHeader) *restored {
	n := min(hdr.DomainCount, 1024) // trust no count before the checksum
	return &restored{recs: make(map[string]domainRec, n), names: make([]string, 0, n), lastIndex: hdr.LastIndex}
}

// addDomain keeps a domain's record, as this build encodes it.
func (st *restored) addDomain(d *pb.Domain) {
	raw := encodeDomain(d)
	st.recs[d.Name] = recOf(d, raw)
	st.names = append(st.names, d.Name)
	st.recSum.add(domainDigestRaw(raw))
}

type restoredAttempt struct {
	domain string
	stored *storedAttempt
}

func decode(r *bufio.Reader, spill *spillFile) (*restored, error) {
	cr := &crcReader{r: r}
	magic := make([]byte, len(snapshotMagic))
	if _, err := io.ReadFull(cr, magic); err != nil || string(magic) != snapshotMagic {
		return nil, corrupt("missing %q magic", snapshotMagic)
	}
	var hdr pb.SnapshotHeader
	if _, err := readRecord(cr, recHeader, &hdr); err != nil {
		return nil, err
	}
	if hdr.Version < 1 || hdr.Version > snapshotVersion {
		return nil, corrupt("version %d, this build reads 1 to %d", hdr.Version, snapshotVersion)
	}
	if hdr.Version == 3 {
		return decode3(cr, &hdr, spill)
	}
	st := newRestored(&hdr)
	prev := ""
	for i := uint64(0); i < hdr.DomainCount; i++ {
		d := &pb.Domain{}
		if _, err := readRecord(cr, recDomain, d); err != nil {
			return nil, err
		}
		if i > 0 && d.Name <= prev {
			return nil, corrupt("domain %q out of order after %q", d.Name, prev)
		}
		prev = d.Name
		var err error
		if hdr.Version == 1 {
			err = st.migrate(d)
		} else {
			err = st.readAttempts(cr, d)
		}
		if err != nil {
			return nil, err
		}
		st.addDomain(d)
	}
	if hdr.Version == 2 && uint64(len(st.attempts)) != hdr.AttemptCount {
		return nil, corrupt("%d attempt records, the header says %d", len(st.attempts), hdr.AttemptCount)
	}
	return st, st.readTail(cr)
}

// readTail reads the server directory, the event log and the trailer.
func (st *restored) readTail(cr *crcReader) error {
	st.servers, st.events = &pb.ServerDirectory{}, &pb.EventLog{}
	if _, err := readRecord(cr, recServers, st.servers); err != nil {
		return err
	}
	if _, err := readRecord(cr, recEvents, st.events); err != nil {
		return err
	}
	return readTrailer(cr)
}

// readAttempts reads the attempt records that follow a domain's record.
func (st *restored) readAttempts(cr *crcReader, d *pb.Domain) error {
	for {
		typ, err := cr.r.Peek(1)
		if err != nil || typ[0] != recAttempt {
			return nil // the next record's reader reports a truncation
		}
		rec := &pb.AttemptRecord{}
		raw, err := readRecord(cr, recAttempt, rec)
		if err != nil {
			return err
		}
		if err := st.add(d, rec, raw); err != nil {
			return err
		}
	}
}

// add checks one attempt record against its domain and the records before
// it, and keeps it.
func (st *restored) add(d *pb.Domain, rec *pb.AttemptRecord, raw []byte) error {
	req := rec.GetRequest()
	if req.GetDomain() != d.Name {
		return corrupt("attempt at index %d names domain %q inside domain %q", rec.LogIndex, req.GetDomain(), d.Name)
	}
	if req.GetRequestId() == "" {
		return corrupt("attempt at index %d of domain %q has no request id", rec.LogIndex, d.Name)
	}
	if n := len(st.attempts); n > 0 && st.attempts[n-1].domain == d.Name && st.attempts[n-1].stored.index >= rec.LogIndex {
		return corrupt("attempt at index %d of domain %q out of log order", rec.LogIndex, d.Name)
	}
	st.attempts = append(st.attempts, restoredAttempt{domain: d.Name, stored: &storedAttempt{
		index: rec.LogIndex, requestID: req.GetRequestId(), allowed: rec.GetDecision().GetAllowed(), raw: raw}})
	return nil
}

// migrate moves a version-1 domain record's history to attempt records.
func (st *restored) migrate(d *pb.Domain) error {
	recs := append(slices.Clone(d.LegacyAllowed), d.LegacyDenied...)
	slices.SortStableFunc(recs, func(a, b *pb.AttemptRecord) int { return cmp.Compare(a.LogIndex, b.LogIndex) })
	d.AllowedCount, d.DeniedCount = uint64(len(d.LegacyAllowed)), uint64(len(d.LegacyDenied))
	d.LegacyAllowed, d.LegacyDenied = nil, nil
	for _, rec := range recs {
		raw, err := marshal.Marshal(rec)
		if err != nil {
			return corrupt("attempt at index %d: %v", rec.LogIndex, err)
		}
		if err := st.add(d, rec, raw); err != nil {
			return err
		}
	}
	return nil
}

// readRecord reads one record of the wanted type into m and returns its
// body bytes.
func readRecord(cr *crcReader, want byte, m proto.Message) ([]byte, error) {
	typ, err := cr.ReadByte()
	if err != nil {
		return nil, corrupt("truncated before a record of type %d", want)
	}
	if typ != want {
		return nil, corrupt("record type %d, expected %d", typ, want)
	}
	n, err := binary.ReadUvarint(cr)
	if err != nil || n > maxRecord {
		return nil, corrupt("bad record length")
	}
	body, err := readBody(cr, typ, n)
	if err != nil {
		return nil, err
	}
	if err := proto.Unmarshal(body, m); err != nil {
		return nil, corrupt("record of type %d: %v", typ, err)
	}
	return body, nil
}

// readBody reads a record body of n bytes.
func readBody(cr *crcReader, typ byte, n uint64) ([]byte, error) {
	return readBodyInto(cr, typ, n, nil)
}

// readBodyInto reads a record body of n bytes into dst when it fits.
func readBodyInto(cr *crcReader, typ byte, n uint64, dst []byte) ([]byte, error) {
	if n <= uint64(cap(dst)) || n <= 64<<10 {
		body := dst[:0]
		if n > uint64(cap(dst)) {
			body = make([]byte, n)
		}
		body = body[:n]
		if _, err := io.ReadFull(cr, body); err != nil {
			return nil, corrupt("truncated record of type %d", typ)
		}
		return body, nil
	}
	// Grow with the bytes actually present: a damaged length near
	// maxRecord in a short stream costs what the stream holds, not n.
	var buf bytes.Buffer
	if got, err := buf.ReadFrom(io.LimitReader(cr, int64(n))); err != nil || uint64(got) != n {
		return nil, corrupt("truncated record of type %d", typ)
	}
	return buf.Bytes(), nil
}

func readTrailer(cr *crcReader) error {
	typ, err := cr.ReadByte()
	if err != nil || typ != recTrailer {
		return corrupt("missing trailer")
	}
	want := cr.crc
	var sum [4]byte
	if _, err := io.ReadFull(cr.r, sum[:]); err != nil {
		return corrupt("truncated checksum")
	}
	if got := binary.BigEndian.Uint32(sum[:]); got != want {
		return corrupt("checksum %08x, computed %08x", got, want)
	}
	if _, err := cr.r.ReadByte(); err != io.EOF {
		return corrupt("trailing bytes after the checksum")
	}
	return nil
}

// SnapshotVersion is the format version Capture.WriteTo writes.
const SnapshotVersion = snapshotVersion
