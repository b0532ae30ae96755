package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aerodb/authority/pipeline/preflight"
)

// preflightSecret is distinctive so that any leak is found by substring.
const preflightSecret = "pf-SECRET-VALUE-4b8e2d71c0-never-print"

// fakeDockerEngine serves the Engine API's /_ping and /version on a unix
// socket in a short temp dir; returns the unix:// host.
func fakeDockerEngine(t *testing.T, version string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pfc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ln, err := net.Listen("unix", filepath.Join(dir, "docker.sock"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_ping" {
			fmt.Fprint(w, "OK")
			return
		}
		fmt.Fprintf(w, `{"Version":%q,"ApiVersion":"1.43"}`, version)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "unix://" + filepath.Join(dir, "docker.sock")
}

// openPort accepts connections on 127.0.0.1; closedPort had a listener
// that is gone.
func openAndClosedPorts(t *testing.T) (open, closed int) {
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

// preflightArgs is a command line whose checks all pass on any machine
// (real probes, thresholds of 1) except as the test changes it.
func preflightArgs(t *testing.T, docker string, openPort int, extra ...string) []string {
	inv := filepath.Join(t.TempDir(), "hosts.ini")
	if err := os.WriteFile(inv, []byte(fmt.Sprintf("[web]\nweb1 ansible_host=127.0.0.1 ansible_port=%d\n", openPort)), 0o644); err != nil {
		t.Fatal(err)
	}
	return append([]string{"preflight", "--min-cpus", "1", "--min-memory", "1B", "--min-free-disk", "1B",
		"--disk-path", t.TempDir(), "--docker-host", docker, "--inventory", inv, "--inventory-group", "web",
		"--require-secret", "DEPLOY_TOKEN"}, extra...)
}

func preflightEnv() map[string]string {
	return map[string]string{"DEPLOY_TOKEN": preflightSecret}
}

func TestPreflightCLIPasses(t *testing.T) {
	docker := fakeDockerEngine(t, "24.0.7")
	open, _ := openAndClosedPorts(t)
	report := filepath.Join(t.TempDir(), "report.json")
	o, stdout, stderr, _ := testOptions(preflightEnv())
	code := run(context.Background(), o, preflightArgs(t, docker, open, "-o", "json", "--report", report))
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s\nstdout:\n%s", code, stderr, stdout)
	}
	file, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	if string(file) != stdout.String() {
		t.Fatalf("--report differs from -o json:\n%s\n---\n%s", file, stdout)
	}
	var rep preflight.Report
	if err := json.Unmarshal(file, &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Passed || len(rep.Checks) != 6 {
		t.Fatalf("%+v", rep)
	}
	for _, c := range rep.Checks {
		if !c.Passed || c.Skipped {
			t.Fatalf("check %+v: want passed and run", c)
		}
	}

	// Text output: a table and the verdict.
	o, stdout, _, _ = testOptions(preflightEnv())
	if code := run(context.Background(), o, preflightArgs(t, docker, open)); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	if !strings.HasPrefix(stdout.String(), "CHECK") || !strings.HasSuffix(stdout.String(), "preflight passed\n") {
		t.Fatalf("stdout:\n%s", stdout)
	}
}

func TestPreflightCLIFailsAndOverrides(t *testing.T) {
	docker := fakeDockerEngine(t, "24.0.7")
	oldDocker := fakeDockerEngine(t, "19.03.13")
	open, closed := openAndClosedPorts(t)
	for _, tc := range []struct {
		name  string
		args  []string
		check string
	}{
		{"disk", []string{"--min-free-disk", "1EB"}, "disk"},
		{"cpu", []string{"--min-cpus", "100000"}, "cpu"},
		{"memory", []string{"--min-memory", "1EB"}, "memory"},
		{"docker old", []string{"--docker-host", oldDocker}, "docker"},
		{"docker missing", []string{"--docker-host", "unix:///nonexistent/docker.sock"}, "docker"},
		{"network", []string{"--target", fmt.Sprintf("127.0.0.1:%d", closed)}, "network"},
		{"secret", []string{"--require-secret", "DEPLOY_TOKEN", "--require-secret", "NOT_SET_ANYWHERE"}, "secrets"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			report := filepath.Join(t.TempDir(), "r.json")
			o, stdout, stderr, _ := testOptions(preflightEnv())
			args := append(preflightArgs(t, docker, open, "--report", report), tc.args...)
			code := run(context.Background(), o, args)
			if code != exitError {
				t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
			}
			want := fmt.Sprintf("error: preflight failed: 1 of 6 checks (%s)", tc.check)
			if !strings.HasPrefix(stderr.String(), want) {
				t.Fatalf("stderr %q, want %q", stderr, want)
			}
			if !strings.Contains(stdout.String(), "preflight FAILED: "+tc.check) {
				t.Fatalf("stdout:\n%s", stdout)
			}
			var rep preflight.Report
			if b, err := os.ReadFile(report); err != nil || json.Unmarshal(b, &rep) != nil || rep.Passed {
				t.Fatalf("report %+v: %v", rep, err)
			}

			// The same with an override of that check: exit 0, reason recorded.
			o, stdout, stderr, _ = testOptions(preflightEnv())
			reason := "approved by on-call, CHG-7, commas, fine"
			code = run(context.Background(), o, append(args, "--override", tc.check+"="+reason, "-o", "json"))
			if code != exitOK {
				t.Fatalf("overridden: exit %d; stderr:\n%s", code, stderr)
			}
			if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
				t.Fatal(err)
			}
			c, _ := rep.Check(tc.check)
			if !rep.Passed || c.Passed || !c.Overridden || c.OverrideReason != reason {
				t.Fatalf("overridden report %+v", rep)
			}
			// Overriding another check does not help.
			other := "cpu"
			if tc.check == "cpu" {
				other = "disk"
			}
			o, _, _, _ = testOptions(preflightEnv())
			if code := run(context.Background(), o, append(args, "--override", other+"=unrelated")); code != exitError {
				t.Fatalf("override of %s let %s through: exit %d", other, tc.check, code)
			}
		})
	}
}

