package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/protobuf/proto"
)

// Reading a version-3 snapshot (the format is described in snapshot.go):
// the histories are taken as written, after their checksums and structure
// are checked, without decoding a record.

func decode3(cr *crcReader, hdr *pb.SnapshotHeader, spill *spillFile) (*restored, error) {
	st := newRestored(hdr)
	st.spill = spill
	st.histories = make(map[string]*history, min(hdr.DomainCount, 1024))
	prev := ""
	var total uint64
	var scratch [2][]uint64
	for i := uint64(0); i < hdr.DomainCount; i++ {
		d := &pb.Domain{}
		if _, err := readRecord(cr, recDomain, d); err != nil {
			return nil, err
		}
		if i > 0 && d.Name <= prev {
			return nil, corrupt("domain %q out of order after %q", d.Name, prev)
		}
		prev = d.Name
		st.addDomain(d)
		h, err := st.readHistory(cr, d, &scratch)
		if err != nil {
			return nil, err
		}
		if h != nil {
			st.histories[d.Name] = h
			total += uint64(h.allowed.len() + h.denied.len())
		}
	}
	if total != hdr.AttemptCount {
		return nil, corrupt("%d attempt records, the header says %d", total, hdr.AttemptCount)
	}
	sum, err := readRaw(cr, recDigest)
	if err != nil {
		return nil, err
	}
	if len(sum) != 32 {
		return nil, corrupt("attempt digest of %d bytes", len(sum))
	}
	for i := range st.attemptSum {
		st.attemptSum[i] = binary.LittleEndian.Uint64(sum[8*i:])
	}
	if err := verifyRestored(st); err != nil {
		return nil, err
	}
	return st, st.readTail(cr)
}

// readRaw reads one record of the wanted type and returns its body.
func readRaw(cr *crcReader, want byte) ([]byte, error) {
	return readRawInto(cr, want, nil)
}

func readRawInto(cr *crcReader, want byte, dst []byte) ([]byte, error) {
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
	return readBodyInto(cr, typ, n, dst)
}

// readChecked reads a record whose body ends in its own CRC-32C.
func readChecked(cr *crcReader, want byte) ([]byte, error) {
	body, err := readCheckedRaw(cr, want, nil)
	if err != nil {
		return nil, err
	}
	n := len(body) - 4
	return body[:n:n], nil
}

// readCheckedRaw reads a record whose body ends in its own CRC-32C, into
// dst when it fits, and returns the body with its checksum, checked.
func readCheckedRaw(cr *crcReader, want byte, dst []byte) ([]byte, error) {
	body, err := readRawInto(cr, want, dst)
	if err != nil {
		return nil, err
	}
	if len(body) < 4 {
		return nil, corrupt("record of type %d too short for its checksum", want)
	}
	n := len(body) - 4
	if crc32.Checksum(body[:n], crcTable) != binary.LittleEndian.Uint32(body[n:]) {
		return nil, corrupt("record of type %d does not match its checksum", want)
	}
	return body, nil
}

// wire reads the fields of a record body; the first error sticks.
type wire struct {
	b   []byte
	bad bool
}

func (w *wire) uvarint() uint64 {
	v, n := binary.Uvarint(w.b)
	if n <= 0 {
		w.bad, w.b = true, nil
		return 0
	}
	w.b = w.b[n:]
	return v
}

func (w *wire) fixed(n int) uint64 {
	if len(w.b) < n {
		w.bad, w.b = true, nil
		return 0
	}
	var v uint64
	if n == 4 {
		v = uint64(binary.LittleEndian.Uint32(w.b))
	} else {
		v = binary.LittleEndian.Uint64(w.b)
	}
	w.b = w.b[n:]
	return v
}

