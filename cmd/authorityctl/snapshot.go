package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/backup"
	"github.com/aerodb/authority/internal/version"
	"github.com/spf13/cobra"
)

// saveTimeout bounds a whole snapshot save (dial included).
const saveTimeout = 10 * time.Minute

// newSnapshotCmd: save a backup of the state to a file, check one.
func newSnapshotCmd(o *options) *cobra.Command {
	return newGroupCmd("snapshot", "Back up the state to a file (save), check a backup (status)",
		newSnapshotSaveCmd(o), newSnapshotStatusCmd(o))
}

func newSnapshotSaveCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "save FILE",
		Short: "Save a consistent, checksummed backup of the whole state from the leader to FILE",
		Long: `Streams a point-in-time copy of the replicated state from the leader (every
write acknowledged before the call is in it) into FILE, atomically: a
temporary file beside FILE, synced, then renamed. The file's header holds the
format version, the cluster id, the last applied index and the leader's term,
the state hash and the SHA-256 of the data; the copy is checked against all
of them (snapshot status does the same) before FILE appears. Needs an operator
certificate. Restore it into a new cluster with authorityd --restore-from
(docs/OPERATIONS.md).`,
		Args: exactArgs("FILE"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), max(saveTimeout, o.timeout))
			defer cancel()
			dctx, dcancel := o.withTimeout(ctx)
			c, err := o.connect(dctx)
			dcancel()
			if err != nil {
				return err
			}
			defer closeQuietly(c)
			h, err := saveSnapshot(ctx, c.SaveSnapshot, args[0])
			if err != nil {
				return err
			}
			return o.printBackup(h, "saved "+args[0])
		}),
	}
}

// saveFunc streams a backup into w (client.SaveSnapshot).
type saveFunc func(ctx context.Context, w io.Writer, chunk uint32) (*pb.SavedSnapshotInfo, *pb.SaveSnapshotResponse, error)

// saveSnapshot streams the state through a pipe into backup.Write, checks
// the received data against what the server said (size, SHA-256), writes
// the header and verifies the finished file (it is removed when the check
// fails).
func saveSnapshot(ctx context.Context, save saveFunc, path string) (backup.Header, error) {
	pr, pw := io.Pipe()
	type result struct {
		info *pb.SavedSnapshotInfo
		done *pb.SaveSnapshotResponse
		err  error
	}
	saved := make(chan result, 1)
	go func() {
		info, done, err := save(ctx, pw, 0)
		pw.CloseWithError(err)
		saved <- result{info, done, err}
	}()
	var got *result
	_, err := backup.Write(path, pr, func(size int64, sum string) (backup.Header, error) {
		r := <-saved
		got = &r
		if r.err != nil {
			return backup.Header{}, r.err
		}
		if r.done.GetSize() != uint64(size) || r.done.GetSha256() != sum {
			return backup.Header{}, fmt.Errorf("%w: received %d bytes with SHA-256 %s; the server sent %d bytes with SHA-256 %.64s",
				backup.ErrDamaged, size, sum, r.done.GetSize(), r.done.GetSha256())
		}
		i := r.info
		return backup.Header{SnapshotFormat: i.GetFormatVersion(), ClusterID: i.GetClusterId(), ServerID: i.GetServerId(),
			LastIndex: i.GetLastIndex(), Term: i.GetTerm(), StateHash: i.GetStateHash(), Domains: i.GetDomains(),
			SavedAt: time.Now().UTC().Format(time.RFC3339), SavedBy: version.Get().String("authorityctl")}, nil
	})
	pr.CloseWithError(err) // a failed write stops the stream
	if got == nil {
		<-saved // the stream's error, if any, is err (the pipe carried it)
	}
	if err != nil {
		return backup.Header{}, err
	}
	h, err := backup.Verify(path)
	if err != nil {
		os.Remove(path)
		return backup.Header{}, fmt.Errorf("the saved file failed its check and was removed: %w", err)
	}
	return h, nil
}

func newSnapshotStatusCmd(o *options) *cobra.Command {
	return &cobra.Command{
		Use:   "status FILE",
		Short: "Verify a backup file and print its index, term, state hash and checksum",
		Long: `Checks FILE completely, offline: the header, the data's size (nothing missing,
nothing after it) and SHA-256, that the state decodes (every record and its
CRC), and that its last index and state hash are the header's. Exits 1 with
one line saying what is wrong otherwise.`,
		Args: exactArgs("FILE"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			h, err := backup.Verify(args[0])
			if err != nil {
				return err
			}
			return o.printBackup(h, "ok "+args[0])
		}),
	}
}

// printBackup prints a backup's header: JSON (the header's fields), or
// text lines.
func (o *options) printBackup(h backup.Header, what string) error {
	if o.output.value == outputJSON {
		b, err := json.Marshal(h)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(o.stdout, "%s\n", b)
		return err
	}
	_, err := fmt.Fprintf(o.stdout, "%s\nformat:      %d (state format %d)\ncluster:     %s\nsaved from:  %s\nlast index:  %d\nterm:        %d\ndomains:     %d\nstate hash:  %s\nsize:        %d bytes\nsha256:      %s\nsaved at:    %s\nsaved by:    %s\n",
		what, h.Format, h.SnapshotFormat, h.ClusterID, h.ServerID, h.LastIndex, h.Term, h.Domains, h.StateHash, h.Size, h.SHA256, h.SavedAt, h.SavedBy)
	return err
}
