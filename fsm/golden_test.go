package fsm

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

// Format fixtures (issue 17, "no WAL format changes"): the encoded bytes of
// every log-entry command and of a snapshot are committed under
// fsm/golden. The tests decode the committed bytes and compare them
// with the values written beside them in text form (by field name), so
// renumbering a field, changing its type or changing the snapshot layout
// fails here, while adding a field keeps decoding the old fixtures. A new
// command type needs its fixture: `go test ./fsm -run TestGolden
// -update-golden` writes the missing ones (and rewrites the rest: review
// the diff — an old fixture that changes is a format change).

var updateGolden = flag.Bool("update-golden", false, "write golden/ fixtures")

const goldenDir = "golden" // beside testdata/, which holds the datadriven scripts

// goldenCommands builds one command per body case with every field set
// (deterministic: fillMessage with a fixed counter).
func goldenCommands(t *testing.T) map[string]*pb.Command {
	t.Helper()
	out := map[string]*pb.Command{}
	body := (&pb.Command{}).ProtoReflect().Descriptor().Oneofs().ByName("body")
	for i := range body.Fields().Len() {
		fd := body.Fields().Get(i)
		cmd := &pb.Command{StampedUnixMs: 1_700_000_000_000, Term: 7, Proposer: "s1"}
		v := cmd.ProtoReflect().NewField(fd)
		n := uint64(1000 * (i + 1))
		fillMessage(t, v.Message(), &n)
		cmd.ProtoReflect().Set(fd, v)
		out[string(fd.Name())] = cmd
	}
	return out
}

// checkFixture compares (or with -update-golden writes) name.pb, the
// deterministic encoding of m, and name.txt, m in text form.
func checkFixture(t *testing.T, name string, m proto.Message, encoded []byte) {
	t.Helper()
	pbPath, txtPath := filepath.Join(goldenDir, name+".pb"), filepath.Join(goldenDir, name+".txt")
	if *updateGolden {
		if err := os.MkdirAll(filepath.Dir(pbPath), 0o755); err != nil {
			t.Fatal(err)
		}
		txt := prototext.MarshalOptions{Multiline: true}.Format(m)
		if err := errors.Join(os.WriteFile(pbPath, encoded, 0o644), os.WriteFile(txtPath, []byte(txt), 0o644)); err != nil {
			t.Fatal(err)
		}
		return
	}
	raw, err := os.ReadFile(pbPath)
	if err != nil {
		t.Fatalf("no fixture for %s (%v): a new format needs one: go test ./fsm -run TestGolden -update-golden", name, err)
	}
	txt, err := os.ReadFile(txtPath)
	if err != nil {
		t.Fatal(err)
	}
	fromBytes, fromText := m.ProtoReflect().New().Interface(), m.ProtoReflect().New().Interface()
	if err := proto.Unmarshal(raw, fromBytes); err != nil {
		t.Fatalf("%s: the committed bytes no longer decode: %v", name, err)
	}
	if err := prototext.Unmarshal(txt, fromText); err != nil {
		t.Fatalf("%s: the committed text no longer parses (a field renamed or removed?): %v", name, err)
	}
	if !proto.Equal(fromBytes, fromText) {
		t.Fatalf("%s: the committed bytes decode to other values than the committed text says (a field renumbered or retyped?)\nbytes: %v\ntext:  %v",
			name, prototext.Format(fromBytes), prototext.Format(fromText))
	}
	if len(fromBytes.ProtoReflect().GetUnknown()) > 0 {
		t.Fatalf("%s: the committed bytes carry fields this version does not know", name)
	}
}

// TestGoldenCommands: every command type's encoded entry is committed and
// decodes to its recorded values.
func TestGoldenCommands(t *testing.T) {
	for name, cmd := range goldenCommands(t) {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		checkFixture(t, "commands/"+name, cmd, b)
	}
	// Every fixture on disk is a command this version knows.
	entries, _ := os.ReadDir(filepath.Join(goldenDir, "commands"))
	known := goldenCommands(t)
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".pb"); ok && known[name] == nil {
			t.Errorf("fixture %s is of a command this version does not decode (it must keep decoding the old)", e.Name())
		}
	}
}