func TestPreflightCLIConfigFile(t *testing.T) {
	docker := fakeDockerEngine(t, "24.0.7")
	open, _ := openAndClosedPorts(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "preflight.yaml")
	body := fmt.Sprintf("disk: {min_free: 1EB, paths: [%q]}\nmemory: {min: 1B}\ndocker: {host: %q}\nnetwork: {targets: [\"127.0.0.1:%d\"]}\n",
		dir, docker, open)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	o, _, stderr, _ := testOptions(preflightEnv())
	if code := run(context.Background(), o, []string{"preflight", "--config", cfg}); code != exitError ||
		!strings.Contains(stderr.String(), "(disk)") {
		t.Fatalf("exit %d, stderr %s: the file's 1EB threshold must fail disk", code, stderr)
	}
	// The flag wins over the file.
	o, _, stderr, _ = testOptions(preflightEnv())
	if code := run(context.Background(), o, []string{"preflight", "--config", cfg, "--min-free-disk", "1B"}); code != exitOK {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	// DOCKER_HOST is used when neither the file nor a flag names a host.
	if err := os.WriteFile(cfg, []byte("skip: [cpu, memory, disk, network, secrets]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	o, stdout, stderr, _ := testOptions(map[string]string{"DOCKER_HOST": docker})
	if code := run(context.Background(), o, []string{"preflight", "--config", cfg}); code != exitOK ||
		!strings.Contains(stdout.String(), "24.0.7") {
		t.Fatalf("exit %d, stdout %s stderr %s", code, stdout, stderr)
	}
}

func TestPreflightCLIUsage(t *testing.T) {
	dir := t.TempDir()
	badCfg := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badCfg, []byte("disk: {min_fre: 1GB}\n"), 0o644)
	bigInv := filepath.Join(dir, "big.ini")
	os.WriteFile(bigInv, []byte(strings.Repeat("#\n", preflight.MaxInventoryBytes)), 0o644)
	for _, args := range [][]string{
		{"preflight", "extra"},
		{"preflight", "--override", "gpu=because"},
		{"preflight", "--override", "cpu,disk=both at once"},
		{"preflight", "--override", "disk"},
		{"preflight", "--override", "disk="},
		{"preflight", "--override", "disk=" + strings.Repeat("r", preflight.MaxReasonBytes+1)},
		{"preflight", "--override", "disk=a", "--override", "disk=b"},
		{"preflight", "--skip", "gpu"},
		{"preflight", "--min-free-disk", "lots"},
		{"preflight", "--min-memory", "-1GB"},
		{"preflight", "--connect-timeout", "0s"},
		{"preflight", "--docker-host", "http://localhost"},
		{"preflight", "--min-docker-version", "latest"},
		{"preflight", "--target", "no-port"},
		{"preflight", "--target-port", "70000"},
		{"preflight", "--require-secret", "BAD-NAME"},
		{"preflight", "--config", filepath.Join(dir, "missing.yaml")},
		{"preflight", "--config", badCfg},
		{"preflight", "--bogus"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			o, stdout, stderr, _ := testOptions(preflightEnv())
			if code := run(context.Background(), o, args); code != exitUsage {
				t.Fatalf("exit %d, want 2; stderr:\n%s", code, stderr)
			}
			if !strings.HasPrefix(stderr.String(), "error: ") || stdout.Len() != 0 {
				t.Fatalf("stdout %q stderr %q", stdout, stderr)
			}
		})
	}
	// An inventory over its bound, missing or malformed is a usage error
	// (it is read before anything is probed), naming the problem.
	for inv, msg := range map[string]string{
		bigInv:                            "longer than 1048576 bytes",
		filepath.Join(dir, "missing.ini"): "no such file",
		badCfg:                            "field min_fre not found", // not an inventory
	} {
		o, stdout, stderr, _ := testOptions(preflightEnv())
		code := run(context.Background(), o, []string{"preflight", "--inventory", inv})
		if code != exitUsage || !strings.Contains(stderr.String(), msg) || stdout.Len() != 0 {
			t.Fatalf("%s: exit %d stdout %s stderr %s", inv, code, stdout, stderr)
		}
	}
}

// TestPreflightSecretNeverLeaks: a secret's value appears in none of
// stdout, stderr and the report file, in text and JSON output, when the
// preflight passes, when another secret is missing, when another check
// fails, and on a usage error.
func TestPreflightSecretNeverLeaks(t *testing.T) {
	docker := fakeDockerEngine(t, "24.0.7")
	open, closed := openAndClosedPorts(t)
	for _, tc := range []struct {
		name string
		args []string
		code exitCode
	}{
		{"passing", nil, exitOK},
		{"other secret missing", []string{"--require-secret", "DEPLOY_TOKEN", "--require-secret", "MISSING_TOO"}, exitError},
		{"other secret missing, overridden", []string{"--require-secret", "DEPLOY_TOKEN", "--require-secret", "MISSING_TOO",
			"--override", "secrets=rotation in progress"}, exitOK},
		{"network fails", []string{"--target", fmt.Sprintf("127.0.0.1:%d", closed)}, exitError},
		{"usage error", []string{"--require-secret", "DEPLOY_TOKEN=" + preflightSecret}, exitUsage},
	} {
		for _, format := range []string{"text", "json"} {
			t.Run(tc.name+"/"+format, func(t *testing.T) {
				report := filepath.Join(t.TempDir(), "report.json")
				o, stdout, stderr, _ := testOptions(preflightEnv())
				args := append(preflightArgs(t, docker, open, "-o", format, "--report", report), tc.args...)
				if code := run(context.Background(), o, args); code != tc.code {
					t.Fatalf("exit %d, want %d; stderr:\n%s", code, tc.code, stderr)
				}
				file, err := os.ReadFile(report)
				if tc.code == exitUsage {
					if !os.IsNotExist(err) {
						t.Fatalf("a usage error wrote a report: %v", err)
					}
				} else if err != nil {
					t.Fatal(err)
				}
				for what, s := range map[string]string{"stdout": stdout.String(), "stderr": stderr.String(), "report": string(file)} {
					if strings.Contains(s, preflightSecret) {
						t.Fatalf("%s contains the secret's value:\n%s", what, s)
					}
				}
			})
		}
	}
	// The library's error (an invalid config) and report carry no value
	// either.
	cfg := preflight.DefaultConfig()
	cfg.Skip = []string{"gpu"}
	cfg.Secrets.Required = []string{"DEPLOY_TOKEN"}
	_, err := preflight.Run(context.Background(), cfg, func(k string) string { return preflightEnv()[k] })
	if err == nil || strings.Contains(err.Error(), preflightSecret) {
		t.Fatalf("error %v", err)
	}
}
