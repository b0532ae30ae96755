package observability_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/aerodb/authority/fsm"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/internal/testcluster"
	"github.com/aerodb/authority/observability"
	"google.golang.org/grpc"
)

var hash = []byte{0xca, 0xfe, 0x01, 0x00}

// setup creates db1 with members n1..n3 and n1 holding epoch 1 (as the
// operator, cl.Dial(testcluster.Operator)), n1's watermark at lsn 100 (as
// node:n1) and n2's progress report (as node:n2).
func setup(t *testing.T, ctx context.Context, cl *testcluster.Cluster, c *client.Client) {
	t.Helper()
	if _, err := c.CreateDomain(ctx, "db1", pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: 1000, Durability: pb.Durability_DURABILITY_AUTHORITY_GATED}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"n1", "n2", "n3"} {
		if _, err := c.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: "db1", MemberId: m}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.AssignInitial(ctx, "db1", "n1"); err != nil {
		t.Fatal(err)
	}
	errs, err := cl.Dial(testcluster.Node("n1")).AdvanceWatermark(ctx, []*pb.WatermarkAdvance{{Domain: "db1", Epoch: 1, Holder: "n1", Lsn: 100, Hash: hash, VisibleCommitId: 7}})
	if err := errors.Join(append(errs, err)...); err != nil {
		t.Fatal(err)
	}
	report(t, ctx, cl.Dial(testcluster.Node("n2")))
}

// report sends n2's progress report; c is node:n2's client.
func report(t *testing.T, ctx context.Context, c *client.Client) {
	t.Helper()
	if _, err := c.ReportProgress(ctx, "db1", &pb.ProgressReport{MemberId: "n2", Epoch: 1, FlushedLsn: 100, FlushedHash: hash,
		WatermarkLsn: 100, HashAtWatermark: hash, AppliedCommitId: 7, ReadSafe: true, State: pb.ReplicaState_REPLICA_STATE_STREAMING}); err != nil {
		t.Fatal(err)
	}
}

func leader(t *testing.T, ctx context.Context, c *client.Client, cl *testcluster.Cluster) *testcluster.Server {
	t.Helper()
	m, err := c.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range m.Servers {
		if s.Leader {
			for _, srv := range cl.Servers {
				if srv.ID == s.Id {
					return srv
				}
			}
		}
	}
	t.Fatal("no leader")
	return nil
}

// eventLog reads a server's --event-log file (JSON lines).
func eventLog(t *testing.T, s *testcluster.Server) []observability.EventJSON {
	t.Helper()
	f, err := os.Open(s.EventLogPath())
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []observability.EventJSON
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev observability.EventJSON
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("%s: bad event line %q: %v", s.ID, sc.Text(), err)
		}
		out = append(out, ev)
	}
	return out
}

func promotionEvents(evs []observability.EventJSON) []string {
	var out []string
	for _, ev := range evs {
		// Dry runs and refusals are coalesced leader observations (counts,
		// no request id; how many probes ran is timing): checked apart.
		if ev.Type == fsm.EventPromotionDryRun || ev.Type == fsm.EventPromotionRefused {
			continue
		}
		if strings.HasPrefix(ev.Type, "replication.promotion.") {
			out = append(out, ev.Type+"/"+field(ev, "request_id"))
		}
	}
	return out
}

func field(ev observability.EventJSON, key string) string {
	for _, f := range ev.Fields {
		if f.Key == key {
			return f.Value
		}
	}
	return ""
}

