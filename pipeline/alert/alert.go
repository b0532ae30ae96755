// Package alert posts alerts to an Alertmanager-compatible webhook: the body
// is the Alertmanager v2 API's list of postable alerts (POST
// /api/v2/alerts), so the URL may be Alertmanager itself
// (http://alertmanager:9093/api/v2/alerts) or any receiver that accepts the
// same JSON.
//
//	err := alert.Post(ctx, url, []alert.Alert{{
//		Labels:      map[string]string{"alertname": "DeployBothRunnersFailed", "severity": "critical"},
//		Annotations: map[string]string{"summary": "both runners failed"},
//		StartsAt:    time.Now(),
//	}})
//
// A post is bounded (a per-request timeout, a few attempts with backoff)
// and its errors never carry the URL's credentials or query string.
package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits on what one post sends.
const (
	// MaxAlerts bounds the alerts of one post.
	MaxAlerts = 1000
	// MaxLabelValueBytes bounds a label value; longer ones are truncated.
	MaxLabelValueBytes = 1024
	// MaxAnnotationBytes bounds an annotation value; longer ones are truncated.
	MaxAnnotationBytes = 8 << 10
	// MaxBodyBytes bounds the encoded request body.
	MaxBodyBytes = 4 << 20
	// maxResponseBytes bounds what is read (and discarded) of a response.
	maxResponseBytes = 64 << 10
	// maxSnippetBytes bounds the part of an error response quoted in errors.
	maxSnippetBytes = 200
)

// Defaults of Options.
const (
	DefaultTimeout  = 10 * time.Second
	DefaultAttempts = 3
	DefaultBackoff  = 500 * time.Millisecond
)

// Alert is one Alertmanager v2 postable alert. Labels identify it (Alertmanager
// groups and deduplicates on them; "alertname" is required), annotations
// describe it. A zero StartsAt or EndsAt is left out (Alertmanager then uses
// the receive time, and the alert stays firing until its resolve timeout).
type Alert struct {
	Labels       map[string]string
	Annotations  map[string]string
	StartsAt     time.Time
	EndsAt       time.Time
	GeneratorURL string
}

