package preflight

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// only returns a config that runs the named checks and skips the others.
func only(cfg Config, checks ...string) Config {
	cfg.Skip = nil
	for _, n := range CheckNames() {
		keep := false
		for _, c := range checks {
			keep = keep || c == n
		}
		if !keep {
			cfg.Skip = append(cfg.Skip, n)
		}
	}
	return cfg
}

func noEnv(string) string { return "" }

func run(t *testing.T, cfg Config, env func(string) string) Report {
	t.Helper()
	if env == nil {
		env = noEnv
	}
	rep, err := Run(context.Background(), cfg, env)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return rep
}

func result(t *testing.T, rep Report, name string) Result {
	t.Helper()
	r, ok := rep.Check(name)
	if !ok {
		t.Fatalf("no %s result in %+v", name, rep)
	}
	return r
}

func wantResult(t *testing.T, rep Report, name string, passed bool, detailHas string) Result {
	t.Helper()
	r := result(t, rep, name)
	if r.Passed != passed || r.Skipped {
		t.Fatalf("%s: passed=%v skipped=%v, want passed=%v; %+v", name, r.Passed, r.Skipped, passed, r)
	}
	if !strings.Contains(r.Detail, detailHas) {
		t.Fatalf("%s: detail %q does not contain %q", name, r.Detail, detailHas)
	}
	if rep.Passed != passed {
		t.Fatalf("report passed=%v with only %s run (passed=%v)", rep.Passed, name, passed)
	}
	return r
}

func TestCPU(t *testing.T) {
	cfg := only(DefaultConfig(), CheckCPU)
	wantResult(t, run(t, cfg, nil), CheckCPU, true, "enough") // the real count is >= 1
	cfg.CPU.Min = 4
	cfg.Probes.NumCPU = func() int { return 4 }
	wantResult(t, run(t, cfg, nil), CheckCPU, true, "enough")
	cfg.Probes.NumCPU = func() int { return 3 }
	r := wantResult(t, run(t, cfg, nil), CheckCPU, false, "3 logical CPUs usable, 4 required")
	if r.Observed != "3 CPUs" || r.Threshold != ">= 4 CPUs" {
		t.Fatalf("observed %q threshold %q", r.Observed, r.Threshold)
	}
	cfg.Probes.NumCPU = nil
	cfg.CPU.Min = 1 << 20
	wantResult(t, run(t, cfg, nil), CheckCPU, false, "required")
}

