package preflight

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	version "github.com/hashicorp/go-version"
	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

func checkCPU(_ context.Context, cfg Config, _ func(string) string) Result {
	n := runtime.NumCPU()
	if cfg.Probes.NumCPU != nil {
		n = cfg.Probes.NumCPU()
	}
	r := Result{Threshold: fmt.Sprintf(">= %d CPUs", cfg.CPU.Min), Observed: fmt.Sprintf("%d CPUs", n)}
	r.Passed = n >= cfg.CPU.Min
	if r.Passed {
		r.Detail = "enough logical CPUs"
	} else {
		r.Detail = fmt.Sprintf("%d logical CPUs usable, %d required", n, cfg.CPU.Min)
	}
	return r
}

func checkMemory(_ context.Context, cfg Config, _ func(string) string) Result {
	root := cfg.Probes.ProcRoot
	if root == "" {
		root = procfs.DefaultMountPoint
	}
	r := Result{Threshold: ">= " + cfg.Memory.Min.String() + " available"}
	fs, err := procfs.NewFS(root)
	if err != nil {
		r.Detail = fmt.Sprintf("reading %s: %v", root, err)
		return r
	}
	mi, err := fs.Meminfo()
	if err != nil {
		r.Detail = fmt.Sprintf("reading meminfo: %v", err)
		return r
	}
	if mi.MemAvailableBytes == nil {
		r.Detail = "meminfo has no MemAvailable (kernel older than 3.14?)"
		return r
	}
	avail := *mi.MemAvailableBytes
	r.Observed = Size(avail).String() + " available"
	r.Passed = avail >= uint64(cfg.Memory.Min)
	if r.Passed {
		r.Detail = "enough available memory"
	} else {
		r.Detail = fmt.Sprintf("MemAvailable %s is below %s", Size(avail), cfg.Memory.Min)
	}
	return r
}

// statfsFree is the space available to unprivileged users at path.
func statfsFree(path string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, err
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}

func checkDisk(_ context.Context, cfg Config, _ func(string) string) Result {
	free := statfsFree
	if cfg.Probes.DiskFree != nil {
		free = cfg.Probes.DiskFree
	}
	paths := cfg.Disk.Paths
	if len(paths) == 0 {
		wd, err := os.Getwd()
		if err != nil {
			return Result{Detail: fmt.Sprintf("working directory: %v", err)}
		}
		paths = []string{wd}
	}
	r := Result{Threshold: ">= " + cfg.Disk.MinFree.String() + " free", Passed: true}
	var observed, problems []string
	for _, p := range paths {
		n, err := free(p)
		if err != nil {
			r.Passed = false
			observed = append(observed, p+": ?")
			problems = append(problems, fmt.Sprintf("%s: %v", p, unwrapPathError(err)))
			continue
		}
		observed = append(observed, fmt.Sprintf("%s: %s free", p, humanize.Bytes(n)))
		if n < uint64(cfg.Disk.MinFree) {
			r.Passed = false
			problems = append(problems, fmt.Sprintf("%s has %s free, below %s", p, humanize.Bytes(n), cfg.Disk.MinFree))
		}
	}
	r.Observed = strings.Join(observed, "; ")
	if r.Passed {
		r.Detail = fmt.Sprintf("enough free space on %d path(s)", len(paths))
	} else {
		r.Detail = strings.Join(problems, "; ")
	}
	return r
}

// unwrapPathError drops the path an *os.PathError repeats.
func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// dockerEndpoint parses a Docker host (unix:///path or tcp://host:port) into
// the dialer's network and address.
func dockerEndpoint(host string) (network, address string, err error) {
	u, perr := url.Parse(host)
	if perr == nil {
		switch {
		case u.Scheme == "unix" && u.Path != "" && u.Host == "":
			return "unix", u.Path, nil
		case u.Scheme == "tcp" && u.Host != "" && (u.Path == "" || u.Path == "/"):
			if _, _, err := net.SplitHostPort(u.Host); err == nil {
				return "tcp", u.Host, nil
			}
		}
	}
	return "", "", fmt.Errorf("docker host %s: want unix:///path/to/docker.sock or tcp://host:port", quote(host))
}

