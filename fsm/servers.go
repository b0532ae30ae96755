package fsm

import (
	"fmt"
	"slices"
	"strings"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// Event types of leader observations (Note entries) and the server
// directory.
const (
	EventServerRegistered = "authority.server.registered"
	EventLeaderChanged    = "authority.leader.changed"
	EventLeaseExpired     = "authority.lease.expired"
	EventFencingRejected  = "authority.fencing.rejected"
	// A promotion request refused before the lifecycle (no intent), and a
	// dry run: coalesced per domain ("" when the name was unknown or
	// malformed) with a count; fields reason/dry_run and outcome/reason.
	EventPromotionRefused = "replication.promotion.refused"
	EventPromotionDryRun  = "replication.promotion.dry_run"
)

// noteEvents maps a Note's kind to its event type.
var noteEvents = map[string]string{
	pb.NoteLeaderChanged:    EventLeaderChanged,
	pb.NoteLeaseExpired:     EventLeaseExpired,
	pb.NoteFencingRejected:  EventFencingRejected,
	pb.NotePromotionRefused: EventPromotionRefused,
	pb.NotePromotionDryRun:  EventPromotionDryRun,
}

// maxAddress bounds a registered gRPC address.
const maxAddress = 256

// applyRegisterServer records a raft server's gRPC address.
func applyRegisterServer(f *FSM, e entry) *Result {
	c := e.cmd.GetRegisterServer()
	if err := ValidateName("server id", c.GetId()); err != nil {
		return failed(e.index, err)
	}
	if a := c.GetGrpcAddress(); a == "" || len(a) > maxAddress {
		return failed(e.index, fmt.Errorf("%w: server %q: gRPC address %q (want 1..%d bytes)", ErrInvalid, c.GetId(), a, maxAddress))
	}
	f.servers[c.Id] = c.GrpcAddress
	f.emit(e, EventServerRegistered, nil, "server_id", c.Id, "grpc_address", c.GrpcAddress)
	return &Result{}
}

// applyNote records a leader's observation in the event log; it changes no
// other state.
func applyNote(f *FSM, e entry) *Result {
	n := e.cmd.GetNote()
	typ, ok := noteEvents[n.GetKind()]
	if !ok {
		return failed(e.index, fmt.Errorf("%w: note kind %q", ErrInvalid, n.GetKind()))
	}
	var d *pb.Domain
	if n.GetDomain() != "" {
		var ok bool
		if d, ok = f.peek(n.GetDomain()); !ok {
			return failed(e.index, fmt.Errorf("%w: domain %q", ErrNotFound, n.GetDomain()))
		}
	}
	var fields []string
	for _, o := range n.GetFields() {
		fields = append(fields, o.GetKey(), o.GetValue())
	}
	f.emit(e, typ, d, fields...)
	return &Result{}
}

// ServerAddresses returns the registered gRPC address of every server.
func (f *FSM) ServerAddresses() map[string]string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string]string, len(f.servers))
	for k, v := range f.servers {
		out[k] = v
	}
	return out
}

func (f *FSM) serverDirectory() *pb.ServerDirectory {
	dir := &pb.ServerDirectory{}
	for id, addr := range f.servers {
		dir.Servers = append(dir.Servers, &pb.ServerAddress{Id: id, GrpcAddress: addr})
	}
	slices.SortFunc(dir.Servers, func(a, b *pb.ServerAddress) int { return strings.Compare(a.Id, b.Id) })
	return dir
}