func writeMeminfo(t *testing.T, content string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "meminfo"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestMemory(t *testing.T) {
	cfg := only(DefaultConfig(), CheckMemory)
	cfg.Memory.Min = 1 // the real /proc/meminfo
	wantResult(t, run(t, cfg, nil), CheckMemory, true, "enough")

	cfg.Memory.Min = 1 << 62
	wantResult(t, run(t, cfg, nil), CheckMemory, false, "below")

	cfg.Probes.ProcRoot = writeMeminfo(t, "MemTotal:        8000000 kB\nMemFree:          100000 kB\nMemAvailable:    2000000 kB\n")
	cfg.Memory.Min = 2_048_000_000 // exactly 2000000 KiB
	r := wantResult(t, run(t, cfg, nil), CheckMemory, true, "enough")
	if r.Observed != "2.0 GB available" {
		t.Fatalf("observed %q", r.Observed)
	}
	cfg.Memory.Min++
	wantResult(t, run(t, cfg, nil), CheckMemory, false, "below")

	cfg.Probes.ProcRoot = writeMeminfo(t, "MemTotal:        8000000 kB\nMemFree:          100000 kB\n")
	wantResult(t, run(t, cfg, nil), CheckMemory, false, "no MemAvailable")
	cfg.Probes.ProcRoot = filepath.Join(t.TempDir(), "absent")
	wantResult(t, run(t, cfg, nil), CheckMemory, false, "reading")
}

func TestDiskRealStatfs(t *testing.T) {
	dir := t.TempDir()
	free, err := statfsFree(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := only(DefaultConfig(), CheckDisk)
	cfg.Disk.Paths = []string{dir}
	cfg.Disk.MinFree = Size(free / 2)
	wantResult(t, run(t, cfg, nil), CheckDisk, true, "enough free space on 1 path")
	cfg.Disk.MinFree = Size(free * 2)
	r := wantResult(t, run(t, cfg, nil), CheckDisk, false, dir+" has ")
	if !strings.Contains(r.Observed, dir+": ") {
		t.Fatalf("observed %q", r.Observed)
	}
	cfg.Disk.MinFree = 1
	cfg.Disk.Paths = []string{dir, filepath.Join(dir, "absent")}
	wantResult(t, run(t, cfg, nil), CheckDisk, false, "no such file")

	// Default path: the working directory.
	cfg.Disk.Paths = nil
	wd, _ := os.Getwd()
	r = wantResult(t, run(t, cfg, nil), CheckDisk, true, "enough")
	if !strings.HasPrefix(r.Observed, wd+": ") {
		t.Fatalf("observed %q, want the working directory %s", r.Observed, wd)
	}
}

func TestDiskThresholdBoundary(t *testing.T) {
	cfg := only(DefaultConfig(), CheckDisk)
	cfg.Disk.Paths = []string{"/a", "/b"}
	cfg.Probes.DiskFree = func(p string) (uint64, error) {
		if p == "/a" {
			return 10_000_000_000, nil
		}
		return 9_999_999_999, nil
	}
	r := wantResult(t, run(t, cfg, nil), CheckDisk, false, "/b has 10 GB free, below 10 GB")
	if strings.Contains(r.Detail, "/a") || r.Threshold != ">= 10 GB free" {
		t.Fatalf("detail %q threshold %q", r.Detail, r.Threshold)
	}
	cfg.Disk.Paths = []string{"/a"}
	wantResult(t, run(t, cfg, nil), CheckDisk, true, "enough")
}

// fakeDocker serves the Engine API's /_ping and /version on a unix socket.
func fakeDocker(t *testing.T, pingStatus int, ver string) string {
	return fakeDockerPing(t, pingStatus, "OK", ver)
}

func fakeDockerPing(t *testing.T, pingStatus int, pingBody, ver string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pfd") // short: a socket path is at most 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_ping", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Api-Version", "1.43")
		w.WriteHeader(pingStatus)
		if pingStatus == http.StatusOK {
			fmt.Fprint(w, pingBody)
		} else {
			fmt.Fprint(w, "boom")
		}
	})
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"Version": ver, "ApiVersion": "1.43", "Os": "linux"})
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "unix://" + sock
}

func TestDocker(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ping   int
		ver    string
		passed bool
		detail string
	}{
		{"24.0.7", 200, "24.0.7", true, "version 24.0.7"},
		{"20.10.24+dfsg1", 200, "20.10.24+dfsg1", true, "version 20.10.24"},
		{"20.10.0-ce", 200, "20.10.0-ce", true, "version 20.10.0"},
		{"19.03", 200, "19.03.13", false, "older than 20.10"},
		{"20.9", 200, "20.9.1", false, "older than 20.10"},
		{"garbage version", 200, "dev", false, "not a version number"},
		{"ping 500", 500, "24.0.7", false, "HTTP 500"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := only(DefaultConfig(), CheckDocker)
			cfg.Docker.Host = fakeDocker(t, tc.ping, tc.ver)
			wantResult(t, run(t, cfg, nil), CheckDocker, tc.passed, tc.detail)
		})
	}
	t.Run("ping not OK", func(t *testing.T) {
		cfg := only(DefaultConfig(), CheckDocker)
		cfg.Docker.Host = fakeDockerPing(t, 200, "starting", "24.0.7")
		wantResult(t, run(t, cfg, nil), CheckDocker, false, `/_ping answered "starting", not OK`)
	})
	t.Run("socket missing", func(t *testing.T) {
		cfg := only(DefaultConfig(), CheckDocker)
		cfg.Docker.Host = "unix://" + filepath.Join(t.TempDir(), "none.sock")
		wantResult(t, run(t, cfg, nil), CheckDocker, false, "not reachable")
	})
	t.Run("DOCKER_HOST", func(t *testing.T) {
		cfg := only(DefaultConfig(), CheckDocker)
		host := fakeDocker(t, 200, "24.0.7")
		env := func(k string) string {
			if k == "DOCKER_HOST" {
				return host
			}
			return ""
		}
		wantResult(t, run(t, cfg, env), CheckDocker, true, "24.0.7")
		// The configured host wins over DOCKER_HOST.
		cfg.Docker.Host = "unix://" + filepath.Join(t.TempDir(), "none.sock")
		wantResult(t, run(t, cfg, env), CheckDocker, false, "not reachable")
	})
	t.Run("tcp", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/_ping" {
				fmt.Fprint(w, "OK")
				return
			}
			fmt.Fprint(w, `{"Version":"27.3.1"}`)
		})}
		go srv.Serve(ln)
		defer srv.Close()
		cfg := only(DefaultConfig(), CheckDocker)
		cfg.Docker.Host = "tcp://" + ln.Addr().String()
		wantResult(t, run(t, cfg, nil), CheckDocker, true, "27.3.1")
	})
	t.Run("min version", func(t *testing.T) {
		cfg := only(DefaultConfig(), CheckDocker)
		cfg.Docker.Host = fakeDocker(t, 200, "24.0.7")
		cfg.Docker.MinVersion = "25.0"
		wantResult(t, run(t, cfg, nil), CheckDocker, false, "older than 25.0")
	})
}

