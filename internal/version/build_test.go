package version_test

import (
	"debug/buildinfo"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// The release build (the Dockerfile's and the Makefile's flags): static
// (CGO_ENABLED=0), -trimpath, version and commit stamped with -ldflags -X.
// authorityd --version and authorityctl version print them with the Go
// version; the binaries are static ELF files (no interpreter, no shared
// libraries) whose build info records the flags.
func TestStampedStaticBuild(t *testing.T) {
	root, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const ver, commit = "v1.2.3-test", "0123456789abcdef0123456789abcdef01234567"
	ldflags := "-s -w -X github.com/aerodb/authority/internal/version.Version=" + ver +
		" -X github.com/aerodb/authority/internal/version.Commit=" + commit
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", dir+string(os.PathSeparator), "./cmd/authorityd", "./cmd/authorityctl")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(root)))
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	want := "(commit 0123456789ab, " + runtime.Version() + ", " + runtime.GOOS + "/" + runtime.GOARCH + ")"
	for _, run := range [][]string{{"authorityd", "--version"}, {"authorityctl", "version"}} {
		out, err := exec.Command(filepath.Join(dir, run[0]), run[1:]...).CombinedOutput()
		if got := strings.TrimSpace(string(out)); err != nil || got != run[0]+" "+ver+" "+want {
			t.Errorf("%v: %q %v; want %q", run, got, err, run[0]+" "+ver+" "+want)
		}
		path := filepath.Join(dir, run[0])
		f, err := elf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s has an ELF interpreter: not static", run[0])
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Errorf("%s links %v: not static", run[0], libs)
		}
		f.Close()
		bi, err := buildinfo.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		settings := map[string]string{}
		for _, s := range bi.Settings {
			settings[s.Key] = s.Value
		}
		if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
			t.Errorf("%s build settings %v", run[0], settings)
		}
	}
	out, _ := exec.Command(filepath.Join(dir, "authorityctl"), "-o", "json", "version").Output()
	if !strings.Contains(string(out), `"version":"`+ver+`"`) || !strings.Contains(string(out), `"commit":"`+commit+`"`) {
		t.Errorf("authorityctl -o json version: %s", out)
	}
}
