package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"gopkg.in/yaml.v3"
)

// runArgs runs one command line with testOptions(env).
func runArgs(t *testing.T, env map[string]string, args ...string) (code exitCode, stdout, stderr string, o *options) {
	t.Helper()
	o, out, errb, _ := testOptions(env)
	code = run(context.Background(), o, args)
	return code, out.String(), errb.String(), o
}

// TestConfigFile: the config file gives the global flags' values; its
// variable wins over the default path, an environment variable over the
// file, and a flag over both. Unknown keys are refused.
func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte("endpoints: [10.0.0.1:8001, 10.0.0.2:8001]\ntimeout: 7s\noutput: json\ninsecure: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	home := t.TempDir() // the default path, under $HOME/.config
	if err := os.MkdirAll(filepath.Join(home, ".config", "authorityctl"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, ".config", "authorityctl", "config.yaml"), []byte("endpoints: [10.9.9.9:1]\ninsecure: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dial := func(env map[string]string, args ...string) (endpoints string, timeout time.Duration, o *options) {
		t.Helper()
		o, _, stderr, dialed := testOptions(env)
		run(context.Background(), o, append(args, "domain", "get", "d"))
		if len(*dialed) != 1 {
			t.Fatalf("%v %v: dialed %d times; stderr %s", env, args, len(*dialed), stderr)
		}
		return strings.Join((*dialed)[0].Endpoints, ","), (*dialed)[0].DialTimeout, o
	}
	ep, _, _ := dial(map[string]string{"HOME": home})
	if ep != "10.9.9.9:1" {
		t.Errorf("default path: endpoints %s", ep)
	}
	ep, to, o := dial(map[string]string{"HOME": home, envConfig: cfg})
	if ep != "10.0.0.1:8001,10.0.0.2:8001" || to != 7*time.Second || o.output.value != outputJSON {
		t.Errorf("%s: endpoints %s timeout %v output %s", envConfig, ep, to, o.output.value)
	}
	ep, to, _ = dial(map[string]string{envConfig: cfg, envEndpoints: "10.0.0.5:1", envTimeout: "3s"})
	if ep != "10.0.0.5:1" || to != 3*time.Second {
		t.Errorf("env over file: endpoints %s timeout %v", ep, to)
	}
	ep, to, _ = dial(map[string]string{envConfig: cfg, envEndpoints: "10.0.0.5:1"}, "--endpoints", "10.0.0.6:1", "--timeout", "2s")
	if ep != "10.0.0.6:1" || to != 2*time.Second {
		t.Errorf("flag over env: endpoints %s timeout %v", ep, to)
	}
	ep, _, _ = dial(map[string]string{"HOME": home, envEndpoints: "10.0.0.5:1"}, "--config", cfg)
	if ep != "10.0.0.5:1" {
		t.Errorf("--config with env: endpoints %s", ep)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("endpoint: [x:1]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, env := range []map[string]string{{envConfig: bad}, {envConfig: filepath.Join(dir, "absent.yaml")}} {
		if code, _, stderr, _ := runArgs(t, env, "domain", "get", "d"); code != exitUsage || !strings.Contains(stderr, "config file") {
			t.Errorf("%v: exit %d, stderr %q; want a usage error naming the config file", env, code, stderr)
		}
	}
}

// TestYAMLOutput: -o yaml prints the structures -o json prints.
func TestYAMLOutput(t *testing.T) {
	d := &pb.Domain{Name: "orders", Epoch: 3, Holder: "n1", Members: []*pb.Member{{Id: "n1", Address: "a:1", Priority: 5}},
		Watermark: &pb.Watermark{Epoch: 3, Lsn: 9, Hash: []byte{0xde, 0xad}}}
	var js, ys bytes.Buffer
	if err := (jsonPrinter{w: &js}).Domain(d); err != nil {
		t.Fatal(err)
	}
	if err := (jsonPrinter{w: &yamlWriter{w: &ys}}).Domain(d); err != nil {
		t.Fatal(err)
	}
	var fromJSON, fromYAML any
	if err := json.Unmarshal(js.Bytes(), &fromJSON); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(ys.Bytes(), &fromYAML); err != nil {
		t.Fatalf("%v\n%s", err, ys.String())
	}
	// YAML decodes 64-bit integers printed as JSON strings as strings too.
	jb, _ := json.Marshal(fromJSON)
	yb, _ := json.Marshal(fromYAML)
	if !bytes.Equal(jb, yb) {
		t.Fatalf("yaml %s\n!= json %s\nyaml text:\n%s", yb, jb, ys.String())
	}
	// A stream: one document per event.
	var st bytes.Buffer
	p := jsonPrinter{w: &yamlWriter{w: &st, stream: true}}
	for i := range 2 {
		if err := p.Event(&pb.Event{Index: uint64(i + 1), Type: "t", Domain: "d"}); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(st.String(), "---\n"); n != 2 {
		t.Fatalf("stream: %d documents, want 2:\n%s", n, st.String())
	}
	code, _, stderr, o := runArgs(t, nil, "-o", "yaml", "domain", "get", "d")
	if code != exitError || o.output.value != outputYAML {
		t.Fatalf("-o yaml: exit %d %s", code, stderr)
	}
}

// TestHashesInHex: hashes are hex in every output; proto JSON printed them
// in base64 ("3q0=" for dead) before.
func TestHashesInHex(t *testing.T) {
	var out bytes.Buffer
	p := jsonPrinter{w: &out}
	if err := p.Advance(&pb.WatermarkAdvance{Domain: "d", Epoch: 1, Lsn: 2, Hash: []byte{0xde, 0xad}}); err != nil {
		t.Fatal(err)
	}
	if err := p.Watermark("d", &pb.Watermark{Epoch: 1, Lsn: 2, Hash: []byte{0xbe, 0xef}}); err != nil {
		t.Fatal(err)
	}
	if err := p.Domain(&pb.Domain{Name: "d", Watermark: &pb.Watermark{Hash: []byte{0xca, 0xfe}}}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"hash": "dead"`, `"hash": "beef"`, `"hash": "cafe"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("want %s in:\n%s", want, out.String())
		}
	}
}

// TestErrorsReadable: a non-ASCII character is shown as itself ("ü" was
// "Ã"), no Go-internal error text reaches the user, a typo gets a
// suggestion, and an http:// endpoint is refused.
func TestErrorsReadable(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    []string
		notWant string
	}{
		{[]string{"domain", "get", "müller"}, []string{`'ü'`}, "Ã"},
		{[]string{"watch", "--from", "x"}, []string{`"x" is not a valid value`}, `strconv`},
		{[]string{"--timeout", "5", "domain", "list"}, []string{`lacks a unit`}, `time: `},
		{[]string{"history", "d", "--limit", "99999999999"}, []string{`out of range`}, `strconv`},
		{[]string{"clustr", "status"}, []string{"did you mean", "cluster"}, ""},
		{[]string{"cluster", "stauts"}, []string{"did you mean", "status"}, ""},
		{[]string{"--endpoints", "http://127.0.0.1:9001", "domain", "list"}, []string{"not http", "gRPC host:port"}, ""},
		{[]string{"--endpoints", "https://127.0.0.1:9001", "domain", "list"}, []string{"not https"}, ""},
	} {
		code, _, stderr, _ := runArgs(t, nil, tc.args...)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want 2; stderr %q", tc.args, code, stderr)
		}
		for _, w := range tc.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%v: stderr %q lacks %q", tc.args, stderr, w)
			}
		}
		if tc.notWant != "" && strings.Contains(stderr, tc.notWant) {
			t.Errorf("%v: stderr %q contains %q", tc.args, stderr, tc.notWant)
		}
	}
}