// listeners returns an open 127.0.0.1 port (accepting) and a closed one.
func listeners(t *testing.T) (open, closed int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed = ln2.Addr().(*net.TCPAddr).Port
	ln2.Close()
	return ln.Addr().(*net.TCPAddr).Port, closed
}

func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNetworkInventories(t *testing.T) {
	open, closed := listeners(t)
	ini := fmt.Sprintf(`# deploy targets
[web]
web1 ansible_host=127.0.0.1 ansible_port=%d
web2 ansible_host=127.0.0.1   # port from [web:vars]

[web:vars]
ansible_port=%d

[db]
db1 ansible_host=127.0.0.1 ansible_port=%d

[prod:children]
web
db
`, open, open, closed)
	yml := fmt.Sprintf(`all:
  children:
    prod:
      children:
        web:
          hosts:
            web1:
              ansible_host: 127.0.0.1
              ansible_port: %d
            web2:
              ansible_host: 127.0.0.1
          vars:
            ansible_port: %d
        db:
          hosts:
            db1: {ansible_host: 127.0.0.1, ansible_port: %d}
`, open, open, closed)
	for _, inv := range []struct{ name, file string }{
		{"ini", writeFile(t, "hosts.ini", ini)},
		{"ini-no-ext", writeFile(t, "hosts", ini)},
		{"yaml", writeFile(t, "hosts.yml", yml)},
		{"yaml-no-ext", writeFile(t, "inventory", yml)},
	} {
		t.Run(inv.name, func(t *testing.T) {
			cfg := only(DefaultConfig(), CheckNetwork)
			cfg.Network.Inventory = inv.file
			cfg.Network.InventoryGroup = "web"
			r := wantResult(t, run(t, cfg, nil), CheckNetwork, true, "all 2 target(s)")
			if r.Observed != "2/2 reachable" {
				t.Fatalf("observed %q", r.Observed)
			}
			for _, group := range []string{"prod", "all"} {
				cfg.Network.InventoryGroup = group
				r = wantResult(t, run(t, cfg, nil), CheckNetwork, false,
					fmt.Sprintf("unreachable: db1 (127.0.0.1:%d): connection refused", closed))
				if r.Observed != "2/3 reachable" {
					t.Fatalf("observed %q", r.Observed)
				}
			}
			// An unknown group is a configuration error: nothing is probed.
			cfg.Network.InventoryGroup = "nope"
			if _, err := Run(context.Background(), cfg, noEnv); err == nil || !strings.Contains(err.Error(), `no group "nope"`) {
				t.Fatalf("err %v", err)
			}
			// An empty group fails the check.
			cfg.Network.InventoryGroup = "empty"
			cfg.Network.Inventory = writeFile(t, "e.ini", "[empty]\n[web]\nh\n")
			wantResult(t, run(t, cfg, nil), CheckNetwork, false, `no hosts in group "empty"`)
		})
	}
}

