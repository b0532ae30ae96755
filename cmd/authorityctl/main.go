// Command authorityctl is the operator and CI command line of AeroDB
// Authority: cluster status and maintenance, domains and members, promotion
// (with its explanation and history), switchover, a watch of the event log,
// and node-side commands for drills and scripts.
//
//	authorityctl --endpoints 127.0.0.1:8001,127.0.0.1:8002 domain get orders
//	AUTHORITY_OUTPUT=json authorityctl promote orders --to n2 --request-id r1
//
// Every global flag has an environment variable (AUTHORITY_ENDPOINTS,
// AUTHORITY_OUTPUT, AUTHORITY_TIMEOUT). Exit codes: 0 ok, 1 error, 2 usage
// (found locally, before any network call), 3 a promotion was denied (also
// a dry run that would be denied).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/spf13/cobra"
)

// exitCode is the process's exit status.
type exitCode int

// Exit codes (DESIGN §9).
const (
	exitOK     exitCode = 0
	exitError  exitCode = 1
	exitUsage  exitCode = 2
	exitDenied exitCode = 3
)

// interruptGrace is how long a command has, after SIGINT or SIGTERM, to end
// before the process exits anyway: a command blocked where no context
// reaches (opening a FIFO, reading a file) must not swallow the signal.
// Commands that clean up on the signal (watch, node lease releasing its
// lease, deploy run stopping its child, switchover) set options.cleansUp
// and are waited for; a second signal kills them at once.
const interruptGrace = 2 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	o := newOptions(os.Getenv, os.Stdout, os.Stderr)
	done := make(chan exitCode, 1)
	go func() { done <- run(ctx, o, os.Args[1:]) }()
	var code exitCode
	select {
	case code = <-done:
	case <-ctx.Done():
		stop() // a second signal kills at once
		if o.cleansUp.Load() {
			code = <-done // it ends cleanly on ctx (releases, stops its child)
			break
		}
		select {
		case code = <-done:
		case <-time.After(interruptGrace):
			fmt.Fprintln(os.Stderr, "error: interrupted before the command finished")
			code = exitError
		}
	}
	stop()
	os.Exit(int(code))
}

// run executes one command line and returns its exit code. Interrupts
// (SIGINT, SIGTERM) cancel ctx: streaming commands end cleanly on it.
func run(ctx context.Context, o *options, args []string) exitCode {
	root := newRootCmd(o)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	code := exitCodeOf(err)
	switch code {
	case exitUsage:
		fmt.Fprintf(o.stderr, "error: %s\nRun '%s --help' for usage.\n", humanize(err.Error()), cmd.CommandPath())
	case exitDenied:
		fmt.Fprintf(o.stderr, "%v\n", err)
	default:
		fmt.Fprintf(o.stderr, "error: %s\n", humanize(describeError(err)))
	}
	return code
}

// newRootCmd builds the command tree.
func newRootCmd(o *options) *cobra.Command {
	root := &cobra.Command{
		Use:   "authorityctl",
		Short: "Operate an AeroDB Authority cluster",
		Long: `authorityctl talks to an AeroDB Authority cluster over gRPC.

Global flags have environment variables: --endpoints AUTHORITY_ENDPOINTS,
-o/--output AUTHORITY_OUTPUT, --timeout AUTHORITY_TIMEOUT, --cacert
AUTHORITY_CACERT, --cert AUTHORITY_CERT, --key AUTHORITY_KEY, --insecure
AUTHORITY_INSECURE, --trust-domain AUTHORITY_TRUST_DOMAIN, and a config file
(--config, AUTHORITYCTL_CONFIG, else ~/.config/authorityctl/config.yaml):

  endpoints: [10.0.0.1:8001, 10.0.0.2:8001, 10.0.0.3:8001]
  cacert: certs/ca.pem        # relative to the file
  cert: certs/operator.pem
  key: certs/operator-key.pem
  output: text                # text, json or yaml
  timeout: 10s

A flag on the command line wins over its variable, which wins over the file.

Destructive commands (decommissioning a member, removing a server) ask for
confirmation on a terminal; --yes skips the question, and without a
terminal they refuse unless --yes is given.

Every call runs over mutual TLS: the certificate's identity (operator,
node/ID, reader, ...) decides what it may do; 'authorityctl certs init DIR'
writes a local CA and certificates.

Exit codes: 0 ok, 1 error, 2 usage (found before any network call),
3 promotion denied (also a dry run that would be denied).

JSON output is deterministic, so equal state prints equal bytes on every
server: explain, promote and history print the explanation artifact (fixed
field order); watch and node lease print one JSON line per event; other
commands print proto messages in the proto3 JSON mapping (proto field
names, 64-bit integers as strings) with sorted keys. Hashes are hex in
every output. -o yaml prints the same structures as YAML (streams: one
document per event).`,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          noSubcommand,
		RunE:          noSubcommand,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return o.applyEnv(cmd.Flags())
		},
	}
	root.CompletionOptions.HiddenDefaultCmd = false
	root.SuggestionsMinimumDistance = 2
	root.SetOut(o.stdout)
	root.SetErr(o.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	o.addGlobalFlags(root.PersistentFlags())
	root.AddCommand(
		newClusterCmd(o),
		newDomainCmd(o),
		newMemberCmd(o),
		newAssignCmd(o),
		newPromoteCmd(o),
		newExplainCmd(o),
		newHistoryCmd(o),
		newSwitchoverCmd(o),
		newWatchCmd(o),
		newNodeCmd(o),
		newCertsCmd(o),
		newDeployCmd(o),
		newFenceCmd(o),
		newPreflightCmd(o),
		newGateCmd(o),
		newReleaseCmd(o),
		newEvidenceCmd(o),
		newLeaseCmd(o),
		newSnapshotCmd(o),
		newVersionCmd(o),
	)
	return root
}

