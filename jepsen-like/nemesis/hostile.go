package nemesis

import (
	"context"
	"fmt"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/internal/testcluster"
	"github.com/aerodb/authority/jepsen-like/history"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Counters of StartHostileRenewals.
const (
	// HostileAccepted counts renewals of another holder's lease the
	// service accepted (a node acting as someone else: never, unless
	// authorization is broken).
	HostileAccepted = "hostile_renewals_accepted"
	// HostileDenied counts renewals refused with PERMISSION_DENIED.
	HostileDenied = "hostile_renewals_denied"
)

// StartHostileRenewals starts a hostile client: a valid node certificate of
// its own name (node:<name>) that, every 100 ms, reads domain and renews
// its current holder's lease, a KeepAlive naming that holder and epoch (as
// a node that wants a dead holder's lease kept alive would). Each renewal
// is a renew op of process pid in the history: ok when the service renewed
// the lease, fail when it refused (PERMISSION_DENIED, or a lease error),
// info when the outcome is unknown. The fault window (hostile-renewals)
// lasts until the returned stop is called; Counters HostileAccepted and
// HostileDenied count the outcomes.
func (e *Env) StartHostileRenewals(domain, name string, pid int) (stop func()) {
	id := testcluster.Node(name)
	opt := e.Cluster.DialOption(id)
	var conns []*grpc.ClientConn
	for _, s := range e.Cluster.Servers {
		c, err := grpc.NewClient(s.GRPCAddr, opt)
		if err != nil {
			e.T.Fatal(err)
		}
		conns = append(conns, c)
	}
	e.start("hostile-renewals", fmt.Sprintf("%s renews the lease of %s's holder", id, domain))
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		node := 0
		var seq uint64
		for {
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
			server := e.Cluster.Servers[node].ID
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			d, err := pbgrpc.NewDomainsClient(conns[node]).GetDomain(ctx, &pb.GetDomainRequest{Name: domain})
			holder, epoch := d.GetDomain().GetHolder(), d.GetDomain().GetEpoch()
			if err != nil || holder == "" || holder == name {
				cancel()
				if err != nil {
					node = (node + 1) % len(conns)
				}
				continue
			}
			seq++
			v := history.Value{Holder: holder, Epoch: epoch}
			rec := func(typ string, err string) {
				e.H.Add(history.Record{Kind: history.KindOp, Type: typ, Process: pid, F: history.FRenew, Domain: domain, Node: server, Value: v, Error: err})
			}
			rec(history.Invoke, "")
			resp, err := renewOnce(ctx, conns[node], &pb.KeepAliveRequest{Domain: domain, Holder: holder, Epoch: epoch, Seq: seq})
			cancel()
			switch reason := errReason(err); {
			case err == nil && resp.GetErrorReason() == "":
				e.count(HostileAccepted, 1)
				rec(history.OK, "")
			case err == nil:
				rec(history.Fail, resp.GetErrorReason()+": "+resp.GetErrorMessage())
			case reason == pb.ReasonPermissionDenied:
				e.count(HostileDenied, 1)
				rec(history.Fail, err.Error())
			case reason == pb.ReasonNotLeader:
				rec(history.Fail, err.Error())
				node = (node + 1) % len(conns)
			default:
				rec(history.Info, err.Error())
				node = (node + 1) % len(conns)
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
		for _, c := range conns {
			c.Close()
		}
		e.mu.Lock()
		accepted, denied := e.Counters[HostileAccepted], e.Counters[HostileDenied]
		e.mu.Unlock()
		e.stop("hostile-renewals", fmt.Sprintf("%d renewals accepted, %d denied", accepted, denied))
	}
}

// renewOnce sends one renewal on a new KeepAlive stream and reads its
// answer (a refused stream ends with the refusal).
func renewOnce(ctx context.Context, conn *grpc.ClientConn, req *pb.KeepAliveRequest) (*pb.KeepAliveResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := pbgrpc.NewLeasesClient(conn).KeepAlive(ctx)
	if err != nil {
		return nil, err
	}
	if err := st.Send(req); err != nil {
		_, rerr := st.Recv() // the stream's status says why
		return nil, rerr
	}
	return st.Recv()
}

// errReason is a gRPC error's ErrorInfo reason ("" when none).
func errReason(err error) string {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return ""
	}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei.Reason
		}
	}
	return ""
}
