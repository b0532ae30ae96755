package main

import (
	"bytes"
	"cmp"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/cluster"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/promotion"
	"github.com/aerodb/authority/release/verdict"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// The status page is a read-only, server-rendered view of this node: raft
// state, the first domains by name, the latest attempt records among them
// and the tail of the event log. Everything it shows is a stale local read
// (this node's applied state, not a linearizable read), like `stale` reads
// of the gRPC API; lease remaining times exist only on the ready leader.
//
// Its cost is bounded whatever the number of domains: one FSM.Summaries
// call (which sorts the names once), at most statusMaxDomains cloned domains
// for pending counts and attempts, and a small window of the event log.

//go:embed statuspage.html
var statusPageHTML string

var statusTemplate = template.Must(template.New("status").Parse(statusPageHTML))

const (
	statusMaxDomains  = 200  // rows of the domains table
	statusMaxAttempts = 20   // attempt records shown
	statusMaxEvents   = 50   // events shown
	eventScanCap      = 4096 // events cloned at most per EventsFrom call
	jsonDefaultLimit  = 100  // /v1/domains page size
	jsonMaxLimit      = 1000
)

// statusPage serves GET / (HTML), GET /v1/domains and GET /v1/domains/{name}
// (JSON).
type statusPage struct {
	node     *cluster.Node
	svc      *promotion.Service
	mux      *http.ServeMux
	insecure bool // --insecure: shown as a banner

	mu         sync.Mutex // guards the domain count cache
	countIndex uint64
	count      int
}

func newStatusPage(node *cluster.Node, svc *promotion.Service, insecureMode bool) http.Handler {
	p := &statusPage{node: node, svc: svc, mux: http.NewServeMux(), insecure: insecureMode}
	p.mux.HandleFunc("GET /{$}", p.serveHTML)
	p.mux.HandleFunc("GET /v1/domains", p.serveDomainList)
	p.mux.HandleFunc("GET /v1/domains/{name}", p.serveDomain)
	// Release verdicts and gates for Argo Rollouts and Flagger (docs/ROLLOUTS-TEMPLATES.md).
	(&verdict.Handler{Lookup: node.FSM().Domain, Served: func() (string, uint64) { return node.ID(), node.FSM().LastIndex() }}).Register(p.mux)
	return p
}

func (p *statusPage) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.mux.ServeHTTP(w, r) }

// ---- page data (what the template renders) ----

type statusData struct {
	Rendered       string
	NodeID         string
	ClusterID      string
	Insecure       bool
	RaftState      string
	Term           uint64
	CommitIndex    uint64
	AppliedIndex   uint64
	FSMIndex       uint64
	LeaderID       string
	LeaderAddr     string
	ServesAsLeader bool
	LastContact    string // followers: time since the leader's last contact
	Servers        []serverRow

	Domains      []domainRow
	DomainsTotal int
	MoreDomains  int // domains not shown
	LeaseNote    string

	Attempts []attemptRow
	Events   []eventRow
	// EventsNote explains a short event list (compaction, huge entries).
	EventsNote string
}

type serverRow struct {
	ID, Address, Suffrage string
	Leader, Self          bool
}

type domainRow struct {
	Name, Kind   string
	Epoch        uint64
	Holder       string
	Released     bool
	Lease        string
	LeaseClass   string // ok, warn, bad, muted
	HasWatermark bool
	WMEpoch      uint64
	WMLsn        uint64
	WMVisible    uint64
	Members      int
	Pending      int
}

type attemptRow struct {
	Domain, RequestID, Candidate string
	Allowed                      bool
	Reason, Invariant            string
	EpochBefore, EpochAfter      uint64
	HolderBefore, HolderAfter    string
	Index                        uint64
	When                         string
	Explanation                  string
}

type eventRow struct {
	Index  uint64
	Seq    uint32
	Type   string
	Class  string // ok, bad, info, muted
	Domain string
	Epoch  uint64
	Holder string
	Fields string
	When   string
}

// ---- HTML ----

