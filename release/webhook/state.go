package webhook

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// MaxStateBytes bounds the state file read at start.
const MaxStateBytes = 1 << 20

// Position is a place in the event log: the (index, seq) of an event.
type Position struct {
	Index uint64 `json:"index"`
	Seq   uint32 `json:"seq"`
}

// After reports whether p comes after q.
func (p Position) After(q Position) bool {
	return p.Index > q.Index || p.Index == q.Index && p.Seq > q.Seq
}

type stateFile struct {
	Version   int                 `json:"version"`
	Endpoints map[string]Position `json:"endpoints"`
}

// state is the per-endpoint position of the last event handled (delivered,
// dropped or not wanted), written atomically (temp file, fsync, rename,
// fsync of the directory) after every delivery or drop.
type state struct {
	path string
	mu   sync.Mutex
	pos  map[string]Position
}

func loadState(path string) (*state, error) {
	s := &state{path: path, pos: map[string]Position{}}
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("webhook state: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxStateBytes+1))
	if err != nil {
		return nil, fmt.Errorf("webhook state: %w", err)
	}
	if len(b) > MaxStateBytes {
		return nil, fmt.Errorf("webhook state: %s exceeds %d bytes", path, MaxStateBytes)
	}
	var sf stateFile
	if err := json.Unmarshal(b, &sf); err != nil {
		return nil, fmt.Errorf("webhook state: %s: %w", path, err)
	}
	if sf.Version != 1 {
		return nil, fmt.Errorf("webhook state: %s: unknown version %d", path, sf.Version)
	}
	for k, v := range sf.Endpoints {
		s.pos[k] = v
	}
	return s, nil
}

func (s *state) get(name string) (Position, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pos[name]
	return p, ok
}

// set records name's position and writes the file.
func (s *state) set(name string, p Position) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pos[name] = p
	b, err := json.Marshal(stateFile{Version: 1, Endpoints: s.pos})
	if err != nil {
		return err
	}
	return writeAtomic(s.path, b)
}

func writeAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("webhook state: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("webhook state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("webhook state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("webhook state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("webhook state: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("webhook state: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("webhook state: %w", err)
	}
	return nil
}
