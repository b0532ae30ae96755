package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// STYLE habit 3: the dispatch table is checked against the API by
// reflection, so a command added to commands.proto without an applier fails
// here rather than panicking on a replica.

func bodyOneof(t testing.TB) protoreflect.OneofDescriptor {
	t.Helper()
	o := (&pb.Command{}).ProtoReflect().Descriptor().Oneofs().ByName("body")
	if o == nil {
		t.Fatal("Command has no oneof named body")
	}
	return o
}

// emptyBody returns a Command whose body is field fd set to an empty message.
func emptyBody(fd protoreflect.FieldDescriptor) *pb.Command {
	c := &pb.Command{}
	m := c.ProtoReflect()
	m.Set(fd, protoreflect.ValueOfMessage(m.NewField(fd).Message()))
	return c
}

func TestDispatchCoversEveryCommand(t *testing.T) {
	fields := bodyOneof(t).Fields()
	if fields.Len() == 0 {
		t.Fatal("the body oneof has no fields")
	}
	for i := range fields.Len() {
		fd := fields.Get(i)
		t.Run(string(fd.Name()), func(t *testing.T) {
			cmd := emptyBody(fd)
			if cmd.Body == nil {
				t.Fatalf("setting %s left the body empty", fd.FullName())
			}
			apply, err := applierFor(cmd)
			if err != nil || apply == nil {
				t.Fatalf("applierFor(%s) = %v, %v; want an applier", fd.Name(), apply != nil, err)
			}
			// An empty command of any kind is never valid: it is rejected
			// (not panicked on) and changes nothing, both on an empty state
			// and on a populated one, through the log-entry path.
			data, err := proto.Marshal(cmd)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range []*FSM{New(), populatedFSM(t)} {
				f.advance(1000)
				before := mustHash(t, f)
				res := f.Apply(1000, 1, data)
				if res.Err == nil {
					t.Fatalf("empty %s applied without error", fd.Name())
				}
				if mustHash(t, f) != before {
					t.Fatalf("empty %s changed the state (%v)", fd.Name(), res.Err)
				}
			}
		})
	}
}

func TestDispatchNoBody(t *testing.T) {
	f := populatedFSM(t)
	f.advance(1000)
	before := mustHash(t, f)
	for _, cmd := range []*pb.Command{{}, {StampedUnixMs: 5, Term: 2, Proposer: "s1"}} {
		data, _ := proto.Marshal(cmd)
		for _, res := range []*Result{f.ApplyCommand(1000, 1, cmd), f.Apply(1000, 1, data)} {
			if !errors.Is(res.Err, ErrInvalid) {
				t.Fatalf("no body: err = %v, want ErrInvalid", res.Err)
			}
		}
	}
	if mustHash(t, f) != before {
		t.Fatal("a command without a body changed the state")
	}
}

// withUnknownField appends field 99 (varint) to a marshalled command, as a
// newer version with a command this build does not know would write it.
func withUnknownField(t testing.TB, cmd *pb.Command) []byte {
	t.Helper()
	data, err := proto.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	data = protowire.AppendTag(data, 99, protowire.VarintType)
	return protowire.AppendVarint(data, 1)
}

func TestDispatchUnknownCommandPanics(t *testing.T) {
	f := populatedFSM(t)
	f.advance(1000)
	before := mustHash(t, f)
	data := withUnknownField(t, &pb.Command{StampedUnixMs: 1_700_000_000_000, Term: 3})

	msg := applyRecover(f, 1000, data)
	if !strings.Contains(msg, "unknown to this version") {
		t.Fatalf("Apply of an unknown command: panic %q, want the unknown-command panic", msg)
	}
	// The panic left the state (and the lock) intact.
	if mustHash(t, f) != before {
		t.Fatal("the unknown command changed the state")
	}
	if f.LastIndex() != 1000 {
		t.Fatalf("LastIndex = %d", f.LastIndex())
	}

	// Unknown fields beside a known body are forward-compatible additions to
	// a known command: the command applies.
	data = withUnknownField(t, createDB("db-new"))
	if msg := applyRecover(f, 1001, data); msg != "" {
		t.Fatalf("known body with an unknown field panicked: %s", msg)
	}
	if _, ok := f.Domain("db-new"); !ok {
		t.Fatal("known body with an unknown field was not applied")
	}
}

