package transport

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	pbgrpc "github.com/aerodb/authority/api/authority/v1/authorityv1grpc"
	"github.com/aerodb/authority/fsm"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// saveSnapshot reads one SaveSnapshot stream whole.
func saveSnapshot(ctx context.Context, n *apiNode, chunk uint32) (*pb.SavedSnapshotInfo, []byte, *pb.SaveSnapshotResponse, int, error) {
	s, err := pbgrpc.NewClusterClient(n.conn).SaveSnapshot(ctx, &pb.SaveSnapshotRequest{ChunkBytes: chunk})
	if err != nil {
		return nil, nil, nil, 0, err
	}
	var info *pb.SavedSnapshotInfo
	var data bytes.Buffer
	msgs := 0
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return info, data.Bytes(), nil, msgs, errors.New("stream ended without done")
		}
		if err != nil {
			return nil, nil, nil, msgs, err
		}
		msgs++
		if m.GetInfo() != nil {
			info = m.GetInfo()
		}
		data.Write(m.GetData())
		if m.GetDone() {
			return info, data.Bytes(), m, msgs, nil
		}
	}
}

// SaveSnapshot on the leader gives the state's bytes in chunks of the
// asked size, with the state hash of exactly those bytes and their
// SHA-256; a follower answers NOT_LEADER, an oversized chunk is
// InvalidArgument, and past its burst the server refuses with
// RESOURCE_EXHAUSTED (nothing is captured).
func TestSaveSnapshot(t *testing.T) {
	nodes := startAPI(t, 3)
	l := leaderOf(t, nodes)
	seed(t, l.conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	info, data, done, msgs, err := saveSnapshot(ctx, l, 512)
	if err != nil {
		t.Fatal(err)
	}
	if info == nil || info.GetLastIndex() == 0 || info.GetFormatVersion() != fsm.SnapshotVersion || info.GetDomains() != 1 {
		t.Fatalf("info %v", info)
	}
	sum := sha256.Sum256(data)
	if done.GetSize() != uint64(len(data)) || done.GetSha256() != hex.EncodeToString(sum[:]) {
		t.Fatalf("done %v for %d bytes", done, len(data))
	}
	if want := 2 + (len(data)+511)/512; msgs != want {
		t.Fatalf("%d messages for %d bytes in 512-byte chunks; want %d", msgs, len(data), want)
	}
	restored := fsm.New()
	if err := restored.Restore(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	h, _ := restored.StateHash()
	if hex.EncodeToString(h[:]) != info.GetStateHash() || restored.LastIndex() != info.GetLastIndex() {
		t.Fatalf("restored hash %x index %d; info %v", h, restored.LastIndex(), info)
	}
	if info.GetStateHash() != stateHash(t, l) {
		t.Fatal("state hash differs from Status with no writes in between")
	}

	_, _, _, _, err = saveSnapshot(ctx, follower(t, nodes), 0)
	if _, reason := reasonOfStatus(err); reason != pb.ReasonNotLeader {
		t.Fatalf("follower: %v", err)
	}
	_, _, _, _, err = saveSnapshot(ctx, l, MaxSnapshotChunk+1)
	if status.Code(err) != codes.InvalidArgument || len(status.Convert(err).Message()) > 512 {
		t.Fatalf("oversized chunk: %v", err)
	}
	// One save above; the burst allows SnapshotSaveBurst in all.
	for i := 1; i < SnapshotSaveBurst; i++ {
		if _, _, _, _, err := saveSnapshot(ctx, l, 0); err != nil {
			t.Fatalf("save %d: %v", i+1, err)
		}
	}
	_, _, _, _, err = saveSnapshot(ctx, l, 0)
	if code, reason := reasonOfStatus(err); code != codes.ResourceExhausted || reason != ReasonRateLimited {
		t.Fatalf("save past the burst: %v", err)
	}
}
