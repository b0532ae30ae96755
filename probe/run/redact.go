package run

import (
	"sort"
	"strings"
	"sync"
)

// Redacted replaces every secret value in output.
const Redacted = "[REDACTED]"

// Redactor removes secret values (environment secrets and extractions
// marked secret, such as session tokens) from every string the service
// emits: results, events, errors, observed values, status pages.
type Redactor struct {
	mu      sync.RWMutex
	secrets map[string]bool
	sorted  []string
}

// NewRedactor returns an empty redactor.
func NewRedactor() *Redactor { return &Redactor{secrets: map[string]bool{}} }

// Add registers a secret value (empty values are ignored).
func (r *Redactor) Add(v string) {
	if v == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.secrets[v] {
		return
	}
	r.secrets[v] = true
	r.sorted = append(r.sorted, v)
	// Longest first, so a secret containing another is removed whole.
	sort.Slice(r.sorted, func(i, j int) bool { return len(r.sorted[i]) > len(r.sorted[j]) })
}

// String returns s with every secret replaced by [REDACTED].
func (r *Redactor) String(s string) string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, v := range r.sorted {
		if strings.Contains(s, v) {
			s = strings.ReplaceAll(s, v, Redacted)
		}
	}
	return s
}
