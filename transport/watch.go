package transport

import (
	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/grpc"
)

type watch struct {
	pb.UnimplementedWatchServer
	*Server
}

func (w *watch) Watch(req *pb.WatchRequest, stream grpc.ServerStreamingServer[pb.WatchResponse]) error {
	return invalid("watch: not yet")
}
