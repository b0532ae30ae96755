package transport

import (
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"google.golang.org/grpc"
)

type watch struct {
	pbgrpc.UnimplementedWatchServer
	*Server
}

// watchBatch bounds the events sent in one response; watchHeartbeat is the
// longest a watch stream stays silent.
const (
	watchBatch     = 512
	watchHeartbeat = 2 * time.Second
)

// Watch streams events from this node's applied log, in (index, seq) order.
// Any node serves it: events are derived from committed entries, identical
// everywhere. from_index 0 means "from now on"; an index older than the
// retained events fails with COMPACTED (OutOfRange): re-read the state and
// watch from its applied index.
func (w *watch) Watch(req *pb.WatchRequest, stream grpc.ServerStreamingServer[pb.WatchResponse]) error {
	if err := validateWatch(req); err != nil {
		return err
	}
	f := w.node.FSM()
	from := req.GetFromIndex()
	if from == 0 {
		from = f.LastIndex() + 1
	}
	want := map[string]bool{}
	for _, d := range req.GetDomains() {
		want[d] = true
	}
	afterSeq := int64(-1) // a batch may end inside an entry: resume after (from, afterSeq)
	for {
		evs, wake, err := f.EventsAfter(from, afterSeq, watchBatch)
		if err != nil {
			return w.fail(err)
		}
		var out []*pb.Event
		for _, ev := range evs {
			from, afterSeq = ev.Index, int64(ev.Seq)
			if len(want) == 0 || want[ev.Domain] {
				out = append(out, ev)
			}
		}
		if len(out) > 0 {
			if err := stream.Send(&pb.WatchResponse{Header: w.header(), Events: out}); err != nil {
				return err
			}
		}
		select {
		case <-wake:
		case <-time.After(watchHeartbeat):
			// An empty response proves the server is alive: a watcher on a
			// paused or partitioned server notices the silence and moves on.
			if err := stream.Send(&pb.WatchResponse{Header: w.header()}); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}
