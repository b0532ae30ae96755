package promotion

import (
	"slices"
	"sync"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/protobuf/proto"
)

// reportTable holds replicas' latest progress reports with the leader's
// monotonic receive time. Soft state: not logged, dropped on leader change,
// so a new leader denies promotions with MetadataMissing until replicas
// report again (fail closed).
type reportTable struct {
	mu      sync.Mutex
	reports map[string]map[string]receivedReport // domain → member → report
	// changed is closed and replaced on every put: a replica-quorum
	// promotion waits on it for fenced reports.
	changed chan struct{}
}

type receivedReport struct {
	report *pb.ProgressReport
	at     time.Time
}

func newReportTable() *reportTable {
	return &reportTable{reports: map[string]map[string]receivedReport{}, changed: make(chan struct{})}
}

// changes returns a channel closed at the next put.
func (t *reportTable) changes() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.changed
}

// fresh returns copies of the members' latest reports for domain received
// within maxAge of now (every one when maxAge is 0), sorted by member id.
func (t *reportTable) fresh(domain string, now time.Time, maxAge time.Duration) []*pb.ProgressReport {
	t.mu.Lock()
	defer t.mu.Unlock()
	ids := make([]string, 0, len(t.reports[domain]))
	for id, rr := range t.reports[domain] {
		if maxAge == 0 || now.Sub(rr.at) <= maxAge {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	out := make([]*pb.ProgressReport, len(ids))
	for i, id := range ids {
		out[i] = proto.Clone(t.reports[domain][id].report).(*pb.ProgressReport)
	}
	return out
}

// all returns copies of every member's latest report for domain, sorted by
// member id.
func (t *reportTable) all(domain string) []*pb.ProgressReport {
	return t.fresh(domain, time.Time{}, 0)
}

func (t *reportTable) put(domain string, r *pb.ProgressReport, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.reports[domain]
	if m == nil {
		m = map[string]receivedReport{}
		t.reports[domain] = m
	}
	m[r.MemberId] = receivedReport{report: proto.Clone(r).(*pb.ProgressReport), at: at}
	close(t.changed)
	t.changed = make(chan struct{})
}

// get returns a copy of the member's latest report and its age at now.
func (t *reportTable) get(domain, member string, now time.Time) (*pb.ProgressReport, time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rr, ok := t.reports[domain][member]
	if !ok {
		return nil, 0, false
	}
	return proto.Clone(rr.report).(*pb.ProgressReport), max(now.Sub(rr.at), 0), true
}

func (t *reportTable) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.reports = map[string]map[string]receivedReport{}
}
