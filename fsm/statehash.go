package fsm

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// The state hash is kept up to date as entries apply, so reading it costs
// the same on a state of ten domains as on one of a hundred thousand. Every
// domain record and every stored attempt contributes the SHA-256 of its
// deterministic encoding; the contributions are summed modulo 2^256, so a
// change replaces one term (subtract the old digest, add the new) without
// touching the others. Two replicas agree on the sum iff they hold the same
// multiset of records, barring a collision an accidental divergence cannot
// produce: a changed record changes its own term by a pseudo-random amount.

// digestSum is a 256-bit integer, little-endian words.
type digestSum [4]uint64

func (s *digestSum) add(d [32]byte) {
	var carry uint64
	for i := range s {
		s[i], carry = bits.Add64(s[i], binary.LittleEndian.Uint64(d[8*i:]), carry)
	}
}

func (s *digestSum) sub(d [32]byte) {
	var borrow uint64
	for i := range s {
		s[i], borrow = bits.Sub64(s[i], binary.LittleEndian.Uint64(d[8*i:]), borrow)
	}
}

func (s *digestSum) bytes() []byte {
	b := make([]byte, 0, 32)
	for _, w := range s {
		b = binary.LittleEndian.AppendUint64(b, w)
	}
	return b
}

func domainDigest(d *pb.Domain) [32]byte {
	raw, err := marshal.Marshal(d)
	if err != nil {
		panic(fmt.Sprintf("fsm: marshal domain %q: %v", d.Name, err))
	}
	h := sha256.New()
	h.Write([]byte("domain\x00"))
	h.Write(raw)
	return [32]byte(h.Sum(nil))
}

// touch marks a domain whose record the current entry may change; its
// digest is recomputed when the entry has applied.
func (f *FSM) touch(name string) { f.touched = append(f.touched, name) }

// rehashTouched replaces the digest of every domain the entry touched.
func (f *FSM) rehashTouched() {
	for _, n := range f.touched {
		f.rehash(n)
	}
	f.touched = f.touched[:0]
}

func (f *FSM) rehash(name string) {
	if old, ok := f.domainDigests[name]; ok {
		f.digest.sub(old)
		delete(f.domainDigests, name)
	}
	if d, ok := f.domains[name]; ok {
		dig := domainDigest(d)
		f.domainDigests[name] = dig
		f.digest.add(dig)
	}
}

// StateHash is the hash of the authority state — every domain record,
// every stored attempt and the server directory — without the applied
// index and without the event log: equal on two replicas iff their
// authority state is the same. An entry that was rejected, or that only
// wrote an event (a leader's note), leaves it unchanged. (The event log is
// compared on its own: it is in the snapshot bytes and each node's
// --event-log.) O(servers): the record digests are maintained by Apply.
func (f *FSM) StateHash() ([32]byte, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.stateHashLocked()
}

func (f *FSM) stateHashLocked() ([32]byte, error) {
	dir, err := marshal.Marshal(f.serverDirectory())
	if err != nil {
		return [32]byte{}, err
	}
	h := sha256.New()
	h.Write([]byte("authority-state/2\x00"))
	h.Write(f.digest.bytes())
	h.Write(dir)
	return [32]byte(h.Sum(nil)), nil
}

// recomputeDigests rebuilds every digest from scratch (after a restore).
func (f *FSM) recomputeDigests() {
	f.attemptSum = attemptDigests(f.histories)
	f.digest = f.attemptSum
	f.domainDigests = make(map[string][32]byte, len(f.domains))
	for name := range f.domains {
		f.rehash(name)
	}
}

// attemptDigests sums the digests of every stored attempt, decoding each.
func attemptDigests(histories map[string]*history) digestSum {
	var sum digestSum
	for _, h := range histories {
		for _, l := range []*attemptList{&h.allowed, &h.denied} {
			l.each(func(_ uint64, raw []byte) { sum.add(attemptDigest(raw)) })
		}
	}
	return sum
}