// applyRecover applies data and returns the panic message, or "".
func applyRecover(f *FSM, index uint64, data []byte) (msg string) {
	defer func() {
		if r := recover(); r != nil {
			msg, _ = r.(string)
			if msg == "" {
				msg = "non-string panic"
			}
		}
	}()
	f.Apply(index, 1, data)
	return ""
}

// populatedFSM returns a state with every kind of record: an aerodb domain
// with members, a watermark, one allowed and one denied attempt, and lock
// and release domains with finished and held work.
func populatedFSM(t testing.TB) *FSM {
	t.Helper()
	h, attempt := readyToPromote(t)
	denied := cloneAttempt(attempt)
	denied.Request.RequestId = "req-0"
	denied.Lease.State = pb.LeaseState_LEASE_STATE_HELD
	h.ok(attemptCmd(denied))
	attempt.Request.ExpectedEpoch = u64p(1)
	attempt.Request.Waivers = []string{"allow-data-loss"}
	h.ok(attemptCmd(attempt))
	h.ok(advanceCmd(wmAdv("db1", "n2", 2, 120, h120, 60)))
	h.ok(createLock("lock1"))
	h.ok(acquireCmd("lock1", "runner-a", nil, nil))
	h.ok(completeCmd("lock1", "runner-a", 1, "deploy-1"))
	h.ok(createCmd("rel1", pb.DomainKind_DOMAIN_KIND_RELEASE, &pb.Policy{
		Mode: pb.PromotionMode_PROMOTION_MODE_AUTOMATIC, LeaseTtlMs: 500, PromotionDisabled: true, ReportMaxAgeMs: 100, MinSyncReplicas: 2}))
	h.ok(acquireCmd("rel1", "ctl", nil, nil))
	d := h.domain("db1")
	if allowed, denied := attemptsOf(h.f, "db1"); len(allowed) != 1 || len(denied) != 1 || d.Watermark == nil || len(d.Members) != 3 {
		t.Fatalf("populated fixture: %s", DescribeDomain(d))
	}
	return h.f
}

func TestSnapshotCarriesPopulatedState(t *testing.T) {
	f := populatedFSM(t)
	g := roundTrip(t, f)
	for _, name := range f.DomainNames() {
		a, _ := f.Domain(name)
		b, ok := g.Domain(name)
		if !ok || !proto.Equal(a, b) {
			t.Fatalf("domain %s after restore:\n%s\nwant\n%s", name, DescribeDomain(b), DescribeDomain(a))
		}
	}
	if g.LastIndex() != f.LastIndex() {
		t.Fatalf("LastIndex %d, want %d", g.LastIndex(), f.LastIndex())
	}
}

