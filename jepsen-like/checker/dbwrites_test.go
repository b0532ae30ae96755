package checker

import (
	"strings"
	"testing"

	"github.com/aerodb/authority/jepsen-like/dbsim"
	"github.com/aerodb/authority/jepsen-like/history"
)

// dbRun builds a replica-quorum history with dbsim: n1 holds epoch 1 and
// writes lsn 1..3, shipped to n2 up to lsn 2 and to n3 up to lsn 3 (K = 1:
// all three acknowledged); then takeover of the candidate at epoch 2.
func dbRun(candidate string) []history.Record {
	ms := map[string]*dbsim.Member{"n1": {ID: "n1"}, "n2": {ID: "n2"}, "n3": {ID: "n3"}}
	var out []history.Record
	tm := int64(0)
	add := func(r history.Record) {
		tm++
		r.Time, r.Kind, r.Domain = tm, history.KindDB, "qdb"
		out = append(out, r)
	}
	takeover := func(m *dbsim.Member, epoch uint64) {
		l := m.Last()
		add(history.Record{Type: history.DBTakeover, Info: dbsim.Segments(m.WAL),
			Value: history.Value{Epoch: epoch, Holder: m.ID, Lsn: l.Lsn, Hash: dbsim.Hex(l.Hash)}})
	}
	takeover(ms["n1"], 1)
	for lsn := range 3 {
		r := ms["n1"].Append(1)
		if lsn < 2 {
			ms["n2"].Accept(1, ms["n1"].WAL, false)
		}
		ms["n3"].Accept(1, ms["n1"].WAL, false)
		add(history.Record{Type: history.DBAck, Value: history.Value{Epoch: 1, Holder: "n1", Lsn: r.Lsn, Hash: dbsim.Hex(r.Hash)}})
	}
	takeover(ms[candidate], 2)
	ms[candidate].Append(2)
	return out
}

func TestNoLostDBWritesCatchesABehindHolder(t *testing.T) {
	good := NoLostAcknowledgedDBWrites(Input{History: dbRun("n3")})
	expectValid(t, good, true)
	if good.Counts["acknowledged"] != 3 || good.Counts["promotions"] != 1 || good.Counts["checked_pairs"] != 3 {
		t.Errorf("counts %v", good.Counts)
	}
	bad := NoLostAcknowledgedDBWrites(Input{History: dbRun("n2")})
	expectValid(t, bad, false)
	if bad.Counts["lost"] != 1 || !strings.Contains(bad.Details, "write epoch 1 lsn 3") {
		t.Errorf("want lsn 3 lost: %v %s", bad.Counts, bad.Details)
	}
	// A holder whose lsn 3 is of another history (same counter, other hash).
	recs := dbRun("n3")
	for i := range recs {
		if recs[i].Type == history.DBTakeover && recs[i].Value.Epoch == 2 {
			recs[i].Info = "1:1-2,2:3-3"
			recs[i].Value.Hash = dbsim.Hex(mustRebuild(t, recs[i].Info)[2].Hash)
		}
	}
	replaced := NoLostAcknowledgedDBWrites(Input{History: recs})
	expectValid(t, replaced, false)
	if !strings.Contains(replaced.Details, "was replaced") {
		t.Errorf("want a replaced write: %s", replaced.Details)
	}
	// A takeover whose segments do not rebuild to its recorded last record.
	recs = dbRun("n3")
	recs[len(recs)-1].Value.Hash = "00"
	expectValid(t, NoLostAcknowledgedDBWrites(Input{History: recs}), false)
	// Takeovers without any acknowledged write would pass vacuously.
	expectValid(t, NoLostAcknowledgedDBWrites(Input{History: recs[:1]}), false)
	// No replica-quorum domain at all: nothing to check.
	expectValid(t, NoLostAcknowledgedDBWrites(Input{}), true)
}

func mustRebuild(t *testing.T, segs string) []dbsim.Record {
	t.Helper()
	wal, err := dbsim.Rebuild(segs)
	if err != nil {
		t.Fatal(err)
	}
	return wal
}
