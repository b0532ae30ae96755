package refnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	rpb "github.com/aerodb/authority/api/refnode/v1"
	"github.com/aerodb/authority/client"
	"github.com/aerodb/authority/internal/testcluster"
	"github.com/aerodb/authority/validator"
	"google.golang.org/protobuf/proto"
)

// Phase 5 parity (AeroDB testing strategy §6, "Disablement & Isolation";
// P5-I16 / AU-14; §5 "no behavior drift in replication", "no WAL format
// changes"): with promotion disabled — per domain (policy
// promotion_disabled) or on every authority server (--promotion-disabled)
// — refnode replication behaves exactly as with promotion enabled. The
// same seeded workload (one writer, puts in a fixed order, overwrites
// included) runs on a baseline domain and on each disabled one, and must
// give, byte for byte: the acknowledged history (key, value, epoch, commit
// id, lsn of every acknowledgement), every node's WAL (every frame),
// every node's final position and read state, and the domain's authority
// (epoch, holder, watermark). Afterwards the disabled domains refuse a
// promotion (PromotionDisabled), which the baseline allows.

// paritySeed drives the workload; printed so a failure can be replayed.
const paritySeed uint64 = 0x5eed_0006_0005

const (
	parityPuts = 60
	parityKeys = 16
)

type parityOp struct{ key, value string }

func parityWorkload(seed uint64) []parityOp {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	ops := make([]parityOp, parityPuts)
	for i := range ops {
		ops[i] = parityOp{key: fmt.Sprintf("k%02d", rng.IntN(parityKeys)), value: fmt.Sprintf("v%d-%016x", i, rng.Uint64())}
	}
	return ops
}

// parityResult is everything Phase 5 behaviour shows, without anything that
// legitimately differs between domains or clusters (names, log indexes).
type parityResult struct {
	acks   []string          // "key=value epoch commit lsn", in order
	wal    map[string][]byte // node id → every WAL frame
	status map[string]string // node id → role, epoch, last position, applied, visible
	reads  map[string]string // node id → every key at the final commit id
	domain string            // epoch, holder, released, watermark
}

func TestPhase5ParityPromotionDisabled(t *testing.T) {
	t.Logf("workload seed %#x (%d puts over %d keys)", paritySeed, parityPuts, parityKeys)
	ops := parityWorkload(paritySeed)

	auth, ac := startAuthority(t)
	off := testcluster.Start(t, 3, "--promotion-disabled")
	offc := off.Dial(testcluster.Operator)
	t.Cleanup(func() { ac.Close(); offc.Close() })

	variants := []struct {
		name          string
		auth          *testcluster.Cluster
		ac            *client.Client
		domainDisable bool
	}{
		{"baseline", auth, ac, false},
		{"domain-disabled", auth, ac, true},
		{"globally-disabled", off, offc, false},
	}
	results := make([]parityResult, len(variants))
	clusters := make([]*refCluster, len(variants))
	for i, v := range variants {
		start := time.Now()
		clusters[i], results[i] = runParity(t, v.auth, v.ac, "p5."+v.name, v.domainDisable, ops)
		t.Logf("%s: %d acknowledged writes, final lsn %d, took %v", v.name, len(results[i].acks), parityPuts,
			time.Since(start).Round(time.Millisecond))
	}
	base := results[0]
	for i, v := range variants[1:] {
		got := results[i+1]
		if d := firstDiff(base.acks, got.acks); d != "" {
			t.Errorf("%s: acknowledged history differs from the baseline: %s", v.name, d)
		}
		for id, w := range base.wal {
			if !bytes.Equal(w, got.wal[id]) {
				t.Errorf("%s: %s's WAL differs from the baseline (%d vs %d bytes)", v.name, id, len(got.wal[id]), len(w))
			}
		}
		for id, s := range base.status {
			if s != got.status[id] {
				t.Errorf("%s: %s's final status differs:\n baseline %s\n %s %s", v.name, id, s, v.name, got.status[id])
			}
			if base.reads[id] != got.reads[id] {
				t.Errorf("%s: %s's reads differ from the baseline", v.name, id)
			}
		}
		if base.domain != got.domain {
			t.Errorf("%s: domain authority differs:\n baseline %s\n %s %s", v.name, base.domain, v.name, got.domain)
		}
	}
	if t.Failed() {
		t.Fatalf("Phase 5 behaviour drifted with promotion disabled (seed %#x)", paritySeed)
	}

	// Disabled means no promotion path: on the baseline a dry run (which
	// commits nothing) of n2 reaches the lease check (allowed once n1's
	// lease ran out after the nodes stopped, PrimaryStillActive before),
	// the disabled domains refuse.
	for i, v := range variants {
		c := clusters[i]
		one := uint64(1)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := v.ac.Promote(ctx, &pb.PromotionRequest{Domain: c.domain, Candidate: "n2", ExpectedEpoch: &one,
			Reason: "parity", DryRun: true, InitiatedBy: pb.Initiator_INITIATOR_OPERATOR})
		cancel()
		var denied *client.DeniedError
		switch {
		case i == 0:
			if err != nil && (!errors.As(err, &denied) || denied.Reason() != validator.ReasonPrimaryStillActive) {
				t.Errorf("%s: dry run %v, want allowed or %s", v.name, err, validator.ReasonPrimaryStillActive)
			}
		case v.domainDisable:
			if !errors.As(err, &denied) || denied.Reason() != validator.ReasonPromotionDisabled {
				t.Errorf("%s: dry run %v, want %s", v.name, err, validator.ReasonPromotionDisabled)
			}
		default:
			if !errors.Is(err, client.ErrPromotionDisabled) {
				t.Errorf("%s: dry run %v, want %v", v.name, err, client.ErrPromotionDisabled)
			}
		}
	}
}

