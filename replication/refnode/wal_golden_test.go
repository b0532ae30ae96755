package refnode

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	rpb "github.com/aerodb/authority/api/refnode/v1"
	"github.com/aerodb/authority/replication"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

// WAL format fixtures (issue 17, "no WAL format changes"): committed WAL
// segments under testdata/wal, each beside the values its records must
// decode to, written by field name (prototext). Every committed segment is
// opened with OpenWAL (checksums, framing and the hash chain verified) and
// decoded against its text, so renumbering or retyping a WalRecord field,
// changing the frame or the chain hash fails here. The current version's
// segment must also re-encode byte for byte. A format change adds a new
// version (walGoldenVersion+1: `go test ./replication/refnode -run
// TestGoldenWAL -update-wal-golden` writes only the missing current
// fixture) and keeps every older segment decoding.

var updateWALGolden = flag.Bool("update-wal-golden", false, "write the current version's WAL fixture when it is missing")

const (
	walGoldenDir     = "testdata/wal"
	walGoldenVersion = 1
)

// goldenWALRecords are the records of the current version's fixture: two
// epochs (a promotion at lsn 4), binary and empty keys and values, large
// commit ids (multi-byte varints).
func goldenWALRecords() []*rpb.WalRecord {
	var out []*rpb.WalRecord
	prev := replication.Zero
	for _, r := range []struct {
		epoch, commit uint64
		key, value    []byte
	}{
		{1, 1, []byte("k1"), []byte("v1")},
		{1, 2, []byte{0x00, 0xff, 0x10}, []byte{}},
		{1, 300, []byte("orders/17"), bytes.Repeat([]byte{0xab}, 200)},
		{2, 1 << 40, []byte("after-promotion"), []byte("v4")},
	} {
		rec := NewRecord(prev, r.epoch, r.commit, r.key, r.value)
		out = append(out, rec)
		prev = PositionOf(rec)
	}
	return out
}

func walGoldenPaths(version int) (seg, txt string) {
	base := filepath.Join(walGoldenDir, fmt.Sprintf("v%d", version))
	return base + ".wal", base + ".txt"
}

// walText renders records by field name, one block per record.
func walText(recs []*rpb.WalRecord) string {
	var b strings.Builder
	for i, r := range recs {
		fmt.Fprintf(&b, "--- record %d\n%s", i+1, prototext.MarshalOptions{Multiline: true}.Format(r))
	}
	return b.String()
}

// parseWALText reads walText's output back.
func parseWALText(text string) ([]*rpb.WalRecord, error) {
	var out []*rpb.WalRecord
	for i, block := range strings.Split(text, "--- record ")[1:] {
		_, body, ok := strings.Cut(block, "\n")
		if !ok {
			return nil, fmt.Errorf("record block %d has no body", i+1)
		}
		r := &rpb.WalRecord{}
		if err := prototext.Unmarshal([]byte(body), r); err != nil {
			return nil, fmt.Errorf("record %d: %w (a field renamed or removed?)", i+1, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// decodeGoldenSegment opens a copy of a committed segment (OpenWAL may
// truncate a torn tail: the committed file is never written) and returns
// its records.
func decodeGoldenSegment(t *testing.T, seg string) []*rpb.WalRecord {
	t.Helper()
	raw, err := os.ReadFile(seg)
	if err != nil {
		t.Fatalf("no WAL fixture %s (%v): go test ./replication/refnode -run TestGoldenWAL -update-wal-golden", seg, err)
	}
	cp := filepath.Join(t.TempDir(), "wal")
	if err := os.WriteFile(cp, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	w, rep, err := OpenWAL(cp)
	if err != nil {
		t.Fatalf("%s: the committed segment no longer opens: %v", seg, err)
	}
	defer w.Close()
	if rep.TruncatedTail != 0 || rep.Records != len(w.recs) {
		t.Fatalf("%s: open report %+v for %d records", seg, rep, len(w.recs))
	}
	return slices.Clone(w.recs)
}

// TestGoldenWAL: every committed WAL segment decodes (through OpenWAL) to
// the values written beside it; the current version's re-encodes byte for
// byte.
func TestGoldenWAL(t *testing.T) {
	seg, txt := walGoldenPaths(walGoldenVersion)
	if *updateWALGolden {
		if _, err := os.Stat(seg); err == nil {
			t.Fatalf("%s exists: a committed fixture is never rewritten; a format change adds version %d", seg, walGoldenVersion+1)
		}
		var b []byte
		for _, r := range goldenWALRecords() {
			b = append(b, EncodeFrame(r)...)
		}
		if err := os.MkdirAll(walGoldenDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(seg, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(txt, []byte(walText(goldenWALRecords())), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	segs, err := filepath.Glob(filepath.Join(walGoldenDir, "v*.wal"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no WAL fixtures under %s (%v)", walGoldenDir, err)
	}
	for _, s := range segs {
		got := decodeGoldenSegment(t, s)
		text, err := os.ReadFile(strings.TrimSuffix(s, ".wal") + ".txt")
		if err != nil {
			t.Fatal(err)
		}
		want, err := parseWALText(string(text))
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d records decoded, the text has %d", s, len(got), len(want))
		}
		for i := range got {
			if !proto.Equal(got[i], want[i]) {
				t.Fatalf("%s record %d decodes to other values than the text says (a field renumbered or retyped?)\nbytes: %v\ntext:  %v",
					s, i+1, prototext.Format(got[i]), prototext.Format(want[i]))
			}
			if len(got[i].ProtoReflect().GetUnknown()) > 0 {
				t.Fatalf("%s record %d carries fields this version does not know", s, i+1)
			}
		}
	}
	// The current version: the committed bytes are exactly what this code
	// writes for the same records (frame, checksum, deterministic encoding,
	// chain hashes).
	raw, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	var b []byte
	for _, r := range goldenWALRecords() {
		b = append(b, EncodeFrame(r)...)
	}
	if !bytes.Equal(b, raw) {
		t.Fatalf("this code writes other bytes (%d) for the version-%d records than %s holds (%d): a WAL format change needs a new fixture version",
			len(b), walGoldenVersion, seg, len(raw))
	}
	text, err := os.ReadFile(txt)
	if err != nil {
		t.Fatal(err)
	}
	want, err := parseWALText(string(text))
	if err != nil || len(want) != len(goldenWALRecords()) {
		t.Fatalf("%s: %v (%d records)", txt, err, len(want))
	}
	for i, r := range goldenWALRecords() {
		if !proto.Equal(r, want[i]) {
			t.Fatalf("%s record %d is not the version-%d record this test builds", txt, i+1, walGoldenVersion)
		}
	}
}
