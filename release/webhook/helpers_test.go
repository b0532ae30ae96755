package webhook

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const testSecret = "s3cr3t-VALUE-never-print-0f9e"

// waitLimit bounds every wait of these tests.
const waitLimit = 10 * time.Second

func relEvent(index uint64, seq uint32, domain, action string, allowed bool) *pb.Event {
	phase := map[string]string{"start_canary": "progressing", "advance_step": "progressing", "pause": "paused",
		"resume": "progressing", "promote": "promoted", "abort": "aborted", "rollback": "rolled_back"}[action]
	denial := ""
	if !allowed {
		denial = "analysis_verdict: fail"
	}
	kv := []string{"action", action, "allowed", fmt.Sprint(allowed), "denial_reason", denial, "phase", phase,
		"stable", "v1", "canary", "v2", "step", "2", "weight", "25", "epoch_before", "7",
		"evidence", "manifest=sha256:aa,analysis=sha256:bb", "reason", "step 2 of 4"}
	ev := &pb.Event{Index: index, Seq: seq, Type: EventReleaseDecided, Domain: domain, Epoch: 8,
		Holder: "releaser/" + domain, StampedUnixMs: 1764892800000 + int64(index)}
	for i := 0; i+1 < len(kv); i += 2 {
		ev.Fields = append(ev.Fields, &pb.Observed{Key: kv[i], Value: kv[i+1]})
	}
	return ev
}

// fakeLog is an ordered event log; each subscription reads it from an
// index and then blocks like a live watch with nothing new.
type fakeLog struct {
	mu     sync.Mutex
	events []*pb.Event
	limit  int      // events visible (len(events) if 0)
	opened []uint64 // fromIndex of each subscription
	reads  []int    // events read per subscription
}

func (l *fakeLog) subscribe(ctx context.Context, from uint64) (Source, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.opened = append(l.opened, from)
	l.reads = append(l.reads, 0)
	return &fakeSource{l: l, sub: len(l.reads) - 1, from: from}, nil
}

func (l *fakeLog) readsOf(sub int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reads[sub]
}

type fakeSource struct {
	l    *fakeLog
	sub  int
	from uint64
	i    int
}

func (s *fakeSource) Next(ctx context.Context) (*pb.Event, error) {
	s.l.mu.Lock()
	n := len(s.l.events)
	if s.l.limit > 0 {
		n = s.l.limit
	}
	for s.i < n && s.l.events[s.i].GetIndex() < s.from {
		s.i++
	}
	if s.i < n {
		ev := s.l.events[s.i]
		s.i++
		s.l.reads[s.sub]++
		s.l.mu.Unlock()
		return ev, nil
	}
	s.l.mu.Unlock()
	<-ctx.Done()
	return nil, ctx.Err()
}

// recv is a test endpoint: a Receiver (signature, dedupe, handling) behind
// a fault layer, counting raw requests per delivery key.
type recv struct {
	t         *testing.T
	mu        sync.Mutex
	total     int
	raw       map[string]int
	handled   map[string]int // by key, after dedupe
	payloads  map[string]Payload
	badSig    int
	failFirst int                                           // the first N requests: 503, not handled
	lostAck   map[int]bool                                  // request numbers handled but answered 503
	fault     func(key string, r *http.Request) (int, bool) // status to answer instead (not handled)
	rc        *Receiver
	srv       *httptest.Server
}

func newRecv(t *testing.T) *recv {
	rv := &recv{t: t, raw: map[string]int{}, handled: map[string]int{}, payloads: map[string]Payload{}, lostAck: map[int]bool{}}
	rv.rc = &Receiver{Secret: []byte(testSecret), Dedupe: NewDeduper(1024), Handle: func(key string, p Payload) error {
		rv.mu.Lock()
		defer rv.mu.Unlock()
		rv.handled[key]++
		rv.payloads[key] = p
		return nil
	}}
	rv.srv = httptest.NewServer(rv)
	t.Cleanup(rv.srv.Close)
	return rv
}

