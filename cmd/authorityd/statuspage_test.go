package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/internal/testcluster"
)

// The status page of a real 3-node cluster, on the leader and on a
// follower: the domain, its holder, a denied attempt with its reason and
// event, and the leader; plus the JSON read of the domain.
func TestStatusPageProcess(t *testing.T) {
	c := testcluster.Start(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl, err := client.DialConfig(ctx, c.ClientConfig(testcluster.Operator))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	policy := &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL, LeaseTtlMs: 60_000, ReportMaxAgeMs: 60_000, Durability: pb.Durability_DURABILITY_AUTHORITY_GATED}
	if _, err := cl.CreateDomain(ctx, "db1", pb.DomainKind_DOMAIN_KIND_AERODB, policy); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"n1", "n2"} {
		if _, err := cl.RegisterMember(ctx, &pb.RegisterMemberRequest{Domain: "db1", MemberId: m}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cl.AssignInitial(ctx, "db1", "n1"); err != nil {
		t.Fatal(err)
	}
	_, err = cl.Promote(ctx, &pb.PromotionRequest{RequestId: "p-1", Domain: "db1", Candidate: "n2", Reason: "status page test"})
	var denied *client.DeniedError
	if !errors.As(err, &denied) || denied.Reason() != "PrimaryStillActive" {
		t.Fatalf("Promote: want a PrimaryStillActive denial, got %v", err)
	}

	leader := c.WaitLeader()
	var follower *testcluster.Server
	for _, s := range c.Servers {
		if s != leader {
			follower = s
			break
		}
	}
	reader := c.HTTPClient(testcluster.Reader)
	want := []string{"db1", "n1", "PrimaryStillActive", fsm.EventPromotionValidationFailed,
		`<dd class="mono leader-id">` + leader.ID + `</dd>`, "<details", "<pre>attempt p-1 domain=db1 candidate=n2"}
	for _, s := range []*testcluster.Server{leader, follower} {
		// A follower applies asynchronously: poll until it shows the denial.
		var page string
		for {
			code, body := get(t, ctx, reader, c.URL(s, "/"))
			page = body
			if code == http.StatusOK && strings.Contains(page, fsm.EventPromotionValidationFailed) {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("%s: status %d, page never showed the denial:\n%s", s.ID, code, page)
			}
			time.Sleep(50 * time.Millisecond)
		}
		for _, w := range want {
			if !strings.Contains(page, w) {
				t.Errorf("%s page lacks %q", s.ID, w)
			}
		}
		if strings.Contains(page, "INSECURE") {
			t.Errorf("%s page of a mutual-TLS cluster shows the INSECURE badge", s.ID)
		}
		if s == leader && !strings.Contains(page, "s left") {
			t.Errorf("leader page shows no lease remaining time")
		}
		if s == follower && !strings.Contains(page, "see leader") {
			t.Errorf("follower page should defer lease times to the leader")
		}

		code, body := get(t, ctx, reader, c.URL(s, "/v1/domains/db1"))
		var dom map[string]any
		if code != http.StatusOK || json.Unmarshal([]byte(body), &dom) != nil {
			t.Fatalf("%s /v1/domains/db1: %d %s", s.ID, code, body)
		}
		if fmt.Sprint(dom["epoch"]) != "1" || dom["holder"] != "n1" {
			t.Errorf("%s /v1/domains/db1: epoch %v holder %v", s.ID, dom["epoch"], dom["holder"])
		}
		code, body = get(t, ctx, reader, c.URL(s, "/v1/domains"))
		var list struct {
			Header  map[string]any   `json:"header"`
			Domains []map[string]any `json:"domains"`
		}
		if code != http.StatusOK || json.Unmarshal([]byte(body), &list) != nil || len(list.Domains) != 1 ||
			list.Domains[0]["name"] != "db1" || list.Header["served_by"] != s.ID {
			t.Errorf("%s /v1/domains: %d %s", s.ID, code, body)
		}
		if code, _ := get(t, ctx, reader, c.URL(s, "/v1/domains/nope")); code != http.StatusNotFound {
			t.Errorf("%s unknown domain: status %d", s.ID, code)
		}
		if code, _ := get(t, ctx, reader, c.URL(s, "/no/such/page")); code != http.StatusNotFound {
			t.Errorf("%s unknown path: status %d", s.ID, code)
		}
	}
}

// get fetches url with hc; a transport error is status 0 with the error
// as the body.
func get(t *testing.T, ctx context.Context, hc *http.Client, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Every string the page shows comes from clients (domain names, member ids,
// request ids, reasons, event fields): html/template must escape all of it.
func TestStatusTemplateEscapes(t *testing.T) {
	const evil = `<script>alert(1)</script>"' onmouseover="x`
	d := &statusData{
		Rendered: evil, NodeID: evil, RaftState: evil, LeaderID: evil, LeaderAddr: evil, ServesAsLeader: true, LastContact: evil,
		Servers: []serverRow{{ID: evil, Address: evil, Suffrage: evil, Leader: true, Self: true}},
		Domains: []domainRow{{Name: evil, Kind: evil, Holder: evil, Released: true, Lease: evil, LeaseClass: evil,
			HasWatermark: true, Pending: 1}},
		DomainsTotal: 2, MoreDomains: 1, LeaseNote: evil,
		Attempts: []attemptRow{{Domain: evil, RequestID: evil, Candidate: evil, Reason: evil, Invariant: evil,
			HolderBefore: evil, HolderAfter: evil, When: evil, Explanation: evil}},
		Events:     []eventRow{{Type: evil, Class: evil, Domain: evil, Holder: evil, Fields: evil, When: evil}},
		EventsNote: evil,
	}
	var buf bytes.Buffer
	if err := statusTemplate.Execute(&buf, d); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.Contains(strings.ToLower(out), "<script") || strings.Contains(out, `" onmouseover`) {
		t.Fatalf("unescaped input in the page:\n%s", out)
	}
	if n := strings.Count(out, "&lt;script&gt;alert(1)&lt;/script&gt;"); n < 20 {
		t.Fatalf("want every hostile string rendered escaped, found %d:\n%s", n, out)
	}
}

func testPolicy() *pb.Policy {
	return &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL, LeaseTtlMs: 10_000, ReportMaxAgeMs: 60_000}
}

func mustApply(t *testing.T, f *fsm.FSM, index uint64, cmd *pb.Command) {
	t.Helper()
	if res := f.ApplyCommand(index, 1, cmd); res.Err != nil {
		t.Fatalf("apply %d: %v", index, res.Err)
	}
}

// The domain table is bounded, the rest counted; attempts are the newest
// across the listed domains, allowed and denied.
func TestCollectDomainsBounded(t *testing.T) {
	f := fsm.New()
	idx := uint64(0)
	for i := range 250 {
		idx++
		mustApply(t, f, idx, &pb.Command{Body: &pb.Command_CreateDomain{CreateDomain: &pb.CreateDomain{
			Name: fmt.Sprintf("d%03d", i), Kind: pb.DomainKind_DOMAIN_KIND_AERODB, Policy: testPolicy()}}})
	}
	for _, m := range []string{"n1", "n2"} {
		idx++
		mustApply(t, f, idx, &pb.Command{Body: &pb.Command_RegisterMember{RegisterMember: &pb.RegisterMember{Domain: "d000", MemberId: m}}})
	}
	idx++
	mustApply(t, f, idx, &pb.Command{Body: &pb.Command_AssignInitial{AssignInitial: &pb.AssignInitial{Domain: "d000", Holder: "n1"}}})
	for i := range 30 { // denied: no lease observation, no report
		idx++
		mustApply(t, f, idx, &pb.Command{Body: &pb.Command_PromotionAttempt{PromotionAttempt: &pb.PromotionAttempt{
			Request: &pb.PromotionRequest{RequestId: fmt.Sprintf("r%02d", i), Domain: "d000", Candidate: "n2"}}}})
	}
	v, more := collectDomains(f, statusMaxDomains, nil)
	if !more || len(v.rows) != statusMaxDomains || v.rows[0].Name != "d000" || v.rows[199].Name != "d199" {
		t.Fatalf("rows %d more %v", len(v.rows), more)
	}
	if r := v.rows[0]; r.Holder != "n1" || r.Epoch != 1 || r.Members != 2 || r.Lease != "see leader" {
		t.Fatalf("row %+v", r)
	}
	if len(v.attempts) != statusMaxAttempts || v.attempts[0].RequestID != "r29" || v.attempts[19].RequestID != "r10" {
		t.Fatalf("attempts %d, first %+v", len(v.attempts), v.attempts[0])
	}
	if a := v.attempts[0]; a.Allowed || a.Reason == "" || a.Invariant == "" || !strings.Contains(a.Explanation, "DENIED") {
		t.Fatalf("attempt %+v", a)
	}
	p := &statusPage{}
	if n := p.domainCount(f); n != 250 {
		t.Fatalf("count %d", n)
	}
}

// The events section shows the newest events, newest first, however many
// events each entry emitted.
func TestRecentEventsTail(t *testing.T) {
	f := fsm.New()
	if rows, _ := recentEvents(f, statusMaxEvents); len(rows) != 0 {
		t.Fatalf("empty log: %d rows", len(rows))
	}
	for i := range 300 {
		mustApply(t, f, uint64(i+1), &pb.Command{Body: &pb.Command_CreateDomain{CreateDomain: &pb.CreateDomain{
			Name: fmt.Sprintf("d%03d", i), Kind: pb.DomainKind_DOMAIN_KIND_LOCK, Policy: testPolicy()}}})
	}
	rows, note := recentEvents(f, statusMaxEvents)
	if len(rows) != statusMaxEvents || rows[0].Index != 300 || rows[49].Index != 251 || note != "" {
		t.Fatalf("%d rows, first %+v, last %+v, note %q", len(rows), rows[0], rows[len(rows)-1], note)
	}
	// Few events: all of them, from index 1.
	g := fsm.New()
	for i := range 3 {
		mustApply(t, g, uint64(i*100+1), &pb.Command{Body: &pb.Command_CreateDomain{CreateDomain: &pb.CreateDomain{
			Name: fmt.Sprintf("d%d", i), Kind: pb.DomainKind_DOMAIN_KIND_LOCK, Policy: testPolicy()}}})
	}
	if rows, _ := recentEvents(g, statusMaxEvents); len(rows) != 3 || rows[2].Index != 1 || rows[0].Type != fsm.EventDomainCreated {
		t.Fatalf("sparse log: %+v", rows)
	}
}