// TestHelpDefaultsTrue: help shows no default that is not the default in
// effect (streams default to JSON lines; the output flag names yaml).
func TestHelpDefaultsTrue(t *testing.T) {
	_, stdout, _, _ := runArgs(t, nil, "watch", "--help")
	for _, want := range []string{"streams default to json lines", "text, json or yaml", "AUTHORITYCTL_CONFIG"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("watch --help lacks %q:\n%s", want, stdout)
		}
	}
	_, stdout, _, _ = runArgs(t, nil, "node", "lease", "--help")
	if strings.Contains(stdout, "(default 0s)") {
		t.Errorf("node lease --help shows a default of 0s for --ttl (it is the domain's policy):\n%s", stdout)
	}
	_, stdout, _, _ = runArgs(t, nil, "member", "register", "--help")
	if !strings.Contains(stdout, "kept when not given") {
		t.Errorf("member register --help does not say unchanged fields are kept:\n%s", stdout)
	}
}

// TestConfirmations: destructive commands ask on a terminal, refuse
// without one unless --yes, and send nothing when not confirmed.
func TestConfirmations(t *testing.T) {
	o, _, stderr, dialed := testOptions(nil)
	if code := run(context.Background(), o, []string{"member", "remove", "s3"}); code != exitUsage || len(*dialed) != 0 ||
		!strings.Contains(stderr.String(), "--yes") {
		t.Fatalf("no terminal: exit %d, dialed %d, stderr %q", code, len(*dialed), stderr)
	}
	o, _, stderr, dialed = testOptions(nil)
	o.isTerminal = func(uintptr) bool { return true }
	o.stdin = strings.NewReader("n\n")
	if code := run(context.Background(), o, []string{"member", "remove", "s3"}); code != exitError || len(*dialed) != 0 ||
		!strings.Contains(stderr.String(), "remove server s3") || !strings.Contains(stderr.String(), "not confirmed") {
		t.Fatalf("answered n: exit %d, dialed %d, stderr %q", code, len(*dialed), stderr)
	}
	waive := []string{"promote", "d", "--to", "n2", "--waive", "allow-data-loss", "--reason", "r"}
	o, _, stderr, dialed = testOptions(nil)
	if code := run(context.Background(), o, waive); code != exitUsage || len(*dialed) != 0 || !strings.Contains(stderr.String(), "--yes") {
		t.Fatalf("waiver without a terminal: exit %d, dialed %d, stderr %q", code, len(*dialed), stderr)
	}
	for _, tc := range []struct {
		stdin string
		args  []string
	}{{"y\n", []string{"member", "remove", "s3"}}, {"", []string{"member", "remove", "s3", "--yes"}},
		{"", append(slices.Clone(waive), "--yes")}, {"", append(slices.Clone(waive), "--dry-run")}, {"yes\n", waive}} {
		o, _, _, dialed = testOptions(nil)
		o.isTerminal = func(uintptr) bool { return tc.stdin != "" }
		o.stdin = strings.NewReader(tc.stdin)
		run(context.Background(), o, tc.args)
		if len(*dialed) != 1 {
			t.Fatalf("%q %v: dialed %d times, want 1", tc.stdin, tc.args, len(*dialed))
		}
	}
}

