package refnode

import (
	"sort"
	"sync"
)

// Store is the node's MVCC key-value state: every applied write is a new
// version of its key, tagged with its commit id. Versions are applied in
// commit id order.
type Store struct {
	mu       sync.RWMutex
	versions map[string][]version
	applied  uint64
}

type version struct {
	commitID uint64
	value    []byte
}

// NewStore returns an empty store.
func NewStore() *Store { return &Store{versions: map[string][]version{}} }

// Apply adds a version; commit ids must increase (a lower one is ignored:
// it is already applied).
func (s *Store) Apply(commitID uint64, key, value []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if commitID <= s.applied {
		return
	}
	k := string(key)
	s.versions[k] = append(s.versions[k], version{commitID: commitID, value: append([]byte(nil), value...)})
	s.applied = commitID
}

// Applied is the highest applied commit id.
func (s *Store) Applied() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.applied
}

// Get returns the newest version of key with commit id ≤ bound.
func (s *Store) Get(key []byte, bound uint64) (value []byte, commitID uint64, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	vs := s.versions[string(key)]
	i := sort.Search(len(vs), func(i int) bool { return vs[i].commitID > bound })
	if i == 0 {
		return nil, 0, false
	}
	v := vs[i-1]
	return append([]byte(nil), v.value...), v.commitID, true
}