func (p *statusPage) serveHTML(w http.ResponseWriter, _ *http.Request) {
	data := p.collect()
	var buf bytes.Buffer
	if err := statusTemplate.Execute(&buf, data); err != nil {
		http.Error(w, "status page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	// No script may run at all; the only style is the inline sheet.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	w.Write(buf.Bytes())
}

func (p *statusPage) collect() *statusData {
	r := p.node.Raft()
	f := p.node.FSM()
	leaderID, leaderAddr := p.node.Leader()
	d := &statusData{
		Rendered:       time.Now().UTC().Format("2006-01-02 15:04:05Z"),
		NodeID:         p.node.ID(),
		ClusterID:      p.node.ClusterID(),
		Insecure:       p.insecure,
		RaftState:      r.State().String(),
		Term:           r.CurrentTerm(),
		CommitIndex:    r.CommitIndex(),
		AppliedIndex:   r.AppliedIndex(),
		FSMIndex:       f.LastIndex(),
		LeaderID:       leaderID,
		LeaderAddr:     leaderAddr,
		ServesAsLeader: p.svc.Ready(),
	}
	if r.State() != raft.Leader {
		if lc := r.LastContact(); !lc.IsZero() {
			d.LastContact = time.Since(lc).Round(time.Millisecond).String() + " ago"
		} else {
			d.LastContact = "never"
		}
	}
	if fut := r.GetConfiguration(); fut.Error() == nil {
		for _, s := range fut.Configuration().Servers {
			d.Servers = append(d.Servers, serverRow{ID: string(s.ID), Address: string(s.Address), Suffrage: s.Suffrage.String(),
				Leader: string(s.ID) == leaderID, Self: string(s.ID) == p.node.ID()})
		}
	}
	var observe func(string) (promotion.Observation, error)
	if d.ServesAsLeader {
		observe = p.svc.Leases().Observe
		d.LeaseNote = "lease times are this leader's own view"
	} else {
		d.LeaseNote = "leases live on the leader only; open the leader's page for remaining times"
	}
	domains, more := collectDomains(f, statusMaxDomains, observe)
	d.Domains = domains.rows
	d.Attempts = domains.attempts
	d.DomainsTotal = len(d.Domains)
	if more {
		d.DomainsTotal = p.domainCount(f)
		d.MoreDomains = max(0, d.DomainsTotal-len(d.Domains))
	}
	d.Events, d.EventsNote = recentEvents(f, statusMaxEvents)
	return d
}

// domainCount returns the number of domains, recomputed only when the
// applied index moved (it sorts every name).
func (p *statusPage) domainCount(f *fsm.FSM) int {
	idx := f.LastIndex()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.countIndex != idx || p.count == 0 {
		p.count, p.countIndex = len(f.DomainNames()), idx
	}
	return p.count
}

type domainsView struct {
	rows     []domainRow
	attempts []attemptRow
}

// collectDomains lists the first limit domains by name and the latest
// statusMaxAttempts attempt records among them. Only those domains are
// cloned. observe is the leader's lease view, nil on other nodes.
func collectDomains(f *fsm.FSM, limit int, observe func(string) (promotion.Observation, error)) (domainsView, bool) {
	sums, more := f.Summaries("", limit)
	var v domainsView
	var recs []*pb.AttemptRecord
	for _, s := range sums {
		row := domainRow{Name: s.Name, Kind: kindLabel(s.Kind), Epoch: s.Epoch, Holder: s.Holder, Released: s.Released,
			Members: int(s.Members), Lease: "see leader", LeaseClass: "muted"}
		if wm := s.Watermark; wm != nil {
			row.HasWatermark, row.WMEpoch, row.WMLsn, row.WMVisible = true, wm.Epoch, wm.Lsn, wm.VisibleCommitId
		}
		if observe != nil {
			row.Lease, row.LeaseClass = leaseLabel(observe(s.Name))
		}
		if dom, ok := f.Domain(s.Name); ok {
			row.Pending = len(dom.Pending)
			recs = append(recs, f.NewestAttempts(s.Name, statusMaxAttempts)...)
			// Keep only the newest few as we go, so memory stays bounded.
			if len(recs) > 4*statusMaxAttempts {
				recs = newestAttempts(recs, statusMaxAttempts)
			}
		}
		v.rows = append(v.rows, row)
	}
	for _, rec := range newestAttempts(recs, statusMaxAttempts) {
		q, dec := rec.GetRequest(), rec.GetDecision()
		v.attempts = append(v.attempts, attemptRow{Domain: q.GetDomain(), RequestID: q.GetRequestId(), Candidate: q.GetCandidate(),
			Allowed: dec.GetAllowed(), Reason: dec.GetDenialReason(), Invariant: dec.GetFailedInvariant(),
			EpochBefore: rec.EpochBefore, EpochAfter: rec.EpochAfter, HolderBefore: orDash(rec.HolderBefore), HolderAfter: orDash(rec.HolderAfter),
			Index: rec.LogIndex, When: stamp(rec.StampedUnixMs), Explanation: fsm.DescribeAttempt(rec)})
	}
	return v, more
}

// newestAttempts sorts by log index, newest first, and keeps n.
func newestAttempts(recs []*pb.AttemptRecord, n int) []*pb.AttemptRecord {
	slices.SortFunc(recs, func(a, b *pb.AttemptRecord) int {
		if a.LogIndex != b.LogIndex {
			return -cmp.Compare(a.LogIndex, b.LogIndex)
		}
		return strings.Compare(a.GetRequest().GetDomain(), b.GetRequest().GetDomain())
	})
	return recs[:min(n, len(recs))]
}

func leaseLabel(obs promotion.Observation, err error) (string, string) {
	if err != nil {
		return "see leader", "muted"
	}
	switch obs.Status {
	case promotion.LeaseHeld:
		return fmt.Sprintf("held, %.1fs left", obs.Remaining.Seconds()), "ok"
	case promotion.LeaseExpired:
		return "expired", "bad"
	case promotion.LeaseReleased:
		return "released", "warn"
	}
	return "none", "muted"
}

// recentEvents returns the last n retained events, oldest first. It reads a
// window of log indexes ending at the applied index, widening it until it
// holds n events (or reaches the start of the retained log), so a quiet log
// and a log of large watermark batches both cost a bounded clone.
func recentEvents(f *fsm.FSM, n int) ([]eventRow, string) {
	last := f.LastIndex()
	if last == 0 {
		return nil, ""
	}
	var got []*pb.Event
	note := ""
	for window := uint64(8); ; window *= 8 {
		from := uint64(1)
		if last > window {
			from = last - window + 1
		}
		evs, _, err := f.EventsFrom(from, eventScanCap)
		if errors.Is(err, fsm.ErrCompacted) {
			if got == nil { // start later: the last entry's events only
				got, _, _ = f.EventsFrom(last, eventScanCap)
				note = "older events were compacted"
			}
			break // keep the narrower window's events
		}
		if err != nil {
			note = err.Error()
			break
		}
		if len(evs) == eventScanCap && window > 1 && got == nil {
			// So many events in this window that the tail was not reached:
			// read only the last entry's events.
			evs, _, err = f.EventsFrom(last, eventScanCap)
			if err != nil {
				note = err.Error()
				break
			}
			if len(evs) == eventScanCap {
				note = fmt.Sprintf("the last entry emitted more than %d events; showing its first ones", eventScanCap)
			}
			got = evs
			break
		}
		if len(evs) == eventScanCap {
			break // wider would not reach the tail; keep the previous window
		}
		got = evs
		if len(evs) >= n || from == 1 {
			break
		}
	}
	if len(got) > n {
		got = got[len(got)-n:]
	}
	rows := make([]eventRow, 0, len(got))
	for i := len(got) - 1; i >= 0; i-- { // newest first
		ev := got[i]
		var fields []string
		for _, kv := range ev.Fields {
			fields = append(fields, kv.Key+"="+kv.Value)
		}
		rows = append(rows, eventRow{Index: ev.Index, Seq: ev.Seq, Type: ev.Type, Class: eventClass(ev.Type), Domain: ev.Domain,
			Epoch: ev.Epoch, Holder: orDash(ev.Holder), Fields: strings.Join(fields, " "), When: stamp(ev.StampedUnixMs)})
	}
	return rows, note
}

func eventClass(typ string) string {
	switch typ {
	case fsm.EventPromotionValidationFailed, fsm.EventPromotionAbortedOnCrash:
		return "bad"
	case fsm.EventPromotionTransitionCompleted, fsm.EventPromotionValidationSucceeded, fsm.EventInitialAssignment:
		return "ok"
	case fsm.EventLeaseReleased, fsm.EventWorkAborted:
		return "warn"
	}
	if strings.HasPrefix(typ, "replication.promotion.") {
		return "info"
	}
	return "muted"
}

func kindLabel(k pb.DomainKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "DOMAIN_KIND_"))
}

