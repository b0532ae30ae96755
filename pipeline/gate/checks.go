package gate

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/expr-lang/expr"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// ---- http ----

type httpChecker struct {
	c      *HTTPCheck
	header http.Header
	client *http.Client
	tr     *http.Transport
}

func newHTTPChecker(c *HTTPCheck, secretHeaders map[string]string) (*httpChecker, error) {
	if c.Condition != "" && c.program == nil { // a Config built by hand
		p, err := compileCondition(c.Condition)
		if err != nil {
			return nil, fmt.Errorf("http.condition: %w", err)
		}
		c.program = p
	}
	h := http.Header{}
	for k, v := range c.Headers {
		h.Set(k, v)
	}
	for k, v := range secretHeaders {
		h.Set(k, v)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true // every attempt dials anew, as a new client would
	return &httpChecker{c: c, header: h, tr: tr, client: &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}, nil
}

func (h *httpChecker) close() { h.tr.CloseIdleConnections() }

func (h *httpChecker) run(ctx context.Context) (string, error) {
	method := h.c.Method
	if method == "" {
		method = http.MethodGet
	}
	want := h.c.ExpectStatus
	if want == 0 {
		want = DefaultHTTPStatus
	}
	req, err := http.NewRequestWithContext(ctx, method, h.c.URL, nil)
	if err != nil {
		return "", errors.New("invalid request")
	}
	for k, vs := range h.header {
		if strings.EqualFold(k, "Host") {
			req.Host = vs[0]
			continue
		}
		req.Header[k] = vs
	}
	start := time.Now()
	resp, err := h.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text repeats the full URL
		}
		return "", fmt.Errorf("%s %s: %w", method, redactURL(h.c.URL), err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes+1))
	latency := time.Since(start)
	if err != nil {
		return "", fmt.Errorf("%s %s: reading the body: %w", method, redactURL(h.c.URL), err)
	}
	if len(body) > MaxBodyBytes {
		return "", fmt.Errorf("%s %s: response body larger than %d bytes", method, redactURL(h.c.URL), MaxBodyBytes)
	}
	if resp.StatusCode != want {
		return "", fmt.Errorf("HTTP %d, want %d%s", resp.StatusCode, want, snippet(body))
	}
	if h.c.program == nil {
		return "", nil
	}
	env := condEnv{Status: resp.StatusCode, Body: parseBody(resp.Header.Get("Content-Type"), body),
		Headers: map[string]string{}, LatencyMS: float64(latency.Microseconds()) / 1000}
	for k, vs := range resp.Header {
		env.Headers[strings.ToLower(k)] = strings.Join(vs, ", ")
	}
	out, err := expr.Run(h.c.program, env)
	if err != nil {
		return "", fmt.Errorf("condition %q: %s", clip(h.c.Condition, 200), clip(err.Error(), 200))
	}
	if ok, _ := out.(bool); !ok {
		return "", fmt.Errorf("condition %q is false (HTTP %d%s)", clip(h.c.Condition, 200), resp.StatusCode, snippet(body))
	}
	return "", nil
}

// parseBody is the JSON value of a JSON body (by content type, or when it
// parses as a JSON object or array), else the text.
func parseBody(contentType string, body []byte) any {
	mt, _, _ := mime.ParseMediaType(contentType)
	trimmed := bytes.TrimSpace(body)
	isJSON := mt == "application/json" || strings.HasSuffix(mt, "+json") ||
		(len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '['))
	if isJSON {
		var v any
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if dec.Decode(&v) == nil {
			return numbersToFloat(v)
		}
	}
	return string(body)
}

// numbersToFloat turns json.Number into int (when integral) or float64, so
// conditions compare numbers naturally (body.count > 0).
func numbersToFloat(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return int(i)
		}
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = numbersToFloat(e)
		}
	case []any:
		for i, e := range x {
			x[i] = numbersToFloat(e)
		}
	}
	return v
}

// snippet quotes the start of a response body for an error.
func snippet(body []byte) string {
	s := strings.TrimSpace(printable(string(body)))
	if s == "" {
		return ""
	}
	return "; body: " + clip(s, 120)
}

// redactURL is a URL without user info and query, for errors.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparsable URL>"
	}
	q := u.RawQuery != ""
	u.User, u.RawQuery, u.Fragment, u.RawFragment = nil, "", "", ""
	s := u.String()
	if q {
		s += "?…"
	}
	return clip(s, 256)
}

// ---- postgres ----

