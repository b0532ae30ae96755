package webhook

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// mixedLog is n release decisions over two domains, with other events and
// several events of one entry (seq > 0) interleaved.
func mixedLog(n int) (*fakeLog, []*pb.Event) {
	actions := Actions
	l := &fakeLog{}
	var rel []*pb.Event
	idx := uint64(10)
	for i := 0; i < n; i++ {
		idx++
		if i%3 == 0 {
			l.events = append(l.events, &pb.Event{Index: idx, Type: "authority.domain.created", Domain: "other"})
			idx++
		}
		dom := []string{"payments", "search"}[i%2]
		seq := uint32(0)
		if i%4 == 1 { // two decisions' events in one entry
			seq = 1
			idx--
		}
		ev := relEvent(idx, seq, dom, actions[i%len(actions)], i%5 != 4)
		l.events = append(l.events, ev)
		rel = append(rel, ev)
	}
	return l, rel
}

func keyOf(ev *pb.Event, endpoint string) string {
	return DeliveryKey(ev.GetDomain(), ev.GetIndex(), ev.GetSeq(), endpoint)
}

// Acceptance 4: a receiver failing the first deliveries with 503 (and
// losing two acknowledgements after handling) gets every event exactly once
// after de-duplication, signatures verified, retries counted.
func TestRetriesThenExactlyOnceAfterDedupe(t *testing.T) {
	l, rel := mixedLog(20)
	rv := newRecv(t)
	rv.failFirst = 3
	rv.lostAck[8], rv.lostAck[12] = true, true
	h := start(t, l, statePath(t), endpoint("ops", rv.srv.URL))
	got := h.await(t, "ops", len(rel))

	raw, handled, badSig := rv.snapshot()
	if badSig != 0 {
		t.Fatalf("%d deliveries failed signature verification", badSig)
	}
	for i, ev := range rel {
		k := keyOf(ev, "ops")
		if handled[k] != 1 {
			t.Errorf("event %d (%d,%d): handled %d times after dedupe, want 1", i, ev.GetIndex(), ev.GetSeq(), handled[k])
		}
		if got[i].key != k || got[i].pos != (Position{ev.GetIndex(), ev.GetSeq()}) || got[i].result != ResultDelivered {
			t.Errorf("settlement %d = %+v, want key %s at (%d,%d) delivered (in log order)", i, got[i], k, ev.GetIndex(), ev.GetSeq())
		}
	}
	dups := 0
	for _, n := range raw {
		dups += n - 1
	}
	// 3 warm-up failures retried the first event; the 2 lost acks were redelivered with the same key.
	if raw[keyOf(rel[0], "ops")] != 4 || dups != 5 {
		t.Fatalf("raw deliveries: first event %d (want 4), redeliveries %d (want 5)", raw[keyOf(rel[0], "ops")], dups)
	}
	if r, d, x := h.count("ops", ResultRetried), h.count("ops", ResultDelivered), h.count("ops", ResultDropped); r != 5 || d != 20 || x != 0 {
		t.Fatalf("metrics retried %v delivered %v dropped %v, want 5 20 0", r, d, x)
	}
	h.mu.Lock()
	sleeps := append([]time.Duration(nil), h.sleeps...)
	h.mu.Unlock()
	// base 100ms doubling, jitter 0.5 -> 3/4 of it: 75ms, 150ms, 300ms.
	if len(sleeps) != 5 || sleeps[0] != 75*time.Millisecond || sleeps[1] != 150*time.Millisecond || sleeps[2] != 300*time.Millisecond {
		t.Fatalf("backoffs %v, want [75ms 150ms 300ms ...]", sleeps)
	}
	if n := testutil.CollectAndCount(h.reg, "release_webhook_deliveries_total", "release_webhook_delivery_seconds", "release_webhook_queue_depth"); n < 4 {
		t.Fatalf("%d series registered", n)
	}
	// The payload carries Flagger's vocabulary and ours.
	p := rv.payloads[keyOf(rel[4], "ops")]
	if p.Name != "payments" || p.Namespace != "prod" || p.Action != "promote" || p.Phase != "Promoted" ||
		p.LogIndex != rel[4].GetIndex() || p.EpochBefore != 7 || p.EpochAfter != 8 || len(p.Evidence) != 2 {
		t.Fatalf("payload %+v", p)
	}
}