// waitEventLogs waits until every running server's event log holds an
// event at index >= index, and returns the logs.
func waitEventLogs(t *testing.T, cl *testcluster.Cluster, index uint64) map[string][]observability.EventJSON {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		logs := map[string][]observability.EventJSON{}
		done := true
		for _, s := range cl.Servers {
			if !s.Running() {
				continue
			}
			evs := eventLog(t, s)
			logs[s.ID] = evs
			done = done && len(evs) > 0 && evs[len(evs)-1].Index >= index
		}
		if done {
			return logs
		}
		if time.Now().After(deadline) {
			t.Fatalf("event logs did not reach index %d", index)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// scrape reads a server's /metrics on its HTTPS port, as a reader.
func scrape(t *testing.T, cl *testcluster.Cluster, s *testcluster.Server) string {
	t.Helper()
	resp, err := cl.HTTPClient(testcluster.Reader).Get(cl.URL(s, "/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func wantMetric(t *testing.T, body, line string) {
	t.Helper()
	if !slices.Contains(strings.Split(body, "\n"), line) {
		t.Errorf("metrics lack %q", line)
	}
}

// Acceptance (issue 4, item 1): a denied and an allowed promotion: the
// exact event sequence, identical in all three nodes' event logs and on the
// watch stream; the metrics on /metrics; the explanation artifact
// byte-identical from every node.
func TestProcessObservablePromotions(t *testing.T) {
	cl := testcluster.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := cl.Dial(testcluster.Operator)
	setup(t, ctx, cl, c)
	one := uint64(1)
	_, err := c.Promote(ctx, &pb.PromotionRequest{RequestId: "early", Domain: "db1", Candidate: "n2", ExpectedEpoch: &one, Reason: "drill"})
	var denied *client.DeniedError
	if !errors.As(err, &denied) || denied.Reason() != "PrimaryStillActive" {
		t.Fatalf("early promotion: %v", err)
	}
	// n1's 1 s lease is renewed by nobody: wait (by polling a dry run)
	// until the leader sees it expired.
	for {
		_, err := c.Promote(ctx, &pb.PromotionRequest{RequestId: "probe", Domain: "db1", Candidate: "n2", ExpectedEpoch: &one, DryRun: true})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("lease never expired: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := c.Promote(ctx, &pb.PromotionRequest{RequestId: "failover", Domain: "db1", Candidate: "n2", ExpectedEpoch: &one, Reason: "drill"})
	if err != nil {
		t.Fatal(err)
	}
	logs := waitEventLogs(t, cl, resp.Record.LogIndex)
	want := []string{
		"replication.promotion.requested/early", "replication.promotion.validation_started/early", "replication.promotion.validation_failed/early",
		"replication.promotion.requested/failover", "replication.promotion.validation_started/failover",
		"replication.promotion.validation_succeeded/failover", "replication.promotion.transition_started/failover",
		"replication.promotion.transition_completed/failover",
	}
	var first []observability.EventJSON
	for id, evs := range logs {
		if got := promotionEvents(evs); !slices.Equal(got, want) {
			t.Fatalf("%s promotion events:\n%v\nwant\n%v", id, got, want)
		}
		if first == nil {
			first = evs
		} else if fmt.Sprint(evs) != fmt.Sprint(first) {
			t.Fatalf("%s event log differs from another node's", id)
		}
	}
	// The allowed dry run (issue 17: dry runs are observable) is in the log,
	// carried ahead of the write that followed it: the failover's intent.
	dryAt, requestedAt := -1, -1
	for i, ev := range first {
		if ev.Type == fsm.EventPromotionDryRun && field(ev, "outcome") == "allowed" && dryAt < 0 {
			dryAt = i
		}
		if ev.Type == fsm.EventPromotionRequested && field(ev, "request_id") == "failover" {
			requestedAt = i
		}
	}
	if dryAt < 0 || requestedAt < 0 || dryAt > requestedAt {
		t.Fatalf("allowed dry run event at %d, failover requested at %d: want the dry run first", dryAt, requestedAt)
	}
	// The watch stream shows the same sequence.
	w, err := c.Watch(ctx, 1, "db1")
	if err != nil {
		t.Fatal(err)
	}
	var watched []observability.EventJSON
	for len(watched) == 0 || watched[len(watched)-1].Index < resp.Record.LogIndex ||
		watched[len(watched)-1].Type != "replication.promotion.transition_completed" {
		ev, err := w.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		line, _ := observability.EventLine(ev)
		var j observability.EventJSON
		json.Unmarshal(line, &j)
		watched = append(watched, j)
	}
	w.Close()
	if got := promotionEvents(watched); !slices.Equal(got, want) {
		t.Fatalf("watch promotion events %v", got)
	}

	// Metrics on the leader that decided both.
	body := scrape(t, cl, leader(t, ctx, c, cl))
	for _, line := range []string{
		"replication_promotion_requests_total 2",
		"replication_promotion_success_total 1",
		`replication_promotion_denied_total{reason="PrimaryStillActive"} 1`,
		"replication_promotion_crash_abort_total 0",
		"replication_promotion_in_progress 0",
		`replication_current_primary{domain="db1",replica="n2"} 1`,
		"authority_epoch_changes_total 2",
	} {
		wantMetric(t, body, line)
	}

	// The explanation artifact, from each node, linearizable and stale,
	// read by a reader.
	var artifact []byte
	for _, s := range cl.Servers {
		for _, stale := range []bool{false, true} {
			cfg := cl.ClientConfig(testcluster.Reader)
			cfg.Endpoints = []string{s.GRPCAddr}
			one, err := client.DialConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			var opts []client.ReadOption
			if stale {
				opts = append(opts, client.Stale())
			}
			rec, err := one.Explain(ctx, "db1", "early", opts...)
			one.Close()
			if err != nil {
				t.Fatal(err)
			}
			b, err := observability.ExplanationJSON(rec)
			if err != nil {
				t.Fatal(err)
			}
			if artifact == nil {
				artifact = b
			} else if !bytes.Equal(b, artifact) {
				t.Fatalf("%s (stale=%t) artifact differs:\n%s\nvs\n%s", s.ID, stale, b, artifact)
			}
		}
	}
	if !bytes.Contains(artifact, []byte(`"denial_reason": "PrimaryStillActive"`)) {
		t.Fatalf("artifact %s", artifact)
	}
}

// Acceptance (issue 4, item 2): kill -9 of the leader after a request was
// received (its intent committed) but before the attempt was proposed: the
// next leader records aborted_on_crash and counts it; authority is unchanged.
func TestProcessCrashAbort(t *testing.T) {
	cl := testcluster.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := cl.Dial(testcluster.Operator)
	setup(t, ctx, cl, c)
	old := leader(t, ctx, c, cl)
	arm, err := cl.HTTPClient(testcluster.Operator).Post(cl.URL(old, "/debug/failpoints"), "text/plain", strings.NewReader("promote/before-propose=kill"))
	if err != nil || arm.StatusCode != http.StatusOK {
		t.Fatalf("arming the failpoint: %v %v", arm, err)
	}
	arm.Body.Close()
	// One raw call straight to the leader, no retries: it dies mid-call.
	conn, err := grpc.NewClient(old.GRPCAddr, cl.DialOption(testcluster.Operator))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = pbgrpc.NewPromotionClient(conn).Promote(ctx, &pb.PromoteRequest{Request: &pb.PromotionRequest{
		RequestId: "doomed", Domain: "db1", Candidate: "n2", Reason: "crash drill"}})
	if err == nil {
		t.Fatal("the leader answered although its failpoint kills it")
	}
	if code := old.ExitCode(); code != -1 {
		t.Fatalf("old leader exit code %d, want death by signal", code)
	}
	logText, _ := os.ReadFile(old.LogPath)
	if !bytes.Contains(logText, []byte("failpoint promote/before-propose: SIGKILL")) {
		t.Fatal("the failpoint did not fire")
	}
	next := cl.WaitLeader()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var aborted *observability.EventJSON
		for _, ev := range eventLog(t, next) {
			if ev.Type == "replication.promotion.aborted_on_crash" {
				aborted = &ev
			}
		}
		if aborted != nil {
			if field(*aborted, "request_id") != "doomed" || field(*aborted, "requested_replica_id") != "n2" ||
				field(*aborted, "last_known_state") != "PromotionRequested" {
				t.Fatalf("aborted_on_crash %+v", aborted)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no aborted_on_crash on the next leader")
		}
		time.Sleep(20 * time.Millisecond)
	}
	wantMetric(t, scrape(t, cl, next), "replication_promotion_crash_abort_total 1")
	d, err := c.GetDomain(ctx, "db1")
	if err != nil || d.Epoch != 1 || d.Holder != "n1" || len(d.Pending) != 0 {
		t.Fatalf("authority after the crash: %v %v", d, err)
	}
}
