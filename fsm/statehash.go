package fsm

import (
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
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

func (s *digestSum) addSum(o digestSum) {
	var carry uint64
	for i := range s {
		s[i], carry = bits.Add64(s[i], o[i], carry)
	}
}

func (s *digestSum) bytes() []byte {
	b := make([]byte, 0, 32)
	for _, w := range s {
		b = binary.LittleEndian.AppendUint64(b, w)
	}
	return b
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

// recomputeDigests rebuilds every digest from scratch.
func (f *FSM) recomputeDigests() {
	f.attemptSum = attemptDigests(f.histories)
	names, sum := digestsOf(f.recs)
	f.setRecords(f.recs, names, sum)
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
