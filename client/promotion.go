package client

import (
	"context"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Promote proposes a promotion attempt (or, with DryRun, evaluates one
// without committing). An empty RequestId is filled with a random one (read
// it back from the response's record). A denial is returned as the response
// (non-nil) together with a *DeniedError naming the reason and invariant;
// a committed denial is permanent and is never retried (AU-8).
//
// No automatic retry (P6-F3). A promotion is re-sent only when nothing
// was proposed (NOT_LEADER: the next server is tried, following the hint).
// Once a send may have reached a leader — a transport failure, a server's
// OUTCOME_UNKNOWN, the context ending — the call returns an error wrapping
// ErrOutcomeUnknown and sends nothing more: that leader may have recorded
// the request's intent and crashed, and its successor has then recorded
// replication.promotion.aborted_on_crash for it. Re-sending the same id
// would not return that outcome: the attempt was never decided, so the
// service would decide it afresh, on a state nobody looked at — a
// promotion nobody asked for again. Resolve instead: Explain(domain,
// requestID) returns the record if the attempt was decided; ErrNotFound
// means it was not (never received, or aborted on crash: the domain's
// events say which). Promoting again is then the caller's own decision,
// preferably under a new request id (docs/ARCHITECTURE.md, "Promotion
// intents and aborted_on_crash").
//
// Dry runs commit nothing and are retried like reads.
func (c *Client) Promote(ctx context.Context, req *pb.PromotionRequest) (*pb.PromoteResponse, error) {
	req = proto.Clone(req).(*pb.PromotionRequest)
	if req.RequestId == "" {
		req.RequestId = c.randomID()
	}
	wire := &pb.PromoteRequest{Request: req}
	policy := retryNotLeader
	if req.DryRun {
		policy = retryIdempotent
	}
	resp, _, err := unary(ctx, c, policy, false, func(ctx context.Context, conn *grpc.ClientConn) (*pb.PromoteResponse, error) {
		return pbgrpc.NewPromotionClient(conn).Promote(ctx, wire)
	})
	if err != nil {
		return nil, err
	}
	if rec := resp.GetRecord(); rec != nil && !rec.GetDecision().GetAllowed() {
		return resp, &DeniedError{Record: rec}
	}
	return resp, nil
}

// Explain returns the record (decision and every check) of the attempt
// requestID of domain; ErrNotFound when there is none (a denied attempt
// may have left the bounded ring of denied records).
func (c *Client) Explain(ctx context.Context, domain, requestID string, opts ...ReadOption) (*pb.AttemptRecord, error) {
	o := readOpts(opts)
	req := &pb.ExplainRequest{Domain: domain, RequestId: requestID, Read: o.proto()}
	resp, _, err := unary(ctx, c, retryRead, o.stale, func(ctx context.Context, conn *grpc.ClientConn) (*pb.ExplainResponse, error) {
		return pbgrpc.NewPromotionClient(conn).Explain(ctx, req)
	})
	return resp.GetRecord(), err
}

// History returns the domain's allowed attempts (and, with includeDenied,
// the denied ones still in the ring) in log order, reading every page. A
// domain's history only grows, so pages read one after the other are
// consistent: each starts after the last record of the one before.
func (c *Client) History(ctx context.Context, domain string, includeDenied bool, opts ...ReadOption) ([]*pb.AttemptRecord, error) {
	var out []*pb.AttemptRecord
	for after := uint64(0); ; {
		page, err := c.HistoryPage(ctx, HistoryQuery{Domain: domain, IncludeDenied: includeDenied, After: after}, opts...)
		if err != nil {
			return out, err
		}
		out = append(out, page.GetRecords()...)
		if !page.GetMore() {
			return out, nil
		}
		after = page.GetNextAfterIndex()
	}
}

// HistoryQuery selects one page of a domain's attempts.
type HistoryQuery struct {
	Domain        string
	IncludeDenied bool
	// After: only attempts with a log index above it (0: from the start).
	After uint64
	// Limit: at most this many records (0: the server's default page).
	Limit uint32
}

// HistoryPage reads one page of a domain's attempts; when the response says
// More, the next page starts after NextAfterIndex.
func (c *Client) HistoryPage(ctx context.Context, q HistoryQuery, opts ...ReadOption) (*pb.HistoryResponse, error) {
	o := readOpts(opts)
	req := &pb.HistoryRequest{Domain: q.Domain, Read: o.proto(), IncludeDenied: q.IncludeDenied, AfterIndex: q.After, Limit: q.Limit}
	resp, _, err := unary(ctx, c, retryRead, o.stale, func(ctx context.Context, conn *grpc.ClientConn) (*pb.HistoryResponse, error) {
		return pbgrpc.NewPromotionClient(conn).History(ctx, req)
	})
	return resp, err
}