func TestNetworkTargetsAndDefaultPort(t *testing.T) {
	open, closed := listeners(t)
	cfg := only(DefaultConfig(), CheckNetwork)
	cfg.Network.Targets = []string{fmt.Sprintf("127.0.0.1:%d", open)}
	wantResult(t, run(t, cfg, nil), CheckNetwork, true, "all 1 target(s)")
	cfg.Network.Targets = append(cfg.Network.Targets, fmt.Sprintf("127.0.0.1:%d", closed))
	wantResult(t, run(t, cfg, nil), CheckNetwork, false, "connection refused")

	// Hosts without ansible_port use target_port.
	cfg.Network.Targets = nil
	cfg.Network.Inventory = writeFile(t, "hosts", "a ansible_host=127.0.0.1\nb ansible_host=127.0.0.1\n")
	cfg.Network.TargetPort = open
	wantResult(t, run(t, cfg, nil), CheckNetwork, true, "all 2 target(s)")
	cfg.Network.TargetPort = closed
	wantResult(t, run(t, cfg, nil), CheckNetwork, false, "a (127.0.0.1:")

	// Nothing configured: skipped, not passed silently as checked.
	cfg = only(DefaultConfig(), CheckNetwork)
	if r := result(t, run(t, cfg, nil), CheckNetwork); !r.Skipped || !r.Passed {
		t.Fatalf("%+v: want skipped", r)
	}
}

// TestNetworkTimeoutAndBound: a target that never answers fails within the
// connect timeout, and at most Parallelism dials run at once.
func TestNetworkTimeoutAndBound(t *testing.T) {
	cfg := only(DefaultConfig(), CheckNetwork)
	for i := range 40 {
		cfg.Network.Targets = append(cfg.Network.Targets, fmt.Sprintf("10.0.0.%d:22", i+1))
	}
	cfg.Network.Parallelism = 3
	cfg.Network.ConnectTimeout = Duration(20e6) // 20ms
	inFlight, peak := make(chan struct{}, 100), 0
	var mu = make(chan struct{}, 1)
	cfg.Probes.Dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
		inFlight <- struct{}{}
		mu <- struct{}{}
		peak = max(peak, len(inFlight))
		<-mu
		<-ctx.Done() // never answers: only the timeout ends the attempt
		<-inFlight
		return nil, ctx.Err()
	}
	r := wantResult(t, run(t, cfg, nil), CheckNetwork, false, "timed out")
	if r.Observed != "0/40 reachable" || !strings.HasSuffix(r.Detail, "; and 30 more") {
		t.Fatalf("observed %q detail %q", r.Observed, r.Detail)
	}
	if peak < 1 || peak > 3 {
		t.Fatalf("peak %d concurrent dials, want 1..3", peak)
	}
}

func TestInventoryParsing(t *testing.T) {
	ini := `
ungrouped1 ansible_port=2201
[web]
web[01:03].example.com
www.example.com:2222 ansible_host="10.0.0.9"
[web:vars]
ansible_port = 8022
[db]
db-[a:c] ansible_host=10.1.1.1
[db:vars]
ansible_port=5022
[edge]
[2001:db8::1]:2020
[dc:children]
web
db
[dc:vars]
ansible_port=9999
`
	yml := `
all:
  hosts:
    ungrouped1: {ansible_port: 2201}
  children:
    dc:
      vars: {ansible_port: 9999}
      children:
        web:
          hosts:
            web[01:03].example.com:
            www.example.com: {ansible_host: 10.0.0.9, ansible_port: "2222"}
          vars: {ansible_port: 8022}
        db:
          hosts:
            db-[a:c]: {ansible_host: 10.1.1.1}
          vars: {ansible_port: 5022}
    edge:
      hosts:
        "2001:db8::1": {ansible_port: 2020}
`
	want := map[string][]Target{
		"web": {
			{"web01.example.com", "web01.example.com", 8022}, {"web02.example.com", "web02.example.com", 8022},
			{"web03.example.com", "web03.example.com", 8022}, {"www.example.com", "10.0.0.9", 2222}},
		"db":        {{"db-a", "10.1.1.1", 5022}, {"db-b", "10.1.1.1", 5022}, {"db-c", "10.1.1.1", 5022}},
		"edge":      {{"2001:db8::1", "2001:db8::1", 2020}},
		"ungrouped": {{"ungrouped1", "ungrouped1", 2201}},
	}
	for _, f := range []struct{ name, body, ext string }{{"ini", ini, ".ini"}, {"yaml", yml, ".yaml"}} {
		t.Run(f.name, func(t *testing.T) {
			inv, err := ParseInventory([]byte(f.body), f.ext)
			if err != nil {
				t.Fatal(err)
			}
			for g, w := range want {
				got, err := inv.Targets(g, 22)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, w) {
					t.Fatalf("group %s: got %v, want %v", g, got, w)
				}
			}
			all, err := inv.Targets("all", 22)
			if err != nil || len(all) != 9 || inv.HostCount() != 9 {
				t.Fatalf("all: %v %v (count %d)", all, err, inv.HostCount())
			}
			dc, _ := inv.Targets("dc", 22)
			if len(dc) != 7 {
				t.Fatalf("dc: %v", dc)
			}
		})
	}
}

