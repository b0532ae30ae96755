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
	return readCheckedInto(cr, want, nil)
}

// readCheckedInto is readChecked into dst when the body fits.
func readCheckedInto(cr *crcReader, want byte, dst []byte) ([]byte, error) {
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
	return body[:n:n], nil
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
	body, err := readChecked(cr, recHistory)
	if err != nil {
		return nil, err
	}
	w := &wire{b: body}
	deniedBytes, nAllowed, nDenied, nIDs := w.uvarint(), w.uvarint(), w.uvarint(), w.uvarint()
	if w.bad || nDenied > DeniedHistory || nAllowed > uint64(len(w.b)) || nIDs > uint64(len(w.b))/9 {
		return nil, corrupt("history of domain %q: bad counts", d.Name)
	}
	h := &history{deniedBytes: int(deniedBytes), ids: make([]idEnt, nIDs)}
	for i := range h.ids {
		h.ids[i] = idEnt{key: w.fixed(8), index: w.uvarint()}
		if i > 0 && (h.ids[i].key < h.ids[i-1].key || h.ids[i].key == h.ids[i-1].key && h.ids[i].index <= h.ids[i-1].index) {
			return nil, corrupt("history of domain %q: request index out of order", d.Name)
		}
	}
	if w.bad || len(w.b) != 0 {
		return nil, corrupt("history of domain %q: malformed", d.Name)
	}
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
	ids := scratch[1][:0]
	for _, id := range h.ids {
		ids = append(ids, id.index)
	}
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
	body, err := readChecked(cr, recSegment)
	if err != nil {
		return segment{}, err
	}
	ents, end, err := parseSegmentBody(body)
	if err != nil {
		return segment{}, corrupt("history of domain %q: %v", domain, err)
	}
	s := segment{ents: ents}
	var buf []byte
	if st.spill != nil {
		// One buffer for every data record: the bytes go to the file.
		if uint64(cap(st.spillBuf)) < end+4 {
			st.spillBuf = make([]byte, 0, max(end+4, 64<<10))
		}
		buf = st.spillBuf
	}
	if s.data, err = readCheckedInto(cr, recData, buf); err != nil {
		return segment{}, err
	}
	if uint64(len(s.data)) != end {
		return segment{}, corrupt("history of domain %q: segment data of %d bytes, its records need %d", domain, len(s.data), end)
	}
	return s, nil
}

// spillSegment moves a segment read into the shared buffer to the spill
// file (or, if that fails, to memory of its own).
func (st *restored) spillSegment(s *segment) {
	if st.spill == nil {
		return
	}
	loc, err := st.spill.writeSegment(&st.blob, s.ents, s.data)
	if err != nil {
		// The rest stays in memory; the server keeps running.
		st.spill, st.spillErr = nil, err
		s.data = slices.Clone(s.data)
		return
	}
	s.ents, s.data, s.disk = nil, nil, loc
}

// parseSegmentBody reads a segment record's body (without its CRC): its
// records' table and the length of their data.
func parseSegmentBody(body []byte) ([]attemptEnt, uint64, error) {
	w := &wire{b: body}
	n := w.uvarint()
	if w.bad || n == 0 || n > segmentRecords {
		return nil, 0, fmt.Errorf("a segment of %d records", n)
	}
	ents := make([]attemptEnt, n)
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
					if _, found := slices.BinarySearchFunc(h.ids, idEnt{requestKey(id), e.index}, cmpID); !found {
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
