// Package agent is a lease-holder process of the fault-injection runs: it
// acquires a lock domain through the client library and, while its lease is
// held (Lost() open and the local deadline not passed), writes
// (domain, epoch, seq) to the fenced resource every Interval. It records its
// acquires and writes as operations and its belief intervals (holds / lost)
// into its own history file. It runs as its own process (cmd/jepsen-agent)
// so a nemesis can pause it with SIGSTOP.
//
// Each write is prepared after the lease check and sent WorkDelay later:
// that window is where a pause makes a stale write (the holder checked its
// lease, was paused past its TTL, then acted), which only the fenced
// resource can stop.
package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/jepsen-like/fenced"
	"github.com/aerodb/authority/jepsen-like/history"
	"google.golang.org/grpc/credentials"
)

// Config of an agent.
type Config struct {
	Endpoints []string
	Domain    string
	Holder    string
	Process   int
	FencedURL string
	History   *history.Writer
	Interval  time.Duration // between writes (default 50 ms)
	WorkDelay time.Duration // between the lease check and the write (default 40 ms)
	// Margin is the client library's lease margin (0: the library's
	// default). The negative control sets the smallest it accepts, 1 ns.
	Margin time.Duration
	// Credentials dial the servers (a node:<Holder> certificate; nil:
	// plaintext, for --insecure servers).
	Credentials credentials.TransportCredentials
}

// Run acquires and writes until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Interval <= 0 {
		cfg.Interval = 50 * time.Millisecond
	}
	if cfg.WorkDelay <= 0 || cfg.WorkDelay >= cfg.Interval {
		cfg.WorkDelay = cfg.Interval * 4 / 5
	}
	c, err := client.DialConfig(ctx, client.Config{Endpoints: cfg.Endpoints, Credentials: cfg.Credentials, PinEndpoints: true, RequestTimeout: time.Second, MaxRetryDelay: 200 * time.Millisecond})
	if err != nil {
		return err
	}
	defer c.Close()
	h := cfg.History
	hc := &http.Client{Timeout: time.Second}
	var seq, prevEpoch uint64
	for ctx.Err() == nil {
		h.Add(history.Record{Kind: history.KindOp, Type: history.Invoke, Process: cfg.Process, F: history.FAcquire, Domain: cfg.Domain,
			Value: history.Value{Holder: cfg.Holder}})
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		var opts []client.LeaseOption
		if cfg.Margin > 0 {
			opts = append(opts, client.WithMargin(cfg.Margin))
		}
		lease, err := c.Acquire(actx, cfg.Domain, cfg.Holder, opts...)
		cancel()
		if err != nil {
			typ := acquireOutcome(ctx, err)
			h.Add(history.Record{Kind: history.KindOp, Type: typ, Process: cfg.Process, F: history.FAcquire, Domain: cfg.Domain,
				Value: history.Value{Holder: cfg.Holder}, Error: err.Error()})
			sleep(ctx, 100*time.Millisecond)
			continue
		}
		epoch := lease.Epoch()
		if epoch != 0 && epoch == prevEpoch {
			// The library resolved an unknown attempt by reading the
			// domain back held by us at our previous epoch: that is our
			// earlier grant, so whether this acquire did anything is
			// unknown (it granted nothing new).
			h.Add(history.Record{Kind: history.KindOp, Type: history.Info, Process: cfg.Process, F: history.FAcquire, Domain: cfg.Domain,
				Value: history.Value{Holder: cfg.Holder}, Error: fmt.Sprintf("acquire returned our previous epoch %d", epoch)})
		} else {
			h.Add(history.Record{Kind: history.KindOp, Type: history.OK, Process: cfg.Process, F: history.FAcquire, Domain: cfg.Domain,
				Value: history.Value{Holder: cfg.Holder, Epoch: epoch}})
		}
		prevEpoch = epoch
		h.Add(history.Record{Kind: history.KindAgent, Type: history.AgentHolds, Process: cfg.Process, Domain: cfg.Domain,
			Value: history.Value{Holder: cfg.Holder, Epoch: epoch}})
		why := ""
	hold:
		for {
			select {
			case <-ctx.Done():
				why = "stopped"
				break hold
			case <-lease.Lost():
				why = fmt.Sprint(lease.Err())
				break hold
			default:
			}
			if err := lease.Check(); err != nil { // reads the clock: a pause past the deadline ends it here
				why = fmt.Sprint(err)
				break hold
			}
			// The lease was checked: prepare the write, then send it.
			time.Sleep(cfg.WorkDelay)
			seq++
			w := fenced.Write{Domain: cfg.Domain, Epoch: epoch, Holder: cfg.Holder, Seq: seq}
			h.Add(history.Record{Kind: history.KindOp, Type: history.Invoke, Process: cfg.Process, F: history.FWrite, Domain: cfg.Domain,
				Value: history.Value{Holder: cfg.Holder, Epoch: epoch, Seq: seq}})
			typ, msg := write(hc, cfg.FencedURL, w)
			h.Add(history.Record{Kind: history.KindOp, Type: typ, Process: cfg.Process, F: history.FWrite, Domain: cfg.Domain,
				Value: history.Value{Holder: cfg.Holder, Epoch: epoch, Seq: seq}, Error: msg})
			sleep(ctx, cfg.Interval-cfg.WorkDelay)
		}
		// The belief ended at the local deadline at the latest: the agent
		// never starts a write past it (a write prepared before it may
		// still arrive later: that is what fencing is for).
		end := history.Now()
		if d := lease.Deadline(); !d.IsZero() {
			if late := time.Since(d); late > 0 {
				end -= int64(late)
			}
		}
		h.Add(history.Record{Kind: history.KindAgent, Type: history.AgentLost, Process: cfg.Process, Domain: cfg.Domain, Time: end,
			Value: history.Value{Holder: cfg.Holder, Epoch: epoch}, Info: why})
		if ctx.Err() != nil {
			rctx, cancel := context.WithTimeout(context.Background(), time.Second)
			lease.Release(rctx) // best effort; not recorded (the run is over)
			cancel()
			break
		}
		// Let our old lease expire on the service before acquiring again
		// (a new leader may restart its TTL).
		sleep(ctx, 2*lease.TTL())
	}
	return nil
}

