package verdict

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
)

const (
	dA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	dB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	dC = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
)

// world is a release domain's state the test moves through a release.
type world struct {
	mu sync.Mutex
	d  *pb.Domain
}

func (w *world) lookup(name string) (*pb.Domain, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch name {
	case "rel.app":
		return w.d, true
	case "db1":
		return &pb.Domain{Name: "db1", Kind: pb.DomainKind_DOMAIN_KIND_LOCK}, true
	}
	return nil, false
}

func (w *world) set(phase pb.ReleasePhase, stable, canary string, known []string, dec *pb.ReleaseDecision) {
	w.mu.Lock()
	defer w.mu.Unlock()
	rs := w.d.Release
	rs.Phase, rs.Stable, rs.Canary, rs.KnownGood = phase, stable, canary, known
	dec.Index = uint64(len(rs.Decisions) + 1)
	dec.Stable, dec.Canary = stable, canary
	rs.Decisions = append(rs.Decisions, dec)
	w.d.Epoch++
}

type answer struct {
	code int
	v    Verdict
	raw  string
}

func call(t *testing.T, srv *httptest.Server, method, path, body string) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	a := answer{code: resp.StatusCode, raw: string(b)}
	_ = json.Unmarshal(b, &a.v)
	return a
}

// A release through its life, as Argo's web provider (the verdict) and
// Flagger's webhooks (the gates) see it over real HTTP.
func TestVerdictsAndGatesOverHTTP(t *testing.T) {
	w := &world{d: &pb.Domain{Name: "rel.app", Kind: pb.DomainKind_DOMAIN_KIND_RELEASE, Epoch: 1,
		Release: &pb.ReleaseState{Stable: dA, Phase: pb.ReleasePhase_RELEASE_PHASE_UNSPECIFIED}}}
	mux := http.NewServeMux()
	(&Handler{Lookup: w.lookup, Served: func() (string, uint64) { return "s1", 42 }}).Register(mux)
	srv := httptest.NewServer(mux) // 127.0.0.1
	defer srv.Close()

	flaggerBody := `{"name":"web-api","namespace":"production","phase":"Progressing","checksum":"abc","metadata":{"k":"v"}}`
	gates := func() map[string]int {
		out := map[string]int{}
		for _, g := range Gates {
			out[g] = call(t, srv, http.MethodPost, "/v1/releases/rel.app/gates/"+g, flaggerBody).code
		}
		return out
	}
	verdict := func(digest string) string {
		t.Helper()
		a := call(t, srv, http.MethodGet, "/v1/releases/rel.app/verdict?digest="+digest, "")
		if a.code != http.StatusOK || a.v.ServedBy != "s1" || a.v.Applied != 42 || a.v.Domain != "rel.app" {
			t.Fatalf("verdict %s: %d %s", digest, a.code, a.raw)
		}
		return a.v.Verdict
	}
	const go_, hold = http.StatusOK, http.StatusPreconditionFailed
	expect := func(stage string, verdicts map[string]string, want map[string]int) {
		t.Helper()
		for d, v := range verdicts {
			if got := verdict(d); got != v {
				t.Errorf("%s: verdict on %s…: %s, want %s", stage, d[:12], got, v)
			}
		}
		if got := gates(); !equal(got, want) {
			t.Errorf("%s: gates %v, want %v", stage, got, want)
		}
	}

	expect("stable only", map[string]string{dA: Pass, dB: Inconclusive},
		map[string]int{GateConfirmRollout: hold, GateConfirmTrafficIncrease: hold, GateConfirmPromotion: hold, GateRollback: hold})

	w.set(pb.ReleasePhase_RELEASE_PHASE_PROGRESSING, dA, dB, nil, &pb.ReleaseDecision{Action: pb.ReleaseAction_RELEASE_ACTION_START_CANARY, Decision: &pb.Decision{Allowed: true}})
	expect("canary progressing", map[string]string{dA: Pass, dB: Inconclusive},
		map[string]int{GateConfirmRollout: go_, GateConfirmTrafficIncrease: go_, GateConfirmPromotion: hold, GateRollback: hold})

	w.set(pb.ReleasePhase_RELEASE_PHASE_PAUSED, dA, dB, nil, &pb.ReleaseDecision{Action: pb.ReleaseAction_RELEASE_ACTION_PAUSE, Decision: &pb.Decision{Allowed: true}})
	expect("paused by the authority", map[string]string{dB: Inconclusive},
		map[string]int{GateConfirmRollout: go_, GateConfirmTrafficIncrease: hold, GateConfirmPromotion: hold, GateRollback: hold})

	// A denied promote changes nothing: still pending, the gate holds.
	w.set(pb.ReleasePhase_RELEASE_PHASE_PAUSED, dA, dB, nil, &pb.ReleaseDecision{Action: pb.ReleaseAction_RELEASE_ACTION_PROMOTE, Decision: &pb.Decision{DenialReason: "AnalysisNotPassing"}})
	a := call(t, srv, http.MethodGet, "/v1/releases/rel.app/gates/confirm-promotion?digest="+dB, "")
	if a.code != hold || a.v.Decision == nil || a.v.Decision.DenialReason != "AnalysisNotPassing" || a.v.Open == nil || *a.v.Open {
		t.Errorf("denied promote: %d %s", a.code, a.raw)
	}

	w.set(pb.ReleasePhase_RELEASE_PHASE_PROMOTED, dB, "", []string{dA}, &pb.ReleaseDecision{Action: pb.ReleaseAction_RELEASE_ACTION_PROMOTE, Decision: &pb.Decision{Allowed: true}})
	expect("promoted", map[string]string{dB: Pass, dA: Inconclusive},
		map[string]int{GateConfirmRollout: hold, GateConfirmTrafficIncrease: hold, GateConfirmPromotion: go_, GateRollback: hold})
	if a := call(t, srv, http.MethodGet, "/v1/releases/rel.app/gates/confirm-promotion?digest="+dB, ""); a.code != go_ {
		t.Errorf("confirm-promotion for the promoted digest: %d %s", a.code, a.raw)
	}

	w.set(pb.ReleasePhase_RELEASE_PHASE_PROGRESSING, dB, dC, []string{dA}, &pb.ReleaseDecision{Action: pb.ReleaseAction_RELEASE_ACTION_START_CANARY, Decision: &pb.Decision{Allowed: true}})
	w.set(pb.ReleasePhase_RELEASE_PHASE_ABORTED, dB, "", []string{dA}, &pb.ReleaseDecision{Action: pb.ReleaseAction_RELEASE_ACTION_ABORT, Decision: &pb.Decision{Allowed: true}})
	expect("aborted", map[string]string{dC: Fail, dB: Pass},
		map[string]int{GateConfirmRollout: hold, GateConfirmTrafficIncrease: hold, GateConfirmPromotion: hold, GateRollback: go_})
	if a := call(t, srv, http.MethodPost, "/v1/releases/rel.app/gates/rollback?digest="+dB, flaggerBody); a.code != hold {
		t.Errorf("rollback gate for the healthy stable digest: %d %s", a.code, a.raw)
	}

	w.set(pb.ReleasePhase_RELEASE_PHASE_ROLLED_BACK, dA, "", nil, &pb.ReleaseDecision{Action: pb.ReleaseAction_RELEASE_ACTION_ROLLBACK, Decision: &pb.Decision{Allowed: true}})
	expect("rolled back", map[string]string{dB: Fail, dA: Pass, dC: Fail},
		map[string]int{GateConfirmRollout: hold, GateConfirmTrafficIncrease: hold, GateConfirmPromotion: hold, GateRollback: go_})
	if a := call(t, srv, http.MethodGet, "/v1/releases/rel.app/gates/rollback?digest="+dB, ""); a.code != go_ || a.v.Status != "aborted or rolled back" {
		t.Errorf("rollback gate for the rolled-back digest: %d %s", a.code, a.raw)
	}
}

