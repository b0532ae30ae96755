package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/render"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Output formats (-o).
const (
	outputJSON = "json"
	outputText = "text"
)

// printer renders each kind of result; there is one implementation per
// output format. Results go to stdout, one JSON object per command (or per
// line for the streaming commands, watch and node lease).
type printer interface {
	Status(rows []statusRow) error
	Members(m *pb.MembersResponse) error
	DomainMembers(d *pb.Domain) error
	LeaderTransfer(r *pb.TransferLeadershipResponse) error
	Snapshot(r *pb.SnapshotResponse) error
	Domain(d *pb.Domain) error
	Domains(ds []*pb.DomainSummary) error
	Authority(r *pb.AuthorityResponse) error
	Promotion(r *pb.PromoteResponse) error
	Attempt(r *pb.AttemptRecord) error
	History(domain string, rs []*pb.AttemptRecord) error
	Event(e *pb.Event) error
	Advance(a *pb.WatermarkAdvance) error
	Watermark(domain string, w *pb.Watermark) error
	LeaseEvent(e leaseEvent) error
	Deployment(d *pb.Deployment) error
	ReleaseDecision(d *pb.ReleaseDecision) error
}

// statusRow is one endpoint's answer to `cluster status`.
type statusRow struct {
	Endpoint string
	Status   *pb.StatusResponse
	Err      error
}

// leaseEvent is one line of `node lease`.
type leaseEvent struct {
	Event  string // acquired, renewed, lost, released, stopped
	Domain string
	Node   string
	Epoch  uint64
	// DeadlineMs is the local deadline's distance from now; nil when the
	// event has none (lost, released).
	DeadlineMs *int64
	Err        error
}

// ---- JSON ----

// jsonPrinter writes deterministic JSON.
//
// protojson deliberately varies its whitespace between builds (so nobody
// relies on its bytes), so its output cannot be compared byte for byte. We
// marshal with protojson (proto field names, unpopulated fields left out),
// decode that into generic values (json.Number keeps every number's text
// exactly) and encode again with encoding/json, which sorts object keys and
// has fixed whitespace. The bytes then depend only on the message's content:
// the same record prints the same bytes from every server and every build.
type jsonPrinter struct{ w io.Writer }

// protoValue is m as a generic JSON value (see jsonPrinter).
func protoValue(m proto.Message) (any, error) {
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false}.Marshal(m)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return hexBytes(v, m.ProtoReflect().Descriptor()), nil
}

// hexBytes re-encodes the hash fields of v (bytes fields named *hash*, in
// the proto3 JSON of a message of type md, where they are base64) in hex,
// the encoding of every other hash the CLI prints. Keys and envelopes stay
// base64, the form the CLI takes them in.
func hexBytes(v any, md protoreflect.MessageDescriptor) any {
	obj, ok := v.(map[string]any)
	if !ok || strings.HasPrefix(string(md.FullName()), "google.protobuf.") {
		return v
	}
	for k, fv := range obj {
		fd := md.Fields().ByName(protoreflect.Name(k))
		if fd == nil {
			continue
		}
		conv := func(x any) any { return x }
		kind, sub := fd.Kind(), fd.Message()
		if fd.IsMap() {
			kind, sub = fd.MapValue().Kind(), fd.MapValue().Message()
		}
		switch kind {
		case protoreflect.BytesKind:
			if !strings.Contains(k, "hash") {
				continue
			}
			conv = func(x any) any {
				s, ok := x.(string)
				if !ok {
					return x
				}
				b, err := base64.StdEncoding.DecodeString(s)
				if err != nil {
					return x
				}
				return hex.EncodeToString(b)
			}
		case protoreflect.MessageKind, protoreflect.GroupKind:
			conv = func(x any) any { return hexBytes(x, sub) }
		default:
			continue
		}
		switch {
		case fd.IsMap():
			if m, ok := fv.(map[string]any); ok {
				for mk, mv := range m {
					m[mk] = conv(mv)
				}
			}
		case fd.IsList():
			if l, ok := fv.([]any); ok {
				for i := range l {
					l[i] = conv(l[i])
				}
			}
		default:
			obj[k] = conv(fv)
		}
	}
	return obj
}

// canonicalJSON encodes v with sorted keys; indent selects the two-space
// multi-line form (one object per command) over one line (streams). The
// result ends with a newline.
func canonicalJSON(v any, indent bool) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if indent {
		enc.SetIndent("", "  ")
	}
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// marshalProto is the deterministic JSON of m.
func marshalProto(m proto.Message, indent bool) ([]byte, error) {
	v, err := protoValue(m)
	if err != nil {
		return nil, err
	}
	return canonicalJSON(v, indent)
}

