package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/spf13/cobra"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/pki"
	"google.golang.org/protobuf/proto"
)

var errNoNetwork = errors.New("test: no network")

// testOptions returns options whose dialer records its config and fails,
// so a command that reaches the network exits 1 having dialed once. A nil
// env is AUTHORITY_INSECURE=true alone (tests of other flags need no
// certificates); a non-nil env is taken as it is.
func testOptions(env map[string]string) (o *options, stdout, stderr *bytes.Buffer, dialed *[]client.Config) {
	if env == nil {
		env = map[string]string{envInsecure: "true"}
	}
	stdout, stderr = &bytes.Buffer{}, &bytes.Buffer{}
	o = newOptions(func(k string) string { return env[k] }, stdout, stderr)
	var cfgs []client.Config
	o.dial = func(_ context.Context, cfg client.Config) (*client.Client, error) {
		cfgs = append(cfgs, cfg)
		return nil, errNoNetwork
	}
	o.newRequestID = func() (string, error) { return "test-request-id", nil }
	o.probe = nil
	o.isTerminal = func(uintptr) bool { return false }
	o.stdin = strings.NewReader("")
	return o, stdout, stderr, &cfgs
}

// TestUsageErrorsNeedNoNetwork: every malformed command line exits 2 with a
// message, before any dial.
func TestUsageErrorsNeedNoNetwork(t *testing.T) {
	long := strings.Repeat("a", 129)
	reasonFile := filepath.Join(t.TempDir(), "missing")
	for _, args := range [][]string{
		{},
		{"bogus"},
		{"domain"},
		{"domain", "bogus"},
		{"domain", "get"},
		{"domain", "get", "a", "b"},
		{"domain", "get", "x", "--bogus"},
		{"-o", "xml", "domain", "list"},
		{"--output=xml", "domain", "list"},
		{"--timeout", "0s", "domain", "list"},
		{"--timeout", "soon", "domain", "list"},
		{"--endpoints", ",", "domain", "list"},
		{"--endpoints", "no-port", "domain", "list"},
		{"domain", "create", "x"},
		{"domain", "create", "x", "--kind", "table"},
		{"domain", "create", "x", "--kind", "lock", "--ttl", "0"},
		{"domain", "create", "x", "--kind", "lock", "--ttl", "-1s"},
		{"domain", "create", "x", "--kind", "lock", "--ttl", "50ms"},
		{"domain", "create", "x", "--kind", "lock", "--report-max-age", "0s"},
		{"domain", "create", "x", "--kind", "lock", "--manual", "--automatic"},
		{"domain", "create", "", "--kind", "lock"},
		{"domain", "create", long, "--kind", "lock"},
		{"domain", "create", "bad/name", "--kind", "lock"},
		{"domain", "get", long},
		{"domain", "update", "x", "--ttl", "-5s"},
		{"domain", "update", "x"},
		{"domain", "create", "x", "--kind", "aerodb", "--waivers", "sometimes"},
		{"domain", "create", "x", "--kind", "aerodb", "--waivers", "permitted"},
		{"domain", "create", "x", "--kind", "aerodb", "--waiver-reason", "why"},
		{"domain", "create", "x", "--kind", "aerodb", "--waivers", "strict", "--waiver-reason", "why"},
		{"domain", "update", "x", "--waivers", "permitted", "--waiver-reason", strings.Repeat("r", 257)},
		{"domain", "update", "x", "--waiver-reason", "why"},
		{"domain", "list", "extra"},
		{"release", "label-abort", "rel"},
		{"release", "label-abort", "rel", "--decision-index", "7"},
		{"release", "label-abort", "rel", "--decision-index", "7", "--verdict", "maybe"},
		{"release", "label-abort", "rel", "--decision-index", "0", "--verdict", "false"},
		{"release", "label-abort", "bad/name", "--decision-index", "7", "--verdict", "false"},
		{"member", "register", "d"},
		{"member", "register", "d", long},
		{"member", "register", "d", "m", "--priority", "-1"},
		{"assign", "d", ""},
		{"promote", "d"},
		{"promote", "d", "--to", long},
		{"promote", "d", "--to", "n2", "--request-id", long},
		{"promote", "d", "--to", "n2", "--waive", "allow-everything", "--reason", "r"},
		{"promote", "d", "--to", "n2", "--waive", "allow-data-loss"},
		{"promote", "d", "--to", "n2", "--waive", "allow-data-loss", "--waive", "allow-data-loss", "--reason", "r"},
		{"promote", "d", "--to", "n2", "--expected-epoch", "0"},
		{"promote", "d", "--to", "n2", "--expected-epoch", "-1"},
		{"promote", "d", "--to", "n2", "--reason-file", reasonFile},
		{"promote", "d", "--to", "n2", "--reason", "a", "--reason-file", reasonFile},
		{"explain", "d"},
		{"history"},
		{"switchover", "d"},
		{"switchover", "d", "--to", "n2", "--wait", "0s"},
		{"watch", "--from", "x"},
		{"watch", long},
		{"cluster"},
		{"cluster", "status", "extra"},
		{"node", "lease", "d", "n1", "--acquire", "--epoch", "2"},
		{"node", "lease", "d", "n1", "--acquire", "--ttl", "5s"},
		{"node", "lease", "d", "n1", "--ttl", "0s"},
		{"node", "lease", "d", "n1", "--epoch", "0"},
		{"node", "advance-watermark", "d", "n1", "--epoch", "1", "--lsn", "1", "--hash", "xyz"},
		{"node", "advance-watermark", "d", "n1", "--epoch", "1", "--lsn", "1", "--hash", "abc"}, // odd length
		{"node", "advance-watermark", "d", "n1", "--epoch", "0", "--lsn", "1", "--hash", "00"},
		{"node", "advance-watermark", "d", "n1", "--epoch", "1", "--lsn", "1", "--hash", ""},
		{"node", "advance-watermark", "d", "n1", "--lsn", "1", "--hash", "00"},
		{"node", "report-progress", "d", "n2", "--epoch", "1", "--flushed-lsn", "1", "--flushed-hash", "0g"},
		{"node", "report-progress", "d", "n2", "--epoch", "1", "--flushed-lsn", "1", "--flushed-hash", "00", "--wm-lsn", "1"},
		{"node", "report-progress", "d", "n2", "--epoch", "1", "--flushed-lsn", "1", "--flushed-hash", "00", "--state", "asleep"},
		{"--insecure=maybe", "domain", "list"},
		{"certs"},
		{"certs", "init"},
		{"certs", "init", "a", "b"},
		{"member", "add", "s4", "--raft-address", "127.0.0.1:7004"},
		{"member", "remove"},
		{"member", "remove", long},
		{"member", "list", "a", "extra"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			o, stdout, stderr, dialed := testOptions(nil)
			code := run(context.Background(), o, args)
			if code != exitUsage {
				t.Fatalf("exit %d, want %d (usage); stderr:\n%s", code, exitUsage, stderr)
			}
			if len(*dialed) != 0 {
				t.Fatalf("dialed %v before rejecting the command line", *dialed)
			}
			if !strings.HasPrefix(stderr.String(), "error: ") || !strings.Contains(stderr.String(), "--help") {
				t.Fatalf("stderr %q: want an error line and a pointer to --help", stderr)
			}
			if stdout.Len() != 0 {
				t.Fatalf("stdout %q: want nothing", stdout)
			}
		})
	}
}