func stamp(ms int64) string {
	if ms == 0 {
		return "—"
	}
	return time.UnixMilli(ms).UTC().Format("15:04:05.000")
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// ---- JSON (stale local reads) ----

// serveDomainList answers GET /v1/domains?after=NAME&limit=N with an
// authority.v1.ListDomainsResponse (proto field names) from this node's
// applied state: a stale read, possibly behind the leader by a few entries.
// The header says which node served it at which applied index.
func (p *statusPage) serveDomainList(w http.ResponseWriter, r *http.Request) {
	limit := jsonDefaultLimit
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			writeJSONError(w, http.StatusBadRequest, "limit must be a positive integer")
			return
		}
		limit = min(n, jsonMaxLimit)
	}
	sums, more := p.node.FSM().Summaries(r.URL.Query().Get("after"), limit)
	resp := &pb.ListDomainsResponse{Header: p.header(), Domains: sums}
	if more && len(sums) > 0 {
		resp.NextAfter = sums[len(sums)-1].Name
	}
	p.writeProto(w, http.StatusOK, resp)
}

// serveDomain answers GET /v1/domains/{name} with the authority.v1.Domain
// (members, watermark, pending intents, attempt records) as applied here.
func (p *statusPage) serveDomain(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	d, ok := p.node.FSM().Domain(name)
	if !ok {
		writeJSONError(w, http.StatusNotFound, fmt.Sprintf("domain %q not found on %s (stale local read)", name, p.node.ID()))
		return
	}
	p.writeProto(w, http.StatusOK, d)
}

