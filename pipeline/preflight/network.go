package preflight

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// maxListed bounds how many unreachable targets a detail names.
const maxListed = 10

// NetworkTargets resolves the network check's targets: the inventory
// group's hosts, then the Targets entries (exact duplicates dropped).
func NetworkTargets(n NetworkConfig) ([]Target, error) {
	var out []Target
	if n.Inventory != "" {
		inv, err := LoadInventory(n.Inventory)
		if err != nil {
			return nil, err
		}
		ts, err := inv.Targets(n.InventoryGroup, n.TargetPort)
		if err != nil {
			return nil, fmt.Errorf("inventory: %w", err)
		}
		out = ts
	}
	for _, t := range n.Targets {
		host, port, err := net.SplitHostPort(t)
		if err != nil {
			return nil, fmt.Errorf("target %s: %v", quote(t), err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("target %s: bad port", quote(t))
		}
		out = append(out, Target{Name: t, Address: host, Port: p})
	}
	if len(out) > MaxHosts {
		return nil, fmt.Errorf("%d targets, at most %d", len(out), MaxHosts)
	}
	seen := map[Target]bool{}
	dedup := out[:0]
	for _, t := range out {
		if !seen[t] {
			seen[t] = true
			dedup = append(dedup, t)
		}
	}
	return dedup, nil
}

func checkNetwork(ctx context.Context, cfg Config, targets []Target) Result {
	n := cfg.Network
	if n.Inventory == "" && len(n.Targets) == 0 {
		return Result{Passed: true, Skipped: true, Detail: "no inventory or targets configured"}
	}
	timeout := time.Duration(n.ConnectTimeout)
	r := Result{Threshold: "every target accepts TCP within " + timeout.String()}
	if len(targets) == 0 {
		r.Detail = fmt.Sprintf("no hosts in group %s of the inventory", quote(n.InventoryGroup))
		return r
	}
	dial := cfg.Probes.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	errs := make([]error, len(targets))
	sem := make(chan struct{}, n.Parallelism)
	done := make(chan struct{}, len(targets))
	for i, t := range targets {
		go func() {
			defer func() { done <- struct{}{} }()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			c, err := dial(cctx, "tcp", t.Endpoint())
			if err != nil {
				errs[i] = err
				return
			}
			_ = c.Close()
		}()
	}
	for range targets {
		<-done
	}
	var failed []string
	for i, t := range targets {
		if errs[i] == nil {
			continue
		}
		if len(failed) < maxListed {
			name := t.Endpoint()
			if t.Name != name {
				name = t.Name + " (" + name + ")"
			}
			failed = append(failed, name+": "+dialReason(errs[i]))
		}
	}
	nFailed := 0
	for _, e := range errs {
		if e != nil {
			nFailed++
		}
	}
	r.Observed = fmt.Sprintf("%d/%d reachable", len(targets)-nFailed, len(targets))
	r.Passed = nFailed == 0
	if r.Passed {
		r.Detail = fmt.Sprintf("all %d target(s) accept TCP connections", len(targets))
		return r
	}
	r.Detail = "unreachable: " + strings.Join(failed, "; ")
	if nFailed > len(failed) {
		r.Detail += fmt.Sprintf("; and %d more", nFailed-len(failed))
	}
	return r
}

// dialReason is a short reason for a failed connection.
func dialReason(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timed out"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "no route"
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return "name not resolved"
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Err != nil {
		return opErr.Err.Error()
	}
	return err.Error()
}
