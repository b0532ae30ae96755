package transport

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"sync/atomic"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/authz"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/promotion"
)

// Bounds of SaveSnapshot (a backup of the whole state, streamed from the
// leader): chunk sizes, the total size, how many run at once and how often.
const (
	DefaultSnapshotChunk = 256 << 10
	MaxSnapshotChunk     = 1 << 20
	// MaxSnapshotBytes refuses (and cuts off) a snapshot larger than this.
	MaxSnapshotBytes = 4 << 30
	// SnapshotSavesPerMinute and SnapshotSaveBurst: a token bucket of
	// saves per server; at most one save runs at a time on a server.
	SnapshotSavesPerMinute = 6
	SnapshotSaveBurst      = 3
	// snapshotSaveTimeout bounds one save (a slow reader cannot hold the
	// capture for ever).
	snapshotSaveTimeout = 10 * time.Minute
)

const methodSaveSnapshot = "/authority.v1.Cluster/SaveSnapshot"

// saveLimits are the per-server limits of SaveSnapshot.
type saveLimits struct {
	running atomic.Bool
	bucket  *buckets
}

func newSaveLimits() *saveLimits {
	return &saveLimits{bucket: newBuckets(SnapshotSavesPerMinute/60.0, SnapshotSaveBurst, 1)}
}

// SaveSnapshot streams a point-in-time copy of the state: info, data
// chunks, then done with the size and SHA-256. The capture and its state
// hash are taken under one read lock of the FSM, after a barrier (every
// write acknowledged before the call is in it).
func (c *clusterAPI) SaveSnapshot(req *pb.SaveSnapshotRequest, stream pbgrpc.Cluster_SaveSnapshotServer) error {
	chunk := int(req.GetChunkBytes())
	if chunk == 0 {
		chunk = DefaultSnapshotChunk
	}
	if chunk > MaxSnapshotChunk {
		return invalid("chunk_bytes %d: at most %d", req.GetChunkBytes(), MaxSnapshotChunk)
	}
	if !c.svc.Ready() {
		return c.fail(promotion.ErrNotLeader)
	}
	id, _ := authz.IdentityFrom(stream.Context())
	if wait, ok := c.saves.bucket.take("saves", c.limits.now()); !ok {
		return c.limits.refuse(methodSaveSnapshot, id, wait, "snapshot saves",
			fmt.Sprintf("snapshot saves: at most %d per minute per server (burst %d)", SnapshotSavesPerMinute, SnapshotSaveBurst))
	}
	if !c.saves.running.CompareAndSwap(false, true) {
		return c.limits.refuse(methodSaveSnapshot, id, 5*time.Second, "snapshot saves",
			"snapshot saves: another save is running on "+c.node.ID())
	}
	defer c.saves.running.Store(false)
	ctx, cancel := context.WithTimeout(stream.Context(), snapshotSaveTimeout)
	defer cancel()
	if err := c.node.Barrier(ctx); err != nil {
		return c.fail(err)
	}
	capture, h, err := c.node.FSM().CaptureWithHash()
	if err != nil {
		return c.fail(err)
	}
	info := &pb.SavedSnapshotInfo{FormatVersion: fsm.SnapshotVersion, LastIndex: capture.LastIndex(), Term: c.node.Term(),
		StateHash: hexHash(h), ClusterId: c.node.ClusterID(), ServerId: c.node.ID(), Domains: uint64(capture.Domains())}
	if err := stream.Send(&pb.SaveSnapshotResponse{Header: c.header(), Info: info}); err != nil {
		return err
	}
	w := &chunkSender{send: stream.Send, buf: make([]byte, 0, chunk), sum: sha256.New()}
	n, err := capture.WriteTo(w)
	if err == nil {
		err = w.flush()
	}
	if err != nil {
		return err
	}
	c.logger.Info("snapshot saved", "index", info.LastIndex, "bytes", n, "by", id.String())
	return stream.Send(&pb.SaveSnapshotResponse{Done: true, Size: uint64(n), Sha256: hex.EncodeToString(w.sum.Sum(nil))})
}

// chunkSender cuts what is written into data messages of at most
// cap(buf) bytes, hashing it; past MaxSnapshotBytes it fails.
type chunkSender struct {
	send func(*pb.SaveSnapshotResponse) error
	buf  []byte
	sum  hash.Hash
	n    int64
}

func (w *chunkSender) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if w.n+int64(len(p)) > MaxSnapshotBytes {
			return written, fmt.Errorf("snapshot larger than %d bytes: refused", MaxSnapshotBytes)
		}
		k := min(len(p), cap(w.buf)-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		w.sum.Write(p[:k])
		w.n += int64(k)
		written += k
		p = p[k:]
		if len(w.buf) == cap(w.buf) {
			if err := w.flush(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

func (w *chunkSender) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := w.send(&pb.SaveSnapshotResponse{Data: w.buf})
	w.buf = make([]byte, 0, cap(w.buf)) // the message may still be held by gRPC
	return err
}
