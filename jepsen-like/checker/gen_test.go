package checker

import (
	"fmt"
	"math/rand"

	"github.com/aerodb/authority/jepsen-like/history"
)

// genHistory builds a history that is linearizable by construction: each
// operation takes effect at a point inside [invoke, completion] and the
// points are applied in order to a per-domain (epoch, holder, released)
// state. Clients are sequential and overlap one another; a fraction of the
// writes end in info (unknown), after which the client continues under a
// new process id. Domains: d0..d(domains-1).
func genHistory(seed int64, domains, clients, opsTotal int, infoRate float64) []history.Record {
	rng := rand.New(rand.NewSource(seed))
	var out []history.Record
	type client struct {
		process int
		busyTo  int64
	}
	nextProcess := 0
	for d := 0; d < domains; d++ {
		domain := fmt.Sprintf("d%d", d)
		epoch, holder, released := uint64(1), "h0", false
		cs := make([]*client, clients)
		for i := range cs {
			cs[i] = &client{process: nextProcess}
			nextProcess++
		}
		t := int64(1000)
		req := 0
		for n := 0; n < opsTotal/domains; {
			t += 1 + rng.Int63n(8)
			var c *client
			for tries := 0; tries < 4*clients; tries++ {
				if cand := cs[rng.Intn(clients)]; cand.busyTo < t {
					c = cand
					break
				}
			}
			if c == nil {
				continue
			}
			call := c.busyTo + 1 + rng.Int63n(t-c.busyTo)
			ret := t + 1 + rng.Int63n(60)
			inv := history.Record{Kind: history.KindOp, Time: call, Process: c.process, Type: history.Invoke, Domain: domain}
			done := history.Record{Kind: history.KindOp, Time: ret, Process: c.process, Type: history.OK, Domain: domain}
			unknown := rng.Float64() < infoRate
			happened := !unknown || rng.Intn(2) == 0
			e0, h0, rel0 := epoch, holder, released
			switch r := rng.Float64(); {
			case r < 0.55:
				inv.F = history.FRead
				done.Value = history.Value{Epoch: epoch, Holder: holder}
			case r < 0.8:
				inv.F = history.FPromote
				req++
				inv.RequestID = fmt.Sprintf("%s-r%d", domain, req)
				cand := fmt.Sprintf("h%d", rng.Intn(4))
				expected := epoch
				if rng.Intn(3) == 0 && epoch > 1 {
					expected = epoch - 1 // stale: denied
				}
				inv.Value = history.Value{Holder: cand, ExpectedEpoch: expected}
				if expected == epoch {
					epoch, holder, released = epoch+1, cand, false
					done.Value = history.Value{Epoch: epoch, Holder: cand, Outcome: history.OutcomeAllowed}
				} else {
					done.Value = history.Value{Epoch: epoch, Holder: holder, Outcome: history.OutcomeDenied}
				}
			case r < 0.9:
				inv.F = history.FAcquire
				h := fmt.Sprintf("h%d", rng.Intn(4))
				inv.Value = history.Value{Holder: h}
				epoch, holder, released = epoch+1, h, false
				done.Value = history.Value{Epoch: epoch, Holder: h}
			default:
				inv.F = history.FRelease
				inv.Value = history.Value{Holder: holder, Epoch: epoch}
				if released {
					inv.Value.Epoch = epoch + 7 // fenced: fails
					done.Type = history.Fail
				} else {
					released = true
				}
			}
			done.F, done.RequestID = inv.F, inv.RequestID
			out = append(out, inv)
			if !happened {
				epoch, holder, released = e0, h0, rel0
			}
			if unknown {
				// Unknown outcome: it happened or not, but the client never
				// learned which; it goes on as a new process.
				out = append(out, history.Record{Kind: history.KindOp, Time: ret, Process: c.process, Type: history.Info, F: inv.F,
					Domain: domain, RequestID: inv.RequestID, Error: "deadline exceeded"})
				c.process = nextProcess
				nextProcess++
			} else {
				out = append(out, done)
			}
			c.busyTo = ret
			n++
		}
	}
	return out
}
