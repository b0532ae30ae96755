package pipelinetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const ansibleRoot = "../../deploy/ansible"

var playbooks = []string{"runner-provision.yml", "runner-configure.yml", "runner-decommission.yml", "monitoring-targets.yml"}

// ansibleTimeout bounds every ansible-playbook run (a run takes 1-20 s on
// an idle 2-core machine; the bound is for a loaded CI machine).
const ansibleTimeout = 180 * time.Second

// ansibleSlots lets at most two ansible-playbook runs of the parallel tests
// execute at once (2 cores; more only thrash).
var ansibleSlots = make(chan struct{}, 2)

// tool finds a binary or fails naming the Debian package (never a skip:
// .ci/run installs it).
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found on PATH: install the Debian package %s (apt-get install %s; .ci/run does)", name, pkg, pkg)
	}
	return p
}

// ansible runs ansible-playbook in dir with args, isolated from the user's
// and the machine's Ansible configuration: its temp and home dirs under a
// test temp dir, an empty config file, no colour. It returns the combined
// output (bounded) and the error.
func ansible(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	return ansibleEnv(t, dir, nil, args...)
}

// ansibleEnv is ansible with extra environment variables (after the
// defaults, so they win).
func ansibleEnv(t *testing.T, dir string, extra []string, args ...string) (string, error) {
	t.Helper()
	bin := tool(t, "ansible-playbook", "ansible-core")
	home := t.TempDir()
	cfg := filepath.Join(home, "ansible.cfg")
	if err := os.WriteFile(cfg, []byte("[defaults]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The slot first, so that waiting for it does not eat into the timeout
	// (tests waiting here are bounded by the runs ahead of them).
	ansibleSlots <- struct{}{}
	defer func() { <-ansibleSlots }()
	ctx, cancel := context.WithTimeout(context.Background(), ansibleTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"ANSIBLE_CONFIG="+cfg,
		"ANSIBLE_HOME="+filepath.Join(home, "home"),
		"ANSIBLE_LOCAL_TEMP="+filepath.Join(home, "tmp"),
		"ANSIBLE_REMOTE_TEMP="+filepath.Join(home, "remote-tmp"),
		"ANSIBLE_NOCOLOR=1",
		"ANSIBLE_FORCE_COLOR=0",
		"ANSIBLE_PIPELINING=1",
		"ANSIBLE_RETRY_FILES_ENABLED=0",
		"ANSIBLE_PYTHON_INTERPRETER=auto_silent",
		// No token unless the test gives one.
		"GITHUB_RUNNER_ADMIN_TOKEN=",
	)
	cmd.Env = append(cmd.Env, extra...)
	cmd.WaitDelay = 5 * time.Second
	// Everything is kept (searched for secrets), up to a bound.
	out := &cappedBuffer{max: 16 << 20}
	cmd.Stdout = out
	cmd.Stderr = out
	start := time.Now()
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("ansible-playbook %v: timed out after %v: %w", args, ansibleTimeout, err)
	}
	t.Logf("ansible-playbook %s: %v in %.1fs", strings.Join(args, " "), errOrOK(err), time.Since(start).Seconds())
	if out.over {
		t.Fatalf("ansible-playbook %v: more than %d bytes of output", args, out.max)
	}
	return out.String(), err
}

// cappedBuffer keeps at most max bytes and notes an overflow.
type cappedBuffer struct {
	bytes.Buffer
	max  int
	over bool
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if c.Len()+n > c.max {
		c.over = true
		p = p[:max(0, c.max-c.Len())]
	}
	c.Buffer.Write(p)
	return n, nil
}

func errOrOK(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

func absAnsibleRoot(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(ansibleRoot)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAnsibleSyntaxCheck(t *testing.T) {
	root := absAnsibleRoot(t)
	args := append([]string{"--syntax-check", "-i", "inventories/production"}, playbooks...)
	out, err := ansible(t, root, args...)
	if err != nil {
		t.Fatalf("syntax check failed: %v\n%s", err, out)
	}
	for _, p := range playbooks {
		if !strings.Contains(out, "playbook: "+p) {
			t.Errorf("syntax check did not report %s:\n%s", p, out)
		}
	}
}

// The syntax check reads the role's task files (import_role is static): a
// misspelt module in one of them, or broken YAML, fails it.
func TestAnsibleSyntaxCheckRejectsBrokenCopies(t *testing.T) {
	cases := []struct{ name, file, playbook, old, new, want string }{
		{"unknown module in a role task", "roles/github_runner/tasks/configure.yml", "runner-configure.yml",
			"ansible.builtin.get_url:", "ansible.builtin.get_urll:", "ansible.builtin.get_urll"},
		{"broken YAML in a playbook", "runner-decommission.yml", "runner-decommission.yml",
			"  gather_facts: false\n", "  gather_facts: false\n tasks: [\n", "Syntax Error while loading YAML"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			copyTree(t, ansibleRoot, dir)
			p := filepath.Join(dir, c.file)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(mutate(t, string(b), c.old, c.new)), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := ansible(t, dir, "--syntax-check", "-i", "inventories/production", c.playbook)
			if err == nil || !strings.Contains(out, c.want) {
				t.Fatalf("syntax check did not reject the broken copy with %q (err %v):\n%s", c.want, err, out)
			}
		})
	}
}

// fakeDocker serves the Docker Engine API's GET /version on a unix socket
// and counts the requests.
func fakeDocker(t *testing.T, version string) (string, *atomic.Int32) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int32
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/version" {
				http.NotFound(w, r)
				return
			}
			hits.Add(1)
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]string{"Version": version, "ApiVersion": "1.43", "Os": "linux", "Arch": "amd64"})
		}),
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return sock, &hits
}