type postgresChecker struct{ cfg *pgx.ConnConfig }

func newPostgresChecker(c *PostgresCheck, password string) (*postgresChecker, error) {
	cfg, err := c.connConfig(password)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return &postgresChecker{cfg: cfg}, nil
}

func (p *postgresChecker) close() {}

func (p *postgresChecker) run(ctx context.Context) (string, error) {
	conn, err := pgx.ConnectConfig(ctx, p.cfg.Copy())
	if err != nil {
		return "", err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return "", fmt.Errorf("SELECT 1: %w", err)
	}
	if one != 1 {
		return "", fmt.Errorf("SELECT 1 returned %d", one)
	}
	return "", nil
}

// ---- redis ----

type redisChecker struct{ opts *redis.Options }

// quietRedis silences go-redis's own log (a process-wide setting): its
// pool prints every failed dial to stderr, which the gate already reports
// in its result.
var quietRedis sync.Once

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

func newRedisChecker(c *RedisCheck, password string, attemptTimeout time.Duration) *redisChecker {
	quietRedis.Do(func() { redis.SetLogger(discardLogger{}) })
	o := &redis.Options{
		Addr:     c.Addr,
		Username: c.Username,
		Password: password,
		DB:       c.DB,
		// RESP2 with AUTH/SELECT: works with every Redis version.
		Protocol:              2,
		MaxRetries:            -1, // the gate retries, with its own backoff
		DialerRetries:         1,  // one dial per attempt (go-redis dials 5 times by default)
		PoolSize:              1,
		DialTimeout:           attemptTimeout,
		ContextTimeoutEnabled: true,
		DisableIdentity:       true,
	}
	if c.TLS {
		host, _, _ := net.SplitHostPort(c.Addr)
		o.TLSConfig = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	}
	return &redisChecker{opts: o}
}

func (r *redisChecker) close() {}

func (r *redisChecker) run(ctx context.Context) (string, error) {
	c := redis.NewClient(r.opts)
	defer c.Close()
	got, err := c.Ping(ctx).Result()
	if err != nil {
		return "", fmt.Errorf("PING %s: %w", r.opts.Addr, err)
	}
	if got != "PONG" {
		return "", fmt.Errorf("PING %s: answered %q, want PONG", r.opts.Addr, clip(printable(got), 64))
	}
	return "", nil
}

// ---- command ----

type commandChecker struct{ c *CommandCheck }

func newCommandChecker(c *CommandCheck) *commandChecker { return &commandChecker{c: c} }

func (c *commandChecker) close() {}

// waitDelay bounds the wait for a command's output once it exited or was
// killed (a grandchild may hold the pipe).
const waitDelay = 2 * time.Second

func (c *commandChecker) run(ctx context.Context) (string, error) {
	if len(c.c.Argv) == 0 {
		return "", errors.New("no command")
	}
	cmd := exec.CommandContext(ctx, c.c.Argv[0], c.c.Argv[1:]...)
	cmd.Dir = c.c.Dir
	var out tailBuffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// Its own process group, so the whole smoke test (its children too) is
	// killed at the attempt timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = waitDelay
	err := cmd.Run()
	output := out.String()
	switch {
	case ctx.Err() != nil && cmd.ProcessState != nil && !cmd.ProcessState.Success():
		return output, fmt.Errorf("killed (process group) at the attempt timeout: %w", ctx.Err())
	case err == nil:
		return output, nil
	case errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil && cmd.ProcessState.Success():
		return output, nil // exited 0; a child kept the output open
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		err = errors.New(ee.ProcessState.String())
	}
	if t := strings.TrimSpace(printable(tail(output, 200))); t != "" {
		return output, fmt.Errorf("%s: %w; output: …%s", clip(c.c.Argv[0], 128), err, t)
	}
	return output, fmt.Errorf("%s: %w", clip(c.c.Argv[0], 128), err)
}

// tail is the last n bytes of s, starting on a rune boundary.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	for len(s) > 0 && s[0]&0xC0 == 0x80 {
		s = s[1:]
	}
	return s
}

// tailBuffer keeps the last MaxOutputBytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(p)
	if len(p) >= MaxOutputBytes {
		b.buf = append(b.buf[:0], p[len(p)-MaxOutputBytes:]...)
		return n, nil
	}
	b.buf = append(b.buf, p...)
	if len(b.buf) > 2*MaxOutputBytes {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-MaxOutputBytes:]...)
	}
	return n, nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return tail(string(b.buf), MaxOutputBytes)
}
