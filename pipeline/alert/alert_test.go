package alert

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// receiver records requests and answers the statuses given in turn (200
// after them).
type receiver struct {
	srv      *httptest.Server
	mu       sync.Mutex
	bodies   []string
	statuses []int
}

func newReceiver(t *testing.T, statuses ...int) *receiver {
	r := &receiver{statuses: statuses}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.bodies = append(r.bodies, req.Method+" "+req.URL.Path+" "+req.Header.Get("Content-Type")+" "+req.Header.Get("Authorization")+"\n"+string(b))
		status := http.StatusOK
		if len(r.statuses) > 0 {
			status, r.statuses = r.statuses[0], r.statuses[1:]
		}
		r.mu.Unlock()
		w.WriteHeader(status)
		_, _ = io.WriteString(w, "answer\x00with control")
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bodies...)
}

var fast = Options{Timeout: 2 * time.Second, Attempts: 3, Backoff: 10 * time.Millisecond}

func sample() []Alert {
	return []Alert{{
		Labels:      map[string]string{"alertname": "DeployBothRunnersFailed", "severity": "critical", "env": "prod"},
		Annotations: map[string]string{"summary": "both runners failed"},
		StartsAt:    time.Date(2026, 12, 4, 21, 0, 0, 5, time.FixedZone("x", 3600)),
	}}
}

func TestPostPayload(t *testing.T) {
	r := newReceiver(t)
	opts := fast
	opts.Header = http.Header{"Authorization": {"Bearer t"}}
	if err := PostWithOptions(context.Background(), r.srv.URL+"/api/v2/alerts", sample(), opts); err != nil {
		t.Fatal(err)
	}
	got := r.got()
	want := "POST /api/v2/alerts application/json Bearer t\n" +
		`[{"labels":{"alertname":"DeployBothRunnersFailed","env":"prod","severity":"critical"},` +
		`"annotations":{"summary":"both runners failed"},"startsAt":"2026-12-04T20:00:00.000000005Z"}]`
	if len(got) != 1 || got[0] != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	var back []Alert
	if err := json.Unmarshal([]byte(strings.SplitN(got[0], "\n", 2)[1]), &back); err != nil || !back[0].StartsAt.Equal(sample()[0].StartsAt) {
		t.Fatalf("round trip: %v %+v", err, back)
	}
}

func TestPostRetries(t *testing.T) {
	r := newReceiver(t, 503, 429)
	if err := PostWithOptions(context.Background(), r.srv.URL, sample(), fast); err != nil {
		t.Fatal(err)
	}
	if n := len(r.got()); n != 3 {
		t.Fatalf("%d requests, want 3 (503, 429, 200)", n)
	}

	r = newReceiver(t, 500, 500, 500, 500)
	err := PostWithOptions(context.Background(), r.srv.URL, sample(), fast)
	if err == nil || !strings.Contains(err.Error(), "HTTP 500: answer with control") {
		t.Fatalf("error %v", err)
	}
	if n := len(r.got()); n != 3 {
		t.Fatalf("%d requests, want the 3 attempts", n)
	}

	r = newReceiver(t, 400)
	if err := PostWithOptions(context.Background(), r.srv.URL, sample(), fast); err == nil || !strings.Contains(err.Error(), "HTTP 400") {
		t.Fatalf("error %v", err)
	}
	if n := len(r.got()); n != 1 {
		t.Fatalf("%d requests; a 400 is not retried", n)
	}
}

func TestPostErrorsHideCredentials(t *testing.T) {
	r := newReceiver(t, 500, 500, 500)
	u := strings.Replace(r.srv.URL, "http://", "http://user:pa55word@", 1) + "/hook?token=t0ken"
	err := PostWithOptions(context.Background(), u, sample(), fast)
	if err == nil || strings.Contains(err.Error(), "pa55word") || strings.Contains(err.Error(), "t0ken") || !strings.Contains(err.Error(), "/hook?…") {
		t.Fatalf("error %v", err)
	}
	// A network error (nothing listens) does not repeat the URL either.
	r.srv.Close()
	err = PostWithOptions(context.Background(), u, sample(), fast)
	if err == nil || strings.Contains(err.Error(), "t0ken") || strings.Contains(err.Error(), "pa55word") {
		t.Fatalf("error %v", err)
	}
}

func TestValidate(t *testing.T) {
	for name, alerts := range map[string][]Alert{
		"none":         nil,
		"no alertname": {{Labels: map[string]string{"severity": "x"}}},
		"bad label":    {{Labels: map[string]string{"alertname": "a", "bad-name": "x"}}},
		"ends first":   {{Labels: map[string]string{"alertname": "a"}, StartsAt: time.Unix(10, 0), EndsAt: time.Unix(5, 0)}},
		"too many":     make([]Alert, MaxAlerts+1),
	} {
		if err := Post(context.Background(), "http://127.0.0.1:1/", alerts); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if err := Post(context.Background(), "ftp://h/", sample()); err == nil {
		t.Error("ftp URL accepted")
	}
}

func TestValuesBounded(t *testing.T) {
	r := newReceiver(t)
	a := sample()
	a[0].Labels["service"] = strings.Repeat("l", 5000)
	a[0].Annotations["description"] = strings.Repeat("é", 10000)
	if err := PostWithOptions(context.Background(), r.srv.URL, a, fast); err != nil {
		t.Fatal(err)
	}
	var back []Alert
	if err := json.Unmarshal([]byte(strings.SplitN(r.got()[0], "\n", 2)[1]), &back); err != nil {
		t.Fatal(err)
	}
	if l, d := back[0].Labels["service"], back[0].Annotations["description"]; len(l) > MaxLabelValueBytes || len(d) > MaxAnnotationBytes || !strings.HasSuffix(d, "…") {
		t.Fatalf("label %d bytes, description %d bytes", len(l), len(d))
	}
	if len(a[0].Labels["service"]) != 5000 {
		t.Fatal("the caller's alert was modified")
	}
}

func TestPostCancelled(t *testing.T) {
	r := newReceiver(t, 503, 503, 503)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := PostWithOptions(ctx, r.srv.URL, sample(), Options{Attempts: 3, Backoff: time.Hour}); err == nil {
		t.Fatal("no error")
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"http://u:p@am:9093/api/v2/alerts?token=x#f": "http://am:9093/api/v2/alerts?…",
		"https://am/api/v2/alerts":                   "https://am/api/v2/alerts",
		"http://[::1":                                "<unparsable URL>",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}
