package hostiletest

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/aerodb/authority/authz"
	"github.com/aerodb/authority/identity"
	"github.com/aerodb/authority/internal/testcluster"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// rpc is one method of authz.Table with its descriptor.
type rpc struct {
	method string // "/authority.v1.Domains/CreateDomain"
	desc   protoreflect.MethodDescriptor
	access authz.Access
}

// rpcs lists every method of the authorization table, sorted.
func rpcs() ([]rpc, error) {
	var out []rpc
	for method, rule := range authz.Table {
		full := strings.ReplaceAll(strings.TrimPrefix(method, "/"), "/", ".")
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(full))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", method, err)
		}
		md, ok := d.(protoreflect.MethodDescriptor)
		if !ok {
			return nil, fmt.Errorf("%s is not a method", method)
		}
		out = append(out, rpc{method: method, desc: md, access: rule.Access})
	}
	slices.SortFunc(out, func(a, b rpc) int { return strings.Compare(a.method, b.method) })
	return out, nil
}

// caller is the identity that may call r (so a refusal is not the
// authorization table's).
func (r rpc) caller() identity.Identity {
	switch r.access {
	case authz.Admin, authz.Membership:
		return testcluster.Operator
	case authz.ActAsHolder:
		return testcluster.Node(attacker)
	}
	return testcluster.Reader
}

func (r rpc) write() bool { return r.access != authz.Read }

func (r rpc) stream() bool { return r.desc.IsStreamingClient() || r.desc.IsStreamingServer() }

const (
	attacker     = "attacker"
	attackerLock = "attacker.lock"
)

// baseValue is a valid value for a string field of a request, so that a
// request with one field replaced is refused for that field alone.
func baseValue(f protoreflect.FieldDescriptor) string {
	switch f.Name() {
	case "domain", "name", "after":
		return attackerLock
	case "holder", "member_id", "candidate":
		return attacker
	case "id", "to":
		return "s9"
	case "address", "raft_address", "grpc_address":
		return "127.0.0.1:1"
	case "request_id":
		return "hostile-request"
	case "reason":
		return "hostile load"
	}
	return "x"
}

// fieldPath names a string or bytes field inside a request: the fields
// from the request message down to it.
type fieldPath []protoreflect.FieldDescriptor

