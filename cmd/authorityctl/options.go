package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/tlsfiles"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
	"google.golang.org/grpc/credentials"
)

// Global flags and the environment variable behind each. A flag given on the
// command line wins over its variable, which wins over the default.
const (
	flagEndpoints = "endpoints"
	flagOutput    = "output"
	flagTimeout   = "timeout"
	flagCACert    = "cacert"
	flagCert      = "cert"
	flagKey       = "key"
	flagInsecure  = "insecure"
	flagTrust     = "trust-domain"

	envEndpoints = "AUTHORITY_ENDPOINTS"
	envOutput    = "AUTHORITY_OUTPUT"
	envTimeout   = "AUTHORITY_TIMEOUT"
	envCACert    = "AUTHORITY_CACERT"
	envCert      = "AUTHORITY_CERT"
	envKey       = "AUTHORITY_KEY"
	envInsecure  = "AUTHORITY_INSECURE"
	envTrust     = "AUTHORITY_TRUST_DOMAIN"
)

// Defaults of the global flags.
const (
	defaultEndpoints = "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003"
	defaultTimeout   = 10 * time.Second
)

// options is what every command shares: the global flags, where output goes
// and how to reach the cluster. One value per invocation; nothing global.
type options struct {
	endpoints endpointsValue
	output    enumValue
	// outputChosen: -o or AUTHORITY_OUTPUT was given (streams default to
	// JSON lines otherwise).
	outputChosen bool
	timeout      time.Duration
	// Mutual TLS: the CA bundle servers' certificates must chain to, and
	// this caller's certificate and key (its identity decides what it may
	// do). insecure: plaintext, for servers run with --insecure.
	cacert, cert, key string
	insecure          bool
	trustDomain       string
	// configPath: --config (else AUTHORITYCTL_CONFIG, else the default).
	configPath string

	getenv         func(string) string
	stdout, stderr io.Writer

	// dial connects a client. Tests replace it to prove that a usage error
	// is found before any network call.
	dial func(ctx context.Context, cfg client.Config) (*client.Client, error)
	// newRequestID draws a promotion request id.
	newRequestID func() (string, error)
	// now reads the clock (lease deadlines in `node lease` events).
	now func() time.Time
	// pollInterval paces the waits of switchover and the renewal check of
	// `node lease`.
	pollInterval time.Duration
	// stdin and isTerminal: where confirmations are read, and whether a
	// file is a terminal (a prompt is only shown on one).
	stdin      io.Reader
	isTerminal func(fd uintptr) bool
	stdinFd    uintptr
	// probe checks, before dialing, that some endpoint accepts a TCP
	// connection (nil: no probe), so a refused connection fails at once.
	probe func(ctx context.Context, endpoints []string) error
	// watchMinInterval is the least --interval of a refreshing view.
	watchMinInterval time.Duration
	// cleansUp: the running command ends cleanly on SIGINT/SIGTERM and
	// may take longer than interruptGrace doing so (see main).
	cleansUp atomic.Bool
}

// newOptions returns the options of one invocation with the real dialer.
func newOptions(getenv func(string) string, stdout, stderr io.Writer) *options {
	return &options{
		endpoints:        endpointsValue(strings.Split(defaultEndpoints, ",")),
		output:           enumValue{value: outputText, allowed: []string{outputJSON, outputText, outputYAML}},
		timeout:          defaultTimeout,
		getenv:           getenv,
		stdout:           stdout,
		stderr:           stderr,
		dial:             client.DialConfig,
		newRequestID:     randomRequestID,
		now:              time.Now,
		pollInterval:     100 * time.Millisecond,
		stdin:            os.Stdin,
		stdinFd:          os.Stdin.Fd(),
		isTerminal:       func(fd uintptr) bool { return term.IsTerminal(int(fd)) },
		probe:            probeEndpoints,
		watchMinInterval: 500 * time.Millisecond,
	}
}

// addGlobalFlags registers the global flags on the root command.
func (o *options) addGlobalFlags(fs *pflag.FlagSet) {
	fs.Var(&o.endpoints, flagEndpoints, "comma-separated gRPC addresses of authority servers (env "+envEndpoints+")")
	fs.VarP(&o.output, flagOutput, "o", "output format: text, json or yaml (env "+envOutput+"; streams default to json lines)")
	fs.DurationVar(&o.timeout, flagTimeout, defaultTimeout, "bound on each command's calls, dial included (env "+envTimeout+")")
	fs.StringVar(&o.configPath, flagConfig, "", "CLI config file (env "+envConfig+"; default $XDG_CONFIG_HOME/authorityctl/config.yaml or ~/.config/authorityctl/config.yaml)")
	fs.StringVar(&o.cacert, flagCACert, "", "CA bundle (PEM) the servers' certificates must chain to (env "+envCACert+")")
	fs.StringVar(&o.cert, flagCert, "", "client certificate (PEM); its identity decides what you may do (env "+envCert+")")
	fs.StringVar(&o.key, flagKey, "", "client private key (PEM) (env "+envKey+")")
	fs.BoolVar(&o.insecure, flagInsecure, false, "plaintext, for servers run with --insecure (env "+envInsecure+")")
	fs.StringVar(&o.trustDomain, flagTrust, identity.DefaultTrustDomain, "trust domain of certificate identities (env "+envTrust+")")
}

