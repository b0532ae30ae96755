package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"google.golang.org/protobuf/proto"
)

// memSpillFile is a spill file in memory, with faults to inject.
type memSpillFile struct {
	mu         sync.Mutex
	b          []byte
	failWrites bool
}

func (m *memSpillFile) ReadAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *memSpillFile) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failWrites {
		return 0, errors.New("injected write failure")
	}
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	return copy(m.b[off:], p), nil
}

// memSpills makes memSpillFiles and remembers them.
type memSpills struct {
	mu    sync.Mutex
	files []*memSpillFile
	fail  bool // new files refuse writes
}

func (s *memSpills) newFile() (SpillFile, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := &memSpillFile{failWrites: s.fail}
	s.files = append(s.files, f)
	return f, nil
}

// spillOn enables spilling on f into memory files.
func spillOn(f *FSM) *memSpills {
	s := &memSpills{}
	f.SetSpill(s.newFile)
	return s
}

// smallSpill makes compaction and the tail cache small enough for tests
// to reach them, until the test ends.
func smallSpill(t testing.TB) {
	min, step, lists := spillCompactMin, spillStepMin, tailCacheLists
	spillCompactMin, spillStepMin, tailCacheLists = 16<<10, 2<<10, 4
	t.Cleanup(func() { spillCompactMin, spillStepMin, tailCacheLists = min, step, lists })
}

// spillWorkload applies n seeded attempts over domains, allowed and
// denied, enough denied ones on some domains to turn their rings over.
type spillWorkload struct {
	t    testing.TB
	hs   []*harness
	r    *rand.Rand
	next map[string]int
}

func newSpillWorkload(t testing.TB, seed uint64, domains int, fs ...*FSM) *spillWorkload {
	w := &spillWorkload{t: t, r: rand.New(rand.NewPCG(seed, 7)), next: map[string]int{}}
	for _, f := range fs {
		w.hs = append(w.hs, &harness{t: t, f: f})
	}
	for i := range domains {
		for _, h := range w.hs {
			benchDomain(h, spillDomain(i))
		}
	}
	return w
}

func spillDomain(i int) string { return fmt.Sprintf("db%03d", i) }

func (w *spillWorkload) run(n, domains int) {
	for range n {
		name := spillDomain(w.r.IntN(domains))
		if w.r.IntN(4) == 0 {
			name = spillDomain(0) // a busy one: its denied ring turns over
		}
		allow := w.r.IntN(3) == 0
		reason := "spill"
		if w.r.IntN(10) == 0 {
			reason = strings.Repeat("r", w.r.IntN(3000)) // some records differ a lot
		}
		w.next[name]++
		id := "q" + strconv.Itoa(w.next[name])
		if w.r.IntN(20) == 0 && w.next[name] > 2 {
			id = "q" + strconv.Itoa(1+w.r.IntN(w.next[name]-1)) // a retried request
		}
		for _, h := range w.hs {
			d, _ := h.f.AuthorityOf(name)
			cand := map[string]string{"n1": "n2", "n2": "n3", "n3": "n2"}[d.Holder]
			a := &pb.PromotionAttempt{
				Request:         &pb.PromotionRequest{RequestId: id, Domain: name, Candidate: cand, Reason: reason},
				Lease:           leaseObs(d.Holder, d.Epoch, pb.LeaseState_LEASE_STATE_EXPIRED),
				CandidateReport: report(cand, d.Epoch),
			}
			if !allow {
				a.Lease.State = pb.LeaseState_LEASE_STATE_HELD
			}
			h.apply(&pb.Command{Body: &pb.Command_PromotionAttempt{PromotionAttempt: a}})
		}
	}
}

// sameHistories compares every domain's pages, newest attempts and state
// hash of two FSMs.
func sameHistories(t testing.TB, what string, a, b *FSM) {
	t.Helper()
	if mustHash(t, a) != mustHash(t, b) {
		t.Fatalf("%s: state hashes differ", what)
	}
	if !bytes.Equal(mustSnapshot(t, a), mustSnapshot(t, b)) {
		t.Fatalf("%s: snapshots differ", what)
	}
	for _, name := range a.DomainNames() {
		for after := uint64(0); ; {
			pa, _ := a.History(name, after, 7, true)
			pb, _ := b.History(name, after, 7, true)
			if len(pa.Records) != len(pb.Records) || pa.More != pb.More || pa.Next != pb.Next {
				t.Fatalf("%s: %s history after %d differs", what, name, after)
			}
			for i := range pa.Records {
				if !proto.Equal(pa.Records[i], pb.Records[i]) {
					t.Fatalf("%s: %s record %d differs", what, name, pa.Records[i].LogIndex)
				}
			}
			if !pa.More {
				break
			}
			after = pa.Next
		}
		na, nb := a.NewestAttempts(name, 40), b.NewestAttempts(name, 40)
		if len(na) != len(nb) {
			t.Fatalf("%s: %s newest attempts differ", what, name)
		}
		for i := range na {
			if !proto.Equal(na[i], nb[i]) {
				t.Fatalf("%s: %s newest attempt %d differs", what, name, i)
			}
		}
	}
}