// Hostile input: small errors that never echo the input, bounded bodies,
// only release domains, read-only methods.
func TestBadRequests(t *testing.T) {
	w := &world{d: &pb.Domain{Name: "rel.app", Kind: pb.DomainKind_DOMAIN_KIND_RELEASE, Release: &pb.ReleaseState{}}}
	mux := http.NewServeMux()
	(&Handler{Lookup: w.lookup}).Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	long := strings.Repeat("x", 5000)
	for _, c := range []struct {
		method, path, body string
		code               int
	}{
		{"GET", "/v1/releases/" + long + "/verdict", "", http.StatusBadRequest},
		{"GET", "/v1/releases/-bad/verdict", "", http.StatusBadRequest},
		{"GET", "/v1/releases/rel.app/verdict?digest=" + long, "", http.StatusBadRequest},
		{"GET", "/v1/releases/rel.app/verdict?digest=sha256:ABC", "", http.StatusBadRequest},
		{"GET", "/v1/releases/nope/verdict", "", http.StatusNotFound},
		{"GET", "/v1/releases/db1/verdict", "", http.StatusNotFound},
		{"GET", "/v1/releases/rel.app/gates/" + long, "", http.StatusNotFound},
		{"POST", "/v1/releases/rel.app/gates/confirm-promotion", strings.Repeat("{", MaxBodyBytes+1), http.StatusRequestEntityTooLarge},
		{"POST", "/v1/releases/rel.app/verdict", "", http.StatusMethodNotAllowed},
		{"DELETE", "/v1/releases/rel.app/gates/rollback", "", http.StatusMethodNotAllowed},
	} {
		a := call(t, srv, c.method, c.path, c.body)
		if a.code != c.code {
			t.Errorf("%s %.80s: %d, want %d: %.200s", c.method, c.path, a.code, c.code, a.raw)
		}
		if len(a.raw) > 200 || strings.Contains(a.raw, "xxxxxxxx") {
			t.Errorf("%s %.80s: the error echoes the input or is long: %.300s", c.method, c.path, a.raw)
		}
	}
}

func equal(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
