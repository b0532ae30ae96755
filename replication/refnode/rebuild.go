package refnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	rpb "github.com/aerodb/authority/api/refnode/v1"
	"github.com/aerodb/authority/replication"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// RebuildReport says what Rebuild did.
type RebuildReport struct {
	Records int
	Last    replication.Position
	Epoch   uint64
	// MovedAside is where the old data dir went ("" when there was none).
	MovedAside string
}

// Rebuild replaces dataDir with a copy of the WAL of the node at from
// (normally the current primary): it streams the WAL, verifies every
// checksum and the whole chain, writes it to a new directory with the
// source's fence epoch, fsyncs it, moves the old data dir aside (kept for
// forensics, never deleted) and puts the new one in its place. The node
// must not be running. This is the only way a diverged node comes back.
func Rebuild(ctx context.Context, from, dataDir string) (RebuildReport, error) {
	var rep RebuildReport
	// Plaintext: refnode-to-refnode traffic is the database's own, not an
	// authority listener (see Node.peerConn).
	conn, err := grpc.NewClient(from, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return rep, err
	}
	defer conn.Close()
	tmp := dataDir + ".rebuild"
	if err := os.RemoveAll(tmp); err != nil {
		return rep, err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return rep, err
	}
	f, err := os.Create(filepath.Join(tmp, walFile))
	if err != nil {
		return rep, err
	}
	defer f.Close()
	st, err := rpb.NewRefNodeClient(conn).ReadWal(ctx, &rpb.ReadWalRequest{FromLsn: 1})
	if err != nil {
		return rep, err
	}
	prev := replication.Zero
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return rep, fmt.Errorf("read wal from %s: %w", from, err)
		}
		rep.Epoch = max(rep.Epoch, resp.GetEpoch())
		for _, fr := range resp.GetFrames() {
			rec, err := DecodeFrame(fr)
			if err == nil {
				err = VerifyRecord(prev, rec)
			}
			if err != nil {
				return rep, fmt.Errorf("wal from %s: %w", from, err)
			}
			if _, err := f.Write(fr); err != nil {
				return rep, err
			}
			prev = PositionOf(rec)
			rep.Records++
		}
	}
	if err := f.Sync(); err != nil {
		return rep, err
	}
	if err := f.Close(); err != nil {
		return rep, err
	}
	rep.Last = prev
	if err := writeFileSync(filepath.Join(tmp, epochFile), []byte(strconv.FormatUint(rep.Epoch, 10)+"\n")); err != nil {
		return rep, err
	}
	if _, err := os.Stat(dataDir); err == nil {
		rep.MovedAside = fmt.Sprintf("%s.diverged-%d", dataDir, time.Now().Unix())
		if err := os.Rename(dataDir, rep.MovedAside); err != nil {
			return rep, err
		}
	}
	if err := os.Rename(tmp, dataDir); err != nil {
		return rep, err
	}
	d, err := os.Open(filepath.Dir(dataDir))
	if err != nil {
		return rep, err
	}
	defer d.Close()
	return rep, d.Sync()
}