// TestHelpExitsZero: --help is not an error.
func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"promote", "--help"}, {"help", "node", "lease"}} {
		o, stdout, stderr, dialed := testOptions(nil)
		if code := run(context.Background(), o, args); code != exitOK || len(*dialed) != 0 {
			t.Fatalf("%v: exit %d, dialed %d; stderr %s", args, code, len(*dialed), stderr)
		}
		if !strings.Contains(stdout.String(), "Usage:") {
			t.Fatalf("%v: no usage on stdout:\n%s", args, stdout)
		}
	}
}

// TestGlobalFlagsFromEnvironment: every global flag has its variable; a
// flag on the command line wins.
func TestGlobalFlagsFromEnvironment(t *testing.T) {
	env := map[string]string{envEndpoints: "10.0.0.1:7000, 10.0.0.2:7000", envTimeout: "3s", envOutput: "json", envInsecure: "true"}

	o, _, stderr, dialed := testOptions(env)
	if code := run(context.Background(), o, []string{"domain", "list"}); code != exitError {
		t.Fatalf("exit %d, want %d (the test dialer fails); stderr %s", code, exitError, stderr)
	}
	if len(*dialed) != 1 {
		t.Fatalf("dialed %d times, want 1", len(*dialed))
	}
	cfg := (*dialed)[0]
	if want := []string{"10.0.0.1:7000", "10.0.0.2:7000"}; !slices.Equal(cfg.Endpoints, want) {
		t.Fatalf("endpoints %v, want %v from %s", cfg.Endpoints, want, envEndpoints)
	}
	if cfg.DialTimeout != 3*time.Second || cfg.RequestTimeout != 3*time.Second {
		t.Fatalf("timeouts %v/%v, want 3s from %s", cfg.DialTimeout, cfg.RequestTimeout, envTimeout)
	}
	if o.output.value != outputJSON {
		t.Fatalf("output %q, want json from %s", o.output.value, envOutput)
	}
	if cfg.Credentials != nil || !o.insecure {
		t.Fatalf("%s=true: credentials %v, insecure %t; want plaintext", envInsecure, cfg.Credentials, o.insecure)
	}
	if !strings.Contains(stderr.String(), errNoNetwork.Error()) {
		t.Fatalf("stderr %q: want the dial error", stderr)
	}

	o, _, _, dialed = testOptions(env)
	run(context.Background(), o, []string{"--endpoints", "10.0.0.9:1", "--timeout", "1s", "-o", "text", "domain", "list"})
	if cfg := (*dialed)[0]; !slices.Equal(cfg.Endpoints, []string{"10.0.0.9:1"}) || cfg.DialTimeout != time.Second || o.output.value != outputText {
		t.Fatalf("flags did not win over the environment: %v %v %q", cfg.Endpoints, cfg.DialTimeout, o.output.value)
	}

	o, _, _, dialed = testOptions(nil)
	run(context.Background(), o, []string{"domain", "list"})
	if cfg := (*dialed)[0]; !slices.Equal(cfg.Endpoints, strings.Split(defaultEndpoints, ",")) || cfg.DialTimeout != defaultTimeout || o.output.value != outputText {
		t.Fatalf("defaults: %v %v %q", cfg.Endpoints, cfg.DialTimeout, o.output.value)
	}
}

