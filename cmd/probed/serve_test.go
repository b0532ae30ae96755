package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/aerodb/authority/probe/probetest"
)

// TestServeSignVerify starts `probed serve` against the sample app, fetches
// a signed verdict and checks it with `probed verify`; a tampered copy and
// the wrong key fail with exit status 1.
func TestServeSignVerify(t *testing.T) {
	app := probetest.Start(nil, 0)
	defer app.Close()
	t.Setenv("PROBE_STAGING_PASSWORD", probetest.Password)
	dir := t.TempDir()
	key := filepath.Join(dir, "probe")
	if code, out, errOut := runMain("keygen", "--out", key); code != 0 || !strings.Contains(out, "keyid") {
		t.Fatalf("keygen: %d %s %s", code, out, errOut)
	}
	if code, _, _ := runMain("keygen", "--out", key); code == 0 {
		t.Fatal("keygen overwrote an existing key")
	}
	events := filepath.Join(dir, "events.jsonl")
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		done <- MainContext(ctx, append([]string{"serve", "--env", "staging", "--listen", "127.0.0.1:0", "--target", app.URL(),
			"--events", events, "--signing-key", key + ".key"}, sampleFiles...), io.Discard, pw)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	m := regexp.MustCompile(`listening on (http://\S+)`).FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("no address in %q", line)
	}
	base := m[1]
	for _, p := range []string{"/healthz", "/metrics", "/", "/v1/slos"} {
		resp, err := http.Get(base + p)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %v %v", p, resp, err)
		}
		resp.Body.Close()
	}
	resp, err := http.Get(base + "/v1/verdicts/health?window=1m&format=dsse")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("verdict: %v %v", resp, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("serve exit %d", code)
	}
	signed := filepath.Join(dir, "verdict.json")
	os.WriteFile(signed, body, 0o600)
	code, out, errOut := runMain("verify", "--key", key+".pub", signed)
	t.Logf("verify: %s%s", out, errOut)
	if code != 0 || !strings.Contains(out, "OK: probe-flow:health@staging = ") {
		t.Fatalf("verify exit %d", code)
	}
	// Tamper: rewrite the window inside the signed payload.
	var env dsse.Envelope
	json.Unmarshal(body, &env)
	payload, _ := env.DecodeB64Payload()
	env.Payload = base64.StdEncoding.EncodeToString([]byte(strings.Replace(string(payload), `"window":"1m0s"`, `"window":"6h0m0s"`, 1)))
	forged, _ := json.Marshal(env)
	os.WriteFile(signed, forged, 0o600)
	if code, _, errOut := runMain("verify", "--key", key+".pub", signed); code != 1 || !strings.Contains(errOut, "FAILED") {
		t.Fatalf("tampered verdict: exit %d %s", code, errOut)
	}
	other := filepath.Join(dir, "other")
	runMain("keygen", "--out", other)
	os.WriteFile(signed, body, 0o600)
	if code, _, _ := runMain("verify", "--key", other+".pub", signed); code != 1 {
		t.Fatalf("wrong key: exit %d", code)
	}
	data, _ := os.ReadFile(events)
	if strings.Contains(string(data), probetest.Password) {
		t.Fatal("password in events")
	}
}
