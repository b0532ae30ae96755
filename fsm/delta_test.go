package fsm

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// deltaCases are (base1, base2, target) triples: empty parts, equal and
// unrelated strings, substitutions, insertions and deletions, and copies
// that span the two base parts.
func deltaCases(t testing.TB) [][3][]byte {
	const seed = 20261205
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 0))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte('a' + r.IntN(4)) // a small alphabet: many short matches
		}
		return b
	}
	text := []byte(`observed: {key: "holder" value: "n2"} detail: "Holder \"n2\"'s lease at epoch 6 had expired."`)
	mutate := func(b []byte) []byte {
		out := bytes.Clone(b)
		for range 1 + r.IntN(6) {
			switch p := r.IntN(len(out) + 1); r.IntN(3) {
			case 0:
				if p < len(out) {
					out[p] ^= byte(1 + r.IntN(255))
				}
			case 1:
				out = append(out[:p], append(random(1+r.IntN(5)), out[p:]...)...)
			case 2:
				out = append(out[:p], out[min(len(out), p+r.IntN(8)):]...)
			}
		}
		return out
	}
	cases := [][3][]byte{
		{nil, nil, nil},
		{nil, nil, text},
		{nil, text, nil},
		{nil, text, text},
		{text, text, text},
		{text[:40], text[40:], text},   // a copy across the parts
		{nil, []byte("abc"), text[:3]}, // shorter than a match
		{nil, random(3000), random(3000)},
	}
	for range 200 {
		b1, b2 := mutate(text), mutate(text)
		if r.IntN(3) == 0 {
			b1 = nil
		}
		cases = append(cases, [3][]byte{b1, b2, mutate(b2)})
	}
	return cases
}

func TestDeltaRoundTrip(t *testing.T) {
	for i, c := range deltaCases(t) {
		d := appendDelta(nil, c[0], c[1], c[2])
		got, err := applyDelta(nil, c[0], c[1], d)
		if err != nil || !bytes.Equal(got, c[2]) {
			t.Fatalf("case %d: %q vs %q (%v)", i, got, c[2], err)
		}
		// Deterministic: the same inputs, the same bytes.
		if again := appendDelta(nil, c[0], c[1], c[2]); !bytes.Equal(again, d) {
			t.Fatalf("case %d: two encodings differ", i)
		}
		// Appending to a prefix leaves it alone.
		if got, err := applyDelta([]byte("pre"), c[0], c[1], d); err != nil || string(got[:3]) != "pre" || !bytes.Equal(got[3:], c[2]) {
			t.Fatalf("case %d: decoding after a prefix: %q (%v)", i, got, err)
		}
	}
	// A near copy costs a few bytes, not the record.
	text := bytes.Repeat([]byte(`observed: {key: "epoch" value: "6"} `), 40)
	next := bytes.ReplaceAll(text, []byte(`"6"`), []byte(`"7"`))
	if d := appendDelta(nil, nil, text, next); len(d) > len(next)/8 {
		t.Fatalf("a delta of %d bytes for %d bytes with 40 one-byte substitutions", len(d), len(next))
	}
}

// TestDeltaRejectsDamage: every cut and every flipped byte of a delta
// decodes to an error or to exactly the stated length — never a panic,
// never more.
func TestDeltaRejectsDamage(t *testing.T) {
	for i, c := range deltaCases(t)[:40] {
		d := appendDelta(nil, c[0], c[1], c[2])
		for n := range len(d) {
			if got, err := applyDelta(nil, c[0], c[1], d[:n]); err == nil && len(got) != len(c[2]) {
				t.Fatalf("case %d cut at %d: %d bytes", i, n, len(got))
			}
		}
		for p := range d {
			for _, mask := range []byte{0x01, 0x80, 0xff} {
				bad := bytes.Clone(d)
				bad[p] ^= mask
				got, err := applyDelta(nil, c[0], c[1], bad)
				if err == nil && len(got) > deltaMaxTarget {
					t.Fatalf("case %d byte %d: %d bytes", i, p, len(got))
				}
			}
		}
	}
	// A stated size beyond the bound is refused before allocating.
	if _, err := applyDelta(nil, nil, nil, []byte{0xff, 0xff, 0xff, 0xff, 0x7f}); err == nil {
		t.Fatal("a delta stating 34 GB decoded")
	}
}

// FuzzDelta: any inputs round-trip; any delta decodes to an error or to
// its stated length without panicking.
func FuzzDelta(f *testing.F) {
	for _, c := range deltaCases(f)[:30] {
		f.Add(c[0], c[1], c[2])
		f.Add(c[0], c[1], appendDelta(nil, c[0], c[1], c[2]))
	}
	f.Fuzz(func(t *testing.T, base1, base2, target []byte) {
		d := appendDelta(nil, base1, base2, target)
		if got, err := applyDelta(nil, base1, base2, d); err != nil || !bytes.Equal(got, target) {
			t.Fatalf("round trip: %q vs %q (%v)", got, target, err)
		}
		if got, err := applyDelta(nil, base1, base2, target); err == nil {
			if size, _ := binary.Uvarint(target); uint64(len(got)) != size {
				t.Fatalf("decoded %d bytes from a delta stating %d", len(got), size)
			}
		}
	})
}