// applyEnv fills the global flags not given on the command line from their
// environment variables, else from the config file, then checks them.
// Errors are usage errors.
func (o *options) applyEnv(fs *pflag.FlagSet) error {
	path, explicit := o.configPath, true
	if path == "" {
		path = o.getenv(envConfig)
	}
	if path == "" {
		path, explicit = defaultConfigPath(o.getenv), false
	}
	var file map[string]string
	if path != "" {
		var err error
		if file, err = loadConfigFile(path, explicit); err != nil {
			return usageError{err}
		}
	}
	if f := fs.Lookup(flagOutput); f != nil && (f.Changed || o.getenv(envOutput) != "" || file[flagOutput] != "") {
		o.outputChosen = true
	}
	for _, fe := range [...]struct{ flag, env string }{
		{flagEndpoints, envEndpoints}, {flagOutput, envOutput}, {flagTimeout, envTimeout},
		{flagCACert, envCACert}, {flagCert, envCert}, {flagKey, envKey}, {flagInsecure, envInsecure}, {flagTrust, envTrust},
	} {
		f := fs.Lookup(fe.flag)
		if f == nil || f.Changed {
			continue
		}
		src, v := fe.env, o.getenv(fe.env)
		if v == "" {
			src, v = path+": "+fe.flag, file[fe.flag]
		}
		if v == "" {
			continue
		}
		if err := f.Value.Set(v); err != nil {
			return usagef("%s=%q: %v", src, v, cleanFlagError(err))
		}
	}
	if o.timeout <= 0 {
		return usagef("--%s %v: must be positive", flagTimeout, o.timeout)
	}
	return nil
}

// connect dials the cluster; --timeout bounds the dial and every attempt.
// When no endpoint accepts a TCP connection it fails at once, naming each
// endpoint's error, instead of waiting out --timeout.
func (o *options) connect(ctx context.Context) (*client.Client, error) {
	cfg := client.Config{Endpoints: o.endpoints, DialTimeout: o.timeout, RequestTimeout: o.timeout}
	tlsCfg, err := o.tlsConfig()
	if err != nil {
		return nil, err
	}
	cfg.Credentials = tlsCfg
	if o.probe != nil {
		if err := o.probe(ctx, o.endpoints); err != nil {
			return nil, err
		}
	}
	c, err := o.dial(ctx, cfg)
	if err != nil && errors.Is(err, context.DeadlineExceeded) {
		return nil, fmt.Errorf("no endpoint of %s answered within --timeout %v (are the servers up, and is this their gRPC port?): %w",
			strings.Join(o.endpoints, ","), o.timeout, err)
	}
	return c, err
}

// tlsConfig loads the client certificate (nil with --insecure).
func (o *options) tlsConfig() (credentials.TransportCredentials, error) {
	given := 0
	for _, f := range []string{o.cacert, o.cert, o.key} {
		if f != "" {
			given++
		}
	}
	switch {
	case o.insecure && given > 0:
		return nil, usagef("--%s excludes --%s, --%s and --%s", flagInsecure, flagCACert, flagCert, flagKey)
	case o.insecure:
		return nil, nil
	case given != 3:
		return nil, usagef("give --%s, --%s and --%s (or %s, %s, %s) to reach the cluster over mutual TLS, or --%s for a server run with --insecure",
			flagCACert, flagCert, flagKey, envCACert, envCert, envKey, flagInsecure)
	}
	src, err := tlsfiles.Load(tlsfiles.Files{CA: o.cacert, Cert: o.cert, Key: o.key}, tlsfiles.Options{TrustDomain: o.trustDomain})
	if err != nil {
		return nil, usageError{err}
	}
	return src.Credentials(true), nil
}

// selfIdentity is the identity of the client certificate (zero with
// --insecure or without certificate flags).
func (o *options) selfIdentity() (identity.Identity, error) {
	if o.insecure || o.cert == "" || o.cacert == "" || o.key == "" {
		return identity.Identity{}, nil
	}
	src, err := tlsfiles.Load(tlsfiles.Files{CA: o.cacert, Cert: o.cert, Key: o.key}, tlsfiles.Options{TrustDomain: o.trustDomain})
	if err != nil {
		return identity.Identity{}, usageError{err}
	}
	return src.Self(), nil
}

// withTimeout bounds one command's work by --timeout.
func (o *options) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, o.timeout)
}

// printer returns the printer of the chosen output format.
func (o *options) printer() printer { return o.printerTo(o.stdout) }