// newGroupCmd returns a command that only holds subcommands: run alone or
// with an unknown subcommand it is a usage error (cobra would print help and
// succeed).
func newGroupCmd(use, short string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Args: noSubcommand, RunE: noSubcommand}
	cmd.AddCommand(subs...)
	return cmd
}

func noSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		if cmd.SuggestionsMinimumDistance <= 0 {
			cmd.SuggestionsMinimumDistance = 2
		}
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			return usagef("unknown command %q for %q; did you mean %s?", args[0], cmd.CommandPath(), strings.Join(s, " or "))
		}
		return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
	}
	return usagef("%s needs a subcommand", cmd.CommandPath())
}

// usageError is a problem with the command line, found locally.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// runtimeError marks an error returned by a command's body (after its
// arguments were accepted), so that every other error cobra returns (unknown
// command, flag, argument count) maps to the usage exit code.
type runtimeError struct{ err error }

func (e runtimeError) Error() string { return e.err.Error() }
func (e runtimeError) Unwrap() error { return e.err }

// runE adapts a command body to cobra, marking its errors as runtime errors.
func runE(body func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if err := body(cmd, args); err != nil {
			return runtimeError{err}
		}
		return nil
	}
}

// exitCodeOf maps an error to the exit code: usage errors (ours or cobra's)
// 2, a denied promotion 3, anything a command body returned 1.
func exitCodeOf(err error) exitCode {
	var usage usageError
	var denied *client.DeniedError
	var releaseDenial releaseDenied
	var runtime runtimeError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &usage):
		return exitUsage
	case errors.As(err, &denied), errors.As(err, &releaseDenial):
		return exitDenied
	case errors.As(err, &runtime):
		return exitError
	}
	return exitUsage
}

// describeError renders "<message> (<REASON>)": the server's reason when the
// error carries one, else the client condition it wraps.
func describeError(err error) string {
	if r := errorReason(err); r != "" {
		return fmt.Sprintf("%v (%s)", err, r)
	}
	return err.Error()
}

// clientReasons names the client-side conditions that carry no server
// reason, most specific first.
var clientReasons = []struct {
	err    error
	reason string
}{
	{client.ErrOutcomeUnknown, pb.ReasonOutcomeUnknown},
	{client.ErrLeaseLost, "LEASE_LOST"},
	{client.ErrReleased, "RELEASED"},
	{client.ErrClosed, "CLOSED"},
	{context.DeadlineExceeded, "DEADLINE_EXCEEDED"},
	{context.Canceled, "CANCELED"},
}

// errorReason is the machine-readable reason of err, "" when it has none.
// An unknown outcome outranks the reason of the last attempt it wraps.
func errorReason(err error) string {
	if errors.Is(err, client.ErrOutcomeUnknown) {
		return pb.ReasonOutcomeUnknown
	}
	var e *client.Error
	if errors.As(err, &e) && e.Reason != "" {
		return e.Reason
	}
	for _, cr := range clientReasons {
		if errors.Is(err, cr.err) {
			return cr.reason
		}
	}
	return ""
}

// closeQuietly closes what a command opened; its error changes nothing the
// command reports.
func closeQuietly(c io.Closer) { _ = c.Close() }
