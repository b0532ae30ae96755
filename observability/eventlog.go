package observability

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// OpenEventLog opens (creating it) a JSON-lines event log for appending.
// A server killed in the middle of a write leaves a torn last line; it is
// cut off here (dropped reports how many bytes), so appending after a
// restart never glues a new event onto half of an old one. Nothing is
// lost: the sink re-delivers every retained event after a restart, and
// readers skip exact duplicates.
func OpenEventLog(path string) (f *os.File, dropped int64, err error) {
	rw, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, 0, err
	}
	keep, err := completeLinesEnd(rw)
	if err == nil {
		var st os.FileInfo
		if st, err = rw.Stat(); err == nil && st.Size() > keep {
			dropped = st.Size() - keep
			err = rw.Truncate(keep)
		}
	}
	if cerr := rw.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, 0, fmt.Errorf("event log %s: repairing a torn last line: %w", path, err)
	}
	f, err = os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o644)
	return f, dropped, err
}

// completeLinesEnd returns the offset just past the file's last newline (0
// when it has none), reading backwards in blocks.
func completeLinesEnd(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	const block = 64 << 10
	buf := make([]byte, block)
	for end := st.Size(); end > 0; {
		start := max(end-block, 0)
		n, err := f.ReadAt(buf[:end-start], start)
		if err != nil && err != io.EOF {
			return 0, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			return start + int64(i) + 1, nil
		}
		end = start
	}
	return 0, nil
}
