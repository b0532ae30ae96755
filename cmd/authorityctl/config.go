package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"
)

// The CLI config file: the global flags' values, so an operator need not
// repeat endpoints and certificate paths. A flag on the command line wins
// over its environment variable, which wins over the file, which wins over
// the default (the order authorityd's own config follows).
const (
	flagConfig = "config"
	envConfig  = "AUTHORITYCTL_CONFIG"
	// maxConfigFile bounds what is read of the config file.
	maxConfigFile = 64 << 10
)

// fileConfig is the config file's content; unknown keys are refused.
type fileConfig struct {
	Endpoints   []string `yaml:"endpoints"`
	Output      string   `yaml:"output"`
	Timeout     string   `yaml:"timeout"`
	CACert      string   `yaml:"cacert"`
	Cert        string   `yaml:"cert"`
	Key         string   `yaml:"key"`
	Insecure    *bool    `yaml:"insecure"`
	TrustDomain string   `yaml:"trust-domain"`
}

// defaultConfigPath is $XDG_CONFIG_HOME/authorityctl/config.yaml, else
// $HOME/.config/authorityctl/config.yaml ("" when neither is set).
func defaultConfigPath(getenv func(string) string) string {
	if d := getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "authorityctl", "config.yaml")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "authorityctl", "config.yaml")
	}
	return ""
}

// loadConfigFile reads the config file: path from --config, else
// AUTHORITYCTL_CONFIG, else the default path. A file named by the flag or
// the variable must exist; the default one may be absent. Relative
// certificate paths in the file are taken relative to the file.
func loadConfigFile(path string, explicit bool) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		if !explicit && errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigFile+1))
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	if len(b) > maxConfigFile {
		return nil, fmt.Errorf("config file %s is longer than %d bytes", path, maxConfigFile)
	}
	var fc fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("config file %s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	rel := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(filepath.Dir(path), p)
	}
	vals := map[string]string{
		flagEndpoints: strings.Join(fc.Endpoints, ","),
		flagOutput:    fc.Output,
		flagTimeout:   fc.Timeout,
		flagCACert:    rel(fc.CACert),
		flagCert:      rel(fc.Cert),
		flagKey:       rel(fc.Key),
		flagTrust:     fc.TrustDomain,
	}
	if fc.Insecure != nil {
		vals[flagInsecure] = fmt.Sprint(*fc.Insecure)
	}
	return vals, nil
}
