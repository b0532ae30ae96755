package refnode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"

	rpb "github.com/aerodb/authority/api/refnode/v1"
	"github.com/aerodb/authority/replication"
	"google.golang.org/protobuf/proto"
)

// MaxRecordSize bounds one record's payload.
const MaxRecordSize = 16 << 20

const frameHeader = 8

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt: a WAL (on disk or shipped) failed its checksum, framing,
// order or chain somewhere other than a torn tail.
var ErrCorrupt = errors.New("refnode: corrupt wal")

// EncodeFrame frames a record: [len u32 LE][crc32c(payload) u32 LE][payload].
func EncodeFrame(rec *rpb.WalRecord) []byte {
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(rec)
	if err != nil {
		panic(fmt.Sprintf("marshal wal record: %v", err)) // only fails on invalid UTF-8 in strings: none here
	}
	b := make([]byte, frameHeader, frameHeader+len(payload))
	binary.LittleEndian.PutUint32(b[0:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[4:], crc32.Checksum(payload, crcTable))
	return append(b, payload...)
}

// DecodeFrame decodes one whole frame, verifying its length and checksum.
func DecodeFrame(b []byte) (*rpb.WalRecord, error) {
	if len(b) < frameHeader {
		return nil, fmt.Errorf("%w: frame of %d bytes", ErrCorrupt, len(b))
	}
	n := binary.LittleEndian.Uint32(b[0:])
	if int(n) != len(b)-frameHeader {
		return nil, fmt.Errorf("%w: frame length %d, payload %d bytes", ErrCorrupt, n, len(b)-frameHeader)
	}
	return decodePayload(b[frameHeader:], binary.LittleEndian.Uint32(b[4:]))
}

func decodePayload(payload []byte, sum uint32) (*rpb.WalRecord, error) {
	if got := crc32.Checksum(payload, crcTable); got != sum {
		return nil, fmt.Errorf("%w: checksum mismatch (crc32c %08x, frame says %08x)", ErrCorrupt, got, sum)
	}
	rec := &rpb.WalRecord{}
	if err := proto.Unmarshal(payload, rec); err != nil {
		return nil, fmt.Errorf("%w: undecodable record: %v", ErrCorrupt, err)
	}
	return rec, nil
}

func entryOf(r *rpb.WalRecord) replication.Entry {
	return replication.Entry{Epoch: r.Epoch, LSN: r.Lsn, CommitID: r.CommitId, Key: r.Key, Value: r.Value}
}

// PositionOf is a record's position.
func PositionOf(r *rpb.WalRecord) replication.Position {
	return replication.Position{Epoch: r.Epoch, LSN: r.Lsn, Hash: r.Hash}
}

// VerifyRecord checks that rec continues the chain after prev.
func VerifyRecord(prev replication.Position, rec *rpb.WalRecord) error {
	_, err := replication.VerifyNext(prev, entryOf(rec), rec.PrevHash, rec.Hash)
	return err
}

// NewRecord builds the record after prev, with its chain hash.
func NewRecord(prev replication.Position, epoch, commitID uint64, key, value []byte) *rpb.WalRecord {
	e := replication.Entry{Epoch: epoch, LSN: prev.LSN + 1, CommitID: commitID, Key: key, Value: value}
	return &rpb.WalRecord{Epoch: epoch, Lsn: e.LSN, PrevHash: prev.Hash, Hash: replication.ChainHash(prev.Hash, e),
		CommitId: commitID, Key: key, Value: value}
}

// OpenReport says what OpenWAL found.
type OpenReport struct {
	Records       int
	TruncatedTail int64 // bytes of a torn tail cut off
}

// WAL is an append-only file of chained records starting at lsn 1, with
// every record also kept in memory (the reference node is small): that
// makes the hash at any lsn a lookup. Appends are buffered; SyncTo writes
// and fsyncs them, sharing one fsync among every caller waiting meanwhile
// (group commit). Safe for concurrent use.
type WAL struct {
	f *os.File

	mu      sync.Mutex
	recs    []*rpb.WalRecord // recs[i].Lsn == i+1
	buf     []byte
	flushed uint64

	syncMu sync.Mutex // one writer+fsync at a time
}

// OpenWAL opens (or creates) the WAL at path, verifying every record's
// checksum and chain. A torn tail (an incomplete last frame, or a last
// frame whose checksum fails: a write cut short by a crash) is truncated
// and fsynced; any other damage returns an error wrapping ErrCorrupt.
func OpenWAL(path string) (*WAL, OpenReport, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, OpenReport{}, err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, OpenReport{}, err
	}
	w := &WAL{f: f}
	var rep OpenReport
	off, prev := 0, replication.Zero
	for off < len(data) {
		rest := data[off:]
		if len(rest) < frameHeader {
			break // torn header
		}
		n := int(binary.LittleEndian.Uint32(rest[0:]))
		if n > MaxRecordSize {
			if err := checkTail(data, off, "oversized frame"); err != nil {
				f.Close()
				return nil, rep, err
			}
			break
		}
		if len(rest) < frameHeader+n {
			break // torn payload
		}
		rec, err := decodePayload(rest[frameHeader:frameHeader+n], binary.LittleEndian.Uint32(rest[4:]))
		if err != nil {
			if off+frameHeader+n == len(data) {
				break // the last frame was cut short: torn tail
			}
			f.Close()
			return nil, rep, fmt.Errorf("wal %s at offset %d (after lsn %d): %w", path, off, prev.LSN, err)
		}
		if err := VerifyRecord(prev, rec); err != nil {
			f.Close()
			return nil, rep, fmt.Errorf("wal %s: %w: %v", path, ErrCorrupt, err)
		}
		w.recs = append(w.recs, rec)
		prev = PositionOf(rec)
		off += frameHeader + n
	}
	if off < len(data) {
		rep.TruncatedTail = int64(len(data) - off)
		if err := f.Truncate(int64(off)); err != nil {
			f.Close()
			return nil, rep, err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, rep, err
		}
	}
	if _, err := f.Seek(int64(off), io.SeekStart); err != nil {
		f.Close()
		return nil, rep, err
	}
	w.flushed = uint64(len(w.recs))
	rep.Records = len(w.recs)
	return w, rep, nil
}

