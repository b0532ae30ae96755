package gate

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseDefaultsAndOverrides(t *testing.T) {
	cfg := parse(t, `
env: staging
defaults:
  retries: 5
  backoff: {initial: 2s}
services:
  - name: api
    http: {url: "http://127.0.0.1:8080/health"}
  - name: db
    timeout: 1m
    attempt_timeout: 2m
    retries: 0
    severity: warning
    backoff: {max: 10s, multiplier: 1.5}
    postgres: {host: db.internal, user: app, dbname: app, password_env: PG_PW}
`)
	if cfg.Severity != "critical" || cfg.Concurrency != DefaultConcurrency || cfg.Env != "staging" {
		t.Fatalf("top level: %+v", cfg)
	}
	api, db := cfg.Services[0], cfg.Services[1]
	wantAPI := Policy{Timeout: 5 * time.Minute, AttemptTimeout: 30 * time.Second, Retries: 5,
		Backoff: Backoff{Initial: 2 * time.Second, Max: 30 * time.Second, Multiplier: 2}}
	if api.Policy != wantAPI || api.Severity != "critical" || api.HTTP.Method != "GET" || api.HTTP.ExpectStatus != 200 || api.Type() != TypeHTTP {
		t.Errorf("api: %+v %+v", api.Policy, api.HTTP)
	}
	wantDB := Policy{Timeout: time.Minute, AttemptTimeout: time.Minute, Retries: 0,
		Backoff: Backoff{Initial: 2 * time.Second, Max: 10 * time.Second, Multiplier: 1.5}}
	if db.Policy != wantDB || db.Severity != "warning" || db.Postgres.Port != 5432 || db.Type() != TypePostgres {
		t.Errorf("db: %+v %+v", db.Policy, db.Postgres)
	}
}

func TestParseErrors(t *testing.T) {
	svc := "services:\n  - name: a\n    command: {argv: [true]}\n"
	for _, c := range []struct{ name, yaml, want string }{
		{"unknown top-level field", "retry: 3\n" + svc, "line 1: field retry not found"},
		{"unknown service field", "services:\n  - name: a\n    command: {argv: [true]}\n    timout: 1s\n", "line 4: field timout not found"},
		{"field of another check", "services:\n  - name: a\n    redis: {addr: 'h:1', url: x}\n", "line 3: field url not found"},
		{"two documents", svc + "---\n" + svc, "gates.yaml:4: more than one YAML document"},
		{"no services", "env: x\n", "no services"},
		{"timeout above the max", "defaults: {timeout: 6m}\n" + svc, "timeout 6m0s: must be in (0, 5m0s]"},
		{"integer duration", "defaults: {timeout: 5}\n" + svc, "cannot unmarshal"},
		{"negative retries", "services:\n  - name: a\n    retries: -1\n    command: {argv: [true]}\n", "gates.yaml:2: service \"a\": retries -1"},
		{"bad multiplier", "defaults: {backoff: {multiplier: 0.5}}\n" + svc, "backoff.multiplier"},
		{"max below initial", "defaults: {backoff: {initial: 2s, max: 1s}}\n" + svc, "backoff.max"},
		{"two checks", "services:\n  - name: a\n    command: {argv: [true]}\n    redis: {addr: 'h:1'}\n", "exactly one of"},
		{"no check", "services:\n  - name: a\n", "exactly one of"},
		{"bad name", "services:\n  - name: 'a b'\n    command: {argv: [true]}\n", "name must match"},
		{"duplicate", svc + "  - name: a\n    command: {argv: [true]}\n", "gates.yaml:4: service \"a\": name already used by service 1"},
		{"dsn password URL", "services:\n  - name: a\n    postgres: {dsn: 'postgres://u:hunter2@h/db'}\n", "carries a password"},
		{"dsn password kv", "services:\n  - name: a\n    postgres: {dsn: 'host=h password=hunter2'}\n", "carries a password"},
		{"dsn and host", "services:\n  - name: a\n    postgres: {dsn: 'host=h', host: h}\n", "not both"},
		{"bad env ref", "services:\n  - name: a\n    redis: {addr: 'h:1', password_env: 'A-B'}\n", "not an environment variable name"},
		{"redis addr", "services:\n  - name: a\n    redis: {addr: nohost}\n", "not host:port"},
		{"url user info", "services:\n  - name: a\n    http: {url: 'http://u:p@h/'}\n", "user info"},
		{"url scheme", "services:\n  - name: a\n    http: {url: 'ftp://h/'}\n", "not an absolute http(s) URL"},
		{"condition syntax", "services:\n  - name: a\n    http: {url: 'http://h/', condition: 'body.status =='}\n", "http.condition"},
		{"condition unknown var", "services:\n  - name: a\n    http: {url: 'http://h/', condition: 'bdy == 1'}\n", "unknown name bdy"},
		{"condition not bool", "services:\n  - name: a\n    http: {url: 'http://h/', condition: 'status + 1'}\n", "http.condition"},
		{"expect status", "services:\n  - name: a\n    http: {url: 'http://h/', expect_status: 42}\n", "not an HTTP status"},
		{"secret header without env", "services:\n  - name: a\n    http: {url: 'http://h/', secret_headers: {Authorization: ''}}\n", "give an environment variable name"},
		{"empty argv", "services:\n  - name: a\n    command: {argv: []}\n", "command.argv"},
		{"webhook", "alert_webhook: 'mailto:x'\n" + svc, "alert_webhook"},
		{"concurrency", "concurrency: 65\n" + svc, "concurrency 65"},
		{"label control char", "env: \"a\\nb\"\n" + svc, "env: contains non-printable"},
		{"severity", "severity: 'crit ical'\n" + svc, "severity"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.yaml), "gates.yaml")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			if strings.Contains(fmt.Sprint(err), "hunter2") {
				t.Fatalf("the error repeats the password: %v", err)
			}
		})
	}
}

func TestLoadBounds(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte("# "+strings.Repeat("x", MaxConfigBytes)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("big file: %v", err)
	}
	var b strings.Builder
	b.WriteString("services:\n")
	for i := range MaxServices + 1 {
		fmt.Fprintf(&b, "  - {name: s%d, command: {argv: [true]}}\n", i)
	}
	many := filepath.Join(dir, "many.yaml")
	if err := os.WriteFile(many, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(many); err == nil || !strings.Contains(err.Error(), "257 services, more than 256") {
		t.Fatalf("too many services: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "absent.yaml")); err == nil {
		t.Fatal("absent file loaded")
	}
}

// The documented example parses.
func TestDocExampleParses(t *testing.T) {
	b, err := os.ReadFile("../../docs/HEALTH-GATES.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, "```yaml\n")
	if i < 0 {
		t.Fatal("no yaml example in docs/HEALTH-GATES.md")
	}
	rest := doc[i+len("```yaml\n"):]
	j := strings.Index(rest, "```")
	if j < 0 {
		t.Fatal("unterminated example")
	}
	cfg, err := Parse([]byte(rest[:j]), "HEALTH-GATES.md example")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Services) < 4 {
		t.Fatalf("the example shows %d services, want every type", len(cfg.Services))
	}
}