func (p fieldPath) String() string {
	var parts []string
	for _, f := range p {
		s := string(f.Name())
		if f.IsList() {
			s += "[0]"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ".")
}

// hasText reports whether a message (or one it holds) has a string or
// bytes field.
func hasText(md protoreflect.MessageDescriptor, depth int) bool {
	if depth > 4 {
		return false
	}
	fs := md.Fields()
	for i := range fs.Len() {
		f := fs.Get(i)
		switch f.Kind() {
		case protoreflect.StringKind, protoreflect.BytesKind:
			return true
		case protoreflect.MessageKind:
			if !f.IsMap() && hasText(f.Message(), depth+1) {
				return true
			}
		}
	}
	return false
}

// textFields lists every string and bytes field reachable from md (through
// singular and repeated message fields).
func textFields(md protoreflect.MessageDescriptor, prefix fieldPath) []fieldPath {
	var out []fieldPath
	fs := md.Fields()
	for i := range fs.Len() {
		f := fs.Get(i)
		p := append(slices.Clone(prefix), f)
		switch f.Kind() {
		case protoreflect.StringKind, protoreflect.BytesKind:
			out = append(out, p)
		case protoreflect.MessageKind:
			if !f.IsMap() && len(prefix) < 4 {
				out = append(out, textFields(f.Message(), p)...)
			}
		}
	}
	return out
}

// repeatedFields lists every repeated field reachable from md through
// singular message fields.
func repeatedFields(md protoreflect.MessageDescriptor, prefix fieldPath) []fieldPath {
	var out []fieldPath
	fs := md.Fields()
	for i := range fs.Len() {
		f := fs.Get(i)
		p := append(slices.Clone(prefix), f)
		switch {
		case f.IsList():
			out = append(out, p)
		case f.Kind() == protoreflect.MessageKind && !f.IsMap() && len(prefix) < 4:
			out = append(out, repeatedFields(f.Message(), p)...)
		}
	}
	return out
}

// fill sets every string and bytes field of m to a valid base value,
// epochs to epoch, creating nested messages that carry text and one
// element of repeated messages; repeated scalars stay empty.
func fill(m protoreflect.Message, epoch uint64, depth int) {
	fs := m.Descriptor().Fields()
	for i := range fs.Len() {
		f := fs.Get(i)
		switch {
		case f.IsMap():
		case f.IsList():
			if f.Kind() == protoreflect.MessageKind && hasText(f.Message(), depth+1) {
				l := m.Mutable(f).List()
				e := l.NewElement()
				fill(e.Message(), epoch, depth+1)
				l.Append(e)
			}
		case f.Kind() == protoreflect.StringKind:
			m.Set(f, protoreflect.ValueOfString(baseValue(f)))
		case f.Kind() == protoreflect.BytesKind:
			m.Set(f, protoreflect.ValueOfBytes([]byte(strings.Repeat("\x01", 32))))
		case f.Kind() == protoreflect.Uint64Kind && f.Name() == "epoch":
			m.Set(f, protoreflect.ValueOfUint64(epoch))
		case f.Kind() == protoreflect.MessageKind && hasText(f.Message(), depth+1) && depth < 4:
			fill(m.Mutable(f).Message(), epoch, depth+1)
		}
	}
}

// baseRequest is r's request message with every text field valid.
func baseRequest(r rpc, epoch uint64) proto.Message {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(r.desc.Input().FullName())
	if err != nil {
		panic(err)
	}
	m := mt.New()
	fill(m, epoch, 0)
	return m.Interface()
}

// target returns the message holding the last field of p inside req
// (following the first element of repeated messages).
func target(req proto.Message, p fieldPath) protoreflect.Message {
	m := req.ProtoReflect()
	for _, f := range p[:len(p)-1] {
		if f.IsList() {
			l := m.Mutable(f).List()
			if l.Len() == 0 {
				e := l.NewElement()
				l.Append(e)
			}
			m = l.Get(0).Message()
		} else {
			m = m.Mutable(f).Message()
		}
	}
	return m
}

// setText puts v into the field at p (one element for a repeated field).
func setText(req proto.Message, p fieldPath, v string) {
	m := target(req, p)
	f := p[len(p)-1]
	val := protoreflect.ValueOfString(v)
	if f.Kind() == protoreflect.BytesKind {
		val = protoreflect.ValueOfBytes([]byte(v))
	}
	if f.IsList() {
		l := m.Mutable(f).List()
		l.Truncate(0)
		l.Append(val)
		return
	}
	m.Set(f, val)
}

// setRepeated fills the repeated field at p with n copies of its first
// element (a base-filled message, or a valid string for a string list).
func setRepeated(req proto.Message, p fieldPath, n int, epoch uint64) {
	m := target(req, p)
	f := p[len(p)-1]
	l := m.Mutable(f).List()
	var elem protoreflect.Value
	switch f.Kind() {
	case protoreflect.MessageKind:
		e := l.NewElement()
		fill(e.Message(), epoch, len(p))
		elem = e
	case protoreflect.StringKind:
		elem = protoreflect.ValueOfString(stringElement(f))
	default:
		elem = l.NewElement()
	}
	l.Truncate(0)
	for range n {
		if f.Kind() == protoreflect.MessageKind {
			e := l.NewElement()
			proto.Merge(e.Message().Interface(), elem.Message().Interface())
			l.Append(e)
		} else {
			l.Append(elem)
		}
	}
}

// stringElement is a valid entry of a repeated string field.
func stringElement(f protoreflect.FieldDescriptor) string {
	switch f.Name() {
	case "waivers":
		return "allow-data-loss"
	case "domains":
		return attackerLock
	}
	return baseValue(f)
}

// outcome of one call: the status code (a stream's per-message refusal
// is mapped from its error_reason) and the message.
type outcome struct {
	code codes.Code
	msg  string
}

var reasonCodes = map[string]codes.Code{
	"INVALID_ARGUMENT":   codes.InvalidArgument,
	"RESOURCE_EXHAUSTED": codes.ResourceExhausted,
	"PERMISSION_DENIED":  codes.PermissionDenied,
}

// call sends req to r on conn: a unary call, or one message on a stream
// and its first answer.
func call(ctx context.Context, conn *grpc.ClientConn, r rpc, req proto.Message) outcome {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(r.desc.Output().FullName())
	if err != nil {
		panic(err)
	}
	resp := mt.New().Interface()
	if !r.stream() {
		if err := conn.Invoke(ctx, r.method, req, resp); err != nil {
			st := status.Convert(err)
			return outcome{st.Code(), st.Message()}
		}
		return outcome{codes.OK, ""}
	}
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: r.desc.IsStreamingServer(), ClientStreams: r.desc.IsStreamingClient()}, r.method)
	if err == nil {
		err = s.SendMsg(req)
	}
	if err == nil {
		err = s.CloseSend()
	}
	if err == nil {
		err = s.RecvMsg(resp)
	}
	if err != nil {
		st := status.Convert(err)
		return outcome{st.Code(), st.Message()}
	}
	rm := resp.ProtoReflect()
	rf, mf := rm.Descriptor().Fields().ByName("error_reason"), rm.Descriptor().Fields().ByName("error_message")
	if rf == nil {
		return outcome{codes.OK, ""}
	}
	reason := rm.Get(rf).String()
	if reason == "" {
		return outcome{codes.OK, ""}
	}
	code, ok := reasonCodes[reason]
	if !ok {
		code = codes.Unknown
	}
	return outcome{code, reason + ": " + rm.Get(mf).String()}
}
