package conformance

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// instruction is one Dockerfile instruction: its keyword (upper case),
// flags (--from=…) and the rest.
type instruction struct {
	cmd   string
	flags []string
	args  string
	line  int
}

// parseDockerfile reads a Dockerfile into its instructions: comments and
// parser directives dropped, backslash continuations joined. (BuildKit's
// parser, github.com/moby/buildkit/frontend/dockerfile/parser, is not among
// the served modules; this covers the syntax deploy/docker uses: no
// heredocs, the default escape character.)
func parseDockerfile(t *testing.T, b []byte) []instruction {
	t.Helper()
	var out []instruction
	var cur strings.Builder
	start := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		trim := strings.TrimSpace(line)
		if cur.Len() == 0 && (trim == "" || strings.HasPrefix(trim, "#")) {
			continue
		}
		if cur.Len() > 0 && strings.HasPrefix(trim, "#") {
			continue // a comment inside a continuation
		}
		if cur.Len() == 0 {
			start = n
		}
		if strings.HasSuffix(trim, "\\") {
			cur.WriteString(strings.TrimSuffix(trim, "\\") + " ")
			continue
		}
		cur.WriteString(trim)
		fields := strings.Fields(cur.String())
		in := instruction{cmd: strings.ToUpper(fields[0]), line: start}
		rest := fields[1:]
		for len(rest) > 0 && strings.HasPrefix(rest[0], "--") {
			in.flags, rest = append(in.flags, rest[0]), rest[1:]
		}
		in.args = strings.Join(rest, " ")
		out = append(out, in)
		cur.Reset()
	}
	if cur.Len() > 0 {
		t.Fatalf("Dockerfile ends in a continuation")
	}
	return out
}

// The Dockerfile is multi-stage, builds static binaries with the release
// flags, runs as a non-root user on a minimal base, and fetches nothing
// with ADD. (No container runtime here: the image itself is built where
// one exists; internal/version's TestStampedStaticBuild builds the
// binaries with these flags.)
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "docker", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	ins := parseDockerfile(t, b)
	var stages [][]instruction
	for _, in := range ins {
		if in.cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) > 0 {
			stages[len(stages)-1] = append(stages[len(stages)-1], in)
		}
		if in.cmd == "ADD" && (strings.Contains(in.args, "http://") || strings.Contains(in.args, "https://") || strings.Contains(in.args, "git@")) {
			t.Errorf("line %d: ADD of a URL: %s", in.line, in.args)
		}
	}
	if len(stages) < 2 {
		t.Fatalf("%d stages: want a build stage and a runtime stage", len(stages))
	}
	final := stages[len(stages)-1]
	base := strings.Fields(final[0].args)[0]
	if !strings.HasPrefix(base, "gcr.io/distroless/static") && base != "scratch" {
		t.Errorf("runtime base %s: want distroless/static or scratch", base)
	}
	user := ""
	var build string
	for _, in := range final {
		switch in.cmd {
		case "USER":
			user = in.args
		case "RUN":
			t.Errorf("line %d: RUN in the runtime stage (distroless has no shell)", in.line)
		case "ENTRYPOINT":
			if !strings.Contains(in.args, "authorityd") {
				t.Errorf("entrypoint %s", in.args)
			}
		}
	}
	if u := strings.Split(user, ":")[0]; u == "" || u == "0" || u == "root" {
		t.Errorf("runtime stage USER %q: want a non-root user", user)
	}
	for _, in := range stages[0] {
		if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
			build = in.args
		}
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-X github.com/aerodb/authority/internal/version.Version=${VERSION}",
		"-X github.com/aerodb/authority/internal/version.Commit=${COMMIT}", "./cmd/authorityd", "./cmd/authorityctl"} {
		if !strings.Contains(build, want) {
			t.Errorf("build stage's go build lacks %q: %s", want, build)
		}
	}
	mk, err := os.ReadFile(filepath.Join(deployDir, "..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"internal/version.Version=$(VERSION)", "internal/version.Commit=$(COMMIT)"} {
		if !bytes.Contains(mk, []byte(want)) {
			t.Errorf("Makefile lacks %s", want)
		}
	}
}