// A 4xx other than 429 is dropped at once (counted); a 429 is retried.
func Test400NotRetried429Retried(t *testing.T) {
	l, rel := mixedLog(8)
	rv := newRecv(t)
	k400, k429 := keyOf(rel[2], "ops"), keyOf(rel[5], "ops")
	first429 := true
	rv.fault = func(key string, _ *http.Request) (int, bool) {
		switch {
		case key == k400:
			return http.StatusBadRequest, true
		case key == k429 && first429:
			first429 = false
			return http.StatusTooManyRequests, true
		}
		return 0, false
	}
	h := start(t, l, statePath(t), endpoint("ops", rv.srv.URL))
	got := h.await(t, "ops", len(rel))
	raw, handled, _ := rv.snapshot()
	if raw[k400] != 1 || handled[k400] != 0 || got[2].result != ResultDropped {
		t.Fatalf("400: %d attempts, handled %d, result %s; want 1 attempt, dropped", raw[k400], handled[k400], got[2].result)
	}
	if raw[k429] != 2 || handled[k429] != 1 {
		t.Fatalf("429: %d attempts, handled %d; want 2, 1", raw[k429], handled[k429])
	}
	if r, d, x := h.count("ops", ResultRetried), h.count("ops", ResultDelivered), h.count("ops", ResultDropped); r != 1 || d != 7 || x != 1 {
		t.Fatalf("metrics retried %v delivered %v dropped %v, want 1 7 1", r, d, x)
	}
	if !strings.Contains(h.logs.String(), "not retried") {
		t.Fatalf("the drop is not logged")
	}
}

// A restarted dispatcher (new instance, same state file) redelivers nothing
// already settled; the delivery in flight at the stop is redelivered with
// the same key (de-duplicated); the rest arrive exactly once.
func TestRestartResumesFromState(t *testing.T) {
	l, rel := mixedLog(12)
	l.limit = len(l.events) // visible events: up to the 8th decision
	for i, ev := range l.events {
		if ev == rel[7] {
			l.limit = i + 1
		}
	}
	path := statePath(t)
	rv := newRecv(t)
	inflight := make(chan struct{})
	kIn := keyOf(rel[6], "ops")
	once := true
	rv.fault = func(key string, r *http.Request) (int, bool) {
		if key != kIn || !once {
			return 0, false
		}
		once = false
		rv.rc.ServeHTTP(discard{}, r) // handled by the receiver...
		close(inflight)
		<-r.Context().Done() // ...but the answer never comes before the stop
		return http.StatusServiceUnavailable, true
	}
	h1 := start(t, l, path, endpoint("ops", rv.srv.URL))
	h1.await(t, "ops", 6)
	select {
	case <-inflight:
	case <-time.After(waitLimit):
		t.Fatal("7th delivery not in flight")
	}
	h1.stop(t)
	if pos := h1.d.Positions()["ops"]; pos != (Position{rel[5].GetIndex(), rel[5].GetSeq()}) {
		t.Fatalf("state after stop: %+v, want the 6th decision", pos)
	}
	raw1, _, _ := rv.snapshot()

	l.mu.Lock()
	l.limit = 0
	l.mu.Unlock()
	h2 := start(t, l, path, endpoint("ops", rv.srv.URL))
	h2.await(t, "ops", len(rel)-6)
	if from := l.opened[len(l.opened)-1]; from != rel[5].GetIndex() {
		t.Fatalf("restart subscribed from %d, want %d", from, rel[5].GetIndex())
	}
	raw, handled, badSig := rv.snapshot()
	for i, ev := range rel {
		k := keyOf(ev, "ops")
		want := 1
		if i == 6 {
			want = 2 // in flight at the stop: redelivered, same key
		}
		if raw[k] != want || handled[k] != 1 {
			t.Errorf("event %d: %d raw deliveries (want %d), handled %d (want 1)", i, raw[k], want, handled[k])
		}
		if i < 6 && raw[k] != raw1[k] {
			t.Errorf("event %d redelivered after the restart", i)
		}
	}
	if badSig != 0 || h2.count("ops", ResultDelivered) != float64(len(rel)-6) {
		t.Fatalf("bad signatures %d, delivered after restart %v", badSig, h2.count("ops", ResultDelivered))
	}
}

type discard struct{ h http.Header }

func (d discard) Header() http.Header {
	if d.h == nil {
		return http.Header{}
	}
	return d.h
}
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

// Two endpoints, one hanging: the other gets everything, and the hanging
// one holds at most its bounded queue.
func TestHangingEndpointDoesNotBlockOthers(t *testing.T) {
	l, rel := mixedLog(60)
	fast := newRecv(t)
	release := make(chan struct{})
	hang := newRecv(t)
	hang.fault = func(_ string, r *http.Request) (int, bool) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
		return http.StatusServiceUnavailable, true
	}
	t.Cleanup(func() { close(release) })
	slow := endpoint("slow", hang.srv.URL)
	slow.QueueSize = 4
	h := start(t, l, statePath(t), endpoint("fast", fast.srv.URL), slow)
	h.await(t, "fast", len(rel))
	_, handled, _ := fast.snapshot()
	for _, ev := range rel {
		if handled[keyOf(ev, "fast")] != 1 {
			t.Fatalf("fast endpoint: event (%d,%d) handled %d times", ev.GetIndex(), ev.GetSeq(), handled[keyOf(ev, "fast")])
		}
	}
	// Subscriptions were opened in some order; find the slow one's reads.
	maxReads := 0
	for i := range l.opened {
		if n := l.readsOf(i); n < len(l.events) {
			maxReads = max(maxReads, n)
		}
	}
	// One in delivery + 4 queued + 1 held by the blocked reader + the
	// non-release events before them.
	if maxReads > 1+4+1+3 || maxReads == 0 {
		t.Fatalf("hanging endpoint's subscription read %d events; its queue is not bounded", maxReads)
	}
	if d := testutil.ToFloat64(h.d.Metrics().QueueDepth.WithLabelValues("slow")); d > 4 {
		t.Fatalf("queue depth %v > 4", d)
	}
	if h.count("slow", ResultDelivered) != 0 {
		t.Fatal("hanging endpoint delivered")
	}
	h.stop(t) // bounded: the hanging request is cancelled
}