func TestInventoryBounds(t *testing.T) {
	for name, tc := range map[string]struct{ body, ext, err string }{
		"too many hosts (range)":  {"[web]\nh[0:10000]\n", ".ini", "more than 10000 hosts"},
		"too many hosts (ranges)": {"[web]\nh[0:99][0:101]\n", ".ini", "more than 10000 hosts"},
		"too many hosts (yaml)":   {"all:\n  hosts:\n    h[1:5000]:\n    g[1:5001]:\n", ".yml", "more than 10000 hosts"},
		"cycle":                   {"[a:children]\nb\n[b:children]\na\n", ".ini", "its own ancestor"},
		"self child":              {"[a:children]\na\n", ".ini", "its own child"},
		"bad port":                {"[a]\nh:x2\n", ".ini", "port is not a number"},
		"bad section":             {"[a:hosts]\nh\n", ".ini", "section suffix"},
		"bad var":                 {"[a]\nh novalue\n", ".ini", "want key=value"},
		"unknown yaml key":        {"all:\n  host: {a: }\n", ".yml", "field host not found"},
		"unterminated quote":      {"[a]\nh x='y\n", ".ini", "unterminated quote"},
		"padded range lengths":    {"[a]\nh[01:100]\n", ".ini", "equal length"},
		"backwards range":         {"[a]\nh[Z:a]\n", ".ini", "empty range"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ParseInventory([]byte(tc.body), tc.ext)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err %v, want %q", err, tc.err)
			}
		})
	}
	var lines strings.Builder
	lines.WriteString("[web]\n")
	for i := range MaxHosts + 1 {
		fmt.Fprintf(&lines, "h%d\n", i)
	}
	if _, err := ParseInventory([]byte(lines.String()), ".ini"); err == nil || !strings.Contains(err.Error(), "more than 10000 hosts") {
		t.Fatalf("%d listed hosts: err %v", MaxHosts+1, err)
	}
	// The same hosts listed again and again: the parser's work is bounded.
	repeated := "[web]\n" + strings.Repeat("h[1:9999]\n", 11)
	if _, err := ParseInventory([]byte(repeated), ".ini"); err == nil || !strings.Contains(err.Error(), "host entries") {
		t.Fatalf("repeated entries: err %v", err)
	}
	// Exactly MaxHosts is fine, also listed in two groups.
	inv, err := ParseInventory([]byte("[web]\nh[1:10000]\n[db]\nh[1:10000]\n"), ".ini")
	if err != nil || inv.HostCount() != MaxHosts {
		t.Fatalf("%v, %d hosts", err, inv.HostCount())
	}
	big := writeFile(t, "big.ini", "[web]\n"+strings.Repeat("# padding\n", MaxInventoryBytes/10+1))
	if _, err := LoadInventory(big); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("err %v, want the size bound", err)
	}
	// An ansible_port out of range is refused when resolving.
	inv, err = ParseInventory([]byte("[a]\nh ansible_port=70000\n"), ".ini")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inv.Targets("a", 22); err == nil || !strings.Contains(err.Error(), "not a port") {
		t.Fatalf("err %v", err)
	}
}