func (p jsonPrinter) write(v any, indent bool) error {
	b, err := canonicalJSON(v, indent)
	if err != nil {
		return err
	}
	_, err = p.w.Write(b)
	return err
}

func (p jsonPrinter) proto(m proto.Message) error {
	b, err := marshalProto(m, true)
	if err != nil {
		return err
	}
	_, err = p.w.Write(b)
	return err
}

// protoList writes {"<key>": [m...]}.
func protoList[M proto.Message](p jsonPrinter, key string, ms []M, extra map[string]any) error {
	list := make([]any, 0, len(ms))
	for _, m := range ms {
		v, err := protoValue(m)
		if err != nil {
			return err
		}
		list = append(list, v)
	}
	obj := map[string]any{key: list}
	for k, v := range extra {
		obj[k] = v
	}
	return p.write(obj, true)
}

func (p jsonPrinter) Status(rows []statusRow) error {
	list := make([]any, 0, len(rows))
	for _, r := range rows {
		obj := map[string]any{"endpoint": r.Endpoint}
		if r.Err != nil {
			obj["error"] = humanize(r.Err.Error())
			if reason := errorReason(r.Err); reason != "" {
				obj["reason"] = reason
			}
		} else {
			v, err := protoValue(r.Status)
			if err != nil {
				return err
			}
			obj["status"] = v
			// ready: what /readyz answers (status.ready is the leader's
			// readiness to serve leader requests, false on followers).
			obj["ready"] = statusReady(r.Status)
		}
		list = append(list, obj)
	}
	return p.write(map[string]any{"endpoints": list}, true)
}

func (p jsonPrinter) Members(m *pb.MembersResponse) error { return p.proto(m) }

// DomainMembers writes {"domain", "holder", "epoch", "members": [...]}.
func (p jsonPrinter) DomainMembers(d *pb.Domain) error {
	return protoList(p, "members", d.GetMembers(), map[string]any{"domain": d.GetName(), "holder": d.GetHolder(),
		"epoch": json.Number(u64(d.GetEpoch()))})
}
func (p jsonPrinter) LeaderTransfer(r *pb.TransferLeadershipResponse) error {
	return p.proto(r)
}
func (p jsonPrinter) Snapshot(r *pb.SnapshotResponse) error { return p.proto(r) }
func (p jsonPrinter) Domain(d *pb.Domain) error             { return p.proto(d) }
func (p jsonPrinter) Deployment(d *pb.Deployment) error     { return p.proto(d) }
func (p jsonPrinter) ReleaseDecision(d *pb.ReleaseDecision) error {
	return p.proto(d)
}
func (p jsonPrinter) Domains(ds []*pb.DomainSummary) error {
	return protoList(p, "domains", ds, nil)
}
func (p jsonPrinter) Authority(r *pb.AuthorityResponse) error { return p.proto(r) }

// promotionJSON is a promote result: the explanation artifact (the same
// one explain prints) plus what the call itself did. The header (who
// served it) is left out, so a retried promotion prints what the first did.
type promotionJSON struct {
	Committed   bool                `json:"committed"`
	Duplicate   bool                `json:"duplicate"`
	Lifecycle   []string            `json:"lifecycle"`
	Explanation *render.Explanation `json:"explanation"`
}

func (p jsonPrinter) Promotion(r *pb.PromoteResponse) error {
	lc := r.GetLifecycle()
	if lc == nil {
		lc = []string{}
	}
	return p.write(promotionJSON{Committed: r.GetCommitted(), Duplicate: r.GetDuplicate(), Lifecycle: lc,
		Explanation: render.Explain(r.GetRecord())}, true)
}

// Attempt prints the explanation artifact (render.Explain): fixed
// field order, byte-identical from every server.
func (p jsonPrinter) Attempt(r *pb.AttemptRecord) error {
	b, err := render.ExplanationJSON(r)
	if err != nil {
		return err
	}
	_, err = p.w.Write(b)
	return err
}

type historyJSON struct {
	Domain  string                `json:"domain"`
	Records []*render.Explanation `json:"records"`
}

func (p jsonPrinter) History(domain string, rs []*pb.AttemptRecord) error {
	h := historyJSON{Domain: domain, Records: []*render.Explanation{}}
	for _, r := range rs {
		h.Records = append(h.Records, render.Explain(r))
	}
	return p.write(h, true)
}

// Event writes one JSON line per event (the same form as authorityd's
// --event-log).
func (p jsonPrinter) Event(e *pb.Event) error {
	b, err := render.EventLine(e)
	if err != nil {
		return err
	}
	_, err = p.w.Write(b)
	return err
}

