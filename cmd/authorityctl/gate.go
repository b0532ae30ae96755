package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/aerodb/authority/pipeline/gate"
	"github.com/spf13/cobra"
)

// newGateCmd: authorityctl gate --config gates.yaml.
func newGateCmd(o *options) *cobra.Command {
	var configPath, webhook, env, domain, deployID, reportPath string
	cmd := &cobra.Command{
		Use:   "gate --config gates.yaml",
		Short: "Run a deploy's health gates (HTTP, PostgreSQL, Redis, smoke commands)",
		Long: `Checks every service of the gates config concurrently, each with its own
timeout (at most 5 minutes), retries and backoff: HTTP endpoints (status and
an optional expr-lang condition over status, body, headers, latency_ms),
PostgreSQL readiness (connect and SELECT 1), Redis PING, and smoke-test
commands (argv, no shell; the process group is killed at the attempt
timeout). Passwords come from environment variables named in the config and
never appear in any output.

When a gate fails and an alert webhook is configured (--alert-webhook or
alert_webhook in the config), one Alertmanager v2 alert per failed service
(alertname DeployHealthGateFailed) is POSTed there; a failed post is
reported but does not change the verdict.

The report (services in config order) goes to stdout (-o json for JSON) and,
with --report, to a JSON file. --timeout does not apply: the gates have
their own. No cluster is contacted.

Exit codes: 0 every gate passed, 1 a gate failed (or the report could not be
written), 2 usage or an invalid config. See docs/HEALTH-GATES.md.`,
		Args: exactArgs(),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			cfg, err := gate.Load(configPath)
			if err != nil {
				return usageError{err}
			}
			for _, f := range []struct {
				flag string
				dst  *string
				v    string
			}{{"alert-webhook", &cfg.AlertWebhook, webhook}, {"env", &cfg.Env, env},
				{"domain", &cfg.Domain, domain}, {"deploy-id", &cfg.DeployID, deployID}} {
				if cmd.Flags().Changed(f.flag) {
					*f.dst = f.v
				}
			}
			if err := checkGateOverrides(cfg); err != nil {
				return usageError{err}
			}
			rep := gate.Run(cmd.Context(), cfg)
			if err := printGateReport(o, rep); err != nil {
				return err
			}
			if reportPath != "" {
				if err := writeGateReport(reportPath, rep); err != nil {
					return fmt.Errorf("writing the report: %w", err)
				}
			}
			if a := rep.Alert; a != nil && !a.Posted {
				o.progressf("warning: the alert was not posted: %s", a.Error)
			}
			if !rep.Passed {
				return fmt.Errorf("health gates failed: %s", strings.Join(rep.Failed(), ", "))
			}
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "gates config (YAML, at most 1 MiB)")
	f.StringVar(&webhook, "alert-webhook", "", "Alertmanager-compatible webhook for failures, e.g. http://alertmanager:9093/api/v2/alerts (overrides alert_webhook)")
	f.StringVar(&env, "env", "", "environment label of the alert (overrides env)")
	f.StringVar(&domain, "domain", "", "deploy lock domain label of the alert (overrides domain)")
	f.StringVar(&deployID, "deploy-id", "", "deploy id label of the alert (overrides deploy_id)")
	f.StringVar(&reportPath, "report", "", "also write the JSON report to this file")
	markRequired(cmd, "config")
	return cmd
}

// checkGateOverrides validates what the flags may have changed, with the
// config's own rules (re-parsing a minimal config would lose line numbers).
func checkGateOverrides(cfg gate.Config) error {
	for _, v := range []struct{ name, v string }{{"--env", cfg.Env}, {"--domain", cfg.Domain}, {"--deploy-id", cfg.DeployID}} {
		if len(v.v) > gate.MaxLabelBytes || strings.ContainsFunc(v.v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return fmt.Errorf("%s: at most %d printable bytes", v.name, gate.MaxLabelBytes)
		}
	}
	if w := cfg.AlertWebhook; w != "" && !strings.HasPrefix(w, "http://") && !strings.HasPrefix(w, "https://") {
		return errors.New("--alert-webhook: give an http(s) URL")
	}
	return nil
}

func gateReportJSON(rep gate.Report) ([]byte, error) {
	b, err := json.Marshal(rep)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

func printGateReport(o *options, rep gate.Report) error {
	if o.output.value == outputJSON {
		b, err := gateReportJSON(rep)
		if err != nil {
			return err
		}
		_, err = o.stdout.Write(b)
		return err
	}
	tw := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tTYPE\tRESULT\tATTEMPTS\tDURATION\tERROR")
	for _, s := range rep.Services {
		result := "passed"
		if !s.Passed {
			result = "FAILED"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", s.Name, s.Type, result, s.Attempts,
			s.Duration.Round(time.Millisecond), orDash(s.Error))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	verdict := "passed"
	if !rep.Passed {
		verdict = "FAILED"
	}
	fmt.Fprintf(o.stdout, "\nhealth gates %s in %s\n", verdict, rep.Duration.Round(time.Millisecond))
	if a := rep.Alert; a != nil {
		fmt.Fprintf(o.stdout, "alert: %d alert(s) to %s, posted=%s\n", a.Alerts, a.URL, strconv.FormatBool(a.Posted))
	}
	return nil
}

// writeGateReport writes the JSON report atomically (temp file, rename).
func writeGateReport(path string, rep gate.Report) error {
	b, err := gateReportJSON(rep)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
