package actuator

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func writeScript(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "act.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o700); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestScriptEnvironmentAndFence(t *testing.T) {
	ctx := ctxT(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "calls")
	sh := writeScript(t, `echo "$AUTHORITY_DOMAIN $AUTHORITY_EPOCH $AUTHORITY_CANARY $AUTHORITY_WEIGHT $HOME" >> "$1"`+"\n")
	s, err := NewScript(ScriptConfig{Argv: []string{sh, out}, Env: []string{"PATH=/usr/bin:/bin"}})
	if err != nil {
		t.Fatal(err)
	}
	g := newGateway(t, filepath.Join(dir, "fence.json"), s, nil)
	if err := g.SetWeight(ctx, Call{Domain: "rel/web", Epoch: 5, Canary: "sha256:ab12", Weight: 25}); err != nil {
		t.Fatal(err)
	}
	if err := g.SetWeight(ctx, Call{Domain: "rel/web", Epoch: 4, Canary: "x", Weight: 100}); !errors.Is(err, ErrFenced) {
		t.Fatalf("stale call: %v, want ErrFenced", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// One run (the fenced call never ran the script); the parent's HOME is not passed.
	if string(b) != "rel/web 5 sha256:ab12 25 \n" {
		t.Fatalf("script saw %q", b)
	}
}

func TestScriptNoShell(t *testing.T) {
	ctx := ctxT(t)
	dir := t.TempDir()
	name := filepath.Join(dir, "$(id);x")
	s, err := NewScript(ScriptConfig{Argv: []string{"/usr/bin/touch", name}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetWeight(ctx, Call{Domain: "d", Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(name); err != nil {
		t.Fatalf("the argument was not passed literally: %v", err)
	}
}

func TestScriptFailureAndBoundedOutput(t *testing.T) {
	ctx := ctxT(t)
	sh := writeScript(t, "i=0; while [ $i -lt 2000 ]; do echo 'noise noise noise'; i=$((i+1)); done; echo 'the reason' >&2; exit 3\n")
	s, err := NewScript(ScriptConfig{Argv: []string{sh}})
	if err != nil {
		t.Fatal(err)
	}
	err = s.SetWeight(ctx, Call{Domain: "d", Epoch: 1})
	if !errors.Is(err, ErrScript) || !strings.Contains(err.Error(), "the reason") || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("got %v", err)
	}
	if len(err.Error()) > maxScriptTail+512 {
		t.Fatalf("error is %d bytes: output not bounded", len(err.Error()))
	}
}

// A script over its timeout is killed with its whole process group.
func TestScriptTimeoutKillsProcessGroup(t *testing.T) {
	ctx := ctxT(t)
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	sh := writeScript(t, `/bin/sleep 60 & echo $! > "$1"; wait`+"\n")
	s, err := NewScript(ScriptConfig{Argv: []string{sh, pidFile}, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	err = s.SetWeight(ctx, Call{Domain: "d", Epoch: 1})
	if !errors.Is(err, ErrScript) || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("got %v, want ErrScript (killed)", err)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		// Gone, or a zombie awaiting its new parent's reaping.
		st, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) || strings.Contains(string(st), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the script's child %d outlived the timeout", pid)
		}
		time.Sleep(10 * time.Millisecond) // polling an observable condition, bounded above
	}
}

func TestScriptConfigRefusals(t *testing.T) {
	for _, cfg := range []ScriptConfig{
		{}, {Argv: []string{""}}, {Argv: []string{"/bin/true"}, Env: []string{"AUTHORITY_EPOCH=9"}},
		{Argv: []string{"/bin/true"}, Env: []string{"NOEQUALS"}}, {Argv: []string{"/bin/true", "a\x00b"}},
		{Argv: make([]string, maxArgv+1)},
	} {
		if _, err := NewScript(cfg); err == nil {
			t.Fatalf("%+v accepted", cfg)
		}
	}
}

func TestWebhook(t *testing.T) {
	ctx := ctxT(t)
	var (
		mu   sync.Mutex
		got  []WebhookPayload
		fail = map[uint64]int{}
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p WebhookPayload
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&p); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, p)
		code := fail[p.Epoch]
		mu.Unlock()
		switch code {
		case 0:
			w.WriteHeader(http.StatusNoContent)
		case http.StatusFound:
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case -1: // block until the client gives up
			<-r.Context().Done()
		default:
			w.WriteHeader(code)
			_, _ = io.WriteString(w, strings.Repeat("x", 100000))
		}
	}))
	t.Cleanup(srv.Close)
	wh, err := NewWebhook(WebhookConfig{URL: srv.URL + "/shift", Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	g := newGateway(t, filepath.Join(t.TempDir(), "fence.json"), wh, nil)
	if err := g.SetWeight(ctx, Call{Domain: "rel/web", Epoch: 2, Canary: "v2", Weight: 30}); err != nil {
		t.Fatal(err)
	}
	if err := g.SetWeight(ctx, Call{Domain: "rel/web", Epoch: 1, Canary: "v2", Weight: 100}); !errors.Is(err, ErrFenced) {
		t.Fatalf("stale call: %v", err)
	}
	mu.Lock()
	if len(got) != 1 || got[0] != (WebhookPayload{Domain: "rel/web", Epoch: 2, Canary: "v2", Weight: 30}) {
		t.Fatalf("webhook saw %+v", got)
	}
	fail[3], fail[4], fail[5] = http.StatusInternalServerError, http.StatusFound, -1
	mu.Unlock()
	err = wh.SetWeight(ctx, Call{Domain: "d", Epoch: 3})
	if !errors.Is(err, ErrWebhook) || !strings.Contains(err.Error(), "status 500") || len(err.Error()) > maxWebhookQuote+256 {
		t.Fatalf("500: %.300v", err)
	}
	if err := wh.SetWeight(ctx, Call{Domain: "d", Epoch: 4}); !errors.Is(err, ErrWebhook) || !strings.Contains(err.Error(), "status 302") {
		t.Fatalf("redirect: %v (redirects are not followed)", err)
	}
	if err := wh.SetWeight(ctx, Call{Domain: "d", Epoch: 5}); !errors.Is(err, ErrWebhook) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("blocked webhook: %v, want a deadline error", err)
	}
	for _, u := range []string{"", "ftp://x/", "/relative", "http://"} {
		if _, err := NewWebhook(WebhookConfig{URL: u}); err == nil {
			t.Fatalf("URL %q accepted", u)
		}
	}
}
