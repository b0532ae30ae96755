package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"google.golang.org/protobuf/proto"
)

var errNoNetwork = errors.New("test: no network")

// testOptions returns options whose dialer records its config and fails,
// so a command that reaches the network exits 1 having dialed once.
func testOptions(env map[string]string) (o *options, stdout, stderr *bytes.Buffer, dialed *[]client.Config) {
	stdout, stderr = &bytes.Buffer{}, &bytes.Buffer{}
	o = newOptions(func(k string) string { return env[k] }, stdout, stderr)
	var cfgs []client.Config
	o.dial = func(_ context.Context, cfg client.Config) (*client.Client, error) {
		cfgs = append(cfgs, cfg)
		return nil, errNoNetwork
	}
	o.newRequestID = func() (string, error) { return "test-request-id", nil }
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
		{"-o", "yaml", "domain", "list"},
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
		{"domain", "list", "extra"},
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
	env := map[string]string{envEndpoints: "10.0.0.1:7000, 10.0.0.2:7000", envTimeout: "3s", envOutput: "json"}

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