// checkVars writes the variables of a check run against localhost: every
// path under dir, the current user, no become, no user or package changes,
// thresholds any CI machine meets, Docker at sock.
func checkVars(t *testing.T, dir, sock string) string {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]any{
		"runner_hosts":           "localhost",
		"runner_become":          false,
		"runner_manage_user":     false,
		"runner_manage_packages": false,
		"runner_user":            u.Username,
		"runner_unix_group":      g.Name,
		"runner_home":            filepath.Join(dir, "home"),
		"runner_install_dir":     filepath.Join(dir, "opt/actions-runner"),
		"runner_work_dir":        filepath.Join(dir, "var/work"),
		"runner_state_dir":       filepath.Join(dir, "var/state"),
		"authority_config_dir":   filepath.Join(dir, "etc/aerodb-authority"),
		"runner_systemd_dir":     filepath.Join(dir, "systemd"),
		"runner_min_cpus":        1,
		"runner_min_memory_mb":   64,
		"runner_min_free_gb":     0,
		"runner_require_docker":  true,
		"runner_docker_socket":   sock,
	}
	b, err := json.Marshal(vars)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "vars.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A --check run of runner-provision.yml against localhost changes nothing
// and passes; the Docker check really ran (it is read-only, so it runs in
// check mode too) and rejects a daemon older than 20.10.
func TestAnsibleProvisionCheckMode(t *testing.T) {
	t.Parallel()
	root := absAnsibleRoot(t)
	dir := t.TempDir()
	sock, hits := fakeDocker(t, "24.0.7")
	vars := checkVars(t, dir, sock)
	out, err := ansible(t, root, "-i", "localhost,", "-c", "local", "--check", "-e", "@"+vars, "runner-provision.yml")
	if err != nil {
		t.Fatalf("check run failed: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`localhost\s+: ok=\d+ .*failed=0`).MatchString(out) {
		t.Fatalf("no clean recap:\n%s", out)
	}
	if hits.Load() == 0 {
		t.Errorf("the Docker check did not query the daemon:\n%s", out)
	}
	for _, want := range []string{"Docker 24.0.7", "Create the runner's directories", "GB free under /"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Check mode: nothing was created.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("the check run created %v in %s", entries, dir)
	}

}

// The host checks fail a host below the requirements: a Docker daemon older
// than 20.10, too little free disk where jobs run (each run with only its
// tagged tasks, after fact gathering).
func TestAnsibleProvisionRejectsBadHost(t *testing.T) {
	t.Parallel()
	root := absAnsibleRoot(t)
	cases := []struct {
		name, tag, docker string
		vars              map[string]any
		want              string
	}{
		{"docker 19.03", "docker", "19.03.15", nil, "version 19.03.15; want a running daemon >= 20.10"},
		{"less free disk than required", "disk", "24.0.7", map[string]any{"runner_min_free_gb": 1 << 30}, "GB free, want >= 1073741824 GB"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			sock, hits := fakeDocker(t, c.docker)
			args := []string{"-i", "localhost,", "-c", "local", "--check", "--tags", c.tag, "-e", "@" + checkVars(t, t.TempDir(), sock)}
			if c.vars != nil {
				b, err := json.Marshal(c.vars)
				if err != nil {
					t.Fatal(err)
				}
				extra := filepath.Join(t.TempDir(), "extra.json")
				if err := os.WriteFile(extra, b, 0o644); err != nil {
					t.Fatal(err)
				}
				args = append(args, "-e", "@"+extra)
			}
			out, err := ansible(t, root, append(args, "runner-provision.yml")...)
			if err == nil {
				t.Fatalf("passed (%d Docker queries):\n%s", hits.Load(), out)
			}
			if !strings.Contains(out, c.want) {
				t.Fatalf("failure does not say %q:\n%s", c.want, out)
			}
		})
	}
}

