package webhook

import (
	"container/list"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
)

// MaxKeyBytes bounds a delivery key a Deduper accepts.
const MaxKeyBytes = 128

// VerifySignature reports whether header ("sha256=<hex>") is the
// HMAC-SHA256 of body under secret. The comparison is constant-time.
func VerifySignature(secret, body []byte, header string) bool {
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	if !ok || len(hexSig) != 2*sha256.Size {
		return false
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return hmac.Equal(got, m.Sum(nil))
}

// Deduper remembers the last Capacity delivery keys (least recently added
// forgotten first). Safe for concurrent use.
type Deduper struct {
	mu    sync.Mutex
	cap   int
	order *list.List // of string, front = newest
	keys  map[string]*list.Element
}

// NewDeduper returns a Deduper remembering up to capacity keys (at least 1).
func NewDeduper(capacity int) *Deduper {
	return &Deduper{cap: max(capacity, 1), order: list.New(), keys: map[string]*list.Element{}}
}

// Add records key and reports whether it is new (false: a duplicate, or a
// key that is empty or longer than MaxKeyBytes).
func (d *Deduper) Add(key string) bool {
	if key == "" || len(key) > MaxKeyBytes {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.keys[key]; ok {
		d.order.MoveToFront(e)
		return false
	}
	d.keys[key] = d.order.PushFront(key)
	for d.order.Len() > d.cap {
		e := d.order.Back()
		d.order.Remove(e)
		delete(d.keys, e.Value.(string))
	}
	return true
}

// Forget drops key (the handling of its delivery failed, so a redelivery
// must be processed).
func (d *Deduper) Forget(key string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e, ok := d.keys[key]; ok {
		d.order.Remove(e)
		delete(d.keys, key)
	}
}

// Len is the number of keys remembered.
func (d *Deduper) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.order.Len()
}

// Receiver is an http.Handler for users' endpoints and tests: it bounds the
// body (MaxBody, default MaxBodyBytes: 413 beyond), verifies the signature
// (401), de-duplicates by delivery key (a duplicate is answered 200 and not
// handled), decodes the payload strictly (400) and calls Handle; an error
// from Handle answers 503 and forgets the key so the retry is handled.
type Receiver struct {
	Secret  []byte
	Dedupe  *Deduper
	MaxBody int64
	Handle  func(key string, p Payload) error
}

func (rc *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	limit := rc.MaxBody
	if limit <= 0 {
		limit = MaxBodyBytes
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	if !VerifySignature(rc.Secret, body, r.Header.Get(HeaderSignature)) {
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	key := r.Header.Get(HeaderDelivery)
	if key == "" || len(key) > MaxKeyBytes {
		http.Error(w, "bad delivery key", http.StatusBadRequest)
		return
	}
	var p Payload // unknown fields are ignored: newer senders may add some
	if err := json.Unmarshal(body, &p); err != nil {
		http.Error(w, "bad payload", http.StatusBadRequest)
		return
	}
	if rc.Dedupe != nil && !rc.Dedupe.Add(key) {
		w.WriteHeader(http.StatusOK) // a duplicate: already handled
		return
	}
	if rc.Handle != nil {
		if err := rc.Handle(key, p); err != nil {
			if rc.Dedupe != nil {
				rc.Dedupe.Forget(key)
			}
			http.Error(w, "not handled", http.StatusServiceUnavailable)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}
