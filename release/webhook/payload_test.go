package webhook

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
)

func TestEventTypeMatchesTheCore(t *testing.T) {
	if fsm.EventReleaseDecided != EventReleaseDecided {
		t.Fatalf("fsm emits %q, webhook reads %q", fsm.EventReleaseDecided, EventReleaseDecided)
	}
}

func TestPayloadFromEvent(t *testing.T) {
	ev := relEvent(42, 1, "payments", "abort", true)
	p, ok := PayloadFromEvent(ev, "prod")
	if !ok {
		t.Fatal("release event not read")
	}
	want := Payload{Name: "payments", Namespace: "prod", Phase: "Aborted",
		Metadata: Metadata{EventType: "Warning", Timestamp: "1764892800042",
			EventMessage: `abort of payments allowed (phase aborted, stable "v1", canary "v2", step 2, weight 25, epoch 7->8): step 2 of 4`},
		Domain: "payments", Action: "abort", Allowed: true, ReleasePhase: "aborted", EpochBefore: 7, EpochAfter: 8,
		Holder: "releaser/payments", LogIndex: 42, Seq: 1, Stable: "v1", Canary: "v2", Step: 2, Weight: 25,
		Reason: "step 2 of 4", Evidence: []string{"manifest=sha256:aa", "analysis=sha256:bb"}}
	if fmt.Sprintf("%+v", p) != fmt.Sprintf("%+v", want) {
		t.Fatalf("payload\n%+v\nwant\n%+v", p, want)
	}
	for _, a := range Actions {
		p, ok := PayloadFromEvent(relEvent(1, 0, "d", a, a != "pause"), "")
		wantType := "Normal"
		if a == "pause" || a == "abort" || a == "rollback" {
			wantType = "Warning"
		}
		if !ok || p.Action != a || p.Metadata.EventType != wantType {
			t.Fatalf("%s: %v %+v", a, ok, p)
		}
	}
	denied, _ := PayloadFromEvent(relEvent(1, 0, "d", "promote", false), "")
	if denied.Allowed || denied.DenialReason == "" || !strings.Contains(denied.Metadata.EventMessage, "denied") {
		t.Fatalf("denied payload %+v", denied)
	}
	// Not a release event, or malformed: no payload.
	bad := []*pb.Event{nil, {Type: "authority.domain.created", Index: 1}}
	for _, mut := range []func(*pb.Event){
		func(e *pb.Event) { e.Fields[0].Value = "launch" },
		func(e *pb.Event) { e.Fields[1].Value = "maybe" },
		func(e *pb.Event) { e.Fields[3].Value = "exploded" },
		func(e *pb.Event) { e.Fields[6].Value = "-1" },
		func(e *pb.Event) { e.Fields[7].Value = "4294967296" },
		func(e *pb.Event) { e.Fields = e.Fields[:5] },
	} {
		e := relEvent(3, 0, "d", "promote", true)
		mut(e)
		bad = append(bad, e)
	}
	for i, e := range bad {
		if _, ok := PayloadFromEvent(e, ""); ok {
			t.Errorf("bad event %d read as a payload", i)
		}
	}
}

// Every field is bounded, so the body is.
func TestPayloadBounded(t *testing.T) {
	ev := relEvent(1, 0, strings.Repeat("d", 5000), "promote", false)
	huge := strings.Repeat("é", 1<<19) // 1 MiB, cut mid-rune at odd offsets
	var digests []string
	for i := 0; i < 1000; i++ {
		digests = append(digests, fmt.Sprintf("analysis=sha256:%0500d", i))
	}
	for _, f := range ev.Fields {
		switch f.Key {
		case "reason", "denial_reason", "stable", "canary":
			f.Value = "x" + huge
		case "evidence":
			f.Value = strings.Join(digests, ",")
		}
	}
	p, ok := PayloadFromEvent(ev, strings.Repeat("n", 5000))
	if !ok {
		t.Fatal("not read")
	}
	body, err := p.Encode()
	if err != nil || len(body) > MaxBodyBytes {
		t.Fatalf("body %d bytes, %v", len(body), err)
	}
	if len(p.Evidence) != MaxEvidence || len(p.Evidence[0]) != MaxDigestBytes || len(p.Reason) > MaxFieldBytes ||
		!utf8.ValidString(p.Reason) || len(p.Namespace) != MaxFieldBytes || len(p.Metadata.EventMessage) > MaxFieldBytes {
		t.Fatalf("unbounded fields: %d evidence, reason %d bytes (valid %v)", len(p.Evidence), len(p.Reason), utf8.ValidString(p.Reason))
	}
}

