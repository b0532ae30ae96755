package refnode

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	rpb "github.com/aerodb/authority/api/refnode/v1"
	"github.com/aerodb/authority/replication"
	"google.golang.org/protobuf/proto"
)

// writeWAL appends n records (epoch 1) and syncs them.
func writeWAL(t *testing.T, path string, n int) *WAL {
	t.Helper()
	w, _, err := OpenWAL(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		rec := NewRecord(w.Last(), 1, uint64(i), fmt.Appendf(nil, "k%d", i), fmt.Appendf(nil, "v%d", i))
		if err := w.Append(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.SyncTo(uint64(n)); err != nil {
		t.Fatal(err)
	}
	return w
}

func TestWALReopenVerifiesChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wal")
	w := writeWAL(t, path, 50)
	last := w.Flushed()
	w.Close()
	w2, rep, err := OpenWAL(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	if rep.Records != 50 || rep.TruncatedTail != 0 || !w2.Flushed().Same(last) {
		t.Fatalf("reopen: %+v last %v want %v", rep, w2.Flushed(), last)
	}
	if h, ok := w2.HashAt(17); !ok || len(h) != replication.HashSize {
		t.Fatal("hash index lookup failed")
	}
	if _, ok := w2.HashAt(51); ok {
		t.Fatal("hash beyond the end")
	}
}

func TestWALTornTailTruncated(t *testing.T) {
	for _, cut := range []int{1, 5, 9, 20} {
		t.Run(fmt.Sprintf("cut%d", cut), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "wal")
			w := writeWAL(t, path, 10)
			want := w.Record(9)
			w.Close()
			fi, _ := os.Stat(path)
			if err := os.Truncate(path, fi.Size()-int64(cut)); err != nil {
				t.Fatal(err)
			}
			w2, rep, err := OpenWAL(path)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Records != 9 || rep.TruncatedTail == 0 || !w2.Flushed().Same(PositionOf(want)) {
				t.Fatalf("%+v last %v", rep, w2.Flushed())
			}
			// Appending after the truncation continues the chain.
			if err := w2.Append(NewRecord(w2.Last(), 1, 10, []byte("k"), []byte("again"))); err != nil {
				t.Fatal(err)
			}
			if err := w2.SyncTo(10); err != nil {
				t.Fatal(err)
			}
			w2.Close()
			w3, rep, err := OpenWAL(path)
			if err != nil || rep.Records != 10 || rep.TruncatedTail != 0 {
				t.Fatalf("after re-append: %+v %v", rep, err)
			}
			w3.Close()
		})
	}
}

func TestWALChecksumMismatchDetected(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wal")
	writeWAL(t, path, 10).Close()
	data, _ := os.ReadFile(path)
	data[len(data)/2] ^= 0xff // inside a middle record
	os.WriteFile(path, data, 0o644)
	if _, _, err := OpenWAL(path); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("mid-file damage: %v, want ErrCorrupt", err)
	}
	// A bad checksum on the shipping path is detected too.
	frame := EncodeFrame(NewRecord(replication.Zero, 1, 1, []byte("k"), []byte("v")))
	frame[len(frame)-1] ^= 1
	if _, err := DecodeFrame(frame); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("frame: %v", err)
	}
}

func TestWALChainBreakDetected(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wal")
	w := writeWAL(t, path, 3)
	w.Close()
	// A record with a valid checksum but a forged value (hash not
	// recomputed) in the middle of the file.
	recs := make([]*rpb.WalRecord, 0, 4)
	w2, _, _ := OpenWAL(path)
	recs = append(recs, w2.Records(1, 3)...)
	w2.Close()
	forged := proto.Clone(recs[1]).(*rpb.WalRecord)
	forged.Value = []byte("forged")
	var buf []byte
	for _, r := range []*rpb.WalRecord{recs[0], forged, recs[2]} {
		buf = append(buf, EncodeFrame(r)...)
	}
	os.WriteFile(path, buf, 0o644)
	if _, _, err := OpenWAL(path); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("chain break: %v, want ErrCorrupt", err)
	}
	// Append refuses a record that does not continue the chain.
	w3 := writeWAL(t, filepath.Join(t.TempDir(), "wal"), 2)
	defer w3.Close()
	if err := w3.Append(NewRecord(replication.Zero, 1, 3, []byte("k"), nil)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("append out of order: %v", err)
	}
}

func TestWALGroupCommit(t *testing.T) {
	w := writeWAL(t, filepath.Join(t.TempDir(), "wal"), 0)
	defer w.Close()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mu.Lock()
			rec := NewRecord(w.Last(), 1, uint64(w.Last().LSN+1), fmt.Appendf(nil, "k%d", i), nil)
			err := w.Append(rec)
			mu.Unlock()
			if err == nil {
				err = w.SyncTo(rec.Lsn)
			}
			if err != nil {
				t.Error(err)
			}
			if w.Flushed().LSN < rec.Lsn {
				t.Errorf("SyncTo(%d) returned before the record was flushed", rec.Lsn)
			}
		}()
	}
	wg.Wait()
	if w.Flushed().LSN != 64 {
		t.Fatalf("flushed %v", w.Flushed())
	}
}

func TestMVCCReadsAtBound(t *testing.T) {
	s := NewStore()
	s.Apply(1, []byte("a"), []byte("a1"))
	s.Apply(2, []byte("b"), []byte("b2"))
	s.Apply(3, []byte("a"), []byte("a3"))
	s.Apply(3, []byte("a"), []byte("dup")) // already applied: ignored
	for _, tc := range []struct {
		key   string
		bound uint64
		want  string
		cid   uint64
		found bool
	}{
		{"a", 0, "", 0, false},
		{"a", 1, "a1", 1, true},
		{"a", 2, "a1", 1, true},
		{"a", 3, "a3", 3, true},
		{"a", 99, "a3", 3, true},
		{"b", 1, "", 0, false},
		{"b", 2, "b2", 2, true},
		{"c", 99, "", 0, false},
	} {
		v, cid, ok := s.Get([]byte(tc.key), tc.bound)
		if ok != tc.found || string(v) != tc.want || cid != tc.cid {
			t.Errorf("Get(%s, %d) = %q %d %v, want %q %d %v", tc.key, tc.bound, v, cid, ok, tc.want, tc.cid, tc.found)
		}
	}
	if s.Applied() != 3 {
		t.Fatalf("applied %d", s.Applied())
	}
}