// TestExitCodes: the mapping from errors to exit codes and the error line.
func TestExitCodes(t *testing.T) {
	denied := &client.DeniedError{Record: &pb.AttemptRecord{Decision: &pb.Decision{DenialReason: "PrimaryStillActive"}}}
	serverErr := &client.Error{Reason: pb.ReasonNotFound, Message: "domain \"x\""}
	for _, tc := range []struct {
		err    error
		code   exitCode
		reason string
	}{
		{nil, exitOK, ""},
		{usagef("bad"), exitUsage, ""},
		{errors.New("cobra: unknown flag"), exitUsage, ""},
		{runtimeError{denied}, exitDenied, ""},
		{runtimeError{serverErr}, exitError, pb.ReasonNotFound},
		{runtimeError{fmt.Errorf("wrapped: %w", serverErr)}, exitError, pb.ReasonNotFound},
		{runtimeError{fmt.Errorf("%w: %w (last attempt: %w)", client.ErrOutcomeUnknown, context.DeadlineExceeded, serverErr)},
			exitError, pb.ReasonOutcomeUnknown},
		{runtimeError{fmt.Errorf("lease lost: %w", client.ErrLeaseLost)}, exitError, "LEASE_LOST"},
		{runtimeError{errors.New("plain")}, exitError, ""},
	} {
		if got := exitCodeOf(tc.err); got != tc.code {
			t.Errorf("exitCodeOf(%v) = %d, want %d", tc.err, got, tc.code)
		}
		if tc.err == nil {
			continue
		}
		if got := errorReason(tc.err); got != tc.reason {
			t.Errorf("errorReason(%v) = %q, want %q", tc.err, got, tc.reason)
		}
		if tc.reason != "" && !strings.HasSuffix(describeError(tc.err), "("+tc.reason+")") {
			t.Errorf("describeError(%v) = %q, want the reason at the end", tc.err, describeError(tc.err))
		}
	}
}