// secretValue is distinctive so that any leak is found by substring.
const secretValue = "s3cr3t-VALUE-7f1c9a2e-do-not-print"

func TestSecrets(t *testing.T) {
	env := map[string]string{"DEPLOY_TOKEN": secretValue, "EMPTY_ONE": "", "BLANK_ONE": "  \t"}
	getenv := func(k string) string { return env[k] }
	cfg := only(DefaultConfig(), CheckSecrets)
	cfg.Secrets.Required = []string{"DEPLOY_TOKEN"}
	r := wantResult(t, run(t, cfg, getenv), CheckSecrets, true, "DEPLOY_TOKEN")
	if r.Observed != "1/1 present" {
		t.Fatalf("observed %q", r.Observed)
	}
	cfg.Secrets.Required = []string{"DEPLOY_TOKEN", "MISSING_ONE", "EMPTY_ONE", "BLANK_ONE"}
	r = wantResult(t, run(t, cfg, getenv), CheckSecrets, false, "missing or empty: MISSING_ONE, EMPTY_ONE; blank: BLANK_ONE")
	if r.Observed != "1/4 present" {
		t.Fatalf("observed %q", r.Observed)
	}
	cfg.Secrets.Required = nil
	if r := result(t, run(t, cfg, getenv), CheckSecrets); !r.Skipped {
		t.Fatalf("%+v: want skipped", r)
	}
	// Names are validated (no value can sneak in as a "name").
	cfg.Secrets.Required = []string{"A=b"}
	if _, err := Run(context.Background(), cfg, getenv); err == nil {
		t.Fatal("a name with '=' was accepted")
	}
}

// TestSecretValueNeverInReport: the value appears nowhere in the report
// (JSON and text), passing or failing.
func TestSecretValueNeverInReport(t *testing.T) {
	env := map[string]string{"DEPLOY_TOKEN": secretValue}
	getenv := func(k string) string { return env[k] }
	cfg := DefaultConfig()
	cfg.Skip = []string{CheckDocker}
	cfg.Memory.Min = 1
	cfg.Disk.MinFree = 1
	for _, required := range [][]string{{"DEPLOY_TOKEN"}, {"DEPLOY_TOKEN", "OTHER_MISSING"}} {
		cfg.Secrets.Required = required
		rep := run(t, cfg, getenv)
		js, err := rep.JSON()
		if err != nil {
			t.Fatal(err)
		}
		var text strings.Builder
		if err := rep.WriteText(&text); err != nil {
			t.Fatal(err)
		}
		for what, s := range map[string]string{"json": string(js), "text": text.String(), "go": fmt.Sprintf("%#v", rep)} {
			if strings.Contains(s, secretValue) {
				t.Fatalf("%s report contains the secret's value:\n%s", what, s)
			}
		}
		if !strings.Contains(string(js), required[len(required)-1]) {
			t.Fatalf("report does not name the secret:\n%s", js)
		}
	}
}