type inventory struct {
	All struct {
		Children map[string]group `yaml:"children"`
	} `yaml:"all"`
}

type group struct {
	Hosts    map[string]map[string]any `yaml:"hosts"`
	Children map[string]group          `yaml:"children"`
}

// hostsOf flattens a group's hosts (with its children's).
func (g group) hostsOf(out map[string]map[string]any) {
	for h, v := range g.Hosts {
		out[h] = v
	}
	for _, c := range g.Children {
		c.hostsOf(out)
	}
}

type scrapeFile struct {
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		StaticConfigs []struct {
			Targets []string          `yaml:"targets"`
			Labels  map[string]string `yaml:"labels"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

// The scrape configuration is rendered from the inventory: every runner
// and authority node at its inventory address, runners labelled with their
// runner group; promtool accepts it.
func TestAnsibleScrapeTargetsFromInventory(t *testing.T) {
	t.Parallel()
	root := absAnsibleRoot(t)
	dest := filepath.Join(t.TempDir(), "prometheus.yml")
	out, err := ansible(t, root, "-i", "inventories/production", "-e", "prometheus_targets_dest="+dest, "monitoring-targets.yml")
	if err != nil {
		t.Fatalf("render failed: %v\n%s", err, out)
	}
	var f scrapeFile
	if err := yaml.Unmarshal(readBounded(t, dest), &f); err != nil {
		t.Fatalf("rendered file: %v", err)
	}

	var inv inventory
	if err := yaml.Unmarshal(readBounded(t, ansibleRoot+"/inventories/production/hosts.yml"), &inv); err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]string{} // job -> target -> runner_group
	runners := map[string]map[string]any{}
	inv.All.Children["github_runners"].hostsOf(runners)
	auth := map[string]map[string]any{}
	inv.All.Children["authority"].hostsOf(auth)
	if len(runners) != 2 || len(auth) == 0 {
		t.Fatalf("inventory: %d runners, %d authority nodes", len(runners), len(auth))
	}
	groupOf := map[string]string{"production_primary": "production-primary", "production_secondary": "production-secondary"}
	want["github-runners"] = map[string]string{}
	for g, name := range groupOf {
		for _, v := range inv.All.Children["github_runners"].Children[g].Hosts {
			want["github-runners"][fmt.Sprintf("%v:9100", v["ansible_host"])] = name
		}
	}
	want["aerodb-authority"] = map[string]string{}
	for _, v := range auth {
		want["aerodb-authority"][fmt.Sprintf("%v:9001", v["ansible_host"])] = ""
	}
	got := map[string]map[string]string{}
	for _, sc := range f.ScrapeConfigs {
		got[sc.JobName] = map[string]string{}
		for _, s := range sc.StaticConfigs {
			for _, tg := range s.Targets {
				got[sc.JobName][tg] = s.Labels["runner_group"]
			}
			if s.Labels["env"] != "production" {
				t.Errorf("%s %v: env label %q", sc.JobName, s.Targets, s.Labels["env"])
			}
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("rendered targets %v, want (from the inventory) %v", got, want)
	}

	promtool := tool(t, "promtool", "prometheus")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pout, err := exec.CommandContext(ctx, promtool, "check", "config", dest).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, pout)
	}
}

var ipv4 = regexp.MustCompile(`\b(?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3}\b`)

// hardcodedAddresses lists IPv4 literals in the files under root outside
// the inventories (Article VIIa), loopback included.
func hardcodedAddresses(t *testing.T, root string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == "inventories" {
				return filepath.SkipDir
			}
			return nil
		}
		b := readBounded(t, p)
		for _, m := range ipv4.FindAll(b, -1) {
			rel, _ := filepath.Rel(root, p)
			found = append(found, rel+": "+string(m))
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return found
}

func TestNoHardcodedAddresses(t *testing.T) {
	for _, root := range []string{ansibleRoot, actionsRoot} {
		if found := hardcodedAddresses(t, root); len(found) > 0 {
			t.Errorf("addresses outside the inventory: %v", found)
		}
	}
	// The scanner finds one.
	dir := t.TempDir()
	copyTree(t, ansibleRoot+"/templates", filepath.Join(dir, "templates"))
	if err := os.WriteFile(filepath.Join(dir, "templates", "x.j2"), []byte("targets: [\"192.0.2.7:9100\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if found := hardcodedAddresses(t, dir); !slices.Equal(found, []string{"templates/x.j2: 192.0.2.7"}) {
		t.Errorf("scanner found %v", found)
	}
}

// fakeGitHub serves what runner-configure.yml reads in check mode on
// 127.0.0.1: the organisation's runner groups (only with the expected
// bearer token) and HEAD of the runner archive. It records the requests.
type fakeGitHub struct {
	url      string
	token    string
	mu       sync.Mutex
	requests []string
}

func newFakeGitHub(t *testing.T, token string) *fakeGitHub {
	t.Helper()
	f := &fakeGitHub{token: token}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.url = "http://" + ln.Addr().String()
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization") == "Bearer "+f.token
		f.mu.Lock()
		f.requests = append(f.requests, fmt.Sprintf("%s %s auth=%v", r.Method, r.URL.Path, auth))
		f.mu.Unlock()
		switch {
		case strings.HasPrefix(r.URL.Path, "/download/v2.321.0/") && r.Method == http.MethodHead:
			w.Header().Set("Content-Length", "0")
		case r.URL.Path == "/orgs/example-org/actions/runner-groups" && r.Method == http.MethodGet:
			if !auth {
				http.Error(w, `{"message":"Bad credentials"}`, http.StatusUnauthorized)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"total_count":2,"runner_groups":[{"id":7,"name":"production-primary"},{"id":8,"name":"production-secondary"}]}`)
		default:
			http.Error(w, "unexpected", http.StatusNotFound)
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return f
}

