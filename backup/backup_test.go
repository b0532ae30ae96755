package backup

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
)

// sample writes a backup of a state with a few domains and returns its
// path and header.
func sample(t *testing.T) (string, Header) {
	t.Helper()
	f := fsm.New()
	for i := range 5 {
		cmd := &pb.Command{Body: &pb.Command_CreateDomain{CreateDomain: &pb.CreateDomain{Name: fmt.Sprintf("d%d", i),
			Kind: pb.DomainKind_DOMAIN_KIND_AERODB, Policy: &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL, LeaseTtlMs: 10_000, ReportMaxAgeMs: 30_000}}}}
		if res := f.ApplyCommand(uint64(i+1), 1, cmd); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	c, h, err := f.CaptureWithHash()
	if err != nil {
		t.Fatal(err)
	}
	var data bytes.Buffer
	if _, err := c.WriteTo(&data); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "backup.snap")
	hdr, err := Write(path, &data, func(int64, string) (Header, error) {
		return Header{ClusterID: "c1", LastIndex: c.LastIndex(), Term: 3, StateHash: hex.EncodeToString(h[:]),
			Domains: uint64(c.Domains()), SnapshotFormat: fsm.SnapshotVersion}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return path, hdr
}

func TestWriteVerify(t *testing.T) {
	path, hdr := sample(t)
	got, err := Verify(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != hdr || got.LastIndex != 5 || got.Domains != 5 {
		t.Fatalf("header %+v, wrote %+v", got, hdr)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
}

// Every damage is refused with one line naming the file and the damage.
func TestDamagedRefused(t *testing.T) {
	path, hdr := sample(t)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		edit func([]byte) []byte
		want string
	}{
		{"truncated data", func(b []byte) []byte { return b[:len(b)-10] }, "is truncated"},
		{"truncated header", func(b []byte) []byte { return b[:100] }, "is truncated"},
		{"empty", func(b []byte) []byte { return nil }, "not a backup file"},
		{"bytes after", func(b []byte) []byte { return append(b, 'x') }, "bytes after the data"},
		{"flipped data byte", func(b []byte) []byte { b[HeaderBlock+40] ^= 1; return b }, "does not decode"},
		{"flipped trailer", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, "does not decode"},
		{"other sha256", func(b []byte) []byte {
			return bytes.Replace(b, []byte(hdr.SHA256), []byte(strings.Repeat("0", 64)), 1)
		}, "data SHA-256"},
		{"other index", func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"last_index":5`), []byte(`"last_index":6`), 1)
		}, "the header says index 6"},
		{"other state hash", func(b []byte) []byte {
			return bytes.Replace(b, []byte(hdr.StateHash), []byte(strings.Repeat("1", 64)), 1)
		}, "the header says index 5 hash 1111"},
		{"unknown format", func(b []byte) []byte {
			return bytes.Replace(b, []byte(Magic+" 1"), []byte(Magic+" 9"), 1)
		}, "unknown backup format"},
		{"header garbage", func(b []byte) []byte { b[len(Magic)+10] = '{'; return b }, "header unreadable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "b.snap")
			if err := os.WriteFile(p, tc.edit(bytes.Clone(good)), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Verify(p)
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) ||
				strings.Contains(err.Error(), "\n") || len(err.Error()) > 400 {
				t.Fatalf("got %v; want one line with %q and the path", err, tc.want)
			}
		})
	}
}

// A refusal of the header (the data is not what the sender said), or a
// failing data stream, leaves nothing behind.
func TestWriteRefusesMismatch(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "b.snap")
	_, err := Write(path, strings.NewReader("abc"), func(n int64, sum string) (Header, error) {
		return Header{}, fmt.Errorf("%w: got %d bytes %s", ErrDamaged, n, sum)
	})
	if !errors.Is(err, ErrDamaged) {
		t.Fatalf("got %v", err)
	}
	_, err = Write(path, io.MultiReader(strings.NewReader("abc"), iotest.ErrReader(errors.New("stream broke"))),
		func(int64, string) (Header, error) { t.Fatal("header asked for"); return Header{}, nil })
	if err == nil || err.Error() != "stream broke" {
		t.Fatalf("got %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("left behind: %v", entries)
	}
}
