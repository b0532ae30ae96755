package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/tlsfiles"
)

// These examples need a running cluster, so they are compiled but not run
// (no Output comments). The certificates are those `authorityctl certs init
// --nodes primary-1 --deployers runner-a certs` writes: the servers
// authorize each call by the identity in the client's certificate.

func ExampleDialConfig() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Mutual TLS: the CA bundle verifies the servers, the certificate
	// (reloaded when it changes on disk) is who we are. A reader may read.
	src, err := tlsfiles.Load(tlsfiles.Files{CA: "certs/ca.crt", Cert: "certs/reader-viewer.crt", Key: "certs/reader-viewer.key"}, tlsfiles.Options{})
	if err != nil {
		log.Fatal(err)
	}
	// Any subset of the servers works: the client finds the leader.
	c, err := client.DialConfig(ctx, client.Config{
		Endpoints:   []string{"127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"},
		Credentials: src.Credentials(true),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	d, err := c.GetDomain(ctx, "orders")
	switch {
	case errors.Is(err, client.ErrNotFound):
		fmt.Println("no such domain")
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Printf("orders: epoch %d held by %s\n", d.GetEpoch(), d.GetHolder())
	}
}

func ExampleClient_Promote() {
	ctx := context.Background()
	// Promotions are administrative: an operator's certificate.
	src, err := tlsfiles.Load(tlsfiles.Files{CA: "certs/ca.crt", Cert: "certs/operator-admin.crt", Key: "certs/operator-admin.key"}, tlsfiles.Options{})
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.DialConfig(ctx, client.Config{Endpoints: []string{"127.0.0.1:8001"}, Credentials: src.Credentials(true)})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	req := &pb.PromotionRequest{RequestId: "incident-4711", Domain: "orders", Candidate: "replica-2",
		Reason: "primary host lost"}
	resp, err := c.Promote(ctx, req)
	var denied *client.DeniedError
	switch {
	case errors.As(err, &denied):
		// Denials are committed and explained; never retry them blindly.
		fmt.Printf("denied: %s (%s)\n", denied.Reason(), denied.Invariant())
		for _, chk := range denied.Record.GetDecision().GetChecks() {
			fmt.Printf("  %-40s satisfied=%v %s\n", chk.GetName(), chk.GetSatisfied(), chk.GetDetail())
		}
	case errors.Is(err, client.ErrOutcomeUnknown):
		// Same request id again returns the recorded outcome.
		rec, err := c.Explain(ctx, "orders", "incident-4711")
		fmt.Println(rec, err)
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Printf("promoted: epoch %d, holder %s\n", resp.GetRecord().GetEpochAfter(), resp.GetRecord().GetHolderAfter())
	}
}

func ExampleLease() {
	ctx := context.Background()
	// A holder acts only as itself: runner-a's certificate (a deployer,
	// which may hold locks) for the lease held by "runner-a".
	src, err := tlsfiles.Load(tlsfiles.Files{CA: "certs/ca.crt", Cert: "certs/deployer-runner-a.crt", Key: "certs/deployer-runner-a.key"}, tlsfiles.Options{})
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.DialConfig(ctx, client.Config{Endpoints: []string{"127.0.0.1:8001"}, Credentials: src.Credentials(true)})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	// Take a free deploy lock (KeepLease instead keeps authority granted
	// by AssignInitial or a promotion).
	lease, err := c.Acquire(ctx, "deploy/prod", "runner-a")
	if err != nil {
		log.Fatal(err)
	}
	defer lease.Release(context.Background())
	work := make(chan struct{})
	go func() {
		defer close(work)
		// Do the work under lease.Context(): it is cancelled at loss.
		// Before every side effect, check the lease at that moment (it
		// reads the clock, so a pause past the deadline is caught), and
		// stamp the write with lease.Epoch() so that the resource refuses
		// it if a pause lands between the check and the write.
		for step := range 3 {
			if err := lease.Check(); err != nil {
				return
			}
			fmt.Println("deploy step", step, "at epoch", lease.Epoch())
		}
	}()
	select {
	case <-lease.Lost():
		// Stop acting at once: the deadline is already earlier than the
		// service's expiry by the margin.
		fmt.Println("lease lost:", lease.Err())
	case <-work:
	}
}

func ExampleAckGate() {
	ctx := context.Background()
	// The primary keeps its lease and advances the watermark as itself:
	// the node certificate of "primary-1".
	src, err := tlsfiles.Load(tlsfiles.Files{CA: "certs/ca.crt", Cert: "certs/node-primary-1.crt", Key: "certs/node-primary-1.key"}, tlsfiles.Options{})
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.DialConfig(ctx, client.Config{Endpoints: []string{"127.0.0.1:8001"}, Credentials: src.Credentials(true)})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	lease, err := c.KeepLease(ctx, "orders", "primary-1", 3, 0) // TTL from the domain's policy
	if err != nil {
		log.Fatal(err)
	}
	gate := client.NewAckGate(c, "orders", "primary-1", lease.Epoch(), client.WithLease(lease))
	defer gate.Close()
	// For each client write: append to the WAL, then acknowledge only
	// once the authority holds a watermark at or beyond it.
	lsn, hash, commitID := uint64(42), []byte("chain-hash-at-42"), uint64(17)
	switch err := gate.WaitDurable(ctx, lsn, hash, commitID); {
	case errors.Is(err, client.ErrFenced):
		fmt.Println("promoted away: never acknowledge again")
	case err != nil:
		fmt.Println("not durable:", err)
	default:
		fmt.Println("acknowledge", lsn)
	}
}