func (f *fakeGitHub) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

// A --check run of runner-configure.yml against localhost (at -vvv, which
// prints every task's module arguments: without no_log the token would be
// in them), on a host laid
// out as runner-provision.yml leaves it (its directories exist, empty): the
// token from the controller's environment reaches the (fake) GitHub API as
// a bearer token and appears in no output; the runner group is resolved by
// name; nothing is written. Without the token the play stops, naming the
// variable.
func TestAnsibleConfigureCheckMode(t *testing.T) {
	t.Parallel()
	root := absAnsibleRoot(t)
	const token = "ghs_fakeTokenForTheCheckRun0123456789"
	gh := newFakeGitHub(t, token)

	dir := t.TempDir()
	src := t.TempDir()
	vars := map[string]any{}
	b, err := os.ReadFile(checkVars(t, dir, ""))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &vars); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"opt/actions-runner", "var/state", "etc/aerodb-authority", "systemd", "bin"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"authorityctl", "ca.crt", "deployer.crt", "deployer.key"} {
		if err := os.WriteFile(filepath.Join(src, f), []byte("test "+f+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	maps.Copy(vars, map[string]any{
		"github_org":                "example-org",
		"github_api_url":            gh.url,
		"runner_download_base":      gh.url + "/download",
		"runner_version":            "2.321.0",
		"runner_sha256":             strings.Repeat("ab", 32),
		"runner_group_name":         "production-primary",
		"runner_service_name":       "aerodb-test-runner-absent",
		"authority_endpoints":       []string{"authority-01.invalid:8001"},
		"authorityctl_src":          filepath.Join(src, "authorityctl"),
		"authorityctl_dest":         filepath.Join(dir, "bin/authorityctl"),
		"authority_ca_src":          filepath.Join(src, "ca.crt"),
		"authority_client_cert_src": filepath.Join(src, "deployer.crt"),
		"authority_client_key_src":  filepath.Join(src, "deployer.key"),
	})
	vb, err := json.Marshal(vars)
	if err != nil {
		t.Fatal(err)
	}
	vf := filepath.Join(t.TempDir(), "vars.json")
	if err := os.WriteFile(vf, vb, 0o644); err != nil {
		t.Fatal(err)
	}

	out, err := ansibleEnv(t, root, []string{"GITHUB_RUNNER_ADMIN_TOKEN=" + token},
		"-i", "localhost,", "-c", "local", "--check", "-vvv", "-e", "@"+vf, "runner-configure.yml")
	if err != nil {
		t.Fatalf("check run failed: %v\n%s", err, out)
	}
	if strings.Contains(out, token) {
		t.Fatalf("the token appears in the output:\n%s", out)
	}
	reqs := gh.seen()
	if !slices.Contains(reqs, "GET /orgs/example-org/actions/runner-groups auth=true") {
		t.Errorf("the runner group was not looked up with the token: %v", reqs)
	}
	for _, want := range []string{"Install authorityctl", "Generate the JIT runner configuration", "Install the runner's client key"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks task %q:\n%s", want, out)
		}
	}
	// The key's task has no_log: no diff of it is shown.
	if strings.Contains(out, "test deployer.key") {
		t.Errorf("the client key's content appears in the output")
	}
	// Check mode: the provisioned directories are still empty.
	for _, d := range []string{"opt/actions-runner", "var/state", "etc/aerodb-authority", "systemd", "bin"} {
		if e, _ := os.ReadDir(filepath.Join(dir, d)); len(e) != 0 {
			t.Errorf("check mode wrote %v into %s", e, d)
		}
	}

	// Without the token: refused before any API call, naming the variable.
	before := len(gh.seen())
	out, err = ansibleEnv(t, root, nil, "-i", "localhost,", "-c", "local", "--check", "-v", "-e", "@"+vf, "runner-configure.yml")
	if err == nil || len(gh.seen()) != before {
		t.Fatalf("ran without a token (err %v, API calls %v):\n%s", err, gh.seen()[before:], out)
	}
	if !strings.Contains(out, "export GITHUB_RUNNER_ADMIN_TOKEN on the controller") {
		t.Errorf("the failure does not name the variable:\n%s", out)
	}
}
