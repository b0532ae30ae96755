package cluster

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
)

// FuzzLogEntry fuzzes the read-back of a checksummed log entry: an entry is
// stored through checksumLogStore (sealed exactly as in production), the
// bytes raft-boltdb keeps for it are damaged by one burst of at most 32 bits
// and/or cut short, and checksumLogStore.GetLog must then return either a
// DamageError naming the file and the index, or the original entry (index,
// term, type and data byte for byte) — never a panic, never other bytes.
//
// The seeds are real entries: a configuration entry, a leader's no-op and
// authority commands, written through checksumLogStore into a real
// raft.db and read back raw from bbolt.
//
//	go test ./cluster -run '^$' -fuzz '^FuzzLogEntry$' -fuzztime 60s
func FuzzLogEntry(f *testing.F) {
	for _, e := range realStoredEntries(f) {
		var l raft.Log
		if err := rbDecode(e, &l); err != nil {
			f.Fatal(err)
		}
		at := l.AppendedAt.UnixNano()
		data := l.Data
		// The entry intact, then bursts at the fields' boundaries: the
		// first byte, the end of the data, the checksum field, the last byte.
		f.Add(l.Index, l.Term, uint8(l.Type), at, data, uint32(0), []byte(nil), uint32(0))
		for _, pos := range []int{0, bytes.Index(e, []byte("Data")), bytes.Index(e, []byte("Extensions")) - 2,
			bytes.Index(e, []byte("Extensions")) + len("Extensions") + 2, len(e) - 1} {
			if pos < 0 {
				continue
			}
			f.Add(l.Index, l.Term, uint8(l.Type), at, data, uint32(pos), []byte{0x01}, uint32(0))
			f.Add(l.Index, l.Term, uint8(l.Type), at, data, uint32(pos), []byte{0xff, 0x00, 0xff, 0x00}, uint32(0))
		}
		f.Add(l.Index, l.Term, uint8(l.Type), at, data, uint32(0), []byte(nil), uint32(len(e)/2))
		f.Add(l.Index, l.Term, uint8(l.Type), at, data, uint32(0), []byte(nil), uint32(1))
	}

	f.Fuzz(func(t *testing.T, index, term uint64, typ uint8, at int64, data []byte, pos uint32, burst []byte, cut uint32) {
		orig := raft.Log{Index: index, Term: term, Type: raft.LogType(typ), Data: data, AppendedAt: time.Unix(0, at).UTC()}
		mem := &rawLogStore{raw: map[uint64][]byte{}}
		var reported int
		const path = "/fuzz/raft.db"
		cs := &checksumLogStore{LogStore: mem, read: mem.read, path: path, onCorrupt: func(error) { reported++ }}
		in := orig
		if err := cs.StoreLogs([]*raft.Log{&in}); err != nil {
			t.Fatal(err)
		}
		stored := mem.raw[index]
		// One burst: the first 4 bytes of burst XORed into the bytes from
		// pos (a burst of at most 32 bits, which CRC-32C always detects);
		// then the value cut to cut bytes.
		if len(stored) > 0 {
			p := int(pos % uint32(len(stored)))
			for i := 0; i < 4 && i < len(burst) && p+i < len(stored); i++ {
				stored[p+i] ^= burst[i]
			}
		}
		if cut != 0 && int(cut) < len(stored) {
			stored = stored[:cut]
		}
		mem.raw[index] = stored

		var got raft.Log
		err := cs.GetLog(index, &got)
		if err != nil {
			var de *DamageError
			if !errors.Is(err, ErrDamaged) || !errors.As(err, &de) {
				t.Fatalf("GetLog: %v is not a DamageError", err)
			}
			msg := err.Error()
			if de.File != path || de.Index != index || strings.Contains(msg, "\n") || !strings.Contains(msg, RebuildDoc) {
				t.Fatalf("GetLog: error does not name the file and index %d on one line: %q", index, msg)
			}
			if reported != 1 {
				t.Fatalf("OnCorruption called %d times, want once", reported)
			}
			return
		}
		if got.Index != orig.Index || got.Term != orig.Term || got.Type != orig.Type || !bytes.Equal(got.Data, orig.Data) {
			t.Fatalf("damaged entry accepted: stored %x\ngot  index=%d term=%d type=%d data=%x ext=%x\nwant index=%d term=%d type=%d data=%x",
				stored, got.Index, got.Term, got.Type, got.Data, got.Extensions, orig.Index, orig.Term, orig.Type, orig.Data)
		}
		if fault := verifyEntry(index, &got, 0); fault != "" {
			t.Fatalf("GetLog returned an entry the apply check refuses: %s", fault)
		}
		if reported != 0 {
			t.Fatalf("OnCorruption called for a sound entry")
		}
	})
}

