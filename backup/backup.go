// Package backup reads and writes backup files of the authority state
// (authorityctl snapshot save / status; authorityd --restore-from). A
// backup file is a fixed 4 KiB header block followed by the state in the
// fsm snapshot format:
//
//	"AERODB-AUTHORITY-BACKUP 1\n" | header JSON | "\n" | space padding to 4095 bytes | "\n"
//	data: Header.Size bytes (fsm snapshot format, with its own CRC-32C)
//
// The header names the format version, the cluster and server the state
// came from, its last applied index and the leader's term, its state hash,
// the data's size and SHA-256. Write writes the file atomically (a
// temporary file, fsynced, renamed, the directory fsynced). Verify checks
// everything the header claims: the data's size and SHA-256, that it
// decodes (every record and the CRC), its last index and its state hash.
package backup

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/aerodb/authority/fsm"
)

const (
	// Magic starts every backup file, followed by the format version.
	Magic = "AERODB-AUTHORITY-BACKUP"
	// FormatVersion is the version of the file layout Write writes.
	FormatVersion = 1
	// HeaderBlock is the size of the header block before the data.
	HeaderBlock = 4096
	// MaxSize bounds the data of a backup (as the server does).
	MaxSize = 4 << 30
)

// ErrDamaged: the file is not a complete, intact backup.
var ErrDamaged = errors.New("backup damaged")

// Header describes a backup.
type Header struct {
	Format         int    `json:"format"`
	SnapshotFormat uint32 `json:"snapshot_format"`
	ClusterID      string `json:"cluster_id"`
	ServerID       string `json:"server_id"`
	LastIndex      uint64 `json:"last_index"`
	Term           uint64 `json:"term"`
	// StateHash is the hex state hash (fsm.StateHash) of the data.
	StateHash string `json:"state_hash"`
	Domains   uint64 `json:"domains"`
	Size      int64  `json:"size"`
	// SHA256 is the hex SHA-256 of the data.
	SHA256  string `json:"sha256"`
	SavedAt string `json:"saved_at,omitempty"`
	SavedBy string `json:"saved_by,omitempty"`
}

func (h Header) block() ([]byte, error) {
	js, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	b := fmt.Appendf(nil, "%s %d\n%s\n", Magic, FormatVersion, js)
	if len(b) > HeaderBlock-1 {
		return nil, fmt.Errorf("backup header of %d bytes does not fit in %d", len(b), HeaderBlock)
	}
	b = append(b, bytes.Repeat([]byte{' '}, HeaderBlock-1-len(b))...)
	return append(b, '\n'), nil
}

// Write writes a backup atomically to path: data is streamed after the
// header block into a temporary file beside path, then header is called
// with the data's size and hex SHA-256 (it checks them against what the
// sender said and returns the header to write), the header block is
// written, the file synced and renamed to path, and the directory synced.
// Nothing is left at path unless the whole file was written.
func Write(path string, data io.Reader, header func(size int64, sha256 string) (Header, error)) (Header, error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return Header{}, err
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Seek(HeaderBlock, io.SeekStart); err != nil {
		return Header{}, err
	}
	sum := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, sum), io.LimitReader(data, MaxSize+1))
	if err != nil {
		return Header{}, err
	}
	if n > MaxSize {
		return Header{}, fmt.Errorf("backup larger than %d bytes: refused", MaxSize)
	}
	h, err := header(n, hex.EncodeToString(sum.Sum(nil)))
	if err != nil {
		return h, err
	}
	h.Format, h.Size, h.SHA256 = FormatVersion, n, hex.EncodeToString(sum.Sum(nil))
	block, err := h.block()
	if err != nil {
		return h, err
	}
	if _, err := tmp.WriteAt(block, 0); err != nil {
		return h, err
	}
	if err := tmp.Chmod(0o600); err != nil {
		return h, err
	}
	if err := errors.Join(tmp.Sync(), tmp.Close()); err != nil {
		return h, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return h, err
	}
	done = true
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return h, nil
}

