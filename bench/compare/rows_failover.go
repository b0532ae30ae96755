package compare

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// Leader kill -9 → first successful write: the leader is killed, and a
// client configured with all three endpoints starts a write every
// attemptEvery (each bounded by 5 s, running concurrently) until one
// succeeds: the time to that first success, median over cfg.Failovers
// kills. (Attempts started one after another with a timeout would measure
// the timeout: a write sent during the election waits for a leader.) The
// killed server restarts and the cluster settles before the next kill.
var failoverFamily = Family{
	Name: "failover",
	Rows: []Row{{ID: "failover", Label: "Leader kill -9 → first successful write, median", Unit: "s", Better: Lower, Win: "faster", Lose: "slower"}},
	Etcd: etcdFailover,
	Ours: oursFailover,
}

const attemptEvery = 25 * time.Millisecond

// firstWrite starts write(ctx, attempt) every attemptEvery until one
// succeeds (bounded by 60 s) and returns the time from start to the first
// success.
func firstWrite(tb testing.TB, start time.Time, write func(ctx context.Context, attempt int) error) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	won := make(chan time.Duration, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(attemptEvery)
	defer tick.Stop()
	for attempt := 0; ; attempt++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			actx, acancel := context.WithTimeout(ctx, 5*time.Second)
			defer acancel()
			if write(actx, attempt) == nil {
				select {
				case won <- time.Since(start):
				default:
				}
			}
		}()
		select {
		case d := <-won:
			cancel()
			return d
		case <-ctx.Done():
			tb.Fatal("no successful write within 60 s of the leader's kill")
			return 0
		case <-tick.C:
		}
	}
}

func etcdFailover(tb testing.TB, e *Etcd, cfg Config) Values {
	var d []time.Duration
	for k := range cfg.Failovers {
		leader := e.WaitLeader()
		start := time.Now()
		e.Kill(leader)
		d = append(d, firstWrite(tb, start, func(ctx context.Context, attempt int) error {
			_, err := e.Client.Put(ctx, fmt.Sprintf("/failover/%d/%d", k, attempt), "x")
			return err
		}))
		e.Restart(leader)
		e.WaitLeader()
	}
	return Values{V: map[string]float64{"failover": medianSeconds(d)},
		Notes: []string{fmt.Sprintf("etcd failover: N = %d, Put through a client of all 3 endpoints; each: %v", len(d), d)}}
}

func oursFailover(tb testing.TB, o *Ours, cfg Config) Values {
	var d []time.Duration
	for k := range cfg.Failovers {
		leader := o.Leader()
		start := time.Now()
		o.C.Kill(leader)
		d = append(d, firstWrite(tb, start, func(ctx context.Context, attempt int) error {
			_, err := o.Op.CreateDomain(ctx, fmt.Sprintf("failover-%d-%d", k, attempt), pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: 10_000})
			return err
		}))
		o.C.Restart(leader)
		o.Leader()
	}
	return Values{V: map[string]float64{"failover": medianSeconds(d)},
		Notes: []string{fmt.Sprintf("ours failover: N = %d, CreateDomain through a client of all 3 endpoints; each: %v", len(d), d)}}
}