func (p jsonPrinter) Advance(a *pb.WatermarkAdvance) error { return p.proto(a) }
func (p jsonPrinter) Watermark(domain string, w *pb.Watermark) error {
	obj := map[string]any{"domain": domain}
	if w != nil {
		v, err := protoValue(w)
		if err != nil {
			return err
		}
		obj["watermark"] = v
	}
	return p.write(obj, true)
}

// LeaseEvent writes one line per event.
func (p jsonPrinter) LeaseEvent(e leaseEvent) error {
	obj := map[string]any{"event": e.Event, "domain": e.Domain, "node": e.Node, "epoch": e.Epoch}
	if e.DeadlineMs != nil {
		obj["deadline_ms_from_now"] = *e.DeadlineMs
	}
	if e.Err != nil {
		obj["error"] = e.Err.Error()
		if r := errorReason(e.Err); r != "" {
			obj["reason"] = r
		}
	}
	return p.write(obj, false)
}

// ---- text ----

// textPrinter writes stable human-readable text: fixed field order, tables
// aligned with tabwriter, the FSM's own renderers for domains and attempts.
type textPrinter struct{ w io.Writer }

func (p textPrinter) table(header string, rows [][]string) error {
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

func (p textPrinter) Status(rows []statusRow) error {
	var out [][]string
	for _, r := range rows {
		if r.Err != nil {
			out = append(out, []string{r.Endpoint, "-", "error: " + humanize(describeError(r.Err))})
			continue
		}
		s, h := r.Status, r.Status.GetHeader()
		out = append(out, []string{r.Endpoint, s.GetNodeId(), s.GetRaftState(), orDash(h.GetLeaderId()), u64(h.GetTerm()),
			u64(s.GetCommitIndex()), u64(h.GetAppliedIndex()), u64(s.GetLastIndex()), fmt.Sprint(statusReady(s)),
			u64(s.GetDomains()), s.GetStateHash()})
	}
	return p.table("ENDPOINT\tNODE\tSTATE\tLEADER\tTERM\tCOMMIT\tAPPLIED\tLAST\tREADY\tDOMAINS\tSTATE_HASH", out)
}

func (p textPrinter) Members(m *pb.MembersResponse) error {
	var out [][]string
	for _, s := range m.GetServers() {
		out = append(out, []string{s.GetId(), s.GetRaftAddress(), orDash(s.GetGrpcAddress()), s.GetSuffrage(), fmt.Sprint(s.GetLeader())})
	}
	return p.table("ID\tRAFT_ADDRESS\tGRPC_ADDRESS\tSUFFRAGE\tLEADER", out)
}

func (p textPrinter) DomainMembers(d *pb.Domain) error {
	var out [][]string
	for _, m := range d.GetMembers() {
		holder := ""
		if m.GetId() == d.GetHolder() {
			holder = "yes"
		}
		out = append(out, []string{m.GetId(), orDash(m.GetAddress()), fmt.Sprint(m.GetPriority()),
			strings.ToLower(strings.TrimPrefix(m.GetState().String(), "MEMBER_STATE_")), orDash(holder)})
	}
	return p.table("MEMBER\tADDRESS\tPRIORITY\tSTATE\tHOLDER", out)
}

// statusReady is what the server's /readyz answers: it knows a raft
// leader; the leader itself must also serve leader requests (the status's
// ready field, which is true on the ready leader only).
func statusReady(s *pb.StatusResponse) bool {
	if s.GetRaftState() == "Leader" {
		return s.GetReady()
	}
	return s.GetHeader().GetLeaderId() != ""
}

func (p textPrinter) LeaderTransfer(r *pb.TransferLeadershipResponse) error {
	_, err := fmt.Fprintf(p.w, "leader is now %s\n", orDash(r.GetNewLeaderId()))
	return err
}

func (p textPrinter) Snapshot(r *pb.SnapshotResponse) error {
	_, err := fmt.Fprintf(p.w, "snapshot taken on %s at index %d\n", orDash(r.GetHeader().GetServedBy()), r.GetIndex())
	return err
}

func (p textPrinter) Domain(d *pb.Domain) error {
	_, err := io.WriteString(p.w, fsm.DescribeDomain(d))
	return err
}

func (p textPrinter) ReleaseDecision(d *pb.ReleaseDecision) error {
	_, err := io.WriteString(p.w, fsm.DescribeReleaseDecision(d))
	return err
}

func (p textPrinter) Deployment(d *pb.Deployment) error {
	_, err := io.WriteString(p.w, fsm.DescribeDeployment(d))
	return err
}

func (p textPrinter) Domains(ds []*pb.DomainSummary) error {
	var out [][]string
	for _, d := range ds {
		out = append(out, []string{d.GetName(), kindName(d.GetKind()), u64(d.GetEpoch()), orDash(d.GetHolder()),
			fmt.Sprint(d.GetReleased()), u64(uint64(d.GetMembers())), fsm.DescribeWatermark(d.GetWatermark())})
	}
	return p.table("NAME\tKIND\tEPOCH\tHOLDER\tRELEASED\tMEMBERS\tWATERMARK", out)
}

func (p textPrinter) Authority(r *pb.AuthorityResponse) error {
	_, err := fmt.Fprintf(p.w, "domain %s holder=%s epoch=%d log_index=%d\n", r.GetDomain(), r.GetHolder(), r.GetEpoch(), r.GetLogIndex())
	return err
}

func (p textPrinter) Promotion(r *pb.PromoteResponse) error {
	if _, err := io.WriteString(p.w, fsm.DescribeAttempt(r.GetRecord())); err != nil {
		return err
	}
	_, err := fmt.Fprintf(p.w, "  dry_run=%t committed=%t duplicate=%t lifecycle=%s\n", r.GetRecord().GetRequest().GetDryRun(),
		r.GetCommitted(), r.GetDuplicate(), orDash(strings.Join(r.GetLifecycle(), ",")))
	return err
}

func (p textPrinter) Attempt(r *pb.AttemptRecord) error {
	_, err := io.WriteString(p.w, fsm.DescribeAttempt(r))
	return err
}

func (p textPrinter) History(_ string, rs []*pb.AttemptRecord) error {
	var out [][]string
	for _, r := range rs {
		outcome := "ALLOWED"
		if !r.GetDecision().GetAllowed() {
			outcome = "DENIED " + r.GetDecision().GetDenialReason()
		}
		q := r.GetRequest()
		out = append(out, []string{u64(r.GetLogIndex()), q.GetRequestId(), q.GetCandidate(),
			fmt.Sprintf("%d->%d", r.GetEpochBefore(), r.GetEpochAfter()),
			fmt.Sprintf("%s->%s", orDash(r.GetHolderBefore()), orDash(r.GetHolderAfter())), outcome})
	}
	return p.table("INDEX\tREQUEST_ID\tCANDIDATE\tEPOCH\tHOLDER\tOUTCOME", out)
}

// Event prints one event per line: the leader-stamped time (UTC), the
// index, the type, then key=value pairs. Values come from callers (a
// promotion's reason, member ids): one with a space, a quote, an equals
// sign or anything unprintable is printed Go-quoted, so a value can never
// end the line, forge another event or reach the terminal as a control
// sequence.
func (p textPrinter) Event(e *pb.Event) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %d.%d %s domain=%s epoch=%d holder=%s", stampText(e.GetStampedUnixMs()), e.GetIndex(), e.GetSeq(),
		textValue(e.GetType()), textValue(orDash(e.GetDomain())), e.GetEpoch(), textValue(orDash(e.GetHolder())))
	for _, f := range e.GetFields() {
		fmt.Fprintf(&b, " %s=%s", textValue(f.GetKey()), textValue(f.GetValue()))
	}
	b.WriteByte('\n')
	_, err := io.WriteString(p.w, b.String())
	return err
}

