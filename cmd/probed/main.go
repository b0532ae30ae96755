// Command probed is the synthetic probe service: HTTP flows in YAML, per
// environment, bound to SLOs, with Prometheus metrics, JSON-lines events, a
// status page, a verdict API for canary analysis and signed verdicts.
//
//	probed lint FILE...                      every error at once, file:line
//	probed run --once --env E --flow F FILE... one replay, step by step
//	probed serve --env E [--listen ADDR] FILE...
//	probed keygen --out PREFIX               Ed25519 key pair (PEM)
//	probed verify --key PUB ENVELOPE         verify a signed verdict
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/aerodb/authority/probe/flow"
	"github.com/aerodb/authority/probe/run"
)

// exitError carries an exit status without printing usage.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
}

// Main runs the command and returns its exit status: 0 success, 1 failed
// probe or invalid files, 2 usage error.
func Main(args []string, stdout, stderr io.Writer) int {
	return MainContext(context.Background(), args, stdout, stderr)
}

// MainContext is Main with a context (serve stops when it ends).
func MainContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	var ee exitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.code
	}
	fmt.Fprintln(stderr, "probed:", err)
	return 2
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{Use: "probed", Short: "synthetic probe service", SilenceUsage: true, SilenceErrors: true}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(lintCmd(stdout, stderr), runCmd(stdout, stderr), serveCmd(stdout, stderr),
		keygenCmd(stdout), verifyCmd(stdout, stderr))
	return root
}

func lintCmd(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "lint FILE...",
		Short: "check flow files: unknown fields, undefined variables, bad expressions (every error, file:line)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, files []string) error {
			cfg, ds := flow.LoadFiles(files...)
			for _, d := range ds {
				fmt.Fprintln(stderr, d.String())
			}
			if len(ds) > 0 {
				fmt.Fprintf(stderr, "%d error(s)\n", len(ds))
				return exitError{1}
			}
			steps := 0
			for _, f := range cfg.Flows {
				steps += len(f.Steps)
			}
			fmt.Fprintf(stdout, "ok: %d file(s), %d environment(s), %d setup(s), %d flow(s), %d step(s), %d SLO(s)\n",
				len(files), len(cfg.Environments), len(cfg.Setups), len(cfg.Flows), steps, len(cfg.SLOs))
			return nil
		},
	}
}

func load(files []string, stderr io.Writer) (*flow.Config, error) {
	cfg, ds := flow.LoadFiles(files...)
	if len(ds) > 0 {
		for _, d := range ds {
			fmt.Fprintln(stderr, d.String())
		}
		return nil, exitError{1}
	}
	return cfg, nil
}

func runCmd(stdout, stderr io.Writer) *cobra.Command {
	var env, flowName, target string
	var once bool
	c := &cobra.Command{
		Use:     "run --once --env ENV --flow FLOW FILE...",
		Aliases: []string{"run-once"},
		Short:   "replay one flow once against its target, step by step (exit 1 if it fails)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			if !once && cmd.CalledAs() != "run-once" {
				return errors.New("run needs --once (the scheduler is `probed serve`)")
			}
			cfg, err := load(files, stderr)
			if err != nil {
				return err
			}
			f := cfg.Flow(flowName)
			if f == nil {
				return fmt.Errorf("no flow %q", flowName)
			}
			if !f.RunsIn(env) {
				return fmt.Errorf("flow %q does not run in environment %q", flowName, env)
			}
			r, err := run.New(run.Options{Config: cfg, Env: env, BaseURL: target})
			if err != nil {
				return err
			}
			res := r.Run(context.Background(), f, time.Time{})
			printResult(stdout, res)
			if !res.Success() {
				return exitError{1}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&once, "once", false, "run the flow once and exit")
	c.Flags().StringVar(&env, "env", "", "environment (required)")
	c.Flags().StringVar(&flowName, "flow", "", "flow name (required)")
	c.Flags().StringVar(&target, "target", "", "base URL overriding the environment's base_url")
	_ = c.MarkFlagRequired("env")
	_ = c.MarkFlagRequired("flow")
	return c
}

// printResult prints a run step by step (already redacted).
func printResult(w io.Writer, res *run.Result) {
	fmt.Fprintf(w, "flow %s (env %s) run %s\n", res.Flow, res.Env, res.RunID)
	if res.SetupRefreshed {
		fmt.Fprintln(w, "  (session refreshed after a 401)")
	}
	for i, s := range res.Steps {
		line := fmt.Sprintf("  %d. %-8s %s", i+1, strings.ToUpper(s.Result), s.Name)
		if s.Method != "" {
			line += fmt.Sprintf("  %s %s", s.Method, s.URL)
		}
		if s.Status != 0 {
			line += fmt.Sprintf(" -> %d in %s", s.Status, s.Duration.Round(time.Microsecond))
		}
		fmt.Fprintln(w, line)
		if s.Result == run.Fail || s.Result == run.Error {
			fmt.Fprintf(w, "     %s\n", s.Summary())
		}
	}
	fmt.Fprintf(w, "%s in %s", strings.ToUpper(res.Result), res.Duration.Round(time.Microsecond))
	if res.Error != "" {
		fmt.Fprintf(w, ": %s", res.Error)
	}
	fmt.Fprintln(w)
}
