// Package probetest is a sample HTTP application with login and sessions,
// served on loopback by tests: the target the probe flows of
// deploy/probes/sample-app.yaml are written for.
package probetest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/aerodb/authority/probe/clock"
)

// Password is the sample app's password for user probe-bot. Tests put it
// in the probe's environment and check it never appears in any output.
const Password = "s3cr3t-Pa55w0rd-7f1c"

// App is the sample application.
type App struct {
	mu       sync.Mutex
	srv      *httptest.Server
	clk      *clock.Fake
	latency  time.Duration
	tokens   map[string]bool
	sessions map[string]bool
	seq      int
	broken   bool
	reject   bool
	logins   int
	requests int
}

// Start serves the app on 127.0.0.1. If clk is not nil, each request
// advances it by latency (deterministic latencies without sleeping).
func Start(clk *clock.Fake, latency time.Duration) *App {
	a := &App{clk: clk, latency: latency, tokens: map[string]bool{}, sessions: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /login", a.login)
	mux.HandleFunc("GET /api/items", a.auth(a.items))
	mux.HandleFunc("GET /api/items/{id}", a.auth(a.item))
	mux.HandleFunc("POST /api/cart", a.cart)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.requests++
		a.mu.Unlock()
		if a.clk != nil && a.latency > 0 {
			a.clk.Advance(a.latency)
		}
		mux.ServeHTTP(w, r)
	}))
	return a
}

// URL is the app's base URL.
func (a *App) URL() string { return a.srv.URL }

// Close stops the server.
func (a *App) Close() { a.srv.Close() }

// ExpireSessions invalidates every token and session server-side.
func (a *App) ExpireSessions() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tokens = map[string]bool{}
	a.sessions = map[string]bool{}
}

// SetBroken makes GET /api/items/{id} answer 500.
func (a *App) SetBroken(b bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.broken = b
}

// SetRejectTokens makes every authenticated endpoint answer 401, even
// right after a login.
func (a *App) SetRejectTokens(b bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.reject = b
}

// Logins counts successful logins.
func (a *App) Logins() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.logins
}

// Requests counts requests served.
func (a *App) Requests() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.requests
}

func (a *App) login(w http.ResponseWriter, r *http.Request) {
	var in struct{ User, Password string }
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&in); err != nil {
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	if in.User != "probe-bot" || in.Password != Password {
		http.Error(w, `{"error":"bad credentials"}`, http.StatusForbidden)
		return
	}
	a.mu.Lock()
	a.seq++
	a.logins++
	tok := fmt.Sprintf("tok-%06d-e1b2c3", a.seq)
	sess := fmt.Sprintf("sess-%06d-9a8b7c", a.seq)
	a.tokens[tok] = true
	a.sessions[sess] = true
	a.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: "session", Value: sess, Path: "/", HttpOnly: true})
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"token": %q, "expires_in": 300}`, tok)
}

func (a *App) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		a.mu.Lock()
		ok := a.tokens[tok] && !a.reject
		a.mu.Unlock()
		if !ok {
			http.Error(w, `{"error":"unauthorized"}`, http.StatusUnauthorized)
			return
		}
		h(w, r)
	}
}

func (a *App) items(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, `{"items": [{"id": 7, "name": "widget"}, {"id": 8, "name": "gadget"}]}`)
}

func (a *App) item(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	broken := a.broken
	a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if broken {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, `{"error": "database unavailable"}`)
		return
	}
	if r.PathValue("id") != "7" {
		http.Error(w, `{"error":"not found"}`, http.StatusNotFound)
		return
	}
	fmt.Fprint(w, `{"id": 7, "name": "widget", "price": 3}`)
}

func (a *App) cart(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie("session")
	a.mu.Lock()
	ok := err == nil && a.sessions[c.Value]
	a.seq++
	id := a.seq
	a.mu.Unlock()
	if !ok {
		http.Error(w, `{"error":"no session"}`, http.StatusUnauthorized)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"cart_id": "cart-%d"}`, id)
}