func sampleRecord() *pb.AttemptRecord {
	epoch := uint64(1)
	return &pb.AttemptRecord{
		Request: &pb.PromotionRequest{RequestId: "r1", Domain: "orders", Candidate: "n2", ExpectedEpoch: &epoch,
			Reason: "drill <&> \"quoted\"", Waivers: []string{"allow-data-loss"}, InitiatedBy: pb.Initiator_INITIATOR_OPERATOR},
		Decision: &pb.Decision{DenialReason: "PrimaryStillActive", FailedInvariant: "AU-1 [P6-A1]", Checks: []*pb.Check{
			{Name: "old_holder_inactive", Invariant: "AU-1 [P6-A1]", Reason: "PrimaryStillActive",
				Observed: []*pb.Observed{{Key: "holder", Value: "n1"}, {Key: "remaining_ms", Value: "812"}}, Detail: "held"},
			{Name: "expected_epoch", Invariant: "AU-1", Satisfied: true},
		}},
		LogIndex: 12, Term: 2, EpochBefore: 1, EpochAfter: 1, HolderBefore: "n1", HolderAfter: "n1",
		Lease: &pb.LeaseObservation{Holder: "n1", Epoch: 1, State: pb.LeaseState_LEASE_STATE_HELD, RemainingMs: 812, LeaderTerm: 2},
		CandidateReport: &pb.ProgressReport{MemberId: "n2", Epoch: 1, FlushedLsn: 1 << 62, FlushedHash: []byte{0xaa, 0x10},
			State: pb.ReplicaState_REPLICA_STATE_STREAMING, ReadSafe: true},
		ReportAgeMs: 40, StampedUnixMs: 1_795_000_000_000,
	}
}

// TestJSONDeterministic: the same record prints the same bytes, however it
// was built; keys are sorted; 64-bit values survive exactly.
func TestJSONDeterministic(t *testing.T) {
	rec := sampleRecord()
	print := func(r *pb.AttemptRecord) []byte {
		var buf bytes.Buffer
		if err := (jsonPrinter{w: &buf}).Attempt(r); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	first := print(rec)
	wire, err := proto.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	decoded := &pb.AttemptRecord{}
	if err := proto.Unmarshal(wire, decoded); err != nil {
		t.Fatal(err)
	}
	for i, r := range []*pb.AttemptRecord{rec, proto.CloneOf(rec), decoded} {
		if got := print(r); !bytes.Equal(got, first) {
			t.Fatalf("print %d differs:\n%s\nvs\n%s", i, got, first)
		}
	}

	// The explanation artifact: fixed field order, exact 64-bit numbers, no
	// HTML escaping.
	for _, want := range []string{
		`"denial_reason": "PrimaryStillActive"`,
		`"flushed_lsn": 4611686018427387904`, // 1<<62, exact
		`"reason": "drill <&> \"quoted\""`,   // no HTML escaping
		`"state": "held"`,
	} {
		if !bytes.Contains(first, []byte(want)) {
			t.Errorf("missing %s in\n%s", want, first)
		}
	}
	if bytes.Index(first, []byte(`"request"`)) > bytes.Index(first, []byte(`"checks"`)) {
		t.Errorf("artifact fields out of order:\n%s", first)
	}

	// Streams: one compact line per event.
	var lines bytes.Buffer
	p := jsonPrinter{w: &lines}
	ev := &pb.Event{Index: 12, Seq: 1, Type: "replication.promotion.validation_failed", Domain: "orders", Epoch: 1, Holder: "n1",
		Fields: []*pb.Observed{{Key: "request_id", Value: "r1"}}}
	for range 2 {
		if err := p.Event(ev); err != nil {
			t.Fatal(err)
		}
	}
	ls := strings.Split(strings.TrimSuffix(lines.String(), "\n"), "\n")
	if len(ls) != 2 || ls[0] != ls[1] || !json.Valid([]byte(ls[0])) {
		t.Fatalf("event lines: %q", ls)
	}
}

// TestTextStable: the text renderers are stable too (same input, same bytes).
func TestTextStable(t *testing.T) {
	var a, b bytes.Buffer
	for _, w := range []*bytes.Buffer{&a, &b} {
		p := textPrinter{w: w}
		if err := p.Attempt(sampleRecord()); err != nil {
			t.Fatal(err)
		}
		if err := p.History("orders", []*pb.AttemptRecord{sampleRecord()}); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) || !strings.Contains(a.String(), "DENIED PrimaryStillActive") {
		t.Fatalf("text output:\n%s", a.String())
	}
}

// TestReasonFile: --reason-file carries reasons too large for a command line.
func TestReasonFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "reason")
	if err := os.WriteFile(path, []byte("planned drill"), 0o644); err != nil {
		t.Fatal(err)
	}
	o, _, _, _ := testOptions(nil)
	pf := promoteFlags{candidate: "n2", reasonFile: path}
	req, generated, err := pf.request(o, "orders", []string{"allow-data-loss"})
	if err != nil {
		t.Fatal(err)
	}
	if req.Reason != "planned drill" || !generated || req.RequestId != "test-request-id" || !slices.Equal(req.Waivers, []string{"allow-data-loss"}) {
		t.Fatalf("request %v generated=%t", req, generated)
	}
}

