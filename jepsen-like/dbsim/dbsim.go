// Package dbsim is the database side of the jepsen-like workload's
// replica-quorum domain, simulated in memory (the authority is the system
// under test): every member of the domain has a WAL of (epoch, lsn, chain
// hash) records and a fence epoch. The holder appends records at its epoch
// and ships its whole WAL to the replicas; a replica accepts it only if the
// holder's epoch is at or above its fence (and the epoch of its own last
// record), truncating a divergent suffix of an older epoch, as a real
// replica rebuild would (docs/DURABILITY.md).
//
// The chain hash of a record covers the previous record's hash, its epoch
// and its lsn, so a WAL is fully described by its epoch segments
// (Segments): the checker rebuilds a holder's WAL from them and compares
// chain hashes, never counters alone (AU-5).
package dbsim

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Record is one WAL record.
type Record struct {
	Epoch, Lsn uint64
	Hash       []byte
}

// ChainHash is the hash of the record at (epoch, lsn) after prev (nil for
// the first record).
func ChainHash(prev []byte, epoch, lsn uint64) []byte {
	h := sha256.New()
	h.Write(prev)
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], epoch)
	binary.BigEndian.PutUint64(b[8:], lsn)
	h.Write(b[:])
	return h.Sum(nil)[:8]
}

// Hex is a hash as the history records it.
func Hex(h []byte) string { return hex.EncodeToString(h) }

// Errors of Accept.
var (
	// ErrFenced: the shipping holder's epoch is below the replica's fence.
	ErrFenced = errors.New("fenced")
	// ErrNewerHistory: the replica holds records of a newer epoch.
	ErrNewerHistory = errors.New("replica holds a newer epoch")
	// ErrPrimary: the member acts as a primary (it takes no shipments).
	ErrPrimary = errors.New("acts as a primary")
	// ErrDiverged: the replica holds a different record of the shipping
	// holder's own epoch (two writers of one epoch: never expected).
	ErrDiverged = errors.New("diverged within one epoch")
)

// Member is one member's simulated WAL and fence. Not safe for concurrent
// use (the workload guards its members with one mutex).
type Member struct {
	ID    string
	WAL   []Record
	Fence uint64 // accepts no WAL of a lower epoch
	// Primary: the member acts as a primary (the current holder, or an old
	// one that has not learnt it was replaced) and accepts no shipments.
	Primary bool
}

// Last is the member's last record (zero when its WAL is empty).
func (m *Member) Last() Record {
	if len(m.WAL) == 0 {
		return Record{}
	}
	return m.WAL[len(m.WAL)-1]
}

// HashAt is the member's chain hash at lsn (false when it does not hold
// lsn; lsn 0 is the empty prefix).
func (m *Member) HashAt(lsn uint64) ([]byte, bool) {
	if lsn == 0 || lsn > uint64(len(m.WAL)) {
		return nil, lsn == 0
	}
	return m.WAL[lsn-1].Hash, true
}

// Holds reports whether the member holds r (same chain hash at r's lsn).
func (m *Member) Holds(r Record) bool {
	h, ok := m.HashAt(r.Lsn)
	return ok && bytes.Equal(h, r.Hash)
}

// Append adds a record at epoch (the member is the holder).
func (m *Member) Append(epoch uint64) Record {
	last := m.Last()
	r := Record{Epoch: epoch, Lsn: last.Lsn + 1, Hash: ChainHash(last.Hash, epoch, last.Lsn+1)}
	m.WAL = append(m.WAL, r)
	return r
}

// Accept applies a holder's shipment: its epoch and its whole WAL. The
// replica keeps the common prefix, drops a suffix of an older epoch that
// diverges, and appends the rest; it then follows epoch (its fence is at
// least epoch). ignoreFence is the negative control's replica, which
// accepts WAL of an epoch below its fence.
func (m *Member) Accept(epoch uint64, wal []Record, ignoreFence bool) error {
	if m.Primary {
		return fmt.Errorf("%w: %s", ErrPrimary, m.ID)
	}
	if !ignoreFence && epoch < m.Fence {
		return fmt.Errorf("%w: %s is fenced at epoch %d, shipment of epoch %d", ErrFenced, m.ID, m.Fence, epoch)
	}
	if last := m.Last(); last.Epoch > epoch {
		return fmt.Errorf("%w: %s holds epoch %d lsn %d, shipment of epoch %d", ErrNewerHistory, m.ID, last.Epoch, last.Lsn, epoch)
	}
	// The common prefix: equal chain hashes at an lsn mean equal histories
	// up to it, so search back from the shorter end (usually one step).
	i := min(len(m.WAL), len(wal))
	for i > 0 && !bytes.Equal(m.WAL[i-1].Hash, wal[i-1].Hash) {
		i--
	}
	for _, r := range m.WAL[i:] {
		if r.Epoch >= epoch {
			return fmt.Errorf("%w: %s holds epoch %d lsn %d the holder of epoch %d does not", ErrDiverged, m.ID, r.Epoch, r.Lsn, epoch)
		}
	}
	m.WAL = append(m.WAL[:i:i], wal[i:]...)
	m.Fence = max(m.Fence, epoch)
	return nil
}

// Segments describes a WAL by its epoch runs: "e:from-to,..." ("" when
// empty).
func Segments(wal []Record) string {
	var b strings.Builder
	for i := 0; i < len(wal); {
		j := i
		for j+1 < len(wal) && wal[j+1].Epoch == wal[i].Epoch {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d:%d-%d", wal[i].Epoch, wal[i].Lsn, wal[j].Lsn)
		i = j + 1
	}
	return b.String()
}

// Rebuild recomputes the WAL that Segments described.
func Rebuild(segments string) ([]Record, error) {
	var wal []Record
	if segments == "" {
		return nil, nil
	}
	var prev []byte
	for _, seg := range strings.Split(segments, ",") {
		e, rng, ok := strings.Cut(seg, ":")
		from, to, ok2 := strings.Cut(rng, "-")
		if !ok || !ok2 {
			return nil, fmt.Errorf("segment %q: want epoch:from-to", seg)
		}
		epoch, err1 := strconv.ParseUint(e, 10, 64)
		lo, err2 := strconv.ParseUint(from, 10, 64)
		hi, err3 := strconv.ParseUint(to, 10, 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("segment %q: %w", seg, err)
		}
		if lo != uint64(len(wal))+1 || hi < lo || len(wal) > 0 && wal[len(wal)-1].Epoch >= epoch {
			return nil, fmt.Errorf("segment %q does not continue %d records of epoch %d", seg, len(wal), lastEpoch(wal))
		}
		for lsn := lo; lsn <= hi; lsn++ {
			prev = ChainHash(prev, epoch, lsn)
			wal = append(wal, Record{Epoch: epoch, Lsn: lsn, Hash: prev})
		}
	}
	return wal, nil
}

func lastEpoch(wal []Record) uint64 {
	if len(wal) == 0 {
		return 0
	}
	return wal[len(wal)-1].Epoch
}
