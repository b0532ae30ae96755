package compare

import (
	"context"
	"fmt"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
)

// Leader kill -9 → first successful write: the leader is killed, and a
// client configured with all three endpoints writes (each attempt bounded
// by a second, retried at once) until one write succeeds; the median over
// cfg.Failovers kills. The killed server restarts and the cluster settles
// before the next kill.
var failoverFamily = Family{
	Name: "failover",
	Rows: []Row{{ID: "failover", Label: "Leader kill -9 → first successful write, median", Unit: "s", Better: Lower, Win: "faster", Lose: "slower"}},
	Etcd: etcdFailover,
	Ours: oursFailover,
}

// firstWrite retries write until it succeeds (bounded by 60 s) and returns
// the time since start.
func firstWrite(tb testing.TB, start time.Time, write func(ctx context.Context, attempt int) error) time.Duration {
	for attempt := 0; time.Since(start) < time.Minute; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := write(ctx, attempt)
		cancel()
		if err == nil {
			return time.Since(start)
		}
	}
	tb.Fatal("no successful write within 60 s of the leader's kill")
	return 0
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