// rbEncode and rbDecode are raft-boltdb v2's encodeMsgPack (with the old
// time format: openStore leaves Options.MsgpackUseNewTimeFormat false) and
// decodeMsgPack; realStoredEntries checks that rbEncode writes exactly the
// bytes a real BoltStore writes.
func rbEncode(l *raft.Log) []byte {
	var buf bytes.Buffer
	if err := codec.NewEncoder(&buf, &codec.MsgpackHandle{BasicHandle: codec.BasicHandle{TimeNotBuiltin: true}}).Encode(l); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

func rbDecode(b []byte, l *raft.Log) error {
	return codec.NewDecoder(bytes.NewBuffer(b), &codec.MsgpackHandle{}).Decode(l)
}

// rawLogStore is a raft.LogStore that keeps each entry as the bytes
// raft-boltdb would keep in its "logs" bucket, so that a test can damage
// them.
type rawLogStore struct{ raw map[uint64][]byte }

func (s *rawLogStore) FirstIndex() (uint64, error) { return 0, nil }
func (s *rawLogStore) LastIndex() (uint64, error)  { return 0, nil }
func (s *rawLogStore) StoreLog(l *raft.Log) error  { return s.StoreLogs([]*raft.Log{l}) }
func (s *rawLogStore) DeleteRange(min, max uint64) error {
	for i := min; i <= max && i >= min; i++ {
		delete(s.raw, i)
	}
	return nil
}

func (s *rawLogStore) StoreLogs(logs []*raft.Log) error {
	for _, l := range logs {
		s.raw[l.Index] = rbEncode(l)
	}
	return nil
}

func (s *rawLogStore) GetLog(idx uint64, l *raft.Log) error {
	b, ok := s.raw[idx]
	if !ok {
		return raft.ErrLogNotFound
	}
	return rbDecode(bytes.Clone(b), l)
}

func (s *rawLogStore) read(idx uint64, l *raft.Log) error {
	b, ok := s.raw[idx]
	if !ok {
		return raft.ErrLogNotFound
	}
	return decodeEntry(bytes.Clone(b), l)
}

// realStoredEntries writes entries as a server does — a configuration
// entry, a leader's no-op, authority commands (one large), through
// checksumLogStore into a real raft.db — and returns the raw values of its
// "logs" bucket.
func realStoredEntries(tb testing.TB) [][]byte {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "raft.db")
	store, err := raftboltdb.New(raftboltdb.Options{Path: path})
	if err != nil {
		tb.Fatal(err)
	}
	cs := mustChecksumLogStore(tb, store, path, nil)
	conf := raft.EncodeConfiguration(raft.Configuration{Servers: []raft.Server{
		{Suffrage: raft.Voter, ID: "s1", Address: "127.0.0.1:7001"},
		{Suffrage: raft.Voter, ID: "s2", Address: "127.0.0.1:7002"},
		{Suffrage: raft.Nonvoter, ID: "s3", Address: "127.0.0.1:7003"},
	}})
	cmds := []*pb.Command{
		{Term: 2, Proposer: "s1", StampedUnixMs: 1_700_000_000_001, Body: &pb.Command_CreateDomain{CreateDomain: &pb.CreateDomain{
			Name: "orders.example", Kind: pb.DomainKind_DOMAIN_KIND_AERODB,
			Policy: &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL, LeaseTtlMs: 2000, ReportMaxAgeMs: 1000, MinSyncReplicas: 1}}}},
		{Term: 2, Proposer: "s1", StampedUnixMs: 1_700_000_000_002, Body: &pb.Command_RegisterMember{RegisterMember: &pb.RegisterMember{
			Domain: "orders.example", MemberId: "n1", Address: "10.0.0.1:6001", Priority: 1}}},
		{Term: 2, Proposer: "s1", StampedUnixMs: 1_700_000_000_003, Body: &pb.Command_Acquire{Acquire: &pb.Acquire{
			Domain: "orders.example", Holder: "n1"}}},
		{Term: 3, Proposer: "s2", StampedUnixMs: 1_700_000_000_004, Body: &pb.Command_AdvanceWatermark{AdvanceWatermark: &pb.AdvanceWatermark{
			Advances: []*pb.WatermarkAdvance{{Domain: "orders.example", Holder: "n1", Epoch: 1, Lsn: 120, Hash: bytes.Repeat([]byte{0xb2}, 8), VisibleCommitId: 60}}}}},
		{Term: 3, Proposer: "s2", StampedUnixMs: 1_700_000_000_005, Body: &pb.Command_PromotionAttempt{PromotionAttempt: &pb.PromotionAttempt{
			Request: &pb.PromotionRequest{RequestId: "req-1", Domain: "orders.example", Candidate: "n2",
				Reason: strings.Repeat("planned maintenance ", 200), Waivers: []string{"allow-data-loss"}}}}},
	}
	at := time.Date(2026, 12, 4, 12, 0, 0, 123456789, time.UTC)
	logs := []*raft.Log{
		{Index: 1, Term: 1, Type: raft.LogConfiguration, Data: conf, AppendedAt: at},
		{Index: 2, Term: 2, Type: raft.LogNoop, AppendedAt: at.Add(time.Second)},
	}
	for i, c := range cmds {
		data, err := proto.Marshal(c)
		if err != nil {
			tb.Fatal(err)
		}
		logs = append(logs, &raft.Log{Index: uint64(3 + i), Term: c.Term, Type: raft.LogCommand, Data: data, AppendedAt: at.Add(time.Duration(2+i) * time.Second)})
	}
	if err := cs.StoreLogs(logs); err != nil {
		tb.Fatal(err)
	}
	if err := store.Close(); err != nil {
		tb.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	var out [][]byte
	err = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("logs")).ForEach(func(k, v []byte) error {
			out = append(out, bytes.Clone(v))
			return nil
		})
	})
	if err != nil {
		tb.Fatal(err)
	}
	if len(out) != len(logs) {
		tb.Fatalf("raft.db holds %d entries, want %d", len(out), len(logs))
	}
	for i, raw := range out {
		var l raft.Log
		if err := rbDecode(raw, &l); err != nil {
			tb.Fatal(err)
		}
		if len(l.Extensions) != sealLen || verifyEntry(logs[i].Index, &l, 0) != "" {
			tb.Fatalf("entry %d stored without a valid seal", logs[i].Index)
		}
		if !bytes.Equal(rbEncode(&l), raw) {
			tb.Fatalf("entry %d: the fuzz store's encoding differs from raft-boltdb's:\n%x\n%x", logs[i].Index, rbEncode(&l), raw)
		}
	}
	return out
}
