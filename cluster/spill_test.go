package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/internal/spillfile"
	"github.com/aerodb/authority/promotion"
	"google.golang.org/protobuf/proto"
)

// Every server spills its cold history to unlinked files in its data dir
// (none shows in the directory); across a restart from a snapshot and the
// log each server rebuilds them, a file a crash left linked is swept, and
// every server answers the same history.
func TestHistorySpillAcrossRestart(t *testing.T) {
	c := newTestCluster(t, 3)
	ctx := context.Background()
	l := c.leader()
	setup(t, l.svc)
	// n1's lease is valid: each promotion is denied and recorded; the
	// denied ring (64) turns over and segments of 32 fill and spill.
	for i := range 80 {
		_, err := l.svc.Promote(ctx, promoteReq(fmt.Sprintf("denied-%d", i), "n2", 1))
		var d *promotion.DeniedError
		if !errors.As(err, &d) {
			t.Fatalf("promotion %d during a valid lease: %v", i, err)
		}
	}
	c.converge()
	want := historyOf(t, l.node.FSM())
	for i, m := range c.members {
		if st := m.node.FSM().SpillStats(); !st.Enabled || st.LiveBytes == 0 || st.Err != nil {
			t.Fatalf("%s: spill %+v", nodeID(i), st)
		}
		noSpillFiles(t, c.dirs[i])
	}
	// A snapshot on every server, so that the restart restores one.
	for i, m := range c.members {
		if err := m.node.Raft().Snapshot().Error(); err != nil {
			t.Fatalf("%s: snapshot: %v", nodeID(i), err)
		}
	}
	c.stopAll()
	leftover := filepath.Join(c.dirs[1], spillfile.Prefix+"crashed")
	if err := os.WriteFile(leftover, []byte("left by a crash"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.startAll()
	c.converge()
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Fatalf("a leftover spill file was not swept: %v", err)
	}
	for i, m := range c.members {
		st := m.node.FSM().SpillStats()
		if !st.Enabled || st.LiveBytes == 0 || st.Err != nil {
			t.Fatalf("%s after restart: spill %+v", nodeID(i), st)
		}
		if got := historyOf(t, m.node.FSM()); len(got) != len(want) {
			t.Fatalf("%s after restart: %d records, want %d", nodeID(i), len(got), len(want))
		} else {
			for k := range got {
				if !proto.Equal(got[k], want[k]) {
					t.Fatalf("%s after restart: record %d differs", nodeID(i), k)
				}
			}
		}
		noSpillFiles(t, c.dirs[i])
	}
}

func historyOf(t *testing.T, f *fsm.FSM) []proto.Message {
	t.Helper()
	page, ok := f.History("db1", 0, fsm.MaxHistoryPage, true)
	if !ok || page.More || len(page.Records) < 64 {
		t.Fatalf("history of db1: %d records, more %v", len(page.Records), page.More)
	}
	out := make([]proto.Message, len(page.Records))
	for i, r := range page.Records {
		out[i] = r
	}
	return out
}

func noSpillFiles(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), spillfile.Prefix) {
			t.Fatalf("%s holds a linked spill file %s", dir, e.Name())
		}
	}
}