func checkDocker(ctx context.Context, cfg Config, env func(string) string) Result {
	host := cfg.Docker.Host
	if host == "" {
		host = env("DOCKER_HOST")
	}
	if host == "" {
		host = DefaultDockerHost
	}
	r := Result{Threshold: "/_ping OK, version >= " + cfg.Docker.MinVersion}
	network, address, err := dockerEndpoint(host)
	if err != nil {
		r.Detail = err.Error()
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(cfg.Docker.Timeout))
	defer cancel()
	var d net.Dialer
	tr := &http.Transport{
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return d.DialContext(ctx, network, address) },
		DisableKeepAlives: true,
		Proxy:             nil,
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	get := func(path string) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker"+path, nil)
		if err != nil {
			return nil, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxDockerBody))
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: HTTP %d", path, resp.StatusCode)
		}
		return b, nil
	}
	where := network + " " + address
	ping, err := get("/_ping")
	if err != nil {
		r.Detail = fmt.Sprintf("Docker Engine at %s not reachable: %v", where, shortNetError(err))
		return r
	}
	if s := strings.TrimSpace(string(ping)); s != "OK" {
		r.Detail = fmt.Sprintf("Docker Engine at %s: /_ping answered %s, not OK", where, quote(s))
		return r
	}
	body, err := get("/version")
	if err != nil {
		r.Detail = fmt.Sprintf("Docker Engine at %s: %v", where, shortNetError(err))
		return r
	}
	var v struct {
		Version    string `json:"Version"`
		APIVersion string `json:"ApiVersion"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		r.Detail = fmt.Sprintf("Docker Engine at %s: /version is not JSON", where)
		return r
	}
	r.Observed = "version " + quote(v.Version)
	if len(v.Version) <= 64 {
		r.Observed = "version " + v.Version
	}
	have, err := version.NewVersion(v.Version)
	if err != nil {
		r.Detail = fmt.Sprintf("Docker Engine at %s reports version %s, not a version number", where, quote(v.Version))
		return r
	}
	want, _ := version.NewVersion(cfg.Docker.MinVersion) // Validate checked it
	// Pre-release and build suffixes ("-ce", "+dfsg1") do not count: a
	// distribution's 20.10.24+dfsg1 is 20.10.24.
	r.Passed = !have.Core().LessThan(want.Core())
	if r.Passed {
		r.Detail = fmt.Sprintf("Docker Engine at %s answers, version %s", where, have.Core())
	} else {
		r.Detail = fmt.Sprintf("Docker Engine at %s is version %s, older than %s", where, have.Core(), cfg.Docker.MinVersion)
	}
	return r
}

// shortNetError drops the URL that *url.Error repeats.
func shortNetError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

// checkSecrets: names only. A value is compared with "" (after trimming
// blanks) and dropped; nothing derived from it (length, prefix, hash) is
// kept. env cannot tell an unset variable from an empty one: both are
// "missing or empty".
func checkSecrets(_ context.Context, cfg Config, env func(string) string) Result {
	names := cfg.Secrets.Required
	if len(names) == 0 {
		return Result{Passed: true, Skipped: true, Detail: "no required secrets configured"}
	}
	r := Result{Threshold: fmt.Sprintf("%d required, set and not blank", len(names))}
	var missing, blank []string
	for _, n := range names {
		switch v := env(n); {
		case v == "":
			missing = append(missing, n)
		case strings.TrimSpace(v) == "":
			blank = append(blank, n)
		}
	}
	r.Observed = fmt.Sprintf("%d/%d present", len(names)-len(missing)-len(blank), len(names))
	r.Passed = len(missing) == 0 && len(blank) == 0
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, "missing or empty: "+strings.Join(missing, ", "))
	}
	if len(blank) > 0 {
		parts = append(parts, "blank: "+strings.Join(blank, ", "))
	}
	if r.Passed {
		r.Detail = "all required secrets are set: " + strings.Join(names, ", ")
	} else {
		r.Detail = strings.Join(parts, "; ")
	}
	return r
}