// readHistory reads a domain's history records and checks them against
// the domain record and each other.
func (st *restored) readHistory(cr *crcReader, d *pb.Domain, scratch *[2][]uint64) (*history, error) {
	// The body is copied out (into the request index): read it into a
	// buffer kept for every domain's.
	var err error
	if st.histRaw, err = readCheckedRaw(cr, recHistory, st.histRaw); err != nil {
		return nil, err
	}
	body := st.histRaw[:len(st.histRaw)-4]
	w := &wire{b: body}
	deniedBytes, nAllowed, nDenied := w.uvarint(), w.uvarint(), w.uvarint()
	idsAt := len(body) - len(w.b) // the request index, from its count on
	nIDs := w.uvarint()
	if w.bad || nDenied > DeniedHistory || nAllowed > uint64(len(w.b)) || nIDs > uint64(len(w.b))/9 {
		return nil, corrupt("history of domain %q: bad counts", d.Name)
	}
	h := &history{deniedBytes: int(deniedBytes)}
	h.own()
	// The request index: kept, or checked and spilled as it is.
	ids := scratch[1][:0]
	if st.spill != nil {
		ids, w.b, err = checkIDs(ids, w.b, int(nIDs))
		if err == nil && len(w.b) == 0 && nIDs > 0 {
			st.spillIDs(h, body[idsAt:], int(nIDs))
		}
	} else {
		h.ids, w.b, err = parseIDs(w.b, int(nIDs))
		for _, id := range h.ids {
			ids = append(ids, id.index)
		}
	}
	if err != nil || len(w.b) != 0 {
		return nil, corrupt("history of domain %q: malformed request index", d.Name)
	}
	scratch[1] = ids
	recs := scratch[0][:0]
	for k := uint64(0); k < nAllowed+nDenied; k++ {
		l := &h.allowed
		if k >= nAllowed {
			l = &h.denied
		}
		s, err := st.readSegment(cr, d.Name)
		if err != nil {
			return nil, err
		}
		if n := len(l.segs); n > 0 {
			// Only the newest segment of a list, and the oldest of the
			// denied ring, may be short.
			if l.segs[n-1].count() != segmentRecords && (l == &h.allowed || n > 1) {
				return nil, corrupt("history of domain %q: a short segment inside a list", d.Name)
			}
			if s.firstIndex() <= l.segs[n-1].lastIndex() {
				return nil, corrupt("history of domain %q: segments out of log order", d.Name)
			}
		}
		for _, e := range s.ents {
			recs = append(recs, e.index)
		}
		st.spillSegment(&s)
		l.segs = append(l.segs, s)
		l.n += s.count()
	}
	switch n := uint64(h.denied.len()); {
	case n > DeniedHistory || (n == 0) != (deniedBytes == 0) || n > 1 && deniedBytes > DeniedHistoryBytes:
		return nil, corrupt("history of domain %q: a denied ring of %d records and %d bytes", d.Name, n, deniedBytes)
	case nIDs != uint64(h.allowed.len())+n:
		return nil, corrupt("history of domain %q: %d request ids for %d records", d.Name, nIDs, uint64(h.allowed.len())+n)
	}
	if nIDs == 0 {
		return nil, nil
	}
	// The request index names every record once: the same log indexes.
	slices.Sort(recs)
	slices.Sort(ids)
	for i := range recs {
		if recs[i] != ids[i] || i > 0 && recs[i] == recs[i-1] {
			return nil, corrupt("history of domain %q: the request index does not match the records", d.Name)
		}
	}
	scratch[0], scratch[1] = recs, ids
	return h, nil
}

// readSegment reads a segment record and its data record (the data into a
// shared buffer when the segments go to a spill file).
func (st *restored) readSegment(cr *crcReader, domain string) (segment, error) {
	if st.spill != nil {
		return st.readSegmentToSpill(cr, domain)
	}
	body, err := readChecked(cr, recSegment)
	if err != nil {
		return segment{}, err
	}
	ents, end, err := parseSegmentBody(nil, body)
	if err != nil {
		return segment{}, corrupt("history of domain %q: %v", domain, err)
	}
	s := segment{ents: ents}
	if s.data, err = readChecked(cr, recData); err != nil {
		return segment{}, err
	}
	if uint64(len(s.data)) != end {
		return segment{}, corrupt("history of domain %q: segment data of %d bytes, its records need %d", domain, len(s.data), end)
	}
	return s, nil
}

