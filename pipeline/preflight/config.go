// Package preflight checks that a deploy runner can deploy before it takes
// the deploy lock: CPUs and available memory, free disk space, a reachable
// Docker Engine of a recent enough version, TCP connectivity to the
// deployment targets (an Ansible inventory and/or host:port pairs) and the
// presence of required secrets as environment variables.
//
// Secrets are checked by name only: a value is read to test that it is
// non-empty and never copied anywhere (report, error, log).
//
// A failing check fails the preflight unless an override names it with a
// reason; the reason is part of the report so that the caller can record it
// (`authorityctl deploy run` records it in the authority).
//
// Run is the entry point; `authorityctl preflight` is its command line.
package preflight

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/dustin/go-humanize"
	version "github.com/hashicorp/go-version"
	"gopkg.in/yaml.v3"
)

// Check names, in the order the report lists them.
const (
	CheckCPU     = "cpu"
	CheckMemory  = "memory"
	CheckDisk    = "disk"
	CheckDocker  = "docker"
	CheckNetwork = "network"
	CheckSecrets = "secrets"
)

// CheckNames lists every check in report order.
func CheckNames() []string {
	return []string{CheckCPU, CheckMemory, CheckDisk, CheckDocker, CheckNetwork, CheckSecrets}
}

func knownCheck(name string) bool {
	for _, n := range CheckNames() {
		if n == name {
			return true
		}
	}
	return false
}

// Defaults.
const (
	DefaultMinCPUs          = 1
	DefaultMinMemory        = Size(512 * 1000 * 1000)       // 512 MB available
	DefaultMinFreeDisk      = Size(10 * 1000 * 1000 * 1000) // 10 GB (seed 002 AC3)
	DefaultDockerHost       = "unix:///var/run/docker.sock"
	DefaultMinDockerVersion = "20.10"
	DefaultDockerTimeout    = Duration(5 * time.Second)
	DefaultConnectTimeout   = Duration(3 * time.Second)
	DefaultTargetPort       = 22
	DefaultParallelism      = 16
	DefaultInventoryGroup   = "all"
)

// Bounds on inputs (hostile input is refused, never echoed unbounded).
const (
	MaxConfigBytes    = 1 << 20 // --config file
	MaxInventoryBytes = 1 << 20 // inventory file
	MaxHosts          = 10000   // hosts of an inventory plus --target entries
	MaxDiskPaths      = 64
	MaxPathBytes      = 4096
	MaxSecrets        = 256
	MaxSecretName     = 128
	MaxReasonBytes    = 512 // an override's reason
	MaxParallelism    = 256
	maxDockerBody     = 1 << 20
)

// Config selects and parameterises the checks. The zero value is not
// useful: start from DefaultConfig (LoadConfig does). YAML keys are the
// yaml tags; Probes is for tests and embedders only.
type Config struct {
	// Skip names checks that are not run (reported as skipped).
	Skip      []string      `yaml:"skip"`
	CPU       CPUConfig     `yaml:"cpu"`
	Memory    MemoryConfig  `yaml:"memory"`
	Disk      DiskConfig    `yaml:"disk"`
	Docker    DockerConfig  `yaml:"docker"`
	Network   NetworkConfig `yaml:"network"`
	Secrets   SecretsConfig `yaml:"secrets"`
	Overrides []Override    `yaml:"overrides"`
	Probes    Probes        `yaml:"-"`
}

// CPUConfig: at least Min logical CPUs usable by this process.
type CPUConfig struct {
	Min int `yaml:"min"`
}

// MemoryConfig: at least Min bytes of MemAvailable (/proc/meminfo).
type MemoryConfig struct {
	Min Size `yaml:"min"`
}

// DiskConfig: at least MinFree bytes available to unprivileged users on
// each of Paths (default: the working directory).
type DiskConfig struct {
	MinFree Size     `yaml:"min_free"`
	Paths   []string `yaml:"paths"`
}

// DockerConfig: the Engine API at Host answers GET /_ping with OK and its
// GET /version reports at least MinVersion. An empty Host is DOCKER_HOST
// from the environment, else DefaultDockerHost.
type DockerConfig struct {
	Host       string   `yaml:"host"`
	MinVersion string   `yaml:"min_version"`
	Timeout    Duration `yaml:"timeout"`
}

