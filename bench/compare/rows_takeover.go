package compare

import (
	"context"
	"fmt"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/internal/testcluster"
	"github.com/aerodb/authority/tlsfiles"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Holder SIGSTOP → another client holds it: a holder process takes a lock
// with a 2 s TTL and keeps it alive; it is SIGSTOPped, and a waiting client
// is timed from the stop until it holds the lock. etcd: concurrency.Mutex
// on a session of TTL 2 s (the waiter watches the holder's key); ours:
// Acquire with WithWait on a lock domain whose policy TTL is 2 s.
var takeoverFamily = Family{
	Name: "takeover",
	Rows: []Row{{ID: "takeover", Label: "Holder SIGSTOP → another client holds it, TTL 2 s, median", Unit: "s", Better: Lower, Win: "faster", Lose: "slower"}},
	Etcd: etcdTakeover,
	Ours: oursTakeover,
}

func etcdTakeover(tb testing.TB, e *Etcd, cfg Config) Values {
	var d []time.Duration
	for k := range cfg.Takeovers {
		lock := fmt.Sprintf("/takeover/%d", k)
		h := startHolder(tb, "etcd", e.Endpoints(), lock, e.files)
		s, err := concurrency.NewSession(e.Client, concurrency.WithTTL(2))
		must(tb, err)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		start := time.Now()
		h.stop()
		err = concurrency.NewMutex(s, lock).Lock(ctx)
		d = append(d, time.Since(start))
		cancel()
		must(tb, err)
		h.kill()
		s.Close()
	}
	return Values{V: map[string]float64{"takeover": medianSeconds(d)},
		Notes: []string{fmt.Sprintf("etcd takeover: N = %d, concurrency.Mutex, session TTL 2 s; each: %v", len(d), d)}}
}

func oursTakeover(tb testing.TB, o *Ours, cfg Config) Values {
	var d []time.Duration
	waiter := o.Node("waiter")
	for k := range cfg.Takeovers {
		lock := fmt.Sprintf("takeover-%d", k)
		_, err := o.Op.CreateDomain(context.Background(), lock, pb.DomainKind_DOMAIN_KIND_LOCK, &pb.Policy{LeaseTtlMs: 2000})
		must(tb, err)
		var files *tlsfiles.Files
		if o.cfg.TLS {
			f := testcluster.Files(tb, testcluster.Node(holderName))
			files = &f
		}
		h := startHolder(tb, "ours", o.C.Endpoints(), lock, files)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		start := time.Now()
		h.stop()
		l, err := waiter.Acquire(ctx, lock, "waiter", client.WithWait())
		d = append(d, time.Since(start))
		cancel()
		must(tb, err)
		h.kill()
		l.Release(context.Background())
	}
	return Values{V: map[string]float64{"takeover": medianSeconds(d)},
		Notes: []string{fmt.Sprintf("ours takeover: N = %d, Acquire WithWait, policy TTL 2 s; each: %v", len(d), d)}}
}