// readSegmentToSpill reads a segment's two records into buffers that are
// reused for every segment: spillSegment writes them to the file as read,
// checksums included (a spilled segment is its two record bodies).
func (st *restored) readSegmentToSpill(cr *crcReader, domain string) (segment, error) {
	var err error
	if st.segRaw, err = readCheckedRaw(cr, recSegment, st.segRaw); err != nil {
		return segment{}, err
	}
	ents, end, err := parseSegmentBody(st.ents[:0], st.segRaw[:len(st.segRaw)-4])
	if err != nil {
		return segment{}, corrupt("history of domain %q: %v", domain, err)
	}
	st.ents = ents
	if st.dataRaw, err = readCheckedRaw(cr, recData, st.dataRaw); err != nil {
		return segment{}, err
	}
	data := st.dataRaw[:len(st.dataRaw)-4]
	if uint64(len(data)) != end {
		return segment{}, corrupt("history of domain %q: segment data of %d bytes, its records need %d", domain, len(data), end)
	}
	return segment{ents: ents, data: data}, nil
}

// spillIDs writes a restored request index to the spill file as the
// snapshot holds it (or, if that fails, keeps it in memory).
func (st *restored) spillIDs(h *history, blob []byte, n int) {
	loc, err := st.spill.writeIDs(blob, n)
	if err != nil {
		st.spill, st.spillErr = nil, err
		ids, perr := parseIDsBlob(blob, n)
		if perr != nil {
			panic(fmt.Sprintf("fsm: a checked request index does not parse: %v", perr))
		}
		h.ids = ids
		return
	}
	h.idsDisk = loc
}

// spillSegment writes a segment readSegmentToSpill read to the spill file
// (or, if that fails, gives it memory of its own: the rest of the restore
// stays in memory, and the server keeps running).
func (st *restored) spillSegment(s *segment) {
	if st.spill == nil {
		return
	}
	loc, err := st.spill.writeRaw(st.segRaw, st.dataRaw, s.ents)
	if err != nil {
		st.spill, st.spillErr = nil, err
		s.ents, s.data = slices.Clone(s.ents), slices.Clone(s.data)
		return
	}
	s.ents, s.data, s.disk = nil, nil, loc
}

// parseIDs reads n request index entries (fixed64 key, uvarint log index),
// which must be in strictly increasing order.
func parseIDs(b []byte, n int) ([]idEnt, []byte, error) {
	ids := make([]idEnt, 0, n)
	rest, err := walkIDs(b, n, func(e idEnt) { ids = append(ids, e) })
	if err != nil {
		return nil, nil, err
	}
	return ids, rest, nil
}

// checkIDs checks n request index entries as parseIDs does and appends
// their log indexes to dst, without keeping them.
func checkIDs(dst []uint64, b []byte, n int) ([]uint64, []byte, error) {
	rest, err := walkIDs(b, n, func(e idEnt) { dst = append(dst, e.index) })
	if err != nil {
		return nil, nil, err
	}
	return dst, rest, nil
}

// walkIDs reads n request index entries, checks their order and calls fn
// with each; it returns what follows them.
func walkIDs(b []byte, n int, fn func(idEnt)) ([]byte, error) {
	var prev idEnt
	for i := range n {
		if len(b) < 9 {
			return nil, errors.New("truncated")
		}
		key := binary.LittleEndian.Uint64(b)
		index, m := binary.Uvarint(b[8:])
		if m <= 0 {
			return nil, errors.New("bad log index")
		}
		b = b[8+m:]
		e := idEnt{key: key, index: index}
		if i > 0 && (e.key < prev.key || e.key == prev.key && e.index <= prev.index) {
			return nil, errors.New("out of order")
		}
		fn(e)
		prev = e
	}
	return b, nil
}