// TestReasonFileBounded: a --reason-file that never ends (/dev/zero) or is
// larger than 1 MiB is a usage error, read no further than the bound (the
// CLI grew to 23.8 GB reading /dev/zero before this bound).
func TestReasonFileBounded(t *testing.T) {
	big := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(big, bytes.Repeat([]byte("r"), maxReasonFile+1), 0o644); err != nil {
		t.Fatal(err)
	}
	o, _, _, _ := testOptions(nil)
	for _, path := range []string{"/dev/zero", big} {
		pf := promoteFlags{candidate: "n2", reasonFile: path}
		_, _, err := pf.request(o, "orders", nil)
		if err == nil || exitCodeOf(err) != exitUsage || !strings.Contains(err.Error(), "longer than 1048576 bytes") {
			t.Fatalf("--reason-file %s: %v, want a usage error naming the bound", path, err)
		}
	}
}

// TestCertificateFlagsRequired: without --insecure every command that
// reaches the cluster needs --cacert, --cert and --key (or their
// variables); missing, partial, unreadable or combined with --insecure is a
// usage error (exit 2), found before any dial.
func TestCertificateFlagsRequired(t *testing.T) {
	dir := t.TempDir()
	absent := filepath.Join(dir, "absent.pem")
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"nothing", map[string]string{}, nil, "give --cacert, --cert and --key"},
		{"only --cert", map[string]string{}, []string{"--cert", absent}, "give --cacert, --cert and --key"},
		{"--cacert and --cert", map[string]string{}, []string{"--cacert", absent, "--cert", absent}, "give --cacert"},
		{"only some variables", map[string]string{envCACert: absent, envKey: absent}, nil, "give --cacert"},
		{"--insecure=false", map[string]string{envInsecure: "true"}, []string{"--insecure=false"}, "give --cacert"},
		{"--insecure with flags", map[string]string{}, []string{"--insecure", "--cacert", absent, "--cert", absent, "--key", absent}, "--insecure excludes"},
		{"--insecure with one flag", map[string]string{}, []string{"--insecure", "--key", absent}, "--insecure excludes"},
		{"AUTHORITY_INSECURE with variables", map[string]string{envInsecure: "true", envCACert: absent, envCert: absent, envKey: absent}, nil, "--insecure excludes"},
		{"--insecure with a variable", map[string]string{envCert: absent}, []string{"--insecure"}, "--insecure excludes"},
		{"malformed AUTHORITY_INSECURE", map[string]string{envInsecure: "perhaps"}, nil, envInsecure},
		{"unreadable files", map[string]string{}, []string{"--cacert", absent, "--cert", absent, "--key", absent}, "absent.pem"},
	} {
		for _, cmd := range [][]string{
			{"domain", "list"},
			{"cluster", "status"},
			{"promote", "d", "--to", "n2"},
			{"node", "lease", "d", "n1"},
			{"watch"},
			{"member", "list"},
		} {
			args := append(append([]string{}, tc.args...), cmd...)
			t.Run(tc.name+"/"+strings.Join(cmd, " "), func(t *testing.T) {
				o, stdout, stderr, dialed := testOptions(tc.env)
				if code := run(context.Background(), o, args); code != exitUsage {
					t.Fatalf("%v: exit %d, want %d (usage); stderr:\n%s", args, code, exitUsage, stderr)
				}
				if len(*dialed) != 0 {
					t.Fatalf("%v: dialed %v before rejecting the command line", args, *dialed)
				}
				if !strings.HasPrefix(stderr.String(), "error: ") || !strings.Contains(stderr.String(), tc.want) ||
					!strings.Contains(stderr.String(), "--help") || stdout.Len() != 0 {
					t.Fatalf("%v: stderr %q, stdout %q; want an error line with %q", args, stderr, stdout, tc.want)
				}
			})
		}
	}
	// The message names the flags, their variables and --insecure.
	o, _, stderr, _ := testOptions(map[string]string{})
	run(context.Background(), o, []string{"domain", "list"})
	for _, w := range []string{"--cacert", "--cert", "--key", envCACert, envCert, envKey, "--insecure"} {
		if !strings.Contains(stderr.String(), w) {
			t.Errorf("missing-certificate message lacks %s: %q", w, stderr)
		}
	}
}