// TestSnapshotCarriesEveryDomainField sets every field of a Domain,
// recursively, through reflection, so a field added to state.proto is
// covered without editing this test.
func TestSnapshotCarriesEveryDomainField(t *testing.T) {
	f := New()
	var n uint64
	var recs []*pb.AttemptRecord
	for _, name := range []string{"a", "b"} {
		d := &pb.Domain{}
		fillMessage(t, d.ProtoReflect(), &n)
		d.Name = name
		// The legacy fields only exist in version-1 snapshots: their
		// filled records become this domain's stored attempts.
		for i, rec := range append(d.LegacyAllowed, d.LegacyDenied...) {
			rec.Request.Domain, rec.LogIndex = name, uint64(100+i)
			rec.Request.RequestId = fmt.Sprintf("%s-%d", name, i)
			rec.Decision.Allowed = i < len(d.LegacyAllowed)
			raw, err := marshal.Marshal(rec)
			if err != nil {
				t.Fatal(err)
			}
			f.keep(name, &storedAttempt{index: rec.LogIndex, requestID: rec.Request.RequestId, allowed: rec.Decision.Allowed, raw: raw})
			recs = append(recs, rec)
		}
		d.LegacyAllowed, d.LegacyDenied = nil, nil
		d.Fence.Epoch = d.Epoch + 1 // the only fence a state can hold (invariants.go)
		// A deployment lives in a lock domain, at or before its epoch.
		d.Kind, d.Deployment.Epoch = pb.DomainKind_DOMAIN_KIND_LOCK, d.Epoch
		f.setDomain(d)
	}
	f.lastIndex = 77
	f.recomputeDigests()
	g := roundTrip(t, f)
	for _, name := range []string{"a", "b"} {
		got, ok := g.Domain(name)
		if !ok || !proto.Equal(got, f.dom(name)) {
			t.Fatalf("domain %s did not survive the snapshot", name)
		}
		assertEveryFieldSet(t, got.ProtoReflect(), string(got.ProtoReflect().Descriptor().FullName()), "legacy_allowed", "legacy_denied")
	}
	// Every attempt survives with every field, and the request index (derived
	// from the stored attempts) finds it.
	for _, rec := range recs {
		got, ok := g.Attempt(rec.Request.Domain, rec.Request.RequestId)
		if !ok || !proto.Equal(got, rec) {
			t.Fatalf("attempt %s/%s after restore: %v, %t", rec.Request.Domain, rec.Request.RequestId, got, ok)
		}
		if rec.Decision.Allowed {
			assertEveryFieldSet(t, got.ProtoReflect(), "AttemptRecord")
		} else {
			assertEveryFieldSet(t, got.ProtoReflect(), "AttemptRecord", "allowed")
		}
	}
	if mustHash(t, g) != mustHash(t, f) {
		t.Fatal("state hash differs after the round trip")
	}
}

func fillMessage(t testing.TB, m protoreflect.Message, n *uint64) {
	t.Helper()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		switch {
		case fd.IsMap():
			t.Fatalf("%s: maps are not supported by this test (and would need sorted snapshot output)", fd.FullName())
		case fd.IsList():
			l := m.Mutable(fd).List()
			for range 2 {
				if fd.Message() != nil {
					v := l.NewElement()
					fillMessage(t, v.Message(), n)
					l.Append(v)
				} else {
					l.Append(scalarValue(t, fd, n))
				}
			}
		case fd.Message() != nil:
			fillMessage(t, m.Mutable(fd).Message(), n)
		default:
			m.Set(fd, scalarValue(t, fd, n))
		}
	}
}

func scalarValue(t testing.TB, fd protoreflect.FieldDescriptor, n *uint64) protoreflect.Value {
	t.Helper()
	*n++
	v := *n
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.EnumKind:
		vals := fd.Enum().Values()
		return protoreflect.ValueOfEnum(vals.Get(1 + int(v)%(vals.Len()-1)).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(v))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(int64(v))
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(v))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(v)
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(v))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(float64(v))
	case protoreflect.StringKind:
		return protoreflect.ValueOfString("s" + strconv.FormatUint(v, 10))
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes(bytes.Repeat([]byte{byte(v)}, 4))
	}
	t.Fatalf("%s: kind %v not supported", fd.FullName(), fd.Kind())
	return protoreflect.Value{}
}

func assertEveryFieldSet(t testing.TB, m protoreflect.Message, path string, except ...string) {
	t.Helper()
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		p := path + "." + string(fd.Name())
		if slices.Contains(except, string(fd.Name())) {
			continue
		}
		if !m.Has(fd) {
			t.Errorf("%s is not set after the round trip", p)
			continue
		}
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := m.Get(fd).List()
			for j := range l.Len() {
				assertEveryFieldSet(t, l.Get(j).Message(), p, except...)
			}
		case !fd.IsList() && fd.Message() != nil:
			assertEveryFieldSet(t, m.Get(fd).Message(), p, except...)
		}
	}
}

// roundTrip restores f's snapshot into a fresh FSM and checks the bytes are
// a fixed point.
func roundTrip(t testing.TB, f *FSM) *FSM {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	g := New()
	if err := g.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	again, err := g.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snap, again) {
		t.Fatal("snapshot of the restored state differs from the original snapshot")
	}
	return g
}
