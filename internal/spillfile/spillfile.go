// Package spillfile is where a server's FSM keeps the bytes of cold
// attempt-history segments (fsm.SpillFile): unlinked files in the data
// dir, so that nothing is left behind by a crash and nothing is read back
// by the next start. They hold no state of their own — every start
// rebuilds them from the snapshot and the log — and every record read
// back from them is checked by the FSM against its CRC-32C.
package spillfile

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// Prefix names spill files while they are briefly linked.
const Prefix = "history-spill-"

// File is one spill file: read and written at offsets, concurrently.
type File struct {
	f *os.File
}

// New creates a spill file in dir and unlinks it at once. The file is
// closed, and its disk space freed, when nothing refers to it any more
// (the FSM drops a file when it compacts or restores; a snapshot being
// written may keep it a little longer).
func New(dir string) (*File, error) {
	f, err := os.CreateTemp(dir, Prefix+"*")
	if err != nil {
		return nil, fmt.Errorf("history spill file: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("history spill file: %w", err)
	}
	sf := &File{f: f}
	runtime.AddCleanup(sf, func(f *os.File) { f.Close() }, f)
	return sf, nil
}

// ReadAt reads len(p) bytes at off.
func (s *File) ReadAt(p []byte, off int64) (int, error) { return s.f.ReadAt(p, off) }

// WriteAt writes p at off.
func (s *File) WriteAt(p []byte, off int64) (int, error) { return s.f.WriteAt(p, off) }

// Sweep removes spill files a crash left linked in dir (between their
// creation and their unlinking).
func Sweep(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), Prefix) && e.Type().IsRegular() {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}
