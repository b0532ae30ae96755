package authz

import (
	"sync"
	"time"

	"github.com/aerodb/authority/identity"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
)

// Reporter counts denials in authority_authz_denied_total{method,role} and
// logs at most one line per second per identity (a hostile client cannot
// flood the log). Both labels are bounded: methods come from Table (others
// count as "unknown"), roles from identity.Roles (others as "none").
type Reporter struct {
	logger  hclog.Logger
	counter *prometheus.CounterVec
	now     func() time.Time

	mu   sync.Mutex
	last map[string]time.Time
}

// maxLogged bounds the per-identity rate limiter's memory.
const maxLogged = 4096

// NewReporter registers the counter on reg.
func NewReporter(logger hclog.Logger, reg prometheus.Registerer) *Reporter {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "authority_authz_denied_total",
		Help: "Calls refused by authorization, by RPC and the caller's role."}, []string{"method", "role"})
	reg.MustRegister(c)
	return &Reporter{logger: logger, counter: c, now: time.Now, last: map[string]time.Time{}}
}

// Denied implements Config.Denied.
func (r *Reporter) Denied(method string, id identity.Identity, err error) {
	m := method
	if _, ok := Table[m]; !ok {
		m = "unknown"
	}
	role := "none"
	for _, x := range identity.Roles {
		if x == id.Role {
			role = string(x)
		}
	}
	r.counter.WithLabelValues(m, role).Inc()
	key := id.String()
	now := r.now()
	r.mu.Lock()
	if t, ok := r.last[key]; ok && now.Sub(t) < time.Second {
		r.mu.Unlock()
		return
	}
	if len(r.last) >= maxLogged {
		r.last = map[string]time.Time{}
	}
	r.last[key] = now
	r.mu.Unlock()
	r.logger.Warn("permission denied", "identity", clip(key), "method", clip(method), "error", err)
}