// checkTail accepts damage only when nothing valid-looking follows it.
func checkTail(data []byte, off int, what string) error {
	if bytes.Count(data[off:], []byte{0}) == len(data)-off {
		return nil
	}
	return fmt.Errorf("%w: %s at offset %d", ErrCorrupt, what, off)
}

// Close closes the file (buffered, unsynced appends are dropped).
func (w *WAL) Close() error { return w.f.Close() }

// Append buffers records that must continue the chain; they are durable
// only after SyncTo covers them.
func (w *WAL) Append(recs ...*rpb.WalRecord) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range recs {
		if err := VerifyRecord(w.lastLocked(), r); err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		w.recs = append(w.recs, r)
		w.buf = append(w.buf, EncodeFrame(r)...)
	}
	return nil
}

// SyncTo returns once every record up to lsn is written and fsynced; one
// fsync covers every record appended before it started.
func (w *WAL) SyncTo(lsn uint64) error {
	w.syncMu.Lock()
	defer w.syncMu.Unlock()
	w.mu.Lock()
	if w.flushed >= lsn {
		w.mu.Unlock()
		return nil
	}
	buf, upto := w.buf, uint64(len(w.recs))
	w.buf = nil
	w.mu.Unlock()
	if _, err := w.f.Write(buf); err != nil {
		return err
	}
	if err := w.f.Sync(); err != nil {
		return err
	}
	w.mu.Lock()
	w.flushed = upto
	w.mu.Unlock()
	return nil
}

func (w *WAL) lastLocked() replication.Position {
	if len(w.recs) == 0 {
		return replication.Zero
	}
	return PositionOf(w.recs[len(w.recs)-1])
}

// Last is the position of the last appended record (flushed or not).
func (w *WAL) Last() replication.Position {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastLocked()
}

// Flushed is the position of the last fsynced record.
func (w *WAL) Flushed() replication.Position {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.flushed == 0 {
		return replication.Zero
	}
	return PositionOf(w.recs[w.flushed-1])
}

// Record returns the record at lsn (flushed or not), or nil.
func (w *WAL) Record(lsn uint64) *rpb.WalRecord {
	w.mu.Lock()
	defer w.mu.Unlock()
	if lsn == 0 || lsn > uint64(len(w.recs)) {
		return nil
	}
	return w.recs[lsn-1]
}

// HashAt is the chain hash of the flushed record at lsn (lsn 0: the empty
// hash); false when there is none.
func (w *WAL) HashAt(lsn uint64) ([]byte, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if lsn == 0 {
		return nil, true
	}
	if lsn > w.flushed {
		return nil, false
	}
	return w.recs[lsn-1].Hash, true
}

// Flushed records from lsn from, at most max of them.
func (w *WAL) Records(from uint64, limit int) []*rpb.WalRecord {
	w.mu.Lock()
	defer w.mu.Unlock()
	if from == 0 {
		from = 1
	}
	if from > w.flushed {
		return nil
	}
	end := min(w.flushed, from-1+uint64(limit))
	return append([]*rpb.WalRecord(nil), w.recs[from-1:end]...)
}

// Frames encodes Records(from, limit).
func (w *WAL) Frames(from uint64, limit int) [][]byte {
	recs := w.Records(from, limit)
	out := make([][]byte, len(recs))
	for i, r := range recs {
		out[i] = EncodeFrame(r)
	}
	return out
}