// runParity provisions domain (authority-gated, n1 primary, n2 n3
// replicas) on auth, optionally disables promotion for it, runs ops through
// n1 one at a time, waits until every node holds and shows everything,
// stops the nodes and collects the result.
func runParity(t *testing.T, auth *testcluster.Cluster, ac *client.Client, domain string, disable bool, ops []parityOp) (*refCluster, parityResult) {
	t.Helper()
	c := newRefCluster(t, auth, ac, domain, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if disable {
		d, err := ac.GetDomain(ctx, domain)
		if err != nil {
			t.Fatal(err)
		}
		p := proto.Clone(d.GetPolicy()).(*pb.Policy)
		p.PromotionDisabled = true
		if _, err := ac.UpdatePolicy(ctx, domain, p); err != nil {
			t.Fatalf("disabling promotion for %s: %v", domain, err)
		}
	}
	c.startAll()
	primary := c.node("n1")
	c.waitRole(primary, RolePrimary, 1)
	for _, id := range []string{"n2", "n3"} {
		c.waitRole(c.node(id), RoleReplica, 1)
	}
	var res parityResult
	var last uint64
	for _, op := range ops {
		r, err := primary.rpc().Put(ctx, &rpb.PutRequest{Key: []byte(op.key), Value: []byte(op.value)})
		if err != nil {
			t.Fatalf("%s: put %s: %v", domain, op.key, err)
		}
		res.acks = append(res.acks, fmt.Sprintf("%s=%s epoch %d commit %d lsn %d", op.key, op.value, r.Epoch, r.CommitId, r.Lsn))
		last = r.CommitId
	}
	c.waitCaughtUp(primary)
	eventually(t, 20*time.Second, "every node shows the last commit", func() (bool, string) {
		for _, p := range c.nodes {
			s, err := c.status(p)
			if err != nil || s.GetVisibleCommitId() != last || s.GetAppliedCommitId() != last {
				return false, fmt.Sprintf("%s: %v %v", p.id, s, err)
			}
		}
		return true, ""
	})
	res.status, res.reads, res.wal = map[string]string{}, map[string]string{}, map[string][]byte{}
	for _, p := range c.nodes {
		s, err := c.status(p)
		if err != nil {
			t.Fatal(err)
		}
		res.status[p.id] = fmt.Sprintf("role %s epoch %d last (%d, %d, %x) applied %d visible %d durable %d", s.Role, s.Epoch,
			s.GetLast().GetEpoch(), s.GetLast().GetLsn(), s.GetLast().GetHash(), s.AppliedCommitId, s.VisibleCommitId, s.DurableLsn)
		var reads bytes.Buffer
		for k := range parityKeys {
			g, err := p.rpc().Get(ctx, &rpb.GetRequest{Key: []byte(fmt.Sprintf("k%02d", k)), ReadBound: last})
			if err != nil {
				t.Fatalf("%s: get on %s: %v", domain, p.id, err)
			}
			fmt.Fprintf(&reads, "k%02d found=%t value=%q commit=%d\n", k, g.Found, g.Value, g.CommitId)
		}
		res.reads[p.id] = reads.String()
	}
	d, err := ac.GetDomain(ctx, domain)
	if err != nil {
		t.Fatal(err)
	}
	w := d.GetWatermark()
	res.domain = fmt.Sprintf("epoch %d holder %s released %t watermark (%d, %d, %x, visible %d)", d.Epoch, d.Holder, d.Released,
		w.GetEpoch(), w.GetLsn(), w.GetHash(), w.GetVisibleCommitId())
	c.stopAll()
	for _, p := range c.nodes {
		wal, rep, err := OpenWAL(filepath.Join(p.dir, walFile))
		if err != nil {
			t.Fatalf("%s: %s's WAL: %v", domain, p.id, err)
		}
		var frames []byte
		for _, f := range wal.Frames(1, parityPuts+1) {
			frames = append(frames, f...)
		}
		wal.Close()
		if rep.TruncatedTail != 0 || rep.Records != parityPuts || len(frames) == 0 {
			t.Fatalf("%s: %s's WAL: %+v, %d bytes", domain, p.id, rep, len(frames))
		}
		res.wal[p.id] = frames
		if _, err := os.Stat(filepath.Join(p.dir, divergedFile)); err == nil {
			t.Fatalf("%s: %s marked itself diverged", domain, p.id)
		}
	}
	return c, res
}

// firstDiff describes the first difference between two histories.
func firstDiff(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("write %d: %q vs %q", i, a[i], b[i])
		}
	}
	if len(a) != len(b) {
		return fmt.Sprintf("%d vs %d writes", len(a), len(b))
	}
	return ""
}
