package checker

import (
	"fmt"
	"sort"

	"github.com/aerodb/authority/jepsen-like/dbsim"
	"github.com/aerodb/authority/jepsen-like/history"
)

// NameNoLostDBWrites is the ninth checker: NoLostAcknowledgedDBWrites.
const NameNoLostDBWrites = "no-lost-acknowledged-db-writes"

// NoLostAcknowledgedDBWrites (AU-4 for replica-quorum domains,
// docs/DURABILITY.md): the workload simulates the database of its
// replica-quorum domains and records every write a holder acknowledged
// (KindDB ack: domain, epoch, lsn, chain hash) and every holder's WAL when it
// took over (KindDB takeover: its epoch and the WAL as epoch segments). Every
// acknowledged write of epoch e must be in the WAL of every holder that took
// over at an epoch above e — same chain hash at its lsn (rebuilt from the
// segments: hashes, never counters alone). Problems also: a takeover whose
// segments do not rebuild to its recorded last record, and two
// acknowledgements of one (domain, epoch, lsn) with different hashes.
// Counts: acknowledged writes, takeovers, promotions (takeovers after the
// first of a domain), (ack, later holder) pairs checked, writes lost.
func NoLostAcknowledgedDBWrites(in Input) Result {
	res := Result{Name: NameNoLostDBWrites, Valid: true, Counts: map[string]int{}}
	var problems []string
	type ack struct {
		epoch, lsn   uint64
		hash, holder string
		time         int64
	}
	type takeover struct {
		epoch  uint64
		holder string
		wal    []dbsim.Record
		time   int64
	}
	acks := map[string][]ack{}
	takeovers := map[string][]takeover{}
	first := map[[2]string]ack{}
	for _, r := range sortedHistory(in.History) {
		if r.Kind != history.KindDB {
			continue
		}
		switch r.Type {
		case history.DBAck:
			a := ack{epoch: r.Value.Epoch, lsn: r.Value.Lsn, hash: r.Value.Hash, holder: r.Value.Holder, time: r.Time}
			k := [2]string{r.Domain, fmt.Sprintf("%d/%d", a.epoch, a.lsn)}
			if f, ok := first[k]; ok {
				if f.hash != a.hash {
					problems = append(problems, fmt.Sprintf("domain %q: write epoch %d lsn %d acknowledged with hash %s and %s", r.Domain, a.epoch, a.lsn, f.hash, a.hash))
				}
				continue
			}
			first[k] = a
			acks[r.Domain] = append(acks[r.Domain], a)
		case history.DBTakeover:
			wal, err := dbsim.Rebuild(r.Info)
			if err == nil && uint64(len(wal)) != r.Value.Lsn {
				err = fmt.Errorf("%d records, last lsn recorded %d", len(wal), r.Value.Lsn)
			}
			if err == nil && len(wal) > 0 && dbsim.Hex(wal[len(wal)-1].Hash) != r.Value.Hash {
				err = fmt.Errorf("last hash %s, recorded %s", dbsim.Hex(wal[len(wal)-1].Hash), r.Value.Hash)
			}
			if err != nil {
				problems = append(problems, fmt.Sprintf("domain %q: takeover of %q at epoch %d: WAL %q: %v", r.Domain, r.Value.Holder, r.Value.Epoch, r.Info, err))
				continue
			}
			takeovers[r.Domain] = append(takeovers[r.Domain], takeover{epoch: r.Value.Epoch, holder: r.Value.Holder, wal: wal, time: r.Time})
		}
	}
	domains := sortedKeys(acks)
	for d := range takeovers {
		if _, ok := acks[d]; !ok {
			domains = append(domains, d)
		}
	}
	sort.Strings(domains)
	for _, d := range domains {
		res.Counts["acknowledged"] += len(acks[d])
		res.Counts["takeovers"] += len(takeovers[d])
		res.Counts["promotions"] += max(len(takeovers[d])-1, 0)
		for _, a := range acks[d] {
			for _, t := range takeovers[d] {
				if t.epoch <= a.epoch {
					continue
				}
				res.Counts["checked_pairs"]++
				switch {
				case a.lsn == 0 || a.lsn > uint64(len(t.wal)):
					res.Counts["lost"]++
					problems = append(problems, fmt.Sprintf("domain %q: write epoch %d lsn %d (acknowledged by %s at %d) is not in %s's WAL when it took over at epoch %d (at %d: %d records, %s)",
						d, a.epoch, a.lsn, a.holder, a.time, t.holder, t.epoch, t.time, len(t.wal), dbsim.Segments(t.wal)))
				case dbsim.Hex(t.wal[a.lsn-1].Hash) != a.hash:
					res.Counts["lost"]++
					problems = append(problems, fmt.Sprintf("domain %q: write epoch %d lsn %d hash %s (acknowledged by %s at %d) was replaced in %s's WAL when it took over at epoch %d (at %d: lsn %d is of epoch %d, hash %s)",
						d, a.epoch, a.lsn, a.hash, a.holder, a.time, t.holder, t.epoch, t.time, a.lsn, t.wal[a.lsn-1].Epoch, dbsim.Hex(t.wal[a.lsn-1].Hash)))
				}
			}
		}
	}
	res.Counts["domains"] = len(domains)
	switch {
	case len(problems) > 0:
		res.Valid = false
		res.Details = details(problems, 5)
	case len(domains) > 0 && res.Counts["acknowledged"] == 0:
		res.Valid = false
		res.Details = fmt.Sprintf("%d takeovers but no acknowledged database write: the check would pass vacuously", res.Counts["takeovers"])
	default:
		res.Details = fmt.Sprintf("%d acknowledged database writes, each in the WAL of every later holder (%d takeovers, %d promotions, %d pairs checked)",
			res.Counts["acknowledged"], res.Counts["takeovers"], res.Counts["promotions"], res.Counts["checked_pairs"])
	}
	return res
}