// TestCertificateFlagsDial: the certificate files, from flags or variables
// (a flag wins), become the client's TLS credentials; --insecure dials in
// plaintext.
func TestCertificateFlagsDial(t *testing.T) {
	dir := t.TempDir()
	o, _, stderr, dialed := testOptions(map[string]string{})
	if code := run(context.Background(), o, []string{"certs", "init", dir}); code != exitOK || len(*dialed) != 0 {
		t.Fatalf("certs init: exit %d, dialed %d; stderr %s", code, len(*dialed), stderr)
	}
	op := identity.Identity{Role: identity.Operator, Name: "admin"}
	ca, cert, key := filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.CertFile(op)), filepath.Join(dir, pki.KeyFile(op))
	absent := filepath.Join(dir, "absent.pem")
	for _, tc := range []struct {
		name   string
		env    map[string]string
		args   []string
		secure bool
	}{
		{"flags", map[string]string{}, []string{"--cacert", ca, "--cert", cert, "--key", key}, true},
		{"variables", map[string]string{envCACert: ca, envCert: cert, envKey: key}, nil, true},
		{"flags over variables", map[string]string{envCACert: absent, envCert: absent, envKey: absent},
			[]string{"--cacert", ca, "--cert", cert, "--key", key}, true},
		{"--insecure", map[string]string{}, []string{"--insecure"}, false},
		{"AUTHORITY_INSECURE", map[string]string{envInsecure: "1"}, nil, false},
	} {
		o, _, stderr, dialed := testOptions(tc.env)
		if code := run(context.Background(), o, append(tc.args, "domain", "list")); code != exitError {
			t.Fatalf("%s: exit %d, want %d (the test dialer fails); stderr %s", tc.name, code, exitError, stderr)
		}
		if len(*dialed) != 1 {
			t.Fatalf("%s: dialed %d times, want 1", tc.name, len(*dialed))
		}
		creds := (*dialed)[0].Credentials
		if tc.secure && (creds == nil || creds.Info().SecurityProtocol != "tls") {
			t.Fatalf("%s: credentials %v, want TLS", tc.name, creds)
		}
		if !tc.secure && creds != nil {
			t.Fatalf("%s: credentials %v, want plaintext", tc.name, creds.Info())
		}
	}
}