func (p *statusPage) header() *pb.ResponseHeader {
	leaderID, _ := p.node.Leader()
	return &pb.ResponseHeader{ServedBy: p.node.ID(), LeaderId: leaderID, Term: p.node.Term(), AppliedIndex: p.node.FSM().LastIndex()}
}

// writeProto writes m as JSON: protojson with proto field names (64-bit
// integers are strings, as protojson specifies), re-encoded by
// encoding/json so the whitespace is stable.
func (p *statusPage) writeProto(w http.ResponseWriter, code int, m proto.Message) {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err == nil {
		var v any
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		if err = dec.Decode(&v); err == nil {
			b, err = json.MarshalIndent(v, "", "  ")
		}
	}
	if err != nil {
		writeJSONError(w, http.StatusInternalServerError, err.Error())
		return
	}
	h := w.Header()
	h.Set("X-Authority-Read", "stale")
	h.Set("X-Authority-Served-By", p.node.ID())
	h.Set("X-Authority-Applied-Index", strconv.FormatUint(p.node.FSM().LastIndex(), 10))
	writeJSON(w, code, append(b, '\n'))
}

func writeJSONError(w http.ResponseWriter, code int, msg string) {
	b, _ := json.Marshal(map[string]string{"error": msg})
	writeJSON(w, code, append(b, '\n'))
}

func writeJSON(w http.ResponseWriter, code int, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(b)
}