func TestOverrides(t *testing.T) {
	cfg := only(DefaultConfig(), CheckCPU, CheckDisk)
	cfg.Probes.NumCPU = func() int { return 1 }
	cfg.CPU.Min = 2
	cfg.Probes.DiskFree = func(string) (uint64, error) { return 1 << 40, nil }
	rep := run(t, cfg, nil)
	if rep.Passed || rep.FailedNames() != "cpu" {
		t.Fatalf("%+v", rep)
	}
	cfg.Overrides = []Override{{Check: CheckCPU, Reason: "small runner, approved in CHG-42"}, {Check: CheckDisk, Reason: "not needed"}}
	rep = run(t, cfg, nil)
	if !rep.Passed || len(rep.Failed()) != 0 {
		t.Fatalf("overridden failure still fails: %+v", rep)
	}
	c := result(t, rep, CheckCPU)
	if c.Passed || !c.Overridden || c.OverrideReason != "small runner, approved in CHG-42" {
		t.Fatalf("cpu %+v", c)
	}
	if ov := rep.Overridden(); len(ov) != 1 || ov[0].Name != CheckCPU {
		t.Fatalf("Overridden() %+v", ov)
	}
	d := result(t, rep, CheckDisk)
	if !d.Passed || d.Overridden || d.OverrideReason != "not needed" {
		t.Fatalf("disk: an unneeded override is recorded but not used: %+v", d)
	}
	// An override lets only its own check through.
	cfg.Overrides = []Override{{Check: CheckDisk, Reason: "wrong check"}}
	if rep := run(t, cfg, nil); rep.Passed || rep.FailedNames() != "cpu" {
		t.Fatalf("%+v", rep)
	}

	for _, tc := range []struct{ in, err string }{
		{"cpu", "want CHECK=REASON"},
		{"gpu=why", `unknown check "gpu"`},
		{"cpu=", "needs a non-empty reason"},
		{"cpu=   ", "needs a non-empty reason"},
		{"cpu=" + strings.Repeat("x", MaxReasonBytes+1), "at most 512"},
		{"cpu=a\nb", "control characters"},
	} {
		if _, err := ParseOverride(tc.in); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Fatalf("ParseOverride(%.20q): %v, want %q", tc.in, err, tc.err)
		}
	}
	if o, err := ParseOverride("disk=" + strings.Repeat("x", MaxReasonBytes)); err != nil || o.Check != "disk" {
		t.Fatalf("%v %v", o, err)
	}
	cfg.Overrides = []Override{{Check: CheckCPU, Reason: "a"}, {Check: CheckCPU, Reason: "b"}}
	if _, err := Run(context.Background(), cfg, noEnv); err == nil || !strings.Contains(err.Error(), "overridden twice") {
		t.Fatalf("err %v", err)
	}
	cfg.SetOverride(Override{Check: CheckCPU, Reason: "c"})
	if len(cfg.Overrides) != 2 || cfg.Overrides[0].Reason != "c" {
		t.Fatalf("%+v", cfg.Overrides)
	}
}

