//go:build failpoints

package failpoint

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Enabled reports whether this binary was built with failpoints.
const Enabled = true

type action struct {
	kind  string // kill | sleep | error | off
	sleep time.Duration
	after int // fire from this hit on (1 = first)
}

var (
	mu     sync.Mutex
	armed  = map[string]action{}
	hits   = map[string]int{}
	loaded sync.Once
)

func load() {
	loaded.Do(func() {
		if spec := os.Getenv("AUTHORITY_FAILPOINTS"); spec != "" {
			if err := Arm(spec); err != nil {
				fmt.Fprintln(os.Stderr, "AUTHORITY_FAILPOINTS:", err)
				os.Exit(2)
			}
		}
	})
}

// Eval counts a hit of the point and performs its armed action.
func Eval(name string) error {
	load()
	mu.Lock()
	hits[name]++
	n := hits[name]
	a, ok := armed[name]
	mu.Unlock()
	if !ok || n < a.after {
		return nil
	}
	switch a.kind {
	case "kill":
		fmt.Fprintf(os.Stderr, "failpoint %s: SIGKILL (hit %d)\n", name, n)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // never returns: no deferred code runs
	case "sleep":
		time.Sleep(a.sleep)
	case "error":
		return fmt.Errorf("%w at %s", ErrInjected, name)
	}
	return nil
}

// Armed reports whether any of the named points is armed with an action
// other than off (whatever its hit count). A caller may use it to reach
// the exact state a point names before evaluating it (promotion's
// pipelined intent, docs/CRASH-MATRIX.md); it never changes what a binary
// without armed points does.
func Armed(names ...string) bool {
	load()
	mu.Lock()
	defer mu.Unlock()
	for _, n := range names {
		if a, ok := armed[n]; ok && a.kind != "off" {
			return true
		}
	}
	return false
}

// Arm parses "name=action;name=action" and arms each point.
func Arm(spec string) error {
	load()
	for _, item := range strings.Split(spec, ";") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, act, ok := strings.Cut(item, "=")
		if !ok || !known(name) {
			return fmt.Errorf("failpoint %q: want one of %v as name=action", item, All)
		}
		a, err := parse(act)
		if err != nil {
			return fmt.Errorf("failpoint %s: %w", name, err)
		}
		mu.Lock()
		if a.kind == "off" {
			delete(armed, name)
		} else {
			armed[name] = a
		}
		mu.Unlock()
	}
	return nil
}

func parse(s string) (action, error) {
	a := action{after: 1}
	if n, rest, ok := strings.Cut(s, "*"); ok {
		v, err := strconv.Atoi(n)
		if err != nil || v < 1 {
			return a, fmt.Errorf("bad hit count %q", n)
		}
		a.after, s = v, rest
	}
	switch {
	case s == "kill", s == "error", s == "off":
		a.kind = s
	case strings.HasPrefix(s, "sleep(") && strings.HasSuffix(s, ")"):
		ms, err := strconv.Atoi(s[len("sleep(") : len(s)-1])
		if err != nil || ms < 0 {
			return a, fmt.Errorf("bad sleep %q", s)
		}
		a.kind, a.sleep = "sleep", time.Duration(ms)*time.Millisecond
	default:
		return a, fmt.Errorf("unknown action %q (kill, sleep(MS), error, off)", s)
	}
	return a, nil
}

func known(name string) bool {
	for _, n := range append(append(All[:len(All):len(All)], Quorum...), Recovery...) {
		if n == name {
			return true
		}
	}
	return false
}

// Hits returns every point's hit count so far.
func Hits() map[string]int {
	mu.Lock()
	defer mu.Unlock()
	out := make(map[string]int, len(hits))
	for k, v := range hits {
		out[k] = v
	}
	return out
}

// Handler serves GET (hit counts and armed points as JSON) and POST
// (body: an arming spec) on the admin endpoint. It refuses any caller not
// on a loopback address.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			http.Error(w, "failpoints: loopback only", http.StatusForbidden)
			return
		}
		if r.Method == http.MethodPost {
			buf := make([]byte, 4096)
			n, _ := r.Body.Read(buf)
			if err := Arm(string(buf[:n])); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
		}
		mu.Lock()
		arm := map[string]string{}
		for k, a := range armed {
			arm[k] = fmt.Sprintf("%d*%s(%v)", a.after, a.kind, a.sleep)
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"hits": Hits(), "armed": arm})
	})
}