// acquireOutcome classifies a failed acquire. The library returns an error
// other than ErrOutcomeUnknown only when the acquire certainly did not take
// effect — except when the grant committed and confirming it failed: an
// acquire that took most of the TTL (e.g. across a kill-all) waits for a
// first renewal, and returns its failure ("first renewal of ...: context
// deadline exceeded", or why the lease was lost) although the lease was
// granted. Those errors, an unresolved outcome and the run ending are info;
// anything else (held by another, not the leader, unreachable) is fail.
func acquireOutcome(ctx context.Context, err error) string {
	if ctx.Err() != nil {
		return history.Info
	}
	for _, unknown := range []error{client.ErrOutcomeUnknown, context.DeadlineExceeded, context.Canceled,
		client.ErrLeaseLost, client.ErrLeaseExpired, client.ErrFenced, client.ErrNoLease, client.ErrNotFound,
		client.ErrPermissionDenied, client.ErrClosed, client.ErrReleased} {
		if errors.Is(err, unknown) {
			return history.Info
		}
	}
	return history.Fail
}

func write(hc *http.Client, url string, w fenced.Write) (string, string) {
	b, _ := json.Marshal(w)
	resp, err := hc.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		return history.Info, err.Error()
	}
	defer resp.Body.Close()
	var rep fenced.Reply
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		return history.Info, err.Error()
	}
	if !rep.Accepted {
		return history.Fail, fmt.Sprintf("rejected: highest epoch %d", rep.Highest)
	}
	return history.OK, ""
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