// NetworkConfig: a TCP connection to every host of the inventory's group
// (port: the host's ansible_port, else TargetPort) and to every Targets
// entry (host:port) succeeds within ConnectTimeout; at most Parallelism
// connections are attempted at once.
type NetworkConfig struct {
	Inventory      string   `yaml:"inventory"`
	InventoryGroup string   `yaml:"inventory_group"`
	TargetPort     int      `yaml:"target_port"`
	Targets        []string `yaml:"targets"`
	ConnectTimeout Duration `yaml:"connect_timeout"`
	Parallelism    int      `yaml:"parallelism"`
}

// SecretsConfig: each Required name is an environment variable that is set
// and not blank.
type SecretsConfig struct {
	Required []string `yaml:"required"`
}

// Override lets a failing check pass; Reason says why and is recorded.
type Override struct {
	Check  string `yaml:"check"`
	Reason string `yaml:"reason"`
}

// Probes replace the system calls behind the checks (tests); a nil field is
// the real one.
type Probes struct {
	// NumCPU counts usable logical CPUs (runtime.NumCPU).
	NumCPU func() int
	// ProcRoot is where proc is mounted (/proc); meminfo is read there.
	ProcRoot string
	// DiskFree is the space available to unprivileged users at path
	// (statfs: f_bavail * f_bsize).
	DiskFree func(path string) (uint64, error)
	// Dial opens TCP connections (network check).
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// DefaultConfig is the configuration with every default filled in.
func DefaultConfig() Config {
	return Config{
		CPU:    CPUConfig{Min: DefaultMinCPUs},
		Memory: MemoryConfig{Min: DefaultMinMemory},
		Disk:   DiskConfig{MinFree: DefaultMinFreeDisk},
		Docker: DockerConfig{MinVersion: DefaultMinDockerVersion, Timeout: DefaultDockerTimeout},
		Network: NetworkConfig{InventoryGroup: DefaultInventoryGroup, TargetPort: DefaultTargetPort,
			ConnectTimeout: DefaultConnectTimeout, Parallelism: DefaultParallelism},
	}
}

// LoadConfig reads a YAML configuration file over DefaultConfig. Unknown
// keys are errors (a typo must not silently keep a default).
func LoadConfig(path string) (Config, error) {
	b, err := readBounded(path, MaxConfigBytes)
	if err != nil {
		return Config{}, err
	}
	return ParseConfig(b)
}

// ParseConfig parses YAML configuration over DefaultConfig.
func ParseConfig(b []byte) (Config, error) {
	cfg := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("preflight config: %v", err)
	}
	return cfg, nil
}

// SetOverride adds an override, or replaces the one of the same check.
func (c *Config) SetOverride(o Override) {
	for i := range c.Overrides {
		if c.Overrides[i].Check == o.Check {
			c.Overrides[i] = o
			return
		}
	}
	c.Overrides = append(c.Overrides, o)
}

// ParseOverride parses CHECK=REASON and validates it.
func ParseOverride(s string) (Override, error) {
	check, reason, ok := strings.Cut(s, "=")
	if !ok {
		return Override{}, fmt.Errorf("override %s: want CHECK=REASON", quote(s))
	}
	o := Override{Check: strings.TrimSpace(check), Reason: reason}
	return o, o.validate()
}

func (o Override) validate() error {
	if !knownCheck(o.Check) {
		return fmt.Errorf("override: unknown check %s (checks: %s)", quote(o.Check), strings.Join(CheckNames(), ", "))
	}
	switch {
	case strings.TrimSpace(o.Reason) == "":
		return fmt.Errorf("override of %s needs a non-empty reason", o.Check)
	case len(o.Reason) > MaxReasonBytes:
		return fmt.Errorf("override of %s: reason is %d bytes, at most %d", o.Check, len(o.Reason), MaxReasonBytes)
	case !utf8.ValidString(o.Reason):
		return fmt.Errorf("override of %s: reason is not UTF-8", o.Check)
	case strings.IndexFunc(o.Reason, unicode.IsControl) >= 0:
		return fmt.Errorf("override of %s: reason has control characters", o.Check)
	}
	return nil
}

