package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/spf13/cobra"

	"github.com/aerodb/authority/probe/run"
	"github.com/aerodb/authority/probe/service"
	"github.com/aerodb/authority/probe/verdict"
)

func serveCmd(stdout, stderr io.Writer) *cobra.Command {
	var env, listen, events, keyFile, target string
	var tolerance time.Duration
	var objective float64
	c := &cobra.Command{
		Use:   "serve --env ENV FILE...",
		Short: "run every flow of ENV on its schedule; serve /metrics, /healthz, /v1/verdicts/{flow}, /v1/slos and status pages",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, files []string) error {
			cfg, err := load(files, stderr)
			if err != nil {
				return err
			}
			var signer *verdict.Signer
			if keyFile != "" {
				if signer, err = verdict.LoadSigner(keyFile); err != nil {
					return err
				}
			}
			var evw io.Writer
			switch events {
			case "":
			case "-":
				evw = stdout
			default:
				f, err := os.OpenFile(events, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
				if err != nil {
					return err
				}
				defer f.Close()
				evw = f
			}
			var svc *service.Service
			r, err := run.New(run.Options{Config: cfg, Env: env, BaseURL: target,
				OnEvent: func(e run.Event) { svc.SetupEvent(e) }})
			if err != nil {
				return err
			}
			svc, err = service.New(service.Options{Config: cfg, Runner: r, Events: evw, Signer: signer, Spread: true,
				OnTimeTolerance: tolerance, SelfObjective: objective})
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return err
			}
			fmt.Fprintf(stderr, "probed: environment %s, %d flow(s), listening on http://%s\n", env, len(svc.Flows()), ln.Addr())
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			hs := &http.Server{Handler: svc.Handler(), ReadHeaderTimeout: 10 * time.Second}
			go hs.Serve(ln)
			svc.Run(ctx)
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return hs.Shutdown(sctx)
		},
	}
	c.Flags().StringVar(&env, "env", "", "environment to probe (required)")
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:9115", "HTTP listen address")
	c.Flags().StringVar(&events, "events", "", "append JSON-lines events to this file (- for stdout)")
	c.Flags().StringVar(&keyFile, "signing-key", "", "Ed25519 private key (PEM, PKCS#8) to sign verdicts (?format=dsse)")
	c.Flags().StringVar(&target, "target", "", "base URL overriding the environment's base_url")
	c.Flags().DurationVar(&tolerance, "on-time-tolerance", 0, "how late a run may start and count as on time (default min(1s, interval/10), at least 50ms)")
	c.Flags().Float64Var(&objective, "self-objective", 0.999, "on-time objective of the service itself")
	_ = c.MarkFlagRequired("env")
	return c
}

func keygenCmd(stdout io.Writer) *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "keygen --out PREFIX",
		Short: "write an Ed25519 key pair: PREFIX.key (PKCS#8 PEM, 0600) and PREFIX.pub",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if _, err := os.Stat(out + ".key"); err == nil {
				return fmt.Errorf("%s.key exists; not overwriting", out)
			}
			id, err := verdict.GenerateKey(out)
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "wrote %s.key and %s.pub (keyid %s)\n", out, out, id)
			return nil
		},
	}
	c.Flags().StringVar(&out, "out", "", "path prefix (required)")
	_ = c.MarkFlagRequired("out")
	return c
}

func verifyCmd(stdout, stderr io.Writer) *cobra.Command {
	var keyFile string
	c := &cobra.Command{
		Use:   "verify --key PUB [ENVELOPE|-]",
		Short: "verify a signed verdict (DSSE envelope over an in-toto Statement); exit 1 if it does not verify",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pub, err := os.ReadFile(keyFile)
			if err != nil {
				return err
			}
			var in io.Reader = cmd.InOrStdin()
			if len(args) == 1 && args[0] != "-" {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				in = f
			}
			data, err := io.ReadAll(io.LimitReader(in, 1<<20))
			if err != nil {
				return err
			}
			var env dsse.Envelope
			if err := json.Unmarshal(data, &env); err != nil {
				fmt.Fprintf(stderr, "FAILED: not a DSSE envelope: %v\n", err)
				return exitError{1}
			}
			st, err := verdict.Verify(cmd.Context(), &env, pub)
			if err != nil {
				fmt.Fprintf(stderr, "FAILED: %v\n", err)
				return exitError{1}
			}
			v := st.Predicate
			fmt.Fprintf(stdout, "OK: %s = %s (window %s, %d runs, %d failed, %s .. %s; %s)\n", st.Subject[0].Name, v.Verdict,
				v.Window, v.Runs, v.Failures, v.From.Format(time.RFC3339), v.To.Format(time.RFC3339), v.Reason)
			return nil
		},
	}
	c.Flags().StringVar(&keyFile, "key", "", "Ed25519 public key (PEM) (required)")
	_ = c.MarkFlagRequired("key")
	return c
}
