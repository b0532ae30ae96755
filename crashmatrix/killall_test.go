package crashmatrix_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/aerodb/authority/client"
	"google.golang.org/protobuf/proto"
)

// Kill all: all three servers are SIGKILLed at once while writers are
// advancing watermarks and promoting, then restarted from their data dirs:
// nothing that was acknowledged may be missing on any node (P6-S1: no
// acknowledged write loss), the one-holder-per-epoch and no-rollback
// checks hold, and every node's log replays to its state.
func TestKillAllMidTraffic(t *testing.T) {
	t.Parallel()
	r := newRig(t, "kill-all")
	const wmDomains, promoDomains = 4, 24
	for i := range wmDomains {
		r.setupDomain(t, fmt.Sprintf("w%d", i), time.Minute, false) // n1 holds epoch 1 and keeps writing
	}
	for i := range promoDomains {
		dom := fmt.Sprintf("p%02d", i)
		r.setupDomain(t, dom, time.Minute, true)
		r.report(t, dom, "n2", 1, 100)
	}
	r.converge(t)
	r.checkEpochsGrew(t)

	var (
		mu       sync.Mutex
		ackedWM  = map[string]uint64{}               // domain → highest acknowledged lsn
		ackedRec = map[string]*pb.AttemptRecord{}    // domain → acknowledged (committed) record
		unknown  = map[string]*pb.PromotionRequest{} // promotions without an answer
		inflight string                              // domain of the promotion being sent
		wg       sync.WaitGroup
	)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	n1 := r.node("n1") // the holder advances its own watermarks
	for w := range 2 { // two watermark writers, two domains each
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := uint64(1); ctx.Err() == nil; i++ {
				dom := fmt.Sprintf("w%d", 2*w+int(i%2))
				lsn := 100 + i
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				errs, err := n1.AdvanceWatermark(cctx, []*pb.WatermarkAdvance{{Domain: dom, Epoch: 1, Holder: "n1", Lsn: lsn,
					Hash: lsnHash(lsn), VisibleCommitId: lsn}})
				cancel()
				if errors.Join(append(errs, err)...) == nil {
					mu.Lock()
					ackedWM[dom] = max(ackedWM[dom], lsn)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // one promoter, one domain after the other
		defer wg.Done()
		for i := 0; i < promoDomains && ctx.Err() == nil; i++ {
			req := request(fmt.Sprintf("p%02d", i))
			mu.Lock()
			inflight = req.Domain
			mu.Unlock()
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			resp, err := r.cli.Promote(cctx, req)
			cancel()
			var denied *client.DeniedError
			mu.Lock()
			inflight = ""
			if (err == nil || errors.As(err, &denied)) && resp.GetCommitted() {
				ackedRec[req.Domain] = resp.Record
			} else {
				unknown[req.Domain] = req
			}
			mu.Unlock()
		}
	}()

	// Kill everything once traffic is flowing (bounded wait).
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n, m := len(ackedRec), len(ackedWM)
		var total uint64
		for _, v := range ackedWM {
			total += v - 100
		}
		busy := inflight != ""
		mu.Unlock()
		if n >= 6 && m == wmDomains && total >= 40 && busy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("traffic too slow: %d promotions and %d watermark advances acknowledged", n, total)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.killAll(t)
	stop()
	wg.Wait()
	for _, s := range r.cl.Servers {
		if code := s.ExitCode(); code != -1 {
			t.Fatalf("%s exited with %d, want SIGKILL", s.ID, code)
		}
	}
	mu.Lock()
	t.Logf("killed all three mid-traffic: %d promotions and watermarks %v acknowledged; %d promotions unanswered",
		len(ackedRec), ackedWM, len(unknown))
	mu.Unlock()

	r.heal(t)
	for _, s := range r.cl.Servers {
		for dom, lsn := range ackedWM {
			if got := r.nodeDomain(t, s, dom).GetWatermark().GetLsn(); got < lsn {
				t.Fatalf("%s: %s watermark at lsn %d, but lsn %d was acknowledged", s.ID, dom, got, lsn)
			}
		}
		for dom, rec := range ackedRec {
			got, err := r.nodeExplain(s, dom, rec.Request.RequestId)
			if err != nil || !proto.Equal(got, rec) {
				t.Fatalf("%s: acknowledged promotion %s lost or changed: %v", s.ID, rec.Request.RequestId, err)
			}
			want := authority{Epoch: 1, Holder: "n1", Released: true}
			if rec.Decision.Allowed {
				want = authority{Epoch: 2, Holder: "n2"}
			}
			r.setExpect(dom, want)
		}
	}
	// Unanswered promotions: whatever the log decided, every node agrees
	// (converged hashes), and retrying the same id settles them.
	for dom, req := range unknown {
		r.report(t, dom, "n2", 1, 100) // the new leader has no reports
		ctx, cancel := ctxT(20 * time.Second)
		resp, err := r.cli.Promote(ctx, req)
		cancel()
		if err != nil || !resp.Committed || !resp.Record.Decision.Allowed {
			t.Fatalf("retry of unanswered %s: %v", req.RequestId, errOrOK(resp, err))
		}
		r.setExpect(dom, authority{Epoch: 2, Holder: "n2"})
	}
	r.converge(t)
	r.checkExpected(t)
	r.checkEpochsGrew(t)
	r.checkEvents(t)
	r.restartAll(t, 1)
	r.stopAndReplay(t)
}

func lsnHash(lsn uint64) []byte {
	return []byte{0xab, byte(lsn >> 8), byte(lsn)}
}