// printerTo is the printer of the chosen output format writing to w.
func (o *options) printerTo(w io.Writer) printer {
	switch o.output.value {
	case outputJSON:
		return jsonPrinter{w: w}
	case outputYAML:
		return jsonPrinter{w: &yamlWriter{w: w}}
	}
	return textPrinter{w: w}
}

// streamPrinter is the printer of streaming commands (watch, node lease):
// one JSON line per event unless text output was asked for explicitly.
func (o *options) streamPrinter() printer {
	if o.outputChosen && o.output.value == outputText {
		return textPrinter{w: o.stdout}
	}
	if o.outputChosen && o.output.value == outputYAML {
		return jsonPrinter{w: &yamlWriter{w: o.stdout, stream: true}}
	}
	return jsonPrinter{w: o.stdout}
}

// progressf writes a progress line to stderr (stdout carries only results).
func (o *options) progressf(format string, args ...any) {
	fmt.Fprintf(o.stderr, format+"\n", args...)
}

// randomRequestID draws a 128-bit promotion request id from crypto/rand.
func randomRequestID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("drawing a request id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// endpointsValue is a comma-separated list of host:port (or gRPC target
// URIs such as dns:///host:port).
type endpointsValue []string

func (e *endpointsValue) String() string { return strings.Join(*e, ",") }
func (e *endpointsValue) Type() string   { return "host:port,..." }

func (e *endpointsValue) Set(s string) error {
	var out []string
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if scheme, _, ok := strings.Cut(p, "://"); ok && (strings.EqualFold(scheme, "http") || strings.EqualFold(scheme, "https")) {
			return fmt.Errorf("endpoint %q: authorityctl speaks gRPC over mutual TLS, not %s; give the gRPC host:port (e.g. 127.0.0.1:8001), not the HTTP address", p, scheme)
		}
		if !strings.Contains(p, "://") {
			if _, port, err := net.SplitHostPort(p); err != nil || port == "" {
				return fmt.Errorf("endpoint %q is not host:port", p)
			}
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return fmt.Errorf("no endpoints in %q", s)
	}
	*e = out
	return nil
}

// enumValue is a string flag restricted to a fixed set of values, so a bad
// value is a flag error (usage) found while parsing.
type enumValue struct {
	value   string
	allowed []string
}

func (v *enumValue) String() string { return v.value }
func (v *enumValue) Type() string   { return strings.Join(v.allowed, "|") }

func (v *enumValue) Set(s string) error {
	if !slices.Contains(v.allowed, s) {
		return fmt.Errorf("%q is not one of %s", s, strings.Join(v.allowed, ", "))
	}
	v.value = s
	return nil
}

// hexValue is a byte string given in hex; malformed hex is a flag error.
type hexValue []byte

func (h *hexValue) String() string { return hex.EncodeToString(*h) }
func (h *hexValue) Type() string   { return "hex" }

func (h *hexValue) Set(s string) error {
	b, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("%q is not hex (an even number of digits 0-9, a-f, no 0x)", s)
	}
	*h = b
	return nil
}

// positiveDuration is a duration flag that must be > 0.
type positiveDuration time.Duration

// String is "" when unset, so help shows no "(default 0s)" for a flag
// whose default is something else (the domain's policy, say).
func (d *positiveDuration) String() string {
	if *d == 0 {
		return ""
	}
	return time.Duration(*d).String()
}
func (d *positiveDuration) Type() string { return "duration" }

func (d *positiveDuration) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration (e.g. 500ms, 30s, 2m)", s)
	}
	if v <= 0 {
		return fmt.Errorf("%v: must be positive", v)
	}
	*d = positiveDuration(v)
	return nil
}

// nonZeroUint64 is an epoch-like flag: 0 is refused ("epochs start at 1").
type nonZeroUint64 uint64

func (n *nonZeroUint64) String() string { return fmt.Sprint(uint64(*n)) }
func (n *nonZeroUint64) Type() string   { return "uint" }

func (n *nonZeroUint64) Set(s string) error {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return fmt.Errorf("%q is not an unsigned integer", s)
	}
	if v == 0 {
		return fmt.Errorf("0: epochs start at 1")
	}
	*n = nonZeroUint64(v)
	return nil
}

// checkNames validates names (domains, members, request ids) with the
// service's own rule (fsm.ValidateName), before any network call.
func checkNames(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if err := fsm.ValidateName(pairs[i], pairs[i+1]); err != nil {
			return usageError{nameError(pairs[i], pairs[i+1], err)}
		}
	}
	return nil
}

// exactArgs is cobra.ExactArgs with a message naming the arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usagef("%s takes %d argument(s) (%s), got %d", cmd.CommandPath(), len(names), strings.Join(names, " "), len(args))
		}
		return nil
	}
}

// markRequired marks flags required (cobra reports them missing as a usage
// error before the command runs).
func markRequired(cmd *cobra.Command, names ...string) {
	for _, n := range names {
		if err := cmd.MarkFlagRequired(n); err != nil {
			panic(err) // a programming error: the flag does not exist
		}
	}
}