// ReadHeader reads and parses the header block of a backup file; it does
// not check the data (Verify does).
func ReadHeader(path string) (Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return Header{}, err
	}
	defer f.Close()
	return readHeader(f, path)
}

func readHeader(f *os.File, path string) (Header, error) {
	var h Header
	block := make([]byte, HeaderBlock)
	n, err := io.ReadFull(f, block)
	if n < len(Magic) || !bytes.HasPrefix(block, []byte(Magic+" ")) {
		return h, fmt.Errorf("%w: %s is not a backup file (no %s header)", ErrDamaged, path, Magic)
	}
	if err != nil {
		return h, fmt.Errorf("%w: %s is truncated: %d of the %d header bytes", ErrDamaged, path, n, HeaderBlock)
	}
	first, rest, _ := bytes.Cut(block, []byte("\n"))
	if string(first) != fmt.Sprintf("%s %d", Magic, FormatVersion) {
		return h, fmt.Errorf("%w: %s: unknown backup format %.40q (this build reads %d)", ErrDamaged, path, first, FormatVersion)
	}
	js, _, _ := bytes.Cut(rest, []byte("\n"))
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil || h.Format != FormatVersion {
		return h, fmt.Errorf("%w: %s: header unreadable", ErrDamaged, path)
	}
	if h.Size <= 0 || h.Size > MaxSize || len(h.SHA256) != 64 || len(h.StateHash) != 64 {
		return h, fmt.Errorf("%w: %s: header incomplete (size %d)", ErrDamaged, path, h.Size)
	}
	if pad := strings.TrimRight(string(block[len(first)+1+len(js)+1:]), " \n"); pad != "" {
		return h, fmt.Errorf("%w: %s: header block damaged", ErrDamaged, path)
	}
	return h, nil
}

// Verify checks a backup file completely and returns its header: the
// header block, the data's size (nothing missing, nothing after it) and
// SHA-256, that the data decodes as a state (fsm.Restore: every record and
// its CRC-32C), and that its last index and state hash are the header's.
// Every error is one line naming the file and what is wrong.
func Verify(path string) (Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return Header{}, err
	}
	defer f.Close()
	h, err := readHeader(f, path)
	if err != nil {
		return h, err
	}
	st, err := f.Stat()
	if err != nil {
		return h, err
	}
	if have := st.Size() - HeaderBlock; have != h.Size {
		what := "truncated"
		if have > h.Size {
			what = "damaged (bytes after the data)"
		}
		return h, fmt.Errorf("%w: %s is %s: %d data bytes, the header says %d", ErrDamaged, path, what, have, h.Size)
	}
	sum := sha256.New()
	state := fsm.New()
	data := io.LimitReader(f, h.Size)
	if err := state.Restore(io.TeeReader(data, sum)); err != nil {
		return h, fmt.Errorf("%w: %s: the state does not decode: %s", ErrDamaged, path, oneLine(err))
	}
	if _, err := io.Copy(sum, data); err != nil { // any bytes Restore left unread
		return h, err
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != h.SHA256 {
		return h, fmt.Errorf("%w: %s: data SHA-256 %s, the header says %s", ErrDamaged, path, got, h.SHA256)
	}
	hash, err := state.StateHash()
	if err != nil {
		return h, err
	}
	if got := hex.EncodeToString(hash[:]); got != h.StateHash || state.LastIndex() != h.LastIndex {
		return h, fmt.Errorf("%w: %s: the state is at index %d with hash %s, the header says index %d hash %s",
			ErrDamaged, path, state.LastIndex(), got, h.LastIndex, h.StateHash)
	}
	return h, nil
}

// Data opens the data of a backup file (after Verify) for reading.
func Data(path string) (io.ReadCloser, Header, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, Header{}, err
	}
	h, err := readHeader(f, path)
	if err != nil {
		f.Close()
		return nil, h, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, h.Size), f}, h, nil
}

func oneLine(err error) string {
	s := strings.ReplaceAll(err.Error(), "\n", " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