// parseSegmentBody reads a segment record's body (without its CRC): its
// records' table and the length of their data.
func parseSegmentBody(dst []attemptEnt, body []byte) ([]attemptEnt, uint64, error) {
	w := &wire{b: body}
	n := w.uvarint()
	if w.bad || n == 0 || n > segmentRecords {
		return nil, 0, fmt.Errorf("a segment of %d records", n)
	}
	ents := slices.Grow(dst[:0], int(n))[:n]
	end := uint64(0)
	for i := range ents {
		index, size, sum := w.uvarint(), w.uvarint(), w.fixed(4)
		end += size
		if w.bad || size == 0 || end >= 1<<32 || i > 0 && index <= ents[i-1].index {
			return nil, 0, errors.New("a malformed segment")
		}
		ents[i] = attemptEnt{index: index, end: uint32(end), sum: uint32(sum)}
	}
	if len(w.b) != 0 {
		return nil, 0, errors.New("a malformed segment")
	}
	return ents, end, nil
}

// appendSegmentBody appends a segment record's body (without its CRC).
func appendSegmentBody(buf []byte, ents []attemptEnt) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(ents)))
	start := uint32(0)
	for _, e := range ents {
		buf = binary.AppendUvarint(buf, e.index)
		buf = binary.AppendUvarint(buf, uint64(e.end-start))
		buf = binary.LittleEndian.AppendUint32(buf, e.sum)
		start = e.end
	}
	return buf
}

// checkHistories decodes every record of restored histories and checks
// it against its checksum, its domain, its list, the request index and
// the denied ring's size, and their digests against the sum the snapshot
// states. Too slow for every restore of a large state; the invariants
// build runs it on each (invariants.go).
func checkHistories(st *restored) error {
	var sum digestSum
	for name, h := range st.histories {
		deniedBytes := 0
		ids := h.idIndex()
		for _, l := range []*attemptList{&h.allowed, &h.denied} {
			for _, s := range l.segs {
				s = s.loaded()
				var prev2, prev1 []byte
				for i, e := range s.ents {
					b1, b2 := bases(i, prev2, prev1)
					raw, err := applyDelta(nil, b1, b2, s.delta(i))
					if err != nil || crc32.Checksum(raw, crcTable) != e.sum {
						return corrupt("domain %q: the record at index %d does not decode to its checksum", name, e.index)
					}
					rec := &pb.AttemptRecord{}
					if err := proto.Unmarshal(raw, rec); err != nil {
						return corrupt("domain %q: the record at index %d: %v", name, e.index, err)
					}
					id := rec.GetRequest().GetRequestId()
					if rec.GetRequest().GetDomain() != name || rec.LogIndex != e.index || id == "" ||
						rec.GetDecision().GetAllowed() != (l == &h.allowed) {
						return corrupt("domain %q: the record at index %d does not belong where it is", name, e.index)
					}
					if _, found := slices.BinarySearchFunc(ids, idEnt{requestKey(id), e.index}, cmpID); !found {
						return corrupt("domain %q: the request index misses the record at index %d", name, e.index)
					}
					if l == &h.denied {
						deniedBytes += len(raw)
					}
					sum.add(attemptDigest(raw))
					prev2, prev1 = prev1, raw
				}
			}
		}
		if deniedBytes != h.deniedBytes {
			return corrupt("domain %q: a denied ring of %d bytes, the snapshot says %d", name, deniedBytes, h.deniedBytes)
		}
	}
	if sum != st.attemptSum {
		return corrupt("the attempt records' digests do not sum to the stated digest")
	}
	return nil
}

func cmpID(a, b idEnt) int {
	switch {
	case a.key != b.key:
		if a.key < b.key {
			return -1
		}
		return 1
	case a.index < b.index:
		return -1
	case a.index > b.index:
		return 1
	}
	return 0
}