// TestGoldenSnapshot: each committed snapshot (one per format version)
// restores to its recorded state hash; the current version's re-encodes
// byte for byte, an older one's to a current snapshot of the same state.
// -update-golden writes the current version's only: the old ones are
// kept as they were written.
func TestGoldenSnapshot(t *testing.T) {
	for version := 2; version <= snapshotVersion; version++ {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) { goldenSnapshot(t, version) })
	}
}

func goldenSnapshot(t *testing.T, version int) {
	name := fmt.Sprintf("snapshot-v%d", version)
	path, hashPath := filepath.Join(goldenDir, name+".bin"), filepath.Join(goldenDir, name+".statehash")
	if *updateGolden && version == snapshotVersion {
		f := New()
		var n uint64
		for _, name := range []string{"a", "b"} {
			d := &pb.Domain{}
			fillMessage(t, d.ProtoReflect(), &n)
			d.Name, d.LegacyAllowed, d.LegacyDenied = name, nil, nil
			d.Fence.Epoch = d.Epoch + 1
			d.Kind, d.Deployment.Epoch = pb.DomainKind_DOMAIN_KIND_LOCK, d.Epoch
			f.setDomain(d)
		}
		// Version 3 keeps histories as delta segments: domain "a" gets
		// allowed records over more than one segment and a denied ring
		// that has evicted (its front segment rebuilt).
		filled := &pb.AttemptRecord{}
		fillMessage(t, filled.ProtoReflect(), &n)
		for i := range 110 {
			rec := proto.Clone(filled).(*pb.AttemptRecord)
			rec.EpochAfter = uint64(i)
			rec.Request.Domain, rec.Request.RequestId, rec.LogIndex = "a", fmt.Sprintf("req-%d", i), uint64(100+i)
			rec.Decision.Allowed = i%3 == 0
			raw, err := marshal.Marshal(rec)
			if err != nil {
				t.Fatal(err)
			}
			f.keep("a", &storedAttempt{index: rec.LogIndex, requestID: rec.Request.RequestId, allowed: rec.Decision.Allowed, raw: raw})
		}
		f.lastIndex = 242
		f.recomputeDigests()
		snap, err := f.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		h, err := f.StateHash()
		if err != nil {
			t.Fatal(err)
		}
		if err := errors.Join(os.WriteFile(path, snap, 0o644), os.WriteFile(hashPath, []byte(hex.EncodeToString(h[:])+"\n"), 0o644)); err != nil {
			t.Fatal(err)
		}
		return
	}
	snap, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("no snapshot fixture (%v): go test ./fsm -run TestGolden -update-golden", err)
	}
	want, err := os.ReadFile(hashPath)
	if err != nil {
		t.Fatal(err)
	}
	g := New()
	if err := g.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatalf("the committed snapshot no longer restores: %v", err)
	}
	h, err := g.StateHash()
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(h[:]) + "\n"; got != string(want) {
		t.Fatalf("the committed snapshot restores to state hash %s, want %s", strings.TrimSpace(got), strings.TrimSpace(string(want)))
	}
	again, err := g.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if version == snapshotVersion && !bytes.Equal(again, snap) {
		t.Fatalf("the restored snapshot re-encodes to other bytes (%d vs %d): the snapshot layout changed", len(again), len(snap))
	}
	r := New()
	if err := r.Restore(bytes.NewReader(again)); err != nil {
		t.Fatalf("the re-encoded snapshot does not restore: %v", err)
	}
	if h2, err := r.StateHash(); err != nil || h2 != h {
		t.Fatalf("the re-encoded snapshot restores to another state hash (%v)", err)
	}
}
