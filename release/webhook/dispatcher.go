package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// Headers of a delivery.
const (
	HeaderSignature = "X-Authority-Signature" // "sha256=" + hex HMAC-SHA256 of the body
	HeaderDelivery  = "X-Authority-Delivery"  // the idempotency key (DeliveryKey)
	HeaderEvent     = "X-Authority-Event"     // "release.decided"
)

// maxResponseDrain bounds what is read of an endpoint's answer (never
// logged, only drained so the connection can be reused).
const maxResponseDrain = 4 << 10

// Source yields committed events in log order; *client.Watcher is one.
type Source interface {
	Next(ctx context.Context) (*pb.Event, error)
}

// Subscribe opens a Source at fromIndex: events with index >= fromIndex
// (0: whatever the source treats as its start; client.Watch: from now).
// The dispatcher opens one per endpoint, so a slow endpoint lags on its own
// subscription and never holds back the others. A Source with a Close()
// method is closed when the dispatcher is done with it.
type Subscribe func(ctx context.Context, fromIndex uint64) (Source, error)

// Options configure a Dispatcher.
type Options struct {
	// Endpoints to deliver to; defaults are applied, then they are
	// validated (ValidateEndpoints).
	Endpoints []Endpoint
	// Namespace is the payload's namespace (Flagger's field).
	Namespace string
	// Subscribe opens the event source (WatchSubscribe for a client).
	Subscribe Subscribe
	// FromIndex is where an endpoint absent from the state file starts.
	FromIndex uint64
	// StatePath is the state file: the last handled position per endpoint.
	StatePath string
	// LookupEnv resolves the endpoints' SecretEnv (os.LookupEnv if nil).
	LookupEnv func(string) (string, bool)
	// HTTPClient sends the requests (a plain client if nil); redirects are
	// never followed (a 3xx is dropped like a 4xx).
	HTTPClient *http.Client
	// Registerer receives the metrics (none if nil).
	Registerer prometheus.Registerer
	// Logger (slog.Default if nil). Logs name endpoints, never their URL or
	// secret.
	Logger *slog.Logger
	// Sleep waits d or until ctx ends (a timer if nil): the backoff.
	Sleep func(ctx context.Context, d time.Duration) error
	// Jitter returns a number in [0, 1) (math/rand/v2 if nil).
	Jitter func() float64
	// Now times attempts for the histogram (time.Now if nil).
	Now func() time.Time
	// OnSettled, if set, is called after each delivery is settled
	// (ResultDelivered or ResultDropped) and its position written to the
	// state file. It must not block for long.
	OnSettled func(endpoint string, pos Position, key, result string)
}

// Dispatcher delivers release events to the endpoints, at least once and in
// log order per endpoint.
type Dispatcher struct {
	opts    Options
	log     *slog.Logger
	client  *http.Client
	metrics *Metrics
	st      *state
	workers []*worker
}

type worker struct {
	ep        Endpoint
	secret    []byte
	cur       Position // last handled (delivered, dropped or skipped)
	have      bool
	persisted Position
}