// TestWatchViewRedraws: -w redraws at --interval (bounded below), keeps
// going through a failed render, and ends cleanly on interrupt.
func TestWatchViewRedraws(t *testing.T) {
	if code, _, stderr, _ := runArgs(t, nil, "cluster", "status", "-w", "--interval", "10ms"); code != exitUsage || !strings.Contains(stderr, "at least") {
		t.Fatalf("--interval 10ms: exit %d %q", code, stderr)
	}
	o, stdout, _, _ := testOptions(nil)
	o.watchMinInterval = time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	frames := 0
	wf := watchFlags{on: true, interval: 5 * time.Millisecond}
	err := wf.run(ctx, o, func(_ context.Context, w io.Writer) error {
		frames++
		if frames == 2 {
			return errNoNetwork
		}
		if frames == 4 {
			cancel() // Ctrl-C
		}
		_, err := w.Write([]byte("TABLE\n"))
		return err
	})
	if err != nil || frames != 4 {
		t.Fatalf("err %v, frames %d", err, frames)
	}
	out := stdout.String()
	if strings.Count(out, "TABLE\n") != 2 || !strings.Contains(out, "error: test: no network") || strings.Count(out, "# ") != 3 {
		t.Fatalf("frames:\n%s", out)
	}
}

// TestFailFastWhenRefused: with every endpoint refusing connections a
// command fails at once naming the refusal (it waited the whole --timeout
// and said "context deadline exceeded" before), and cluster status still
// prints its table, one row per endpoint.
func TestFailFastWhenRefused(t *testing.T) {
	var eps []string
	for range 2 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		eps = append(eps, l.Addr().String())
		l.Close() // nothing listens there now: connections are refused
	}
	env := map[string]string{envInsecure: "true", envEndpoints: strings.Join(eps, ","), envTimeout: "20s"}
	o, stdout, stderr, _ := testOptions(env)
	o.probe, o.dial = probeEndpoints, newOptions(nil, nil, nil).dial
	start := time.Now()
	code := run(context.Background(), o, []string{"domain", "get", "d"})
	t.Logf("refused: failed after %v (--timeout 20s)", time.Since(start))
	if code != exitError || !strings.Contains(stderr.String(), "connection refused") || strings.Contains(stderr.String(), "deadline") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	o, stdout, stderr, _ = testOptions(env)
	o.probe, o.dial = probeEndpoints, newOptions(nil, nil, nil).dial
	code = run(context.Background(), o, []string{"cluster", "status"})
	if code != exitError || !strings.Contains(stderr.String(), "none of 2 endpoints answered") {
		t.Fatalf("status: exit %d, stderr %q", code, stderr)
	}
	for _, ep := range eps {
		if !regexp.MustCompile(regexp.QuoteMeta(ep) + `\s+-\s+error: connection refused`).MatchString(stdout.String()) {
			t.Fatalf("status table lacks a row for %s:\n%s", ep, stdout)
		}
	}
}