func (rv *recv) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get(HeaderDelivery)
	rv.mu.Lock()
	rv.total++
	n := rv.total
	rv.raw[key]++
	fault := rv.fault
	rv.mu.Unlock()
	if r.Header.Get("Content-Type") != "application/json" {
		rv.t.Errorf("content type %q", r.Header.Get("Content-Type"))
	}
	if n <= rv.failFirst {
		http.Error(w, "warming up", http.StatusServiceUnavailable)
		return
	}
	if fault != nil {
		if status, ok := fault(key, r); ok {
			w.WriteHeader(status)
			return
		}
	}
	if rv.lostAck[n] { // handled, but the answer is lost
		rec := httptest.NewRecorder()
		rv.rc.ServeHTTP(rec, r)
		http.Error(w, "lost ack", http.StatusServiceUnavailable)
		return
	}
	rec := httptest.NewRecorder()
	rv.rc.ServeHTTP(rec, r)
	if rec.Code == http.StatusUnauthorized {
		rv.mu.Lock()
		rv.badSig++
		rv.mu.Unlock()
	}
	w.WriteHeader(rec.Code)
}

func (rv *recv) snapshot() (raw, handled map[string]int, badSig int) {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	raw, handled = map[string]int{}, map[string]int{}
	for k, v := range rv.raw {
		raw[k] = v
	}
	for k, v := range rv.handled {
		handled[k] = v
	}
	return raw, handled, rv.badSig
}

type settled struct {
	endpoint string
	pos      Position
	key      string
	result   string
}

type harness struct {
	d       *Dispatcher
	reg     *prometheus.Registry
	settled chan settled
	aside   []settled // settlements of other endpoints, read by await
	logs    *syncBuffer
	mu      sync.Mutex
	sleeps  []time.Duration
	cancel  context.CancelFunc
	done    chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func env(name string) (string, bool) {
	if name == "HOOK_SECRET" {
		return testSecret, true
	}
	return "", false
}

func endpoint(name, url string) Endpoint {
	return Endpoint{Name: name, URL: url, SecretEnv: "HOOK_SECRET", Timeout: 5 * time.Second,
		MaxAttempts: 6, BackoffBase: 100 * time.Millisecond, BackoffMax: time.Second, QueueSize: 4}
}

// start builds a dispatcher (instant backoff recorded, jitter 0.5) and runs it.
func start(t *testing.T, log *fakeLog, statePath string, eps ...Endpoint) *harness {
	t.Helper()
	return startWith(t, log.subscribe, 0, statePath, eps...)
}

func startWith(t *testing.T, sub Subscribe, from uint64, statePath string, eps ...Endpoint) *harness {
	t.Helper()
	h := &harness{reg: prometheus.NewRegistry(), settled: make(chan settled, 1024), logs: &syncBuffer{}, done: make(chan error, 1)}
	d, err := New(Options{
		Endpoints: eps, Namespace: "prod", Subscribe: sub, FromIndex: from, StatePath: statePath, LookupEnv: env,
		Registerer: h.reg, Logger: slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Sleep: func(ctx context.Context, d time.Duration) error {
			h.mu.Lock()
			h.sleeps = append(h.sleeps, d)
			h.mu.Unlock()
			return ctx.Err()
		},
		Jitter: func() float64 { return 0.5 },
		OnSettled: func(ep string, pos Position, key, result string) {
			h.settled <- settled{ep, pos, key, result}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	h.d = d
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- d.Run(ctx) }()
	t.Cleanup(func() { h.stop(t) })
	return h
}

func (h *harness) stop(t *testing.T) {
	t.Helper()
	h.cancel()
	select {
	case <-h.done:
		h.done <- nil // later stops return at once
	case <-time.After(waitLimit):
		t.Fatalf("dispatcher did not stop within %v", waitLimit)
	}
}

// await waits for n settlements of endpoint (others are kept aside).
func (h *harness) await(t *testing.T, endpoint string, n int) []settled {
	t.Helper()
	var out []settled
	var keep []settled
	for _, s := range h.aside {
		if s.endpoint == endpoint && len(out) < n {
			out = append(out, s)
		} else {
			keep = append(keep, s)
		}
	}
	h.aside = keep
	deadline := time.After(waitLimit)
	for len(out) < n {
		select {
		case s := <-h.settled:
			if s.endpoint == endpoint {
				out = append(out, s)
			} else {
				h.aside = append(h.aside, s)
			}
		case <-deadline:
			t.Fatalf("%s: %d of %d deliveries settled within %v", endpoint, len(out), n, waitLimit)
		}
	}
	return out
}

func (h *harness) count(endpoint, result string) float64 {
	return testutil.ToFloat64(h.d.Metrics().Deliveries.WithLabelValues(endpoint, result))
}

func statePath(t *testing.T) string { return filepath.Join(t.TempDir(), "webhooks.state") }