// TestCertsInit: `certs init DIR` writes a CA (reused by a second run) and
// ROLE-NAME.crt/.key per identity whose one URI SAN is the identity, each
// chaining to ca.crt, and prints the export line of the operator's files.
func TestCertsInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	o, stdout, stderr, dialed := testOptions(map[string]string{})
	if code := run(context.Background(), o, []string{"certs", "init", dir}); code != exitOK {
		t.Fatalf("exit %d; stderr %s", code, stderr)
	}
	if len(*dialed) != 0 {
		t.Fatal("certs init dialed the cluster")
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, pki.CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, pki.CAKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key: %v %v, want mode 0600", fi, err)
	}
	var want []identity.Identity
	for _, s := range []string{"server:s1", "server:s2", "server:s3", "operator:admin", "reader:viewer", "node:n1", "node:n2", "node:n3"} {
		id, err := identity.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
	}
	checkLeaves(t, dir, caPEM, identity.DefaultTrustDomain, want)
	for _, id := range want {
		if !strings.Contains(stdout.String(), filepath.Join(dir, pki.CertFile(id))) {
			t.Errorf("stdout does not list %s:\n%s", id, stdout)
		}
	}
	exportLine := fmt.Sprintf("export %s=%s %s=%s %s=%s", envCACert, filepath.Join(dir, "ca.crt"),
		envCert, filepath.Join(dir, "operator-admin.crt"), envKey, filepath.Join(dir, "operator-admin.key"))
	if !strings.Contains(stdout.String(), exportLine+"\n") {
		t.Fatalf("stdout lacks %q:\n%s", exportLine, stdout)
	}

	// Again, with other names and a trust domain: the CA is reused.
	o, stdout, stderr, _ = testOptions(map[string]string{})
	if code := run(context.Background(), o, []string{"--trust-domain", "example.org", "certs", "init", dir, "--servers", "a1",
		"--nodes", "db-1", "--operators", "ops", "--readers", "ro", "--deployers", "ci", "--releasers", "rel", "--hosts", "auth.internal,10.1.2.3"}); code != exitOK {
		t.Fatalf("second init: exit %d; stderr %s", code, stderr)
	}
	again, err := os.ReadFile(filepath.Join(dir, pki.CACertFile))
	if err != nil || !bytes.Equal(again, caPEM) {
		t.Fatalf("second init replaced ca.crt (%v)", err)
	}
	checkLeaves(t, dir, caPEM, "example.org", []identity.Identity{
		{Role: identity.Server, Name: "a1"}, {Role: identity.Node, Name: "db-1"}, {Role: identity.Operator, Name: "ops"},
		{Role: identity.Reader, Name: "ro"}, {Role: identity.Deployer, Name: "ci"}, {Role: identity.Releaser, Name: "rel"},
	})
	srv := readCert(t, filepath.Join(dir, "server-a1.crt"))
	if !slices.Contains(srv.DNSNames, "auth.internal") || len(srv.IPAddresses) != 1 || srv.IPAddresses[0].String() != "10.1.2.3" {
		t.Fatalf("--hosts: DNS %v IP %v", srv.DNSNames, srv.IPAddresses)
	}
	if !strings.Contains(stdout.String(), envCert+"="+filepath.Join(dir, "operator-ops.crt")) {
		t.Fatalf("export line does not name the first operator:\n%s", stdout)
	}
	if _, err := os.Stat(filepath.Join(dir, "node-n1.crt")); err != nil {
		t.Fatalf("the first run's files should stay: %v", err)
	}

	// A name that is no identity is refused, nothing written.
	o, _, stderr, _ = testOptions(map[string]string{})
	if code := run(context.Background(), o, []string{"certs", "init", dir, "--nodes", "bad/name"}); code == exitOK {
		t.Fatalf("bad node name accepted; stderr %s", stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "node-bad")); err == nil {
		t.Fatal("a file for a bad name was written")
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("%s: not a PEM certificate", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// checkLeaves checks each identity's ROLE-NAME.crt/.key in dir: one URI SAN
// spiffe://TRUST/ROLE/NAME, a chain to the CA, a key (0600) that matches.
func checkLeaves(t *testing.T, dir string, caPEM []byte, trust string, ids []identity.Identity) {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.crt holds no certificate")
	}
	for _, id := range ids {
		certPath, keyPath := filepath.Join(dir, string(id.Role)+"-"+id.Name+".crt"), filepath.Join(dir, string(id.Role)+"-"+id.Name+".key")
		c := readCert(t, certPath)
		uri := "spiffe://" + trust + "/" + string(id.Role) + "/" + id.Name
		if len(c.URIs) != 1 || c.URIs[0].String() != uri {
			t.Errorf("%s: URI SANs %v, want exactly %s", certPath, c.URIs, uri)
		}
		if got, err := identity.FromCertificate(c, trust); err != nil || got != id {
			t.Errorf("%s: identity %v %v, want %v", certPath, got, err, id)
		}
		if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s does not chain to ca.crt as a client certificate: %v", certPath, err)
		}
		if id.Role == identity.Server {
			if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				t.Errorf("%s is no server certificate: %v", certPath, err)
			}
		}
		if _, err := tls.LoadX509KeyPair(certPath, keyPath); err != nil {
			t.Errorf("%s and its key: %v", certPath, err)
		}
		if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want mode 0600", keyPath, fi, err)
		}
	}
}

