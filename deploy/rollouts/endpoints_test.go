package rollouts

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/release/verdict"
	"gopkg.in/yaml.v3"
)

// urlsIn returns every string value under a "url" key of every YAML
// document in the templates.
func urlsIn(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	files, err := filepath.Glob(filepath.Join("v1", "*", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("templates: %v %v", files, err)
	}
	var walk func(file string, n *yaml.Node)
	walk = func(file string, n *yaml.Node) {
		for i, c := range n.Content {
			if n.Kind == yaml.MappingNode && i%2 == 0 && c.Value == "url" && i+1 < len(n.Content) {
				out[n.Content[i+1].Value] = file
			}
			walk(file, c)
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var n yaml.Node
			if err := dec.Decode(&n); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			walk(f, &n)
		}
	}
	return out
}

// Every authority URL the templates call (Argo's web provider with its
// args filled in, Flagger's webhooks) is a route the authority serves:
// answered with 200 or 412 by the real verdict handler, never 404/400.
func TestTemplateURLsAreServed(t *testing.T) {
	mux := http.NewServeMux()
	(&verdict.Handler{Lookup: func(name string) (*pb.Domain, bool) {
		return &pb.Domain{Name: name, Kind: pb.DomainKind_DOMAIN_KIND_RELEASE, Release: &pb.ReleaseState{}}, strings.HasPrefix(name, "rel.")
	}}).Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	args := strings.NewReplacer("{{args.authority-url}}", "http://authority-verdict.aerodb.svc:8080", "{{args.domain}}", "rel.web-api",
		"{{args.digest}}", "sha256:"+strings.Repeat("ab", 32))
	host := regexp.MustCompile(`^https?://[^/]+`)
	n := 0
	for u, file := range urlsIn(t) {
		u = args.Replace(u)
		if !strings.Contains(u, "/v1/releases/") {
			continue
		}
		n++
		method := http.MethodGet
		if strings.Contains(file, "flagger") {
			method = http.MethodPost // Flagger POSTs its payload to webhooks
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, err := http.NewRequestWithContext(ctx, method, host.ReplaceAllString(u, srv.URL), strings.NewReader(`{"name":"x","namespace":"y","phase":"Progressing"}`))
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		resp, err := srv.Client().Do(req)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPreconditionFailed {
			t.Errorf("%s: %s %s: %d, want a route the authority serves", file, method, u, resp.StatusCode)
		}
	}
	if n < 5 {
		t.Errorf("only %d authority URLs found in the templates", n)
	}
	t.Logf("%d authority URLs answered", n)
}