func TestDeliveryKeyDeterministic(t *testing.T) {
	k := DeliveryKey("payments", 42, 1, "ops")
	if k != DeliveryKey("payments", 42, 1, "ops") || len(k) != 32 {
		t.Fatalf("key %q not deterministic", k)
	}
	for _, other := range []string{DeliveryKey("payments", 42, 1, "ops2"), DeliveryKey("payments", 42, 2, "ops"),
		DeliveryKey("payments", 43, 1, "ops"), DeliveryKey("search", 42, 1, "ops"), DeliveryKey("payments", 4, 21, "ops")} {
		if other == k {
			t.Fatal("keys collide")
		}
	}
}

func TestVerifySignature(t *testing.T) {
	body := []byte(`{"name":"payments"}`)
	m := hmac.New(sha256.New, []byte("k"))
	m.Write(body)
	good := "sha256=" + hex.EncodeToString(m.Sum(nil))
	if SignatureHeader([]byte("k"), body) != good || !VerifySignature([]byte("k"), body, good) {
		t.Fatal("good signature refused")
	}
	for _, h := range []string{"", good[7:], "sha1=" + good[7:], good + "00", good[:len(good)-2] + "zz", strings.ToUpper(good[:7]) + good[7:]} {
		if VerifySignature([]byte("k"), body, h) {
			t.Errorf("header %q accepted", h)
		}
	}
	if VerifySignature([]byte("other"), body, good) || VerifySignature([]byte("k"), append(body, ' '), good) {
		t.Fatal("wrong secret or body accepted")
	}
}

func TestDeduperBoundedLRU(t *testing.T) {
	d := NewDeduper(3)
	for _, k := range []string{"a", "b", "c"} {
		if !d.Add(k) {
			t.Fatalf("%s not new", k)
		}
	}
	if d.Add("a") { // a is now the most recent
		t.Fatal("duplicate a accepted")
	}
	d.Add("d") // evicts b, the least recent
	if d.Len() != 3 || !d.Add("b") || d.Add("a") || d.Add("d") {
		t.Fatal("not an LRU of 3")
	}
	d.Forget("d")
	if !d.Add("d") {
		t.Fatal("forgotten key still remembered")
	}
	if d.Add("") || d.Add(strings.Repeat("k", MaxKeyBytes+1)) {
		t.Fatal("empty or oversized key accepted")
	}
	for i := 0; i < 10000; i++ {
		d.Add(fmt.Sprint(i))
	}
	if d.Len() != 3 {
		t.Fatalf("deduper grew to %d", d.Len())
	}
}