// TestWatchTextEscapesValues: a value with a newline, an escape sequence,
// spaces or an equals sign is printed quoted on its event's one line, with
// the leader-stamped time first (a reason with a newline and escape codes
// forged a fake event line and coloured the terminal before).
func TestWatchTextEscapesValues(t *testing.T) {
	var out bytes.Buffer
	p := textPrinter{w: &out}
	forged := "drill\n0.0 replication.promotion.transition_completed new_primary_id=evil\x1b[31m"
	err := p.Event(&pb.Event{Index: 7, Seq: 1, Type: "replication.promotion.requested", Domain: "db1", Epoch: 1, Holder: "n1",
		StampedUnixMs: 1_800_000_000_123, Fields: []*pb.Observed{{Key: "reason", Value: forged}, {Key: "request_id", Value: "r1"}, {Key: "note", Value: "a=b c"}}})
	if err != nil {
		t.Fatal(err)
	}
	got := out.String()
	want := `2027-01-15T08:00:00.123Z 7.1 replication.promotion.requested domain=db1 epoch=1 holder=n1 reason="drill\n0.0 replication.promotion.transition_completed new_primary_id=evil\x1b[31m" request_id=r1 note="a=b c"` + "\n"
	if got != want {
		t.Fatalf("event line:\n%q\nwant\n%q", got, want)
	}
}

// --waivers lays the mode over the policy read back by update: permitted
// carries its reason, strict clears a previous deviation's; not given, the
// domain's mode stays (issue 17).
func TestWaiverFlagsOverlay(t *testing.T) {
	for _, c := range []struct {
		args       []string
		want       pb.WaiverMode
		wantReason string
	}{
		{nil, pb.WaiverMode_WAIVER_MODE_PERMITTED, "old"},
		{[]string{"--ttl", "5s"}, pb.WaiverMode_WAIVER_MODE_PERMITTED, "old"},
		{[]string{"--waivers", "strict"}, pb.WaiverMode_WAIVER_MODE_STRICT, ""},
		{[]string{"--waivers", "permitted", "--waiver-reason", "new"}, pb.WaiverMode_WAIVER_MODE_PERMITTED, "new"},
	} {
		var pf policyFlags
		cmd := &cobra.Command{Use: "x"}
		pf.add(cmd)
		if err := cmd.Flags().Parse(c.args); err != nil {
			t.Fatal(err)
		}
		if err := pf.check(cmd.Flags()); err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		p := &pb.Policy{WaiverMode: pb.WaiverMode_WAIVER_MODE_PERMITTED, WaiverReason: "old"}
		pf.overlay(cmd.Flags(), p, false)
		if p.WaiverMode != c.want || p.WaiverReason != c.wantReason {
			t.Errorf("%v: %v %q, want %v %q", c.args, p.WaiverMode, p.WaiverReason, c.want, c.wantReason)
		}
	}
}
