package cluster

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"reflect"
	"sync"
	"unsafe"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
)

// Reading log entries from raft.db without trusting their lengths.
//
// raft-boltdb's GetLog decodes an entry with a msgpack decoder over an
// io.Reader. Such a decoder believes the lengths it reads: one damaged byte
// in a length field (the AppendedAt time, a bin32 or str32 header) makes it
// allocate up to 4 GiB before it finds the value shorter than announced —
// seconds of work and gigabytes on a damaged disk, or the process killed
// for lack of memory, instead of a DamageError. checksumLogStore therefore
// reads the stored bytes itself and decodes them with a decoder over the
// byte slice, which checks every length against the bytes it has. Writes,
// the stable store and everything else stay raft-boltdb's.

// rawReader returns the bytes stored for entry idx, or raft.ErrLogNotFound.
// The bytes are the caller's to keep.
type rawReader func(idx uint64) ([]byte, error)

// boltRawReader reads the "logs" bucket of the bbolt file a BoltStore has
// open, exactly where raft-boltdb v2 puts entries (key: the index as 8
// bytes big-endian).
func boltRawReader(store *raftboltdb.BoltStore) (rawReader, error) {
	db, err := boltHandle(store)
	if err != nil {
		return nil, err
	}
	return func(idx uint64) ([]byte, error) {
		var key [8]byte
		binary.BigEndian.PutUint64(key[:], idx)
		var val []byte
		err := db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(boltLogsBucket)
			if b == nil {
				return fmt.Errorf("no %q bucket", boltLogsBucket)
			}
			if v := b.Get(key[:]); v != nil {
				val = bytes.Clone(v) // v lives in the mmap only while tx is open
			}
			return nil
		})
		if err == nil && val == nil {
			err = raft.ErrLogNotFound
		}
		return val, err
	}, nil
}

// boltLogsBucket is raft-boltdb v2's bucket of log entries.
var boltLogsBucket = []byte("logs")

// boltHandle returns the bbolt database a BoltStore keeps in its unexported
// field conn: raft-boltdb v2 offers no other way to reach the stored bytes.
// TestBoltHandleMatchesLibrary fails when an upgrade moves the field, and
// Open refuses to start rather than guess.
func boltHandle(store *raftboltdb.BoltStore) (*bolt.DB, error) {
	f := reflect.ValueOf(store).Elem().FieldByName("conn")
	if !f.IsValid() || f.Type() != reflect.TypeFor[*bolt.DB]() {
		return nil, fmt.Errorf("cluster: raft-boltdb's BoltStore has no field conn of type *bbolt.DB (library changed?)")
	}
	db := *(**bolt.DB)(unsafe.Pointer(f.UnsafeAddr()))
	if db == nil {
		return nil, fmt.Errorf("cluster: raft-boltdb's BoltStore is not open")
	}
	return db, nil
}

// decodeEntry decodes raw as raft-boltdb does (the same msgpack handle),
// but from the byte slice, so that no length in raw can make it read or
// allocate past raw's end.
//
// One handle serves every decode (a configured handle is safe for
// concurrent use and caches the reflected layout of raft.Log; a new handle
// per entry rebuilt it every time), and decoders are reused through a pool:
// a restart reads every entry after the last snapshot twice (raft's
// configuration scan, then the replay), so this decode is most of a
// restart's log cost.
func decodeEntry(raw []byte, l *raft.Log) error {
	if len(raw) == 0 {
		return codec.NewDecoderBytes(raw, entryHandle).Decode(l)
	}
	d := entryDecoders.Get().(*codec.Decoder)
	d.ResetBytes(raw)
	err := d.Decode(l)
	if err == nil {
		entryDecoders.Put(d) // a decoder that failed is dropped, not reused
	}
	return err
}

// entryHandle is raft-boltdb's msgpack handle (its default settings).
var entryHandle = &codec.MsgpackHandle{}

var entryDecoders = sync.Pool{New: func() any { return codec.NewDecoderBytes(nil, entryHandle) }}
