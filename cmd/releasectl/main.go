// Command releasectl is the rollout controller (docs/RELEASECTL.md):
//
//	releasectl run --config controller.yaml   # drive one service's canary
//	releasectl lint rollouts.yaml             # check a rollouts.yaml, every error at once
//
// Exit codes of run: 0 promoted (or already stable), 3 aborted, 4 paused
// (inconclusive, or a promotion denied), 5 rolled back in the bake window,
// 2 a usage or configuration error, 1 anything else.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/release/controller"
	"github.com/aerodb/authority/release/webhook"
	"github.com/aerodb/authority/tlsfiles"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"
)

// ProcessConfig is controller.yaml: where the rollout is and how to reach
// the authority.
type ProcessConfig struct {
	// Rollouts is the rollouts.yaml path (relative to controller.yaml).
	Rollouts  string          `yaml:"rollouts"`
	Authority AuthorityConfig `yaml:"authority"`
	// MetricsAddr serves /metrics (loopback by default; empty: off).
	MetricsAddr string `yaml:"metricsAddr"`
	// Drain bounds waiting for webhooks to deliver the run's decisions
	// before exiting (default 30s).
	Drain string `yaml:"drain"`
}

type AuthorityConfig struct {
	Endpoints   []string `yaml:"endpoints"`
	CACert      string   `yaml:"caCert"`
	Cert        string   `yaml:"cert"`
	Key         string   `yaml:"key"`
	TrustDomain string   `yaml:"trustDomain"`
	Insecure    bool     `yaml:"insecure"`
}

type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	root := &cobra.Command{Use: "releasectl", Short: "The rollout controller of release domains", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(newRunCmd(), newLintCmd())
	err := root.ExecuteContext(ctx)
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "releasectl:", err)
	var ee exitError
	if errors.As(err, &ee) {
		os.Exit(ee.code)
	}
	os.Exit(1)
}

func newLintCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "lint FILE",
		Short: "Check a rollouts.yaml strictly (unknown fields, bounds, templates): every error at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := readBounded(args[0], controller.MaxConfigBytes)
			if err != nil {
				return exitError{2, err}
			}
			c, err := controller.Parse(b)
			if err != nil {
				return exitError{2, err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (service %s, domain %s, %d steps, %d analysis templates)\n", args[0], c.Service, c.Domain, len(c.Steps), len(c.AnalysisTemplates))
			return nil
		},
	}
}

func newRunCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "run --config controller.yaml",
		Short: "Drive the canary of rollouts.yaml: steps, analysis, promote/abort/pause, bake and rollback",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), path, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&path, "config", "", "controller.yaml")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

func loadProcessConfig(path string) (*ProcessConfig, *controller.Config, error) {
	b, err := readBounded(path, 64<<10)
	if err != nil {
		return nil, nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var pc ProcessConfig
	if err := dec.Decode(&pc); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if pc.Rollouts == "" {
		return nil, nil, fmt.Errorf("%s: rollouts: required", path)
	}
	if len(pc.Authority.Endpoints) == 0 || len(pc.Authority.Endpoints) > 16 {
		return nil, nil, fmt.Errorf("%s: authority.endpoints: want 1..16", path)
	}
	rp := pc.Rollouts
	if !filepath.IsAbs(rp) {
		rp = filepath.Join(filepath.Dir(path), rp)
	}
	rb, err := readBounded(rp, controller.MaxConfigBytes)
	if err != nil {
		return nil, nil, err
	}
	rc, err := controller.Parse(rb)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", rp, err)
	}
	return &pc, rc, nil
}

func run(ctx context.Context, path string, out io.Writer) error {
	pc, rc, err := loadProcessConfig(path)
	if err != nil {
		return exitError{2, err}
	}
	drain := 30 * time.Second
	if pc.Drain != "" {
		if drain, err = time.ParseDuration(pc.Drain); err != nil || drain < 0 || drain > time.Hour {
			return exitError{2, fmt.Errorf("drain %q: want a duration up to 1h", pc.Drain)}
		}
	}
	ccfg := client.Config{Endpoints: pc.Authority.Endpoints}
	a := pc.Authority
	if !a.Insecure {
		src, err := tlsfiles.Load(tlsfiles.Files{CA: a.CACert, Cert: a.Cert, Key: a.Key}, tlsfiles.Options{TrustDomain: a.TrustDomain})
		if err != nil {
			return exitError{2, err}
		}
		ccfg.Credentials = src.Credentials(true)
	}
	dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
	cli, err := client.DialConfig(dctx, ccfg)
	dcancel()
	if err != nil {
		return err
	}
	defer cli.Close()
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctl, err := controller.New(controller.Options{Config: rc, Client: cli, Registerer: reg, Logger: log})
	if err != nil {
		return exitError{2, err}
	}
	if pc.MetricsAddr != "" {
		ln, err := net.Listen("tcp", pc.MetricsAddr)
		if err != nil {
			return exitError{2, fmt.Errorf("metricsAddr: %w", err)}
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
		fmt.Fprintf(out, "metrics on http://%s/metrics\n", ln.Addr())
	}
	var settled chan uint64
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wdone := make(chan error, 1)
	if rc.Webhooks != nil {
		settled = make(chan uint64, 64)
		go func() {
			wdone <- ctl.RunWebhooks(wctx, func(_ string, pos webhook.Position, _, _ string) {
				select {
				case settled <- pos.Index:
				default:
				}
			})
		}()
	}
	rep, runErr := ctl.Run(ctx)
	for _, d := range rep.Decisions {
		fmt.Fprintln(out, "decision:", d)
	}
	if rep.Rollback != nil {
		fmt.Fprintf(out, "rollback: %.3fs (traffic moved after %.3fs)\n", rep.Rollback.Total().Seconds(), rep.Rollback.TrafficMoved.Sub(rep.Rollback.Decided).Seconds())
	}
	fmt.Fprintf(out, "outcome: %s (%s), epoch %d\n", rep.Outcome, rep.Message, rep.Epoch)
	if settled != nil && rep.LastIndex > 0 {
		waitDrained(ctx, settled, wdone, rep.LastIndex, len(rc.Webhooks.Endpoints), drain, out)
	}
	if runErr != nil {
		return runErr
	}
	switch rep.Outcome {
	case controller.Aborted:
		return exitError{3, errors.New("canary aborted: " + rep.Message)}
	case controller.Paused:
		return exitError{4, errors.New("canary paused: " + rep.Message)}
	case controller.RolledBack:
		return exitError{5, errors.New("rolled back: " + rep.Message)}
	}
	return nil
}

// waitDrained waits (bounded) until every endpoint settled a delivery at
// or past the run's last decision. Endpoints filtering that event out
// never settle it: the drain timeout ends the wait.
func waitDrained(ctx context.Context, settled <-chan uint64, done <-chan error, last uint64, endpoints int, drain time.Duration, out io.Writer) {
	timer := time.NewTimer(drain)
	defer timer.Stop()
	reached := 0
	for reached < endpoints {
		select {
		case idx := <-settled:
			if idx >= last {
				reached++
			}
		case err := <-done:
			fmt.Fprintln(out, "webhooks stopped:", err)
			return
		case <-timer.C:
			fmt.Fprintf(out, "webhooks: not every endpoint settled index %d within %v (the state file resumes them)\n", last, drain)
			return
		case <-ctx.Done():
			return
		}
	}
}

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
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return b, nil
}