var secretName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Validate checks the configuration without probing anything.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	seen := map[string]bool{}
	for _, s := range c.Skip {
		if !knownCheck(s) {
			add("skip: unknown check %s (checks: %s)", quote(s), strings.Join(CheckNames(), ", "))
		}
	}
	for _, o := range c.Overrides {
		if err := o.validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if seen[o.Check] {
			add("override: check %s overridden twice", o.Check)
		}
		seen[o.Check] = true
	}
	if c.CPU.Min < 0 {
		add("cpu.min %d: must not be negative", c.CPU.Min)
	}
	if len(c.Disk.Paths) > MaxDiskPaths {
		add("disk.paths: %d paths, at most %d", len(c.Disk.Paths), MaxDiskPaths)
	}
	for _, p := range c.Disk.Paths {
		if p == "" || len(p) > MaxPathBytes || strings.ContainsRune(p, 0) {
			add("disk.paths: %s is not a usable path", quote(p))
		}
	}
	if c.Docker.Host != "" {
		if _, _, err := dockerEndpoint(c.Docker.Host); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := version.NewVersion(c.Docker.MinVersion); err != nil {
		add("docker.min_version %s is not a version", quote(c.Docker.MinVersion))
	}
	if c.Docker.Timeout <= 0 {
		add("docker.timeout must be positive")
	}
	n := c.Network
	if n.ConnectTimeout <= 0 {
		add("network.connect_timeout must be positive")
	}
	if n.TargetPort < 1 || n.TargetPort > 65535 {
		add("network.target_port %d: want 1-65535", n.TargetPort)
	}
	if n.Parallelism < 1 || n.Parallelism > MaxParallelism {
		add("network.parallelism %d: want 1-%d", n.Parallelism, MaxParallelism)
	}
	if len(n.Targets) > MaxHosts {
		add("network.targets: %d targets, at most %d", len(n.Targets), MaxHosts)
	} else {
		for _, t := range n.Targets {
			if err := validTarget(t); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if n.Inventory != "" && (len(n.Inventory) > MaxPathBytes || strings.ContainsRune(n.Inventory, 0)) {
		add("network.inventory is not a usable path")
	}
	if n.InventoryGroup == "" || len(n.InventoryGroup) > 255 {
		add("network.inventory_group must be a group name")
	}
	if len(c.Secrets.Required) > MaxSecrets {
		add("secrets.required: %d names, at most %d", len(c.Secrets.Required), MaxSecrets)
	} else {
		for i, s := range c.Secrets.Required {
			// Not echoed: a malformed entry may hold a value
			// ("NAME=value" pasted by mistake).
			if len(s) > MaxSecretName || !secretName.MatchString(s) {
				add("secrets.required entry %d is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*, at most %d bytes; the name only, never a value)", i+1, MaxSecretName)
			}
		}
	}
	return errors.Join(errs...)
}

func (c Config) skipped(name string) bool {
	for _, s := range c.Skip {
		if s == name {
			return true
		}
	}
	return false
}

func validTarget(t string) error {
	host, port, err := net.SplitHostPort(t)
	if err != nil || host == "" || len(host) > 253 {
		return fmt.Errorf("network.targets: %s is not host:port", quote(t))
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("network.targets: %s: port must be 1-65535", quote(t))
	}
	return nil
}

// Size is a byte count; YAML and ParseSize take human sizes ("10GB",
// "512MiB", "1.5 GB": SI units are powers of 1000, IEC ones of 1024) or a
// plain number of bytes.
type Size uint64

// ParseSize parses a human size.
func ParseSize(s string) (Size, error) {
	v, err := humanize.ParseBytes(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%s is not a size (e.g. 10GB, 512MiB)", quote(s))
	}
	return Size(v), nil
}

func (s Size) String() string { return humanize.Bytes(uint64(s)) }

// UnmarshalYAML accepts a number of bytes or a human size.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a size must be a scalar", n.Line)
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	*s = v
	return nil
}

// Duration is a time.Duration that YAML takes as "3s", "500ms".
type Duration time.Duration

func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML parses a Go duration.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a duration must be a scalar", n.Line)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %s is not a duration (e.g. 3s)", n.Line, quote(n.Value))
	}
	*d = Duration(v)
	return nil
}

// quote renders untrusted input for a message: quoted, at most 64 bytes.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

// readBounded reads path, refusing one longer than limit bytes without
// reading past limit + 1.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is longer than %d bytes", path, limit)
	}
	return b, nil
}
