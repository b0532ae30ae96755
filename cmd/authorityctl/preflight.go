package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/aerodb/authority/pipeline/preflight"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// preflightFlags are the flags of `preflight`; each one given on the
// command line wins over the --config file, which wins over the defaults.
type preflightFlags struct {
	config           string
	skip             []string
	minCPUs          int
	minMemory        sizeValue
	minFreeDisk      sizeValue
	diskPaths        []string
	dockerHost       string
	minDockerVersion string
	dockerTimeout    positiveDuration
	inventory        string
	inventoryGroup   string
	targetPort       int
	targets          []string
	connectTimeout   positiveDuration
	parallelism      int
	secrets          []string
	overrides        []string
	report           string
}

func newPreflightCmd(o *options) *cobra.Command {
	def := preflight.DefaultConfig()
	f := preflightFlags{
		minMemory:      sizeValue(def.Memory.Min),
		minFreeDisk:    sizeValue(def.Disk.MinFree),
		dockerTimeout:  positiveDuration(def.Docker.Timeout),
		connectTimeout: positiveDuration(def.Network.ConnectTimeout),
	}
	cmd := &cobra.Command{
		Use:   "preflight",
		Short: "Check that this runner can deploy (CPU, memory, disk, Docker, network, secrets); exit 1 when a check fails",
		Long: `Runs the deploy preflight checks and prints one row per check (-o json:
the JSON report). Checks: ` + strings.Join(preflight.CheckNames(), ", ") + `.

  cpu      at least --min-cpus usable logical CPUs
  memory   MemAvailable (/proc/meminfo) at least --min-memory
  disk     free space (statfs, unprivileged) at least --min-free-disk on
           every --disk-path (default: the working directory)
  docker   the Engine API at --docker-host (else DOCKER_HOST, else
           unix:///var/run/docker.sock) answers /_ping with OK and
           /version with a version at least --min-docker-version
  network  TCP connections within --connect-timeout to every host of
           --inventory's --inventory-group (Ansible INI or YAML; port:
           ansible_port, else --target-port) and to every --target
  secrets  every --require-secret NAME is a set, non-blank environment
           variable; values are never printed, logged or written

Thresholds come from the defaults, then --config FILE (YAML, see
docs/PREFLIGHT.md), then flags. --override CHECK=REASON lets that failing
check pass; the reason is recorded in the report. --report FILE writes the
JSON report too. Exit codes: 0 all checks passed (or failed ones were
overridden), 1 a check failed, 2 usage.`,
		Args: exactArgs(),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.resolve(cmd.Flags())
			if err != nil {
				return err
			}
			rep, err := preflight.Run(cmd.Context(), cfg, o.getenv)
			if err != nil {
				return usageError{err}
			}
			js, err := rep.JSON()
			if err != nil {
				return err
			}
			if f.report != "" {
				if err := writeReport(f.report, js); err != nil {
					return err
				}
			}
			if o.output.value == outputJSON {
				_, err = o.stdout.Write(js)
			} else {
				err = rep.WriteText(o.stdout)
			}
			if err != nil {
				return err
			}
			if !rep.Passed {
				failed := rep.Failed()
				return fmt.Errorf("preflight failed: %d of %d checks (%s); fix them or pass --override CHECK=REASON",
					len(failed), len(rep.Checks), rep.FailedNames())
			}
			return nil
		}),
	}
	fs := cmd.Flags()
	fs.StringVar(&f.config, "config", "", "YAML configuration file (flags win over it)")
	fs.StringSliceVar(&f.skip, "skip", nil, "checks not to run (repeatable or comma-separated)")
	fs.IntVar(&f.minCPUs, "min-cpus", def.CPU.Min, "minimum usable logical CPUs")
	fs.Var(&f.minMemory, "min-memory", "minimum available memory (MemAvailable), e.g. 512MB, 2GiB")
	fs.Var(&f.minFreeDisk, "min-free-disk", "minimum free space on each --disk-path, e.g. 10GB, 50GiB")
	fs.StringArrayVar(&f.diskPaths, "disk-path", nil, "path whose file system needs --min-free-disk (repeatable; default the working directory)")
	fs.StringVar(&f.dockerHost, "docker-host", "", "Docker Engine API: unix:///path or tcp://host:port (default DOCKER_HOST, else "+preflight.DefaultDockerHost+")")
	fs.StringVar(&f.minDockerVersion, "min-docker-version", def.Docker.MinVersion, "minimum Docker Engine version")
	fs.Var(&f.dockerTimeout, "docker-timeout", "bound on the Docker Engine API calls")
	fs.StringVar(&f.inventory, "inventory", "", "Ansible inventory (INI or YAML) whose hosts must accept TCP connections")
	fs.StringVar(&f.inventoryGroup, "inventory-group", def.Network.InventoryGroup, "inventory group to check (with its children)")
	fs.IntVar(&f.targetPort, "target-port", def.Network.TargetPort, "port of inventory hosts without ansible_port")
	fs.StringArrayVar(&f.targets, "target", nil, "host:port that must accept TCP connections (repeatable)")
	fs.Var(&f.connectTimeout, "connect-timeout", "bound on each TCP connection attempt")
	fs.IntVar(&f.parallelism, "parallelism", def.Network.Parallelism, "connection attempts at once")
	fs.StringArrayVar(&f.secrets, "require-secret", nil, "environment variable that must be set and not blank (repeatable; the name only)")
	fs.StringArrayVar(&f.overrides, "override", nil, "CHECK=REASON: let a failing check pass, recording why (repeatable, one check each)")
	fs.StringVar(&f.report, "report", "", "also write the JSON report to this file")
	return cmd
}