func (p textPrinter) Advance(a *pb.WatermarkAdvance) error {
	_, err := fmt.Fprintf(p.w, "watermark of %s advanced by %s: epoch=%d lsn=%d hash=%s visible_commit_id=%d\n",
		a.GetDomain(), a.GetHolder(), a.GetEpoch(), a.GetLsn(), hex.EncodeToString(a.GetHash()), a.GetVisibleCommitId())
	return err
}

func (p textPrinter) Watermark(domain string, w *pb.Watermark) error {
	_, err := fmt.Fprintf(p.w, "reported; watermark of %s: %s\n", domain, fsm.DescribeWatermark(w))
	return err
}

func (p textPrinter) LeaseEvent(e leaseEvent) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s domain=%s node=%s epoch=%d", e.Event, e.Domain, e.Node, e.Epoch)
	if e.DeadlineMs != nil {
		fmt.Fprintf(&b, " deadline_ms_from_now=%d", *e.DeadlineMs)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, " error=%q", describeError(e.Err))
	}
	b.WriteByte('\n')
	_, err := io.WriteString(p.w, b.String())
	return err
}

func u64(v uint64) string { return fmt.Sprint(v) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func kindName(k pb.DomainKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "DOMAIN_KIND_"))
}

// textValue returns s as it is when it is a plain token, else Go-quoted
// (strconv.Quote escapes control characters, so nothing reaches the
// terminal raw).
func textValue(s string) string {
	if s == "" {
		return `""`
	}
	for _, r := range s {
		if r == ' ' || r == '"' || r == '=' || r == '\\' || !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}

// stampText renders a leader-stamped time in milliseconds as RFC 3339 UTC
// ("-" when the event carries none).
func stampText(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
}