// TestDemoDocNamesWriterLog: docs/DEMO.md step 3 said the writer prints
// NOT acknowledged errors on the terminal; they go to .demo/writer.log.
func TestDemoDocNamesWriterLog(t *testing.T) {
	b, err := os.ReadFile("../../docs/DEMO.md")
	if err != nil {
		t.Fatal(err)
	}
	step3 := string(b)
	if i := strings.Index(step3, "**3. Kill the primary**"); i >= 0 {
		step3 = step3[i:]
	}
	if i := strings.Index(step3, "**4."); i >= 0 {
		step3 = step3[:i]
	}
	if strings.Contains(step3, "NOT acknowledged") && !strings.Contains(step3, ".demo/writer.log") {
		t.Fatalf("DEMO.md step 3 names the writer's NOT acknowledged errors but not .demo/writer.log, where they go:\n%s", step3)
	}
}

// TestREADMEPromoteSteps: the README's promote lines, followed in order,
// succeed: dry runs carry no request id (a recorded id makes them
// CONFLICT) and no request id is used by two lines.
func TestREADMEPromoteSteps(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	checkPromoteLines(t, "README.md", string(b))
}

func checkPromoteLines(t *testing.T, name, text string) {
	t.Helper()
	seen := map[string]bool{}
	re := regexp.MustCompile(`--request-id[ =](\S+)`)
	n := 0
	for _, line := range strings.Split(text, "\n") {
		if !strings.Contains(line, " promote ") || !strings.Contains(line, "authorityctl") {
			continue
		}
		n++
		m := re.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if strings.Contains(line, "--dry-run") {
			t.Errorf("%s: a dry run with a request id (CONFLICT once the id is recorded): %s", name, line)
		}
		if seen[m[1]] {
			t.Errorf("%s: request id %s used by two lines (the second prints the first's recorded decision): %s", name, m[1], line)
		}
		seen[m[1]] = true
	}
	if n == 0 {
		t.Fatalf("%s: no promote lines", name)
	}
}