// resolve builds the configuration: defaults, the --config file, then the
// flags given on the command line. Every problem is a usage error.
func (f *preflightFlags) resolve(fs *pflag.FlagSet) (preflight.Config, error) {
	cfg := preflight.DefaultConfig()
	if f.config != "" {
		var err error
		if cfg, err = preflight.LoadConfig(f.config); err != nil {
			return cfg, usagef("--config: %v", err)
		}
	}
	set := func(name string, apply func()) {
		if fs.Changed(name) {
			apply()
		}
	}
	set("skip", func() { cfg.Skip = f.skip })
	set("min-cpus", func() { cfg.CPU.Min = f.minCPUs })
	set("min-memory", func() { cfg.Memory.Min = preflight.Size(f.minMemory) })
	set("min-free-disk", func() { cfg.Disk.MinFree = preflight.Size(f.minFreeDisk) })
	set("disk-path", func() { cfg.Disk.Paths = f.diskPaths })
	set("docker-host", func() { cfg.Docker.Host = f.dockerHost })
	set("min-docker-version", func() { cfg.Docker.MinVersion = f.minDockerVersion })
	set("docker-timeout", func() { cfg.Docker.Timeout = preflight.Duration(f.dockerTimeout) })
	set("inventory", func() { cfg.Network.Inventory = f.inventory })
	set("inventory-group", func() { cfg.Network.InventoryGroup = f.inventoryGroup })
	set("target-port", func() { cfg.Network.TargetPort = f.targetPort })
	set("target", func() { cfg.Network.Targets = f.targets })
	set("connect-timeout", func() { cfg.Network.ConnectTimeout = preflight.Duration(f.connectTimeout) })
	set("parallelism", func() { cfg.Network.Parallelism = f.parallelism })
	set("require-secret", func() { cfg.Secrets.Required = f.secrets })
	given := map[string]bool{}
	for _, s := range f.overrides {
		ov, err := preflight.ParseOverride(s)
		if err != nil {
			return cfg, usagef("--%v", err) // "--override: unknown check ..."
		}
		if given[ov.Check] {
			return cfg, usagef("--override: check %s given twice", ov.Check)
		}
		given[ov.Check] = true
		cfg.SetOverride(ov)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, usageError{err}
	}
	return cfg, nil
}

// writeReport writes the JSON report atomically (a reader never sees half
// a report).
func writeReport(path string, js []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("--report: %v", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(js); err != nil {
		tmp.Close()
		return fmt.Errorf("--report: %v", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("--report: %v", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("--report: %v", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("--report: %v", err)
	}
	return nil
}

// sizeValue is a byte-count flag in human units (10GB, 512MiB).
type sizeValue preflight.Size

func (s *sizeValue) String() string { return preflight.Size(*s).String() }
func (s *sizeValue) Type() string   { return "size" }

func (s *sizeValue) Set(v string) error {
	n, err := preflight.ParseSize(v)
	if err != nil {
		return err
	}
	*s = sizeValue(n)
	return nil
}
