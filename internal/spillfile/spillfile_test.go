package spillfile

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// A spill file is unlinked as soon as it exists, reads back what was
// written at any offset, and Sweep removes only what a crash left linked.
func TestSpillFile(t *testing.T) {
	dir := t.TempDir()
	f, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Fatalf("the data dir holds %v (%v), want nothing: the file is unlinked", entries, err)
	}
	for off, s := range map[int64]string{0: "segment one", 11: "segment two", 1 << 20: "far"} {
		if _, err := f.WriteAt([]byte(s), off); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(s))
		if _, err := f.ReadAt(got, off); err != nil || !bytes.Equal(got, []byte(s)) {
			t.Fatalf("at %d: read %q (%v), wrote %q", off, got, err, s)
		}
	}

	leftover := filepath.Join(dir, Prefix+"123")
	other := filepath.Join(dir, "raft.db")
	for _, p := range []string{leftover, other} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := Sweep(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Fatalf("a leftover spill file survived Sweep: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Fatalf("Sweep removed a file that is not a spill file: %v", err)
	}
}
