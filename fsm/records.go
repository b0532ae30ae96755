package fsm

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"slices"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Domain records are kept encoded: each as its canonical (deterministic)
// protobuf encoding, which the state hash and every snapshot are defined
// over anyway, plus the few fields the hot read paths need (authorization
// and lease checks ask for a domain's kind, epoch and holder on every
// call). A decoded pb.Domain costs several times its encoding in memory;
// a state of a hundred thousand domains holds only their encodings.
//
// An entry that reads or changes a domain works on a decoded copy (work);
// when the entry has applied, each copy is encoded again and, when its
// bytes differ, replaces the record and its term of the state hash. A
// record's bytes are never changed in place, so a capture shares them.
type domainRec struct {
	raw      []byte
	kind     pb.DomainKind
	released bool
	epoch    uint64
	ttlMs    uint64
	holder   string
}

func recOf(d *pb.Domain, raw []byte) domainRec {
	return domainRec{raw: raw, kind: d.Kind, released: d.Released, epoch: d.Epoch,
		ttlMs: d.GetPolicy().GetLeaseTtlMs(), holder: d.Holder}
}

// decodeDomain decodes a record. Its bytes were written by encodeDomain
// (or checked by a restore): failing to decode them is memory corruption.
func decodeDomain(raw []byte) *pb.Domain {
	d := &pb.Domain{}
	if err := proto.Unmarshal(raw, d); err != nil {
		panic(fmt.Sprintf("fsm: a stored domain record does not decode: %v", err))
	}
	return d
}

func encodeDomain(d *pb.Domain) []byte {
	raw, err := marshal.Marshal(d)
	if err != nil {
		panic(fmt.Sprintf("fsm: marshal domain %q: %v", d.Name, err))
	}
	return raw
}

func domainDigestRaw(raw []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte("domain\x00"))
	h.Write(raw)
	return [32]byte(h.Sum(nil))
}

// lookup returns the entry's working copy of a domain, which the entry
// may change.
func (f *FSM) lookup(name string) (*pb.Domain, error) {
	if d := f.work[name]; d != nil {
		return d, nil
	}
	rec, ok := f.recs[name]
	if !ok {
		return nil, fmt.Errorf("%w: domain %q", ErrNotFound, name)
	}
	d := f.hot.get(name)
	if d == nil {
		d = decodeDomain(rec.raw)
		f.hot.put(name, d)
	}
	f.work[name] = d
	f.touched = append(f.touched, name)
	return d, nil
}

// create adds a new domain to the entry's working set.
func (f *FSM) create(d *pb.Domain) {
	f.hot.put(d.Name, d)
	f.work[d.Name] = d
	f.touched = append(f.touched, d.Name)
}

// exists reports whether a domain exists (or the entry created it).
func (f *FSM) exists(name string) bool {
	if _, ok := f.work[name]; ok {
		return true
	}
	_, ok := f.recs[name]
	return ok
}

// hotDomains keeps the decoded form of the domains entries worked on most
// recently (bounded), so that an entry touching a busy domain — a holder
// advancing its watermark — need not decode it again. Only entries use it,
// under the write lock: a decoded domain here always equals its record,
// since every change to it is encoded into the record when the entry has
// applied. Derived state: nothing depends on it but speed.
type hotDomains struct {
	m    map[string]*pb.Domain
	ring [hotDomainCount]string
	next int
}

const hotDomainCount = 1024

func (h *hotDomains) get(name string) *pb.Domain { return h.m[name] }

func (h *hotDomains) put(name string, d *pb.Domain) {
	if h.m == nil {
		h.m = make(map[string]*pb.Domain, hotDomainCount)
	}
	if _, ok := h.m[name]; ok {
		h.m[name] = d
		return
	}
	if old := h.ring[h.next]; old != "" {
		delete(h.m, old)
	}
	h.ring[h.next], h.next = name, (h.next+1)%hotDomainCount
	h.m[name] = d
}

// peek returns a domain for reading only: the entry's working copy, or a
// fresh decode (readers under the read lock get their own copy).
func (f *FSM) peek(name string) (*pb.Domain, bool) {
	if d := f.work[name]; d != nil {
		return d, true
	}
	rec, ok := f.recs[name]
	if !ok {
		return nil, false
	}
	return decodeDomain(rec.raw), true
}

// commitTouched encodes every domain the entry worked on and replaces the
// records (and state hash terms) whose bytes changed. The touched list is
// kept for the invariants checker; ApplyCommand clears it.
func (f *FSM) commitTouched() {
	for _, name := range f.touched {
		d := f.work[name]
		if d == nil {
			continue // listed twice
		}
		delete(f.work, name)
		raw := encodeDomain(d)
		old, had := f.recs[name]
		if had && bytes.Equal(old.raw, raw) {
			continue
		}
		if had {
			f.digest.sub(domainDigestRaw(old.raw))
		}
		f.digest.add(domainDigestRaw(raw))
		f.putRec(name, recOf(d, raw))
	}
}

// putRec stores a record, adding a new name to the sorted names: at the
// end when names are created in order, else by a copy of the names after
// it (domains are created far less often than they are read in order).
func (f *FSM) putRec(name string, r domainRec) {
	if _, had := f.recs[name]; !had {
		if n := len(f.names); n == 0 || f.names[n-1] < name {
			f.names = append(f.names, name)
		} else {
			i, _ := slices.BinarySearch(f.names, name)
			f.names = slices.Insert(f.names, i, name)
		}
	}
	f.recs[name] = r
}

// setRecords replaces every domain record, given the sum of their
// digests; the attempts' share of the state hash is f.attemptSum.
func (f *FSM) setRecords(recs map[string]domainRec, names []string, sum digestSum) {
	f.recs, f.names, f.digest = recs, names, f.attemptSum
	f.digest.addSum(sum)
	f.hot = hotDomains{}
	clear(f.work)
	f.touched = f.touched[:0]
}

// digestsOf returns the sorted names of records and the sum of their
// digests.
func digestsOf(recs map[string]domainRec) ([]string, digestSum) {
	var sum digestSum
	names := make([]string, 0, len(recs))
	for name, r := range recs {
		sum.add(domainDigestRaw(r.raw))
		names = append(names, name)
	}
	slices.Sort(names)
	return names, sum
}

// recField returns the bytes of a message field of a record's top level,
// and whether it is present, without decoding the rest (a record is
// canonical: each field at most once).
func recField(raw []byte, want protowire.Number) ([]byte, bool) {
	var out []byte
	found := false
	for b := raw; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			break
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			break
		}
		if num == want && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b)
			out, found = v, true
		}
		b = b[m:]
	}
	return out, found
}
