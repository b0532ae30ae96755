// Command authority-demo starts a local 3-node AeroDB Authority cluster on
// loopback (hashicorp/raft over TCP, raft-boltdb/v2 under ./.data/demo) in
// one process and walks through a failover: a promotion denied while the old
// primary's lease is valid, a dry run, the allowed promotion after the lease
// expired, the old primary fenced, and the decision surviving the loss of
// the raft leader. `make run` runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/cluster"
	"github.com/aerodb/authority/fsm"
	"github.com/aerodb/authority/promotion"
	"github.com/hashicorp/go-hclog"
)

type server struct {
	node   *cluster.Node
	svc    *promotion.Service
	cancel context.CancelFunc
	done   chan struct{}
}

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

func main() {
	dataDir := flag.String("data", ".data/demo", "data directory (wiped at start)")
	flag.Parse()
	if err := run(*dataDir); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func run(dataDir string) error {
	if err := os.RemoveAll(dataDir); err != nil {
		return err
	}
	servers, err := startCluster(dataDir)
	if err != nil {
		return err
	}
	defer func() {
		for _, s := range servers {
			if s != nil {
				stop(s)
			}
		}
	}()
	ctx := context.Background()
	l, err := leader(servers)
	if err != nil {
		return err
	}
	step("cluster up", fmt.Sprintf("leader %s; raft data in %s", l.node.ID(), dataDir))
	if err := prepare(ctx, l.svc); err != nil {
		return err
	}
	d, _ := l.node.FSM().Domain("orders")
	step("domain orders: primary n1 at epoch 1, watermark committed, replicas reporting", fsm.DescribeDomain(d))

	_, err = l.svc.Promote(ctx, request("early", "n2"))
	showDenial("promote n2 while n1's lease is valid", err)

	time.Sleep(1100 * time.Millisecond) // demo only: let n1's 1 s lease run out on the leader
	dry := request("check", "n2")
	dry.DryRun = true
	out, err := l.svc.Promote(ctx, dry)
	if err != nil {
		return err
	}
	step("dry run after n1's lease expired (nothing committed)", fsm.DescribeAttempt(out.Record))

	out, err = l.svc.Promote(ctx, request("failover-1", "n2"))
	if err != nil {
		return err
	}
	step(fmt.Sprintf("promote n2: committed at log index %d, lifecycle %v", out.Record.LogIndex, out.Lifecycle), fsm.DescribeAttempt(out.Record))

	errs, err := l.svc.AdvanceWatermark(ctx, []*pb.WatermarkAdvance{{Domain: "orders", Epoch: 1, Holder: "n1", Lsn: 120, Hash: []byte{0x12}}})
	if err != nil {
		return err
	}
	step("old primary n1 tries to advance its watermark at epoch 1", fmt.Sprintf("rejected: %v\n", errs[0]))

	for i, s := range servers {
		if s == l {
			stop(s)
			servers[i] = nil
		}
	}
	nl, err := leader(servers)
	if err != nil {
		return err
	}
	a, _ := nl.node.FSM().AuthorityOf("orders")
	step(fmt.Sprintf("raft leader %s stopped; new leader %s", l.node.ID(), nl.node.ID()),
		fmt.Sprintf("orders: epoch %d, holder %s (the committed promotion stands)\n", a.Epoch, a.Holder))
	fmt.Println("Next: `make test` runs the whole suite.")
	return nil
}

func startCluster(dataDir string) ([]*server, error) {
	logger := hclog.New(&hclog.LoggerOptions{Name: "authority", Level: hclog.Off})
	var servers []*server
	var peers []cluster.Peer
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("s%d", i)
		n, err := cluster.Open(cluster.Config{NodeID: id, DataDir: filepath.Join(dataDir, id), RaftAddr: "127.0.0.1:0",
			Logger: logger.Named(id), HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
			LeaderLeaseTimeout: 150 * time.Millisecond})
		if err != nil {
			return nil, err
		}
		svc := promotion.NewService(promotion.Config{Log: n, FSM: n.FSM(), Clock: wallClock{}, Logger: logger.Named(id)})
		ctx, cancel := context.WithCancel(context.Background())
		s := &server{node: n, svc: svc, cancel: cancel, done: make(chan struct{})}
		go func() {
			defer close(s.done)
			cluster.RunLeadership(ctx, n, svc, logger)
		}()
		servers = append(servers, s)
		peers = append(peers, cluster.Peer{ID: id, Address: n.Address()})
		fmt.Printf("node %s raft on %s\n", id, n.Address())
	}
	return servers, servers[0].node.Bootstrap(peers)
}

func stop(s *server) {
	s.cancel()
	<-s.done
	s.node.Shutdown()
}

func leader(servers []*server) (*server, error) {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range servers {
			if s != nil && s.node.IsLeader() && s.svc.Ready() {
				return s, nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil, errors.New("no leader within 15 s")
}

func prepare(ctx context.Context, svc *promotion.Service) error {
	hash := []byte{0xc0, 0xff, 0xee, 0x64}
	steps := []func() error{
		func() error {
			_, err := svc.CreateDomain(ctx, "orders", pb.DomainKind_DOMAIN_KIND_AERODB, &pb.Policy{LeaseTtlMs: 1000})
			return err
		},
		func() error {
			for _, id := range []string{"n1", "n2", "n3"} {
				if _, err := svc.RegisterMember(ctx, &pb.RegisterMember{Domain: "orders", MemberId: id}); err != nil {
					return err
				}
			}
			return nil
		},
		func() error { _, err := svc.AssignInitial(ctx, "orders", "n1"); return err },
		func() error {
			errs, err := svc.AdvanceWatermark(ctx, []*pb.WatermarkAdvance{{Domain: "orders", Epoch: 1, Holder: "n1", Lsn: 100, Hash: hash, VisibleCommitId: 42}})
			return errors.Join(err, errors.Join(errs...))
		},
		func() error {
			_, err := svc.ReportProgress("orders", &pb.ProgressReport{MemberId: "n2", Epoch: 1, FlushedLsn: 100, FlushedHash: hash,
				WatermarkLsn: 100, HashAtWatermark: hash, AppliedCommitId: 42, ReadSafe: true, State: pb.ReplicaState_REPLICA_STATE_STREAMING})
			return err
		},
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	return nil
}

func request(id, candidate string) *pb.PromotionRequest {
	epoch := uint64(1)
	return &pb.PromotionRequest{RequestId: id, Domain: "orders", Candidate: candidate, ExpectedEpoch: &epoch,
		Reason: "primary n1 unreachable", InitiatedBy: pb.Initiator_INITIATOR_OPERATOR}
}

func showDenial(title string, err error) {
	var d *promotion.DeniedError
	if errors.As(err, &d) {
		step(title+": DENIED "+d.Reason, fsm.DescribeAttempt(d.Record))
		return
	}
	step(title, fmt.Sprintf("unexpected: %v\n", err))
}

func step(title, body string) {
	fmt.Printf("\n== %s\n%s", title, body)
}
