package preflight

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// Result is one check's outcome. JSON field order is the struct's.
type Result struct {
	Name string `json:"name"`
	// Passed: the check's own outcome (an override does not change it).
	Passed bool `json:"passed"`
	// Skipped: not run (Skip, or nothing to check); Passed is true.
	Skipped   bool   `json:"skipped"`
	Detail    string `json:"detail"`
	Threshold string `json:"threshold"`
	Observed  string `json:"observed"`
	// Overridden: the check failed and an override let it through.
	Overridden bool `json:"overridden"`
	// OverrideReason is the reason of the override naming this check (also
	// when the check passed and the override was not needed).
	OverrideReason string `json:"override_reason"`
}

// OK: the check passed or its failure was overridden.
func (r Result) OK() bool { return r.Passed || r.Overridden }

// Report is the outcome of a preflight: Passed when every check passed or
// was overridden. Checks are in CheckNames order.
type Report struct {
	Passed bool     `json:"passed"`
	Checks []Result `json:"checks"`
}

// Failed lists the checks that failed and were not overridden (they block
// the deployment).
func (r Report) Failed() []Result {
	var out []Result
	for _, c := range r.Checks {
		if !c.OK() {
			out = append(out, c)
		}
	}
	return out
}

// Overridden lists the checks that failed but were let through by an
// override (the caller records their reasons).
func (r Report) Overridden() []Result {
	var out []Result
	for _, c := range r.Checks {
		if c.Overridden {
			out = append(out, c)
		}
	}
	return out
}

// Check returns the named check's result.
func (r Report) Check(name string) (Result, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return Result{}, false
}

// FailedNames is "disk, docker": the names of Failed.
func (r Report) FailedNames() string {
	var names []string
	for _, c := range r.Failed() {
		names = append(names, c.Name)
	}
	return strings.Join(names, ", ")
}

// JSON is the report as indented JSON with a trailing newline; equal reports
// give equal bytes.
func (r Report) JSON() ([]byte, error) {
	if r.Checks == nil {
		r.Checks = []Result{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteText writes the report as an aligned table and a closing verdict
// line.
func (r Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tRESULT\tTHRESHOLD\tOBSERVED\tDETAIL")
	for _, c := range r.Checks {
		res := "FAIL"
		switch {
		case c.Skipped:
			res = "skipped"
		case c.Passed:
			res = "ok"
		case c.Overridden:
			res = "OVERRIDDEN"
		}
		detail := c.Detail
		if c.OverrideReason != "" {
			detail += " [override: " + c.OverrideReason + "]"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Name, res, orDash(c.Threshold), orDash(c.Observed), detail)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var err error
	switch f := r.Failed(); {
	case len(f) > 0:
		_, err = fmt.Fprintf(w, "preflight FAILED: %s\n", r.FailedNames())
	case len(r.Overridden()) > 0:
		_, err = fmt.Fprintf(w, "preflight passed (with overrides)\n")
	default:
		_, err = fmt.Fprintf(w, "preflight passed\n")
	}
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Run validates cfg, then runs every check not skipped (concurrently) and
// applies the overrides. env reads environment variables (os.Getenv): the
// required secrets and DOCKER_HOST. The error is an invalid configuration
// (including an unreadable or malformed inventory, or an unknown inventory
// group), found before any probe; a failing check is in the Report.
func Run(ctx context.Context, cfg Config, env func(string) string) (Report, error) {
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	// The inventory is configuration too: read it before probing.
	var targets []Target
	if !cfg.skipped(CheckNetwork) {
		var err error
		if targets, err = NetworkTargets(cfg.Network); err != nil {
			return Report{}, fmt.Errorf("network: %w", err)
		}
	}
	checks := map[string]func(context.Context, Config, func(string) string) Result{
		CheckCPU:    checkCPU,
		CheckMemory: checkMemory,
		CheckDisk:   checkDisk,
		CheckDocker: checkDocker,
		CheckNetwork: func(ctx context.Context, cfg Config, _ func(string) string) Result {
			return checkNetwork(ctx, cfg, targets)
		},
		CheckSecrets: checkSecrets,
	}
	names := CheckNames()
	results := make([]Result, len(names))
	done := make(chan struct{}, len(names))
	for i, name := range names {
		if cfg.skipped(name) {
			results[i] = Result{Name: name, Passed: true, Skipped: true, Detail: "skipped by configuration"}
			done <- struct{}{}
			continue
		}
		go func() {
			defer func() { done <- struct{}{} }()
			r := checks[name](ctx, cfg, env)
			r.Name = name
			results[i] = r
		}()
	}
	for range names {
		<-done
	}
	rep := Report{Passed: true, Checks: results}
	for i := range rep.Checks {
		c := &rep.Checks[i]
		for _, o := range cfg.Overrides {
			if o.Check == c.Name {
				c.OverrideReason = o.Reason
				c.Overridden = !c.Passed
			}
		}
		if !c.OK() {
			rep.Passed = false
		}
	}
	return rep, nil
}