// wireAlert is Alert in the v2 API's JSON (RFC 3339 times in UTC).
type wireAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     string            `json:"startsAt,omitempty"`
	EndsAt       string            `json:"endsAt,omitempty"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// MarshalJSON encodes a in the Alertmanager v2 API's form.
func (a Alert) MarshalJSON() ([]byte, error) {
	w := wireAlert{Labels: a.Labels, Annotations: a.Annotations, GeneratorURL: a.GeneratorURL}
	if !a.StartsAt.IsZero() {
		w.StartsAt = a.StartsAt.UTC().Format(time.RFC3339Nano)
	}
	if !a.EndsAt.IsZero() {
		w.EndsAt = a.EndsAt.UTC().Format(time.RFC3339Nano)
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes the v2 API's form (for receivers and tests).
func (a *Alert) UnmarshalJSON(b []byte) error {
	var w wireAlert
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*a = Alert{Labels: w.Labels, Annotations: w.Annotations, GeneratorURL: w.GeneratorURL}
	for _, f := range []struct {
		s   string
		dst *time.Time
	}{{w.StartsAt, &a.StartsAt}, {w.EndsAt, &a.EndsAt}} {
		if f.s == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, f.s)
		if err != nil {
			return err
		}
		*f.dst = t
	}
	return nil
}

// labelName is Prometheus's label name syntax, which Alertmanager enforces.
var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// Validate checks what Alertmanager would refuse: no alerts or too many,
// an alert without an "alertname" label, a malformed label name, EndsAt
// before StartsAt.
func Validate(alerts []Alert) error {
	if len(alerts) == 0 {
		return errors.New("alert: no alerts to post")
	}
	if len(alerts) > MaxAlerts {
		return fmt.Errorf("alert: %d alerts, more than %d", len(alerts), MaxAlerts)
	}
	for i, a := range alerts {
		if a.Labels["alertname"] == "" {
			return fmt.Errorf("alert: alert %d has no alertname label", i)
		}
		for k := range a.Labels {
			if !labelName.MatchString(k) {
				return fmt.Errorf("alert: alert %d: label name %q is not [a-zA-Z_][a-zA-Z0-9_]*", i, truncate(k, 64))
			}
		}
		if !a.StartsAt.IsZero() && !a.EndsAt.IsZero() && a.EndsAt.Before(a.StartsAt) {
			return fmt.Errorf("alert: alert %d ends before it starts", i)
		}
	}
	return nil
}

// Options tune a post. Zero values take the defaults.
type Options struct {
	// Timeout bounds each HTTP request (DefaultTimeout).
	Timeout time.Duration
	// Attempts is how many requests at most (DefaultAttempts); network
	// errors, 408, 429 and 5xx answers are retried, other answers are not.
	Attempts int
	// Backoff is the wait before the second attempt, doubled before each
	// later one (DefaultBackoff).
	Backoff time.Duration
	// Client sends the requests (a client with no redirects followed when
	// nil). Its own Timeout, if any, also applies.
	Client *http.Client
	// Header is added to every request (e.g. Authorization).
	Header http.Header
}

// Post sends alerts to url with the default options.
func Post(ctx context.Context, url string, alerts []Alert) error {
	return PostWithOptions(ctx, url, alerts, Options{})
}

// PostWithOptions sends alerts to rawURL as one JSON list (POST,
// Content-Type application/json) and succeeds on any 2xx answer. Label and
// annotation values are truncated to their bounds. Errors name the URL
// without credentials or query.
func PostWithOptions(ctx context.Context, rawURL string, alerts []Alert, opts Options) error {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("alert: webhook URL %q is not an http(s) URL", Redact(rawURL))
	}
	if err := Validate(alerts); err != nil {
		return err
	}
	body, err := json.Marshal(bounded(alerts))
	if err != nil {
		return fmt.Errorf("alert: encoding: %w", err)
	}
	if len(body) > MaxBodyBytes {
		return fmt.Errorf("alert: body of %d bytes exceeds %d", len(body), MaxBodyBytes)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Attempts <= 0 {
		opts.Attempts = DefaultAttempts
	}
	if opts.Backoff <= 0 {
		opts.Backoff = DefaultBackoff
	}
	hc := opts.Client
	if hc == nil {
		hc = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	where := Redact(rawURL)
	backoff := opts.Backoff
	var last error
	for attempt := 1; attempt <= opts.Attempts; attempt++ {
		if attempt > 1 {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("alert: POST %s: %w (after %d attempt(s); last: %v)", where, ctx.Err(), attempt-1, last)
			case <-t.C:
			}
			backoff *= 2
		}
		retry, err := postOnce(ctx, hc, u, body, opts)
		if err == nil {
			return nil
		}
		last = err
		if !retry {
			break
		}
	}
	return fmt.Errorf("alert: POST %s: %w", where, last)
}

// postOnce sends one request; retry says whether another attempt may help.
func postOnce(ctx context.Context, hc *http.Client, u *url.URL, body []byte, opts Options) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return false, errors.New("building the request failed")
	}
	for k, vs := range opts.Header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text repeats the full URL
		}
		return true, err
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if resp.StatusCode/100 == 2 {
		return false, nil
	}
	msg := fmt.Sprintf("HTTP %d", resp.StatusCode)
	if s := printable(string(snippet), maxSnippetBytes); s != "" {
		msg += ": " + s
	}
	retry = resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500
	return retry, errors.New(msg)
}

// bounded returns alerts with label and annotation values truncated.
func bounded(alerts []Alert) []Alert {
	out := make([]Alert, len(alerts))
	for i, a := range alerts {
		out[i] = a
		out[i].Labels = truncateValues(a.Labels, MaxLabelValueBytes)
		out[i].Annotations = truncateValues(a.Annotations, MaxAnnotationBytes)
	}
	return out
}

func truncateValues(m map[string]string, n int) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = truncate(v, n)
	}
	return out
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// printable replaces control characters (a response is untrusted) and
// bounds the result.
func printable(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	return truncate(strings.TrimSpace(s), n)
}

// Redact returns rawURL without user info, query and fragment, for logs and
// errors (webhook URLs often carry tokens there).
func Redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "<unparsable URL>"
	}
	hadQuery := u.RawQuery != "" || u.ForceQuery
	u.User = nil
	u.RawQuery, u.ForceQuery = "", false
	u.Fragment, u.RawFragment = "", ""
	s := u.String()
	if hadQuery {
		s += "?…"
	}
	return truncate(s, 256)
}