// The systemd unit passes systemd-analyze verify (Debian package systemd;
// .ci/run installs it) with no warning, and keeps its hardening. verify
// needs ExecStart's binary to exist: the unit is checked as written, with
// only that path pointing to a stand-in executable.
func TestSystemdUnit(t *testing.T) {
	path := filepath.Join(deployDir, "systemd", "authorityd.service")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string][]string{}
	section := ""
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("unit line %q", line)
			}
			keys[section+"."+k] = append(keys[section+"."+k], v)
		}
	}
	for k, v := range map[string]string{"Service.ProtectSystem": "strict", "Service.NoNewPrivileges": "yes",
		"Service.ReadWritePaths": "/var/lib/authority", "Service.User": "authority", "Service.LimitNOFILE": "65536",
		"Service.ExecStart": "/usr/local/bin/authorityd --config /etc/authority/authorityd.yaml", "Service.CapabilityBoundingSet": "",
		"Service.PrivateTmp": "yes", "Install.WantedBy": "multi-user.target"} {
		if got := keys[k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s = %v, want %q", k, got, v)
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze not found: install Debian's systemd package (.ci/run does)")
	}
	dir := t.TempDir()
	stub := filepath.Join(dir, "authorityd")
	if err := os.WriteFile(stub, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit := filepath.Join(dir, "authorityd.service")
	if err := os.WriteFile(unit, bytes.ReplaceAll(b, []byte("/usr/local/bin/authorityd "), []byte(stub+" ")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// verify does catch a bad value (a warning, exit 0): the check above
	// fails on any output.
	bad := filepath.Join(dir, "bad.service")
	os.WriteFile(bad, bytes.Replace(b, []byte("ProtectSystem=strict"), []byte("ProtectSystem=strickt"), 1), 0o644)
	if out, _ := exec.Command(analyze, "verify", bad).CombinedOutput(); !bytes.Contains(out, []byte("strickt")) {
		t.Errorf("systemd-analyze verify said nothing of a bad value: %s", out)
	}
	sysusers, err := os.ReadFile(filepath.Join(deployDir, "systemd", "authority.sysusers"))
	if err != nil || !bytes.Contains(sysusers, []byte("u authority ")) {
		t.Errorf("authority.sysusers: %v %s", err, sysusers)
	}
}

// The compose file: three servers with their own certificate and data
// volume and one peer list, Prometheus with the alert rules and Grafana
// with the dashboards, every mounted file present.
func TestCompose(t *testing.T) {
	dir := filepath.Join(deployDir, "compose")
	b, err := os.ReadFile(filepath.Join(dir, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]struct {
			Environment map[string]string `json:"environment"`
			Volumes     []string          `json:"volumes"`
			Image       string            `json:"image"`
		} `json:"services"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	peers := ""
	for _, id := range []string{"s1", "s2", "s3"} {
		s, ok := c.Services[id]
		if !ok {
			t.Fatalf("no service %s", id)
		}
		e := s.Environment
		if e["AUTHORITYD_NODE_ID"] != id || e["AUTHORITYD_CERT"] != "/etc/authority/tls/server-"+id+".crt" ||
			e["AUTHORITYD_RAFT_ADDR"] != id+":7001" || e["AUTHORITYD_BOOTSTRAP"] != "true" || e["AUTHORITYD_METRICS_ADDR"] == "" {
			t.Errorf("%s environment %v", id, e)
		}
		if peers == "" {
			peers = e["AUTHORITYD_PEER"]
		}
		if e["AUTHORITYD_PEER"] != peers || strings.Count(peers, ";") != 2 {
			t.Errorf("%s peers %q", id, e["AUTHORITYD_PEER"])
		}
		if !slices.Contains(s.Volumes, id+"-data:/var/lib/authority") {
			t.Errorf("%s volumes %v", id, s.Volumes)
		}
	}
	for _, svc := range []string{"prometheus", "grafana", "dashboards"} {
		for _, v := range c.Services[svc].Volumes {
			src := strings.Split(v, ":")[0]
			if strings.HasPrefix(src, ".") {
				if _, err := os.Stat(filepath.Join(dir, src)); err != nil {
					t.Errorf("%s mounts %s: %v", svc, src, err)
				}
			}
		}
	}
	prom, err := os.ReadFile(filepath.Join(dir, "prometheus.yml"))
	if err != nil || !bytes.Contains(prom, []byte(`"s1:9100", "s2:9100", "s3:9100"`)) {
		t.Errorf("prometheus.yml: %v", err)
	}
}