func TestReceiverBoundsAndChecks(t *testing.T) {
	handled := 0
	rc := &Receiver{Secret: []byte("k"), Dedupe: NewDeduper(8), MaxBody: 1024, Handle: func(string, Payload) error {
		handled++
		return nil
	}}
	post := func(body []byte, sig, key string) int {
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		r.Header.Set(HeaderSignature, sig)
		r.Header.Set(HeaderDelivery, key)
		w := httptest.NewRecorder()
		rc.ServeHTTP(w, r)
		return w.Code
	}
	p, _ := PayloadFromEvent(relEvent(1, 0, "d", "promote", true), "")
	body, _ := json.Marshal(p)
	big := append(bytes.Repeat([]byte(" "), 2048), body...)
	if c := post(big, SignatureHeader([]byte("k"), big), "k1"); c != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body: %d", c)
	}
	if c := post(body, SignatureHeader([]byte("x"), body), "k1"); c != http.StatusUnauthorized {
		t.Fatalf("bad signature: %d", c)
	}
	if c := post(body, SignatureHeader([]byte("k"), body), "k1"); c != http.StatusNoContent {
		t.Fatalf("good delivery: %d", c)
	}
	if c := post(body, SignatureHeader([]byte("k"), body), "k1"); c != http.StatusOK || handled != 1 {
		t.Fatalf("duplicate: %d, handled %d", c, handled)
	}
	rc.Handle = func(string, Payload) error { return fmt.Errorf("db down") }
	if c := post(body, SignatureHeader([]byte("k"), body), "k2"); c != http.StatusServiceUnavailable || !rc.Dedupe.Add("k2") {
		t.Fatalf("failed handling: %d, key not forgotten", c)
	}
}

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig([]byte(`
namespace: prod
endpoints:
  - name: chatops
    url: https://hooks.example.com/authority
    secret_env: CHATOPS_WEBHOOK_SECRET
    actions: [promote, abort, rollback, pause]
    timeout: 5s
    max_attempts: 5
    backoff_base: 1s
    backoff_max: 30s
`))
	if err != nil {
		t.Fatal(err)
	}
	e := c.Endpoints[0]
	if e.Timeout != 5*time.Second || e.BackoffMax != 30*time.Second || e.QueueSize != DefaultQueueSize || len(e.Actions) != 4 {
		t.Fatalf("%+v", e)
	}
	p, _ := PayloadFromEvent(relEvent(1, 0, "d", "advance_step", true), "")
	if e.Wants(p) {
		t.Fatal("filtered action wanted")
	}
	for _, bad := range []string{
		"endpoints: [{name: a, url: 'http://h/', secret_env: S, colour: red}]",
		"endpoints: [{name: A, url: 'http://h/', secret_env: S}]",
		"endpoints: [{name: a, url: 'http://h/', secret_env: S}, {name: a, url: 'http://h/', secret_env: S}]",
		"endpoints: [{name: a, url: 'http://h/', secret_env: S, actions: [launch]}]",
		"endpoints: [{name: a, url: 'http://h/', secret_env: S, phases: [done]}]",
		"endpoints: [{name: a, url: 'http://h/', secret_env: S, queue_size: 100000}]",
		"endpoints: [{name: a, url: 'http://h/', secret_env: S, max_attempts: 1000}]",
		"endpoints: [{name: a, url: 'http://h/', secret_env: S, backoff_base: 2s, backoff_max: 1s}]",
		"endpoints: [{name: a, url: '/relative', secret_env: S}]",
		"endpoints: []",
		strings.Repeat("#", MaxConfigBytes+1),
	} {
		if _, err := ParseConfig([]byte(bad)); err == nil {
			t.Errorf("accepted: %.80s", bad)
		}
	}
	var many []string
	for i := 0; i <= MaxEndpoints; i++ {
		many = append(many, fmt.Sprintf("{name: e%d, url: 'http://h/', secret_env: S}", i))
	}
	if _, err := ParseConfig([]byte("endpoints: [" + strings.Join(many, ",") + "]")); err == nil {
		t.Error("too many endpoints accepted")
	}
}

func TestBackoffCappedWithJitter(t *testing.T) {
	w := &worker{ep: Endpoint{BackoffBase: 100 * time.Millisecond, BackoffMax: time.Second}}
	for _, c := range []struct {
		j    float64
		n    int
		want time.Duration
	}{{0, 1, 50 * time.Millisecond}, {0.5, 2, 150 * time.Millisecond}, {0, 4, 400 * time.Millisecond},
		{0, 5, 500 * time.Millisecond}, {0, 60, 500 * time.Millisecond}, {0.999999, 60, time.Second - 500*time.Nanosecond}, {1.5, 1, 50 * time.Millisecond}} {
		d := &Dispatcher{opts: Options{Jitter: func() float64 { return c.j }}}
		if got := d.backoff(w, c.n); got != c.want {
			t.Errorf("backoff(j=%v, n=%d) = %v, want %v", c.j, c.n, got, c.want)
		}
	}
}