// The spill is a representation: an FSM that spills (with compactions,
// evictions from the tail cache and denied rings turning over) has the
// same state, snapshot bytes, pages and answers as one that does not, and
// a capture taken before a compaction writes what it captured after the
// compaction has moved every segment and dropped the old file.
func TestSpillMatchesMemory(t *testing.T) {
	smallSpill(t)
	for _, seed := range []uint64{1, 2} {
		t.Logf("seed=%d", seed)
		mem, sp := New(), New()
		files := spillOn(sp)
		const domains = 12
		w := newSpillWorkload(t, seed, domains, mem, sp)
		w.run(300, domains)
		sameHistories(t, "after 300", mem, sp)

		want := mustSnapshot(t, mem)
		c, c2 := mustCapture(t, sp), mustCapture(t, sp) // c2 is written while entries apply and compact
		var got2 bytes.Buffer
		done := make(chan error, 1)
		go func() {
			_, err := c2.WriteTo(&got2)
			done <- err
		}()
		compactionsBefore := len(files.files)
		w.run(1000, domains)
		if err := <-done; err != nil || !bytes.Equal(got2.Bytes(), want) {
			t.Fatalf("seed=%d: a capture written during compactions differs from its point in time (%v)", seed, err)
		}
		if len(files.files) < compactionsBefore+2 {
			t.Fatalf("seed=%d: %d spill files made across 1,000 attempts: no compaction ran", seed, len(files.files)-compactionsBefore)
		}
		var got bytes.Buffer
		if _, err := c.WriteTo(&got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("seed=%d: a capture written after compactions differs from its point in time", seed)
		}
		sameHistories(t, "after 1,300", mem, sp)

		st := sp.SpillStats()
		if st.Err != nil || st.LiveBytes == 0 {
			t.Fatalf("seed=%d: %+v", seed, st)
		}
		// Garbage is at most the live bytes (plus what a compaction moves
		// or the threshold allows) — the file does not grow without bound.
		if st.FileBytes > 3*st.LiveBytes+2*spillCompactMin {
			t.Fatalf("seed=%d: spill files hold %d bytes for %d live", seed, st.FileBytes, st.LiveBytes)
		}
		t.Logf("seed=%d: %d files made, %d bytes live of %d", seed, len(files.files), st.LiveBytes, st.FileBytes)
	}
}

// A restore spills every segment and request index it reads, and the
// restored FSM goes on as one that never spilled.
func TestSpillRestore(t *testing.T) {
	smallSpill(t)
	mem := New()
	const domains = 10
	w := newSpillWorkload(t, 4, domains, mem)
	w.run(600, domains)

	sp := New()
	spillOn(sp)
	if err := sp.Restore(bytes.NewReader(mustSnapshot(t, mem))); err != nil {
		t.Fatal(err)
	}
	inMemory := 0
	for _, h := range sp.histories {
		if h.ids != nil || h.idsDisk == nil {
			inMemory++ // the request index
		}
		for _, l := range []*attemptList{&h.allowed, &h.denied} {
			for _, s := range l.segs {
				if s.disk == nil {
					inMemory++
				}
			}
		}
	}
	if inMemory != 0 {
		t.Fatalf("%d restored segments and request indexes stayed in memory", inMemory)
	}
	sameHistories(t, "restored", mem, sp)
	w.hs = append(w.hs, &harness{t: t, f: sp, index: w.hs[0].index})
	w.run(600, domains)
	sameHistories(t, "restored, then 600 more", mem, sp)
}

// A damaged spill file stops a read, never answers from damaged bytes:
// every byte of the file, flipped alone, is caught by the checksums of the
// segment or request index it belongs to; a file cut short stops the read
// too.
func TestSpillDamageStops(t *testing.T) {
	mem := New()
	w := newSpillWorkload(t, 5, 1, mem)
	w.run(40, 1)
	snap := mustSnapshot(t, mem)
	readAll := func(f *FSM) (msg string) {
		defer func() {
			if r := recover(); r != nil {
				msg = fmt.Sprint(r)
			}
		}()
		for _, name := range f.DomainNames() {
			f.History(name, 0, MaxHistoryPage, true)
			f.Attempt(name, "q1") // the request index
		}
		return ""
	}
	sp := New()
	files := spillOn(sp)
	if err := sp.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	file := files.files[0]
	if msg := readAll(sp); msg != "" {
		t.Fatalf("undamaged: %s", msg)
	}
	for i := range file.b {
		file.b[i] ^= 0x01
		msg := readAll(sp)
		file.b[i] ^= 0x01
		if !strings.Contains(msg, "history spill file: the ") || !strings.Contains(msg, "does not match its checksum") {
			t.Fatalf("byte %d of %d flipped: %q", i, len(file.b), msg)
		}
	}
	t.Logf("each of the %d bytes flipped was refused", len(file.b))
	file.b = file.b[:16]
	if msg := readAll(sp); !strings.Contains(msg, "history spill file: reading") {
		t.Fatalf("file cut short: %q", msg)
	}
}

// A spill file that refuses writes stops spilling, not the FSM: the
// segments stay in memory and the state is the same.
func TestSpillWriteFailureKeepsMemory(t *testing.T) {
	smallSpill(t)
	mem, sp := New(), New()
	files := spillOn(sp)
	files.fail = true
	w := newSpillWorkload(t, 6, 8, mem, sp)
	w.run(400, 8)
	if st := sp.SpillStats(); st.Err == nil || !strings.Contains(st.Err.Error(), "injected write failure") {
		t.Fatalf("spill stats after failed writes: %+v", st)
	}
	sameHistories(t, "writes refused", mem, sp)

	// A restore whose file refuses writes keeps the segments in memory.
	rs := New()
	spillOn(rs).fail = true
	if err := rs.Restore(bytes.NewReader(mustSnapshot(t, mem))); err != nil {
		t.Fatal(err)
	}
	if st := rs.SpillStats(); st.Err == nil {
		t.Fatalf("spill stats after a restore's failed writes: %+v", st)
	}
	sameHistories(t, "a restore's writes refused", mem, rs)
}

func mustCapture(t testing.TB, f *FSM) *Capture {
	t.Helper()
	c, err := f.Capture()
	if err != nil {
		t.Fatal(err)
	}
	return c
}
