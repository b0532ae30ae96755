package cluster

import (
	"sync"

	"github.com/hashicorp/raft"
)

// clampedTransport guards followers against a deviation of hashicorp/raft
// (v1.7.3, Raft.appendEntries) from the Raft paper. On AppendEntries a
// follower sets its commit index to min(LeaderCommitIndex, its own last
// log index); the paper says min(leaderCommit, index of last new entry).
// The two differ when the follower's log still ends in entries of an older
// term that the new leader has not overwritten yet (a deposed leader's
// uncommitted tail) and the request's entries stop before them — an empty
// probe, typically a retry built before the new leader appended anything
// but carrying its current commit index. The follower then marks the stale
// tail committed and applies it: its state machine diverges from every
// other node's, for good. The fault-injection soak found this (seed
// 485716565: a leader paused mid-proposal, then a majority/minority split;
// the deposed leader applied its own uncommitted promotion attempt and
// lease note, which the rest of the cluster never had).
//
// The wrapper passes every incoming RPC through unchanged except that an
// AppendEntries's LeaderCommitIndex is clamped to PrevLogEntry +
// len(Entries): the index up to which the request proves the follower's
// log equals the leader's. Heartbeats carry no commit index and take
// raft's fast path untouched. Liveness is unchanged: the leader's next
// request whose entries reach its commit index (or an empty one at its last
// index) carries the follower's commit index the rest of the way.
type clampedTransport struct {
	inner
	rpcs chan raft.RPC
	done chan struct{}
	once sync.Once
}

// inner is what the wrapper needs of the transport it wraps (raft's TCP
// and in-memory transports both provide it); promoted methods keep raft's
// optional interfaces (pre-vote, close) visible through the wrapper.
type inner interface {
	raft.Transport
	raft.WithClose
	raft.WithPreVote
}

// clampCommits wraps t, or returns it unchanged when it lacks what the
// wrapper needs (then raft runs on it as is).
func clampCommits(t raft.Transport) raft.Transport {
	in, ok := t.(inner)
	if !ok {
		return t
	}
	c := &clampedTransport{inner: in, rpcs: make(chan raft.RPC), done: make(chan struct{})}
	go c.forward()
	return c
}

// forward moves RPCs from the wrapped transport to raft, clamping each
// AppendEntries on the way. It ends when the transport is closed.
func (c *clampedTransport) forward() {
	src := c.inner.Consumer()
	for {
		select {
		case rpc := <-src:
			if req, ok := rpc.Command.(*raft.AppendEntriesRequest); ok {
				clampCommit(req)
			}
			select {
			case c.rpcs <- rpc:
			case <-c.done:
				return
			}
		case <-c.done:
			return
		}
	}
}

// clampCommit applies the paper's rule to one request.
func clampCommit(req *raft.AppendEntriesRequest) {
	if last := req.PrevLogEntry + uint64(len(req.Entries)); req.LeaderCommitIndex > last {
		req.LeaderCommitIndex = last
	}
}

// Consumer is where raft reads incoming RPCs.
func (c *clampedTransport) Consumer() <-chan raft.RPC { return c.rpcs }

// Close stops forwarding and closes the wrapped transport.
func (c *clampedTransport) Close() error {
	c.once.Do(func() { close(c.done) })
	return c.inner.Close()
}
