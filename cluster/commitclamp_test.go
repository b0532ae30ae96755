package cluster

import (
	"path/filepath"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
)

// A follower whose log ends in a deposed leader's uncommitted entries must
// not apply them when a new leader's empty probe carries a higher commit
// index (hashicorp/raft sets commit = min(leaderCommit, lastIndex); the
// Raft paper, and our transport wrapper, min(leaderCommit, last new
// entry)). Without clampedTransport this test fails: the follower applies
// "stale-a" and "stale-b", which no leader ever committed.
func TestFollowerNeverAppliesAStaleTail(t *testing.T) {
	_, trF := raft.NewInmemTransport("f")
	_, trL := raft.NewInmemTransport("l") // the deposed leader (term 2)
	_, trM := raft.NewInmemTransport("m") // the new leader (term 3)
	trL.Connect("f", trF)
	trM.Connect("f", trF)
	// Long timeouts: f stays a follower while the test plays both leaders.
	n, err := Open(Config{NodeID: "f", DataDir: filepath.Join(t.TempDir(), "f"), Transport: trF,
		HeartbeatTimeout: 10 * time.Second, ElectionTimeout: 10 * time.Second, LeaderLeaseTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	if err := n.Bootstrap([]Peer{{ID: "f", Address: "f"}, {ID: "l", Address: "l"}, {ID: "m", Address: "m"}}); err != nil {
		t.Fatal(err)
	}
	send := func(from *raft.InmemTransport, id string, term, prev, prevTerm, commit uint64, entries ...*raft.Log) {
		t.Helper()
		req := &raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id), Addr: []byte(id)},
			Term: term, PrevLogEntry: prev, PrevLogTerm: prevTerm, LeaderCommitIndex: commit, Entries: entries}
		var resp raft.AppendEntriesResponse
		if err := from.AppendEntries(raft.ServerID("f"), "f", req, &resp); err != nil || !resp.Success {
			t.Fatalf("append from %s (term %d, prev %d): success=%t err=%v", id, term, prev, resp.Success, err)
		}
	}
	create := func(index, term uint64, name string) *raft.Log {
		data, err := proto.Marshal(&pb.Command{Body: &pb.Command_CreateDomain{CreateDomain: &pb.CreateDomain{Name: name,
			Kind: pb.DomainKind_DOMAIN_KIND_LOCK, Policy: &pb.Policy{Mode: pb.PromotionMode_PROMOTION_MODE_MANUAL, LeaseTtlMs: 10_000, ReportMaxAgeMs: 30_000}}}})
		if err != nil {
			t.Fatal(err)
		}
		return &raft.Log{Index: index, Term: term, Type: raft.LogCommand, Data: data}
	}
	// Index 1 is the bootstrap configuration (term 1). The term-2 leader
	// replicates two entries to f only, committing nothing new.
	send(trL, "l", 2, 1, 1, 1, create(2, 2, "stale-a"), create(3, 2, "stale-b"))
	// The term-3 leader (elected without them) probes f with an empty
	// request at index 1 while its own commit index is already 5.
	send(trM, "m", 3, 1, 1, 5)
	// Then it replicates its own index 2, which overwrites the stale tail.
	send(trM, "m", 3, 1, 1, 2, create(2, 3, "fresh"))
	eventually(t, "index 2 applied", func() bool { return n.FSM().LastIndex() >= 2 })
	for _, name := range []string{"stale-a", "stale-b"} {
		if _, ok := n.FSM().Domain(name); ok {
			t.Errorf("the follower applied %q, an entry no leader committed", name)
		}
	}
	if _, ok := n.FSM().Domain("fresh"); !ok {
		t.Errorf("the committed entry was not applied")
	}
}

func TestClampCommit(t *testing.T) {
	for _, c := range []struct{ prev, entries, commit, want uint64 }{
		{prev: 1, entries: 0, commit: 5, want: 1}, // empty probe: only what it proves
		{prev: 1, entries: 2, commit: 5, want: 3}, // entries short of the commit index
		{prev: 1, entries: 4, commit: 5, want: 5}, // entries reach it: unchanged
		{prev: 9, entries: 0, commit: 7, want: 7}, // idle leader, follower caught up
		{prev: 0, entries: 0, commit: 0, want: 0}, // heartbeat
	} {
		req := &raft.AppendEntriesRequest{PrevLogEntry: c.prev, LeaderCommitIndex: c.commit, Entries: make([]*raft.Log, c.entries)}
		clampCommit(req)
		if req.LeaderCommitIndex != c.want {
			t.Errorf("prev %d + %d entries, commit %d: clamped to %d, want %d", c.prev, c.entries, c.commit, req.LeaderCommitIndex, c.want)
		}
	}
}