// New validates the options, resolves the secrets and loads the state file.
func New(opts Options) (*Dispatcher, error) {
	if opts.Subscribe == nil {
		return nil, errors.New("webhook: no Subscribe")
	}
	if opts.StatePath == "" {
		return nil, errors.New("webhook: no StatePath")
	}
	if len(opts.Namespace) > MaxFieldBytes {
		return nil, fmt.Errorf("webhook: namespace longer than %d bytes", MaxFieldBytes)
	}
	eps := append([]Endpoint(nil), opts.Endpoints...)
	for i := range eps {
		eps[i].defaults()
	}
	if err := ValidateEndpoints(eps); err != nil {
		return nil, err
	}
	if opts.LookupEnv == nil {
		opts.LookupEnv = os.LookupEnv
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Sleep == nil {
		opts.Sleep = timerSleep
	}
	if opts.Jitter == nil {
		opts.Jitter = rand.Float64
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &http.Client{}
	if opts.HTTPClient != nil {
		cp := *opts.HTTPClient
		c = &cp
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	m, err := NewMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("webhook: metrics: %w", err)
	}
	st, err := loadState(opts.StatePath)
	if err != nil {
		return nil, err
	}
	d := &Dispatcher{opts: opts, log: opts.Logger, client: c, metrics: m, st: st}
	for _, e := range eps {
		s, ok := opts.LookupEnv(e.SecretEnv)
		if !ok || s == "" {
			return nil, fmt.Errorf("webhook: endpoint %q: environment variable %s is unset or empty", e.Name, e.SecretEnv)
		}
		w := &worker{ep: e, secret: []byte(s)}
		w.cur, w.have = st.get(e.Name)
		w.persisted = w.cur
		d.workers = append(d.workers, w)
		m.QueueDepth.WithLabelValues(e.Name).Set(0)
	}
	return d, nil
}

// Metrics returns the dispatcher's collectors.
func (d *Dispatcher) Metrics() *Metrics { return d.metrics }

// Positions returns the last position recorded in the state file per
// endpoint.
func (d *Dispatcher) Positions() map[string]Position {
	d.st.mu.Lock()
	defer d.st.mu.Unlock()
	out := make(map[string]Position, len(d.st.pos))
	for k, v := range d.st.pos {
		out[k] = v
	}
	return out
}

// Run delivers until ctx ends, then returns ctx's error. Each endpoint
// follows its own subscription; a subscription that fails is reopened at
// the endpoint's position after a backoff.
func (d *Dispatcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, w := range d.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for attempt := 1; ctx.Err() == nil; attempt++ {
				before := w.cur
				err := d.follow(ctx, w)
				if ctx.Err() != nil {
					return
				}
				if w.cur != before { // it made progress: back off from the start
					attempt = 1
				}
				d.log.Warn("release webhook: event source ended; reopening", "endpoint", w.ep.Name, "error", err)
				if d.opts.Sleep(ctx, d.backoff(w, min(attempt, 16))) != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	return ctx.Err()
}

// follow reads one subscription into the endpoint's bounded queue and
// delivers from it in order.
func (d *Dispatcher) follow(ctx context.Context, w *worker) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	from := d.opts.FromIndex
	if w.have {
		from = w.cur.Index // events at this index with seq <= cur.Seq are skipped
	}
	src, err := d.opts.Subscribe(sctx, from)
	if err != nil {
		return err
	}
	if c, ok := src.(interface{ Close() }); ok {
		defer c.Close()
	}
	depth := d.metrics.QueueDepth.WithLabelValues(w.ep.Name)
	q := make(chan *pb.Event, w.ep.QueueSize)
	errc := make(chan error, 1)
	go func() {
		defer close(q)
		for {
			ev, err := src.Next(sctx)
			if err != nil {
				errc <- err
				return
			}
			select {
			case q <- ev:
				depth.Set(float64(len(q)))
			case <-sctx.Done():
				errc <- sctx.Err()
				return
			}
		}
	}()
	var herr error
	for ev := range q {
		depth.Set(float64(len(q)))
		if herr = d.handle(sctx, w, ev, len(q) == 0); herr != nil {
			cancel()
			for range q { // let the reader end
			}
			break
		}
	}
	depth.Set(0)
	if err := <-errc; herr == nil {
		herr = err
	}
	return herr
}

// handle delivers ev if the endpoint wants it. It returns an error only when
// ctx ended before the delivery was settled (the position is then not
// advanced, so the event is delivered again after a restart).
func (d *Dispatcher) handle(ctx context.Context, w *worker, ev *pb.Event, idle bool) error {
	pos := Position{Index: ev.GetIndex(), Seq: ev.GetSeq()}
	if w.have && !pos.After(w.cur) {
		return nil // handled before (the subscription reopened at cur.Index)
	}
	p, ok := PayloadFromEvent(ev, d.opts.Namespace)
	if !ok || !w.ep.Wants(p) {
		if ok2 := ev.GetType() == EventReleaseDecided; ok2 && !ok {
			d.log.Warn("release webhook: malformed release event skipped", "endpoint", w.ep.Name, "index", pos.Index, "seq", pos.Seq)
		}
		w.cur, w.have = pos, true
		if idle && w.cur != w.persisted { // record skips only when caught up: few writes
			d.persist(w)
		}
		return nil
	}
	key := DeliveryKey(p.Domain, p.LogIndex, p.Seq, w.ep.Name)
	result := ResultDropped
	body, err := p.Encode()
	if err != nil { // unreachable with PayloadFromEvent's bounds
		d.metrics.Deliveries.WithLabelValues(w.ep.Name, ResultDropped).Inc()
		d.log.Error("release webhook: payload not encodable; dropped", "endpoint", w.ep.Name, "delivery", key, "error", err)
	} else if result, err = d.deliver(ctx, w, body, key); err != nil {
		return err
	}
	w.cur, w.have = pos, true
	d.persist(w)
	if d.opts.OnSettled != nil {
		d.opts.OnSettled(w.ep.Name, pos, key, result)
	}
	return nil
}

func (d *Dispatcher) persist(w *worker) {
	if err := d.st.set(w.ep.Name, w.cur); err != nil {
		// Deliveries go on; a restart would redeliver (same keys).
		d.log.Error("release webhook: state not written", "endpoint", w.ep.Name, "error", err)
		return
	}
	w.persisted = w.cur
}

// deliver POSTs body until a 2xx, a final refusal, or MaxAttempts, and
// returns ResultDelivered or ResultDropped; an error only when ctx ended
// first.
func (d *Dispatcher) deliver(ctx context.Context, w *worker, body []byte, key string) (string, error) {
	name := w.ep.Name
	for attempt := 1; ; attempt++ {
		start := d.opts.Now()
		status, err := d.post(ctx, w, body, key)
		d.metrics.Seconds.WithLabelValues(name).Observe(d.opts.Now().Sub(start).Seconds())
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		switch {
		case err == nil && status >= 200 && status < 300:
			d.metrics.Deliveries.WithLabelValues(name, ResultDelivered).Inc()
			return ResultDelivered, nil
		case err == nil && status != http.StatusTooManyRequests && status < 500:
			d.metrics.Deliveries.WithLabelValues(name, ResultDropped).Inc()
			d.log.Warn("release webhook: refused by the endpoint; dropped, not retried", "endpoint", name, "delivery", key, "status", status)
			return ResultDropped, nil
		}
		what := []any{"endpoint", name, "delivery", key, "attempt", attempt}
		if err != nil {
			what = append(what, "error", err)
		} else {
			what = append(what, "status", status)
		}
		if attempt >= w.ep.MaxAttempts {
			d.metrics.Deliveries.WithLabelValues(name, ResultDropped).Inc()
			d.log.Error("release webhook: attempts exhausted; dropped", what...)
			return ResultDropped, nil
		}
		d.metrics.Deliveries.WithLabelValues(name, ResultRetried).Inc()
		wait := d.backoff(w, attempt)
		d.log.Info("release webhook: attempt failed; retrying", append(what, "backoff", wait)...)
		if err := d.opts.Sleep(ctx, wait); err != nil {
			return "", err
		}
	}
}

// backoff is the wait after failed attempt n: min(max, base*2^(n-1)) scaled
// into [1/2, 1) of itself by the jitter.
func (d *Dispatcher) backoff(w *worker, n int) time.Duration {
	b := w.ep.BackoffBase
	for i := 1; i < n && b < w.ep.BackoffMax; i++ {
		b *= 2
	}
	b = min(b, w.ep.BackoffMax)
	j := d.opts.Jitter()
	if j < 0 || j >= 1 || j != j {
		j = 0
	}
	return b/2 + time.Duration(j*float64(b/2))
}

func (d *Dispatcher) post(ctx context.Context, w *worker, body []byte, key string) (int, error) {
	actx, cancel := context.WithTimeout(ctx, w.ep.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, w.ep.URL, bytes.NewReader(body))
	if err != nil {
		return 0, errors.New("request not built") // never echo the URL
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "aerodb-authority-webhook/1")
	req.Header.Set(HeaderSignature, SignatureHeader(w.secret, body))
	req.Header.Set(HeaderDelivery, key)
	req.Header.Set(HeaderEvent, EventReleaseDecided)
	resp, err := d.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) { // drop the URL (it may carry a token)
			err = ue.Err
		}
		return 0, fmt.Errorf("transport: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseDrain))
	resp.Body.Close()
	return resp.StatusCode, nil
}

func timerSleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
