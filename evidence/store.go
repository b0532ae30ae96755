// Package evidence is the evidence store of release decisions
// (docs/RELEASES.md): DSSE envelopes kept as files named by the sha256 of
// their bytes, so a decision's recorded digests resolve to the exact bytes
// the validator verified. Every server keeps the evidence of the entries it
// applied; writing is idempotent (a replay writes the same files).
package evidence

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// MaxBytes bounds one piece of evidence (the validator refuses larger).
const MaxBytes = 64 << 10

// Store keeps evidence under dir/sha256/<hex>.
type Store struct{ dir string }

// Open creates the store's directory when missing.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(filepath.Join(dir, "sha256"), 0o700); err != nil {
		return nil, err
	}
	return &Store{dir: dir}, nil
}

// Digest is the store's key of b: "sha256:<hex>".
func Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func (s *Store) path(digest string) (string, error) {
	h, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		return "", fmt.Errorf("evidence digest must be sha256:<64 lowercase hex> (%d bytes given)", len(digest))
	}
	return filepath.Join(s.dir, "sha256", h), nil
}

// Put stores b (if it is not there yet) and returns its digest: written to
// a temporary file, fsynced, renamed.
func (s *Store) Put(b []byte) (string, error) {
	if len(b) > MaxBytes {
		return "", fmt.Errorf("evidence is %d bytes, more than %d", len(b), MaxBytes)
	}
	d := Digest(b)
	p, _ := s.path(d)
	if got, err := s.Get(d); err == nil && len(got) == len(b) {
		return d, nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".put-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	return d, os.Rename(tmp.Name(), p)
}

// ErrDamaged: the stored bytes do not hash to their name (a damaged disk).
var ErrDamaged = errors.New("evidence damaged")

// Get returns the evidence stored under digest, checking that its bytes
// hash to it.
func (s *Store) Get(digest string) ([]byte, error) {
	p, err := s.path(digest)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxBytes || Digest(b) != digest {
		return nil, fmt.Errorf("%w: %s does not hash to its name", ErrDamaged, p)
	}
	return b, nil
}
