package webhook

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docs/RELEASE-WEBHOOKS.md: the example payload is what PayloadFromEvent
// produces, its documented signature is right, and the shell snippet
// (openssl) verifies it and refuses a forged one.
func TestDocExampleVerifies(t *testing.T) {
	doc, err := os.ReadFile("../../docs/RELEASE-WEBHOOKS.md")
	if err != nil {
		t.Fatal(err)
	}
	block := func(lang string) string {
		m := regexp.MustCompile("(?s)```" + lang + "\n(.*?)```").FindSubmatch(doc)
		if m == nil {
			t.Fatalf("no %s block", lang)
		}
		return string(m[1])
	}
	var body bytes.Buffer
	if err := json.Compact(&body, []byte(block("json"))); err != nil {
		t.Fatal(err)
	}
	var p Payload
	if err := json.Unmarshal(body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	if again, _ := p.Encode(); !bytes.Equal(again, body.Bytes()) {
		t.Fatalf("the documented payload is not what the package sends:\n%s\n%s", again, body.Bytes())
	}
	sig := SignatureHeader([]byte("example-secret"), body.Bytes())
	if !bytes.Contains(doc, []byte("`"+sig+"`")) {
		t.Fatalf("the documented signature is not %s", sig)
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl not found: install the Debian package openssl")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "body.json"), body.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	for header, want := range map[string]string{sig: "verified", "sha256=" + strings.Repeat("0", 64): "FORGED"} {
		cmd := exec.Command("sh", "-c", block("sh"))
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CHATOPS_WEBHOOK_SECRET=example-secret", "X_AUTHORITY_SIGNATURE="+header)
		out, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Fatalf("shell snippet with %s: %v %q, want %q", header, err, out, want)
		}
	}
}
