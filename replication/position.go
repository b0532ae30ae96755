package replication

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// HashSize is the size of a chain hash (SHA-256).
const HashSize = sha256.Size

// Position is a place in a WAL: the epoch of the primary that wrote the
// record, its lsn and its chain hash. Because each hash covers the
// previous one, equal hashes at an lsn imply equal history up to it (AU-5);
// comparing lsns alone never proves anything.
type Position struct {
	Epoch uint64
	LSN   uint64
	Hash  []byte
}

// Zero is the position before the first record: lsn 0, empty hash.
var Zero = Position{}

// String renders a position as "e<epoch>/<lsn>/<first 8 hex of hash>".
func (p Position) String() string {
	h := hex.EncodeToString(p.Hash)
	if len(h) > 8 {
		h = h[:8]
	}
	if h == "" {
		h = "-"
	}
	return fmt.Sprintf("e%d/%d/%s", p.Epoch, p.LSN, h)
}

// Same reports whether p and q name the same record (lsn and hash; the
// epoch is covered by the hash).
func (p Position) Same(q Position) bool {
	return p.LSN == q.LSN && bytes.Equal(p.Hash, q.Hash)
}

// Entry is the content a chain hash covers.
type Entry struct {
	Epoch    uint64
	LSN      uint64
	CommitID uint64
	Key      []byte
	Value    []byte
}

// ChainHash is sha256(prev || epoch || lsn || commit_id || len(key) || key
// || value), integers big-endian. The key's length keeps (key, value)
// splits unambiguous.
func ChainHash(prev []byte, e Entry) []byte {
	h := sha256.New()
	h.Write(prev)
	var b [32]byte
	binary.BigEndian.PutUint64(b[0:], e.Epoch)
	binary.BigEndian.PutUint64(b[8:], e.LSN)
	binary.BigEndian.PutUint64(b[16:], e.CommitID)
	binary.BigEndian.PutUint64(b[24:], uint64(len(e.Key)))
	h.Write(b[:])
	h.Write(e.Key)
	h.Write(e.Value)
	return h.Sum(nil)
}

// ChainError says why a record does not continue a chain.
type ChainError struct {
	LSN    uint64
	Reason string
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("wal chain broken at lsn %d: %s", e.LSN, e.Reason)
}

// VerifyNext checks that a record (its entry, claimed prev hash and hash)
// continues the chain after prev: the next lsn, a non-decreasing epoch, the
// previous hash, and a hash that recomputes. It returns the record's
// position.
func VerifyNext(prev Position, e Entry, prevHash, hash []byte) (Position, error) {
	switch {
	case e.LSN != prev.LSN+1:
		return Position{}, &ChainError{LSN: e.LSN, Reason: fmt.Sprintf("expected lsn %d", prev.LSN+1)}
	case e.Epoch < prev.Epoch:
		return Position{}, &ChainError{LSN: e.LSN, Reason: fmt.Sprintf("epoch %d below the previous record's %d", e.Epoch, prev.Epoch)}
	case !bytes.Equal(prevHash, prev.Hash):
		return Position{}, &ChainError{LSN: e.LSN, Reason: "prev_hash does not match the previous record's hash"}
	}
	if want := ChainHash(prevHash, e); !bytes.Equal(want, hash) {
		return Position{}, &ChainError{LSN: e.LSN, Reason: "hash does not recompute"}
	}
	return Position{Epoch: e.Epoch, LSN: e.LSN, Hash: hash}, nil
}