func TestReportJSONShape(t *testing.T) {
	cfg := only(DefaultConfig(), CheckCPU, CheckSecrets)
	cfg.Probes.NumCPU = func() int { return 2 }
	cfg.Secrets.Required = []string{"NOPE"}
	cfg.Overrides = []Override{{Check: CheckSecrets, Reason: "rotating"}}
	rep := run(t, cfg, nil)
	js, err := rep.JSON()
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "passed": true,
  "checks": [
    {
      "name": "cpu",
      "passed": true,
      "skipped": false,
      "detail": "enough logical CPUs",
      "threshold": ">= 1 CPUs",
      "observed": "2 CPUs",
      "overridden": false,
      "override_reason": ""
    },
    {
      "name": "memory",
      "passed": true,
      "skipped": true,
      "detail": "skipped by configuration",
      "threshold": "",
      "observed": "",
      "overridden": false,
      "override_reason": ""
    },
`
	if !strings.HasPrefix(string(js), want) {
		t.Fatalf("JSON:\n%s\nwant prefix:\n%s", js, want)
	}
	var back Report
	if err := json.Unmarshal(js, &back); err != nil || !reflect.DeepEqual(back, rep) {
		t.Fatalf("round trip: %v\n%+v\n%+v", err, back, rep)
	}
	if len(back.Checks) != len(CheckNames()) {
		t.Fatalf("%d checks", len(back.Checks))
	}
	s := result(t, back, CheckSecrets)
	if s.Passed || !s.Overridden || s.OverrideReason != "rotating" || s.Detail != "missing or empty: NOPE" {
		t.Fatalf("%+v", s)
	}
	js2, _ := run(t, cfg, nil).JSON()
	if string(js2) != string(js) {
		t.Fatal("two runs of the same state printed different JSON")
	}
}

func TestConfigFile(t *testing.T) {
	p := writeFile(t, "preflight.yaml", `
skip: [docker]
cpu: {min: 2}
memory: {min: 1.5GB}
disk:
  min_free: 20GiB
  paths: [/var/lib/docker, /srv]
docker: {host: "unix:///run/docker.sock", min_version: "24.0", timeout: 2s}
network:
  inventory: hosts.yml
  inventory_group: prod
  target_port: 2222
  targets: ["10.0.0.1:443"]
  connect_timeout: 500ms
  parallelism: 8
secrets: {required: [DEPLOY_TOKEN, REGISTRY_PASSWORD]}
overrides:
  - {check: cpu, reason: "known small runner"}
`)
	cfg, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		Skip:   []string{"docker"},
		CPU:    CPUConfig{Min: 2},
		Memory: MemoryConfig{Min: 1_500_000_000},
		Disk:   DiskConfig{MinFree: 20 << 30, Paths: []string{"/var/lib/docker", "/srv"}},
		Docker: DockerConfig{Host: "unix:///run/docker.sock", MinVersion: "24.0", Timeout: Duration(2e9)},
		Network: NetworkConfig{Inventory: "hosts.yml", InventoryGroup: "prod", TargetPort: 2222,
			Targets: []string{"10.0.0.1:443"}, ConnectTimeout: Duration(5e8), Parallelism: 8},
		Secrets:   SecretsConfig{Required: []string{"DEPLOY_TOKEN", "REGISTRY_PASSWORD"}},
		Overrides: []Override{{Check: "cpu", Reason: "known small runner"}},
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Fatalf("got  %+v\nwant %+v", cfg, want)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// Defaults survive a partial file; an empty file is the defaults.
	cfg, err = ParseConfig([]byte("cpu: {min: 3}\n"))
	if err != nil || cfg.Disk.MinFree != DefaultMinFreeDisk || cfg.CPU.Min != 3 {
		t.Fatalf("%+v %v", cfg, err)
	}
	if cfg, err = ParseConfig(nil); err != nil || !reflect.DeepEqual(cfg, DefaultConfig()) {
		t.Fatalf("%+v %v", cfg, err)
	}
	for body, msg := range map[string]string{
		"disk: {min_fre: 1GB}\n":          "field min_fre not found",
		"disk: {min_free: lots}\n":        "is not a size",
		"network: {connect_timeout: 3}\n": "is not a duration",
	} {
		if _, err := ParseConfig([]byte(body)); err == nil || !strings.Contains(err.Error(), msg) {
			t.Fatalf("%q: err %v, want %q", body, err, msg)
		}
	}
	if _, err := LoadConfig(writeFile(t, "big.yaml", strings.Repeat("#\n", MaxConfigBytes))); err == nil {
		t.Fatal("a config over the size bound was read")
	}
}

func TestValidate(t *testing.T) {
	for name, mut := range map[string]func(*Config){
		"skip unknown":    func(c *Config) { c.Skip = []string{"gpu"} },
		"docker host":     func(c *Config) { c.Docker.Host = "http://x" },
		"docker host tcp": func(c *Config) { c.Docker.Host = "tcp://nohostport" },
		"min version":     func(c *Config) { c.Docker.MinVersion = "new" },
		"timeout":         func(c *Config) { c.Network.ConnectTimeout = 0 },
		"port":            func(c *Config) { c.Network.TargetPort = 0 },
		"parallelism":     func(c *Config) { c.Network.Parallelism = 0 },
		"target":          func(c *Config) { c.Network.Targets = []string{"nohost"} },
		"target port":     func(c *Config) { c.Network.Targets = []string{"h:0"} },
		"too many paths":  func(c *Config) { c.Disk.Paths = make([]string, MaxDiskPaths+1) },
		"empty path":      func(c *Config) { c.Disk.Paths = []string{""} },
		"negative cpu":    func(c *Config) { c.CPU.Min = -1 },
		"secret name":     func(c *Config) { c.Secrets.Required = []string{"1BAD"} },
		"too many targets": func(c *Config) {
			c.Network.Targets = make([]string, MaxHosts+1)
		},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultConfig()
			mut(&cfg)
			if err := cfg.Validate(); err == nil {
				t.Fatal("accepted")
			}
			if _, err := Run(context.Background(), cfg, noEnv); err == nil {
				t.Fatal("Run accepted an invalid config")
			}
		})
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestRunHonoursCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cfg := only(DefaultConfig(), CheckNetwork)
	cfg.Network.Targets = []string{"127.0.0.1:1"}
	rep, err := Run(ctx, cfg, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if r := result(t, rep, CheckNetwork); r.Passed || !strings.Contains(r.Detail, "canceled") {
		t.Fatalf("%+v", r)
	}
}
