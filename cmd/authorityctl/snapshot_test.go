package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
)

// fakeSave serves a real state's snapshot bytes as the server would; tamper
// changes what is said about them, cut ends the stream early.
func fakeSave(t *testing.T, tamper func(*pb.SaveSnapshotResponse), cut bool) saveFunc {
	t.Helper()
	f := fsm.New()
	cmd := &pb.Command{Body: &pb.Command_CreateDomain{CreateDomain: &pb.CreateDomain{Name: "orders", Kind: pb.DomainKind_DOMAIN_KIND_AERODB,
		Policy: &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL, LeaseTtlMs: 10_000, ReportMaxAgeMs: 30_000}}}}
	if res := f.ApplyCommand(7, 2, cmd); res.Err != nil {
		t.Fatal(res.Err)
	}
	c, h, err := f.CaptureWithHash()
	if err != nil {
		t.Fatal(err)
	}
	var data bytes.Buffer
	c.WriteTo(&data)
	sum := sha256.Sum256(data.Bytes())
	return func(_ context.Context, w io.Writer, _ uint32) (*pb.SavedSnapshotInfo, *pb.SaveSnapshotResponse, error) {
		b := data.Bytes()
		if cut {
			w.Write(b[:len(b)/2])
			return nil, nil, errors.New("stream broke")
		}
		if _, err := w.Write(b); err != nil {
			return nil, nil, err
		}
		done := &pb.SaveSnapshotResponse{Done: true, Size: uint64(len(b)), Sha256: hex.EncodeToString(sum[:])}
		if tamper != nil {
			tamper(done)
		}
		return &pb.SavedSnapshotInfo{FormatVersion: fsm.SnapshotVersion, LastIndex: c.LastIndex(), Term: 2, StateHash: hex.EncodeToString(h[:]),
			ClusterId: "c1", ServerId: "s1", Domains: 1}, done, nil
	}
}

// snapshot save writes the file only when what arrived is what the server
// said it sent, and only whole; snapshot status checks it; version prints
// the build.
func TestSnapshotSaveStatusVersion(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	path := filepath.Join(dir, "ok.backup")
	h, err := saveSnapshot(ctx, fakeSave(t, nil, false), path)
	if err != nil || h.LastIndex != 7 || h.Domains != 1 || h.SavedBy == "" {
		t.Fatalf("%+v %v", h, err)
	}
	for name, save := range map[string]saveFunc{
		"other sha256": fakeSave(t, func(d *pb.SaveSnapshotResponse) { d.Sha256 = strings.Repeat("0", 64) }, false),
		"other size":   fakeSave(t, func(d *pb.SaveSnapshotResponse) { d.Size++ }, false),
		"cut":          fakeSave(t, nil, true),
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".backup")
		if _, err := saveSnapshot(ctx, save, p); err == nil {
			t.Errorf("%s: saved", name)
		}
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: a file was left: %v", name, err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("left behind: %v", entries)
	}

	o, stdout, stderr, dialed := testOptions(nil)
	if code := run(ctx, o, []string{"snapshot", "status", path}); code != exitOK || !strings.Contains(stdout.String(), h.StateHash) || len(*dialed) != 0 {
		t.Fatalf("status: exit %d\n%s%s", code, stdout, stderr)
	}
	b, _ := os.ReadFile(path)
	bad := filepath.Join(dir, "bad.backup")
	os.WriteFile(bad, b[:len(b)-1], 0o600)
	o, _, stderr, _ = testOptions(nil)
	if code := run(ctx, o, []string{"snapshot", "status", bad}); code != exitError || strings.Count(stderr.String(), "\n") != 1 ||
		!strings.Contains(stderr.String(), "is truncated") {
		t.Fatalf("status of a truncated file: exit %d, %q", code, stderr)
	}
	o, _, _, dialed = testOptions(nil)
	if code := run(ctx, o, []string{"snapshot", "save"}); code != exitUsage || len(*dialed) != 0 {
		t.Fatalf("save without FILE: exit %d", code)
	}
	o, stdout, _, _ = testOptions(nil)
	if code := run(ctx, o, []string{"version"}); code != exitOK || !strings.HasPrefix(stdout.String(), "authorityctl ") {
		t.Fatalf("version: exit %d %q", code, stdout)
	}
}