// The secret appears in no log line and no error, even with the URL
// carrying it and every failure path taken.
func TestSecretNeverLoggedNorInErrors(t *testing.T) {
	l, rel := mixedLog(6)
	rv := newRecv(t)
	rv.fault = func(key string, _ *http.Request) (int, bool) {
		switch key {
		case keyOf(rel[0], "leaky"):
			return http.StatusBadRequest, true
		case keyOf(rel[1], "leaky"):
			return http.StatusBadGateway, true
		}
		return 0, false
	}
	dead := newRecv(t)
	dead.srv.Close() // transport errors
	leaky := endpoint("leaky", rv.srv.URL+"/hook?token="+testSecret)
	leaky.MaxAttempts = 2
	gone := endpoint("gone", "http://user:"+testSecret+"@"+strings.TrimPrefix(dead.srv.URL, "http://")+"/?t="+testSecret)
	gone.MaxAttempts = 2
	h := start(t, l, statePath(t), leaky, gone)
	h.await(t, "leaky", len(rel))
	h.await(t, "gone", len(rel))
	h.stop(t)
	if x, r := h.count("gone", ResultDropped), h.count("gone", ResultRetried); x != float64(len(rel)) || r != float64(len(rel)) {
		t.Fatalf("unreachable endpoint: dropped %v retried %v, want %d each (2 attempts)", x, r, len(rel))
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "attempts exhausted") || !strings.Contains(logs, "transport") {
		t.Fatalf("failure paths not taken:\n%s", logs)
	}
	if strings.Contains(logs, testSecret) {
		t.Fatalf("secret in logs:\n%s", logs)
	}
	state, err := os.ReadFile(h.d.opts.StatePath)
	if err != nil || strings.Contains(string(state), testSecret) {
		t.Fatalf("state file: %v / secret present", err)
	}
	// Configuration errors name fields, never values.
	for _, ep := range []Endpoint{
		{Name: "x", URL: "ftp://" + testSecret, SecretEnv: "HOOK_SECRET"},
		{Name: "x", URL: "http://h/", SecretEnv: testSecret + "-"},
		{Name: "x", URL: "http://h/", SecretEnv: "UNSET_VAR"},
		{Name: "x", URL: "http://h/" + strings.Repeat(testSecret, 100), SecretEnv: "HOOK_SECRET"},
	} {
		_, err := New(Options{Endpoints: []Endpoint{ep}, Subscribe: l.subscribe, StatePath: statePath(t), LookupEnv: env})
		if err == nil || strings.Contains(err.Error(), testSecret) {
			t.Fatalf("config error %v", err)
		}
	}
}

// A subscription that fails is reopened at the endpoint's position: the
// events after it arrive once, nothing settled is sent again.
func TestSourceFailureReopensAtPosition(t *testing.T) {
	l, rel := mixedLog(10)
	rv := newRecv(t)
	failing := &failOnce{l: l, after: 5}
	h := startWith(t, failing.subscribe, 0, statePath(t), endpoint("ops", rv.srv.URL))
	h.await(t, "ops", len(rel))
	raw, handled, _ := rv.snapshot()
	for _, ev := range rel {
		if k := keyOf(ev, "ops"); raw[k] != 1 || handled[k] != 1 {
			t.Fatalf("event (%d,%d): %d raw deliveries, handled %d", ev.GetIndex(), ev.GetSeq(), raw[k], handled[k])
		}
	}
	l.mu.Lock()
	opened := append([]uint64(nil), l.opened...)
	l.mu.Unlock()
	if len(opened) != 2 || opened[1] == 0 || !strings.Contains(h.logs.String(), "reopening") {
		t.Fatalf("subscriptions opened at %v", opened)
	}
}

// failOnce's first subscription fails after `after` events.
type failOnce struct {
	l     *fakeLog
	after int
	n     int
}

func (f *failOnce) subscribe(ctx context.Context, from uint64) (Source, error) {
	src, _ := f.l.subscribe(ctx, from)
	f.n++
	if f.n == 1 {
		return &failingSource{Source: src, left: f.after}, nil
	}
	return src, nil
}

type failingSource struct {
	Source
	left int
}

func (s *failingSource) Next(ctx context.Context) (*pb.Event, error) {
	if s.left == 0 {
		return nil, errors.New("stream reset")
	}
	s.left--
	return s.Source.Next(ctx)
}
