package fsm

import (
	"encoding/binary"
	"errors"
	"sync"
)

// A delta encodes one byte string (the target) as copies from a base and
// literals. A record is encoded against the two records before it in its
// segment (history.go): consecutive attempts of a domain differ in a few
// dozen bytes (request id, epochs, log index), and promotions that go back
// and forth make the one two before nearly identical, so a record costs a
// few dozen bytes instead of about two kilobytes.
//
// The codec is part of the snapshot format (version 3) and is a pure
// function of its inputs — no library, no tables that a new build could
// change — so equal states encode to equal bytes on every replica. The base
// is the concatenation of two parts (either may be empty):
//
//	delta    = uvarint target length | sequence*
//	sequence = uvarint h | [uvarint literal length - 3] | literal bytes |
//	           [zigzag uvarint offset]
//	h        = copy code << 3 | literal code << 1 | has offset
//
// The literal code is the literal length (0 to 2) or 3 for a length that
// follows. Copy code 0 is no copy (the last sequence); otherwise the
// sequence copies copy code + deltaMinMatch - 1 bytes from the base at
// expected + offset (offset 0 when has offset is clear), where expected is
// the end of the previous copy (0 at first) plus the literal bytes since —
// an aligned substitution costs no offset.
//
// Decoding checks every length and offset against the base and the stated
// target length, so a damaged delta gives an error, never a panic or an
// allocation beyond deltaMaxTarget.
const (
	deltaMinMatch  = 4
	deltaResume    = 4 // bytes of substitution the encoder looks past
	deltaHashBits  = 12
	deltaMaxTarget = 256 << 20
)

var errDelta = errors.New("malformed delta")

func deltaHash(b []byte) uint32 {
	return (binary.LittleEndian.Uint32(b) * 2654435761) >> (32 - deltaHashBits)
}

// appendDelta appends the delta of target against base1+base2 to dst.
func appendDelta(dst, base1, base2, target []byte) []byte {
	sc := deltaScratch.Get().(*deltaBufs)
	defer deltaScratch.Put(sc)
	base := base2
	if len(base1) > 0 {
		sc.base = append(append(sc.base[:0], base1...), base2...)
		base = sc.base
	}
	dst = binary.AppendUvarint(dst, uint64(len(target)))
	// table: the last position of each 4-byte hash in base, plus one.
	table := &sc.table
	clear(table[:])
	for i := 0; i+deltaMinMatch <= len(base); i++ {
		table[deltaHash(base[i:])] = int32(i + 1)
	}
	matches := func(src, i int) bool {
		return src >= 0 && src+deltaMinMatch <= len(base) && i+deltaMinMatch <= len(target) &&
			string(base[src:src+deltaMinMatch]) == string(target[i:i+deltaMinMatch])
	}
	lit, expected, i := 0, 0, 0 // lit: start of the pending literal
	for i+deltaMinMatch <= len(target) {
		src := expected + (i - lit)
		if !matches(src, i) {
			// An aligned substitution of a few bytes (a digit, an id)
			// resumes the alignment: keep it rather than jump.
			resumes := false
			for k := 1; k <= deltaResume && !resumes; k++ {
				resumes = matches(src+k, i+k)
			}
			if src = int(table[deltaHash(target[i:])]) - 1; resumes || !matches(src, i) {
				i++
				continue
			}
		}
		n := deltaMinMatch
		for src+n < len(base) && i+n < len(target) && base[src+n] == target[i+n] {
			n++
		}
		dst = appendSequence(dst, target[lit:i], n, int64(src-(expected+(i-lit))))
		i += n
		lit, expected = i, src+n
	}
	if len(target) > lit {
		dst = appendSequence(dst, target[lit:], 0, 0)
	}
	return dst
}

// deltaBufs is the encoder's scratch space, reused (its contents never
// reach the output but through the inputs).
type deltaBufs struct {
	table [1 << deltaHashBits]int32
	base  []byte
}

var deltaScratch = sync.Pool{New: func() any { return new(deltaBufs) }}

func appendSequence(dst, literal []byte, n int, offset int64) []byte {
	h := uint64(0)
	if n > 0 {
		h = uint64(n-deltaMinMatch+1) << 3
	}
	if len(literal) < 3 {
		h |= uint64(len(literal)) << 1
	} else {
		h |= 3 << 1
	}
	if offset != 0 {
		h |= 1
	}
	dst = binary.AppendUvarint(dst, h)
	if len(literal) >= 3 {
		dst = binary.AppendUvarint(dst, uint64(len(literal)-3))
	}
	dst = append(dst, literal...)
	if offset != 0 {
		dst = binary.AppendUvarint(dst, uint64(offset<<1^offset>>63))
	}
	return dst
}

// applyDelta appends to dst the target a delta encodes against
// base1+base2.
func applyDelta(dst, base1, base2, delta []byte) ([]byte, error) {
	size, k := binary.Uvarint(delta)
	if k <= 0 || size > deltaMaxTarget {
		return dst, errDelta
	}
	delta = delta[k:]
	start := len(dst)
	dst = growBytes(dst, int(size))
	baseLen := uint64(len(base1) + len(base2))
	lit, expected := uint64(0), uint64(0) // literal bytes since the last copy; its end
	for len(delta) > 0 {
		h, k := binary.Uvarint(delta)
		if k <= 0 {
			return dst, errDelta
		}
		delta = delta[k:]
		left := size - uint64(len(dst)-start)
		n := h >> 1 & 3
		if n == 3 {
			m, k := binary.Uvarint(delta)
			if k <= 0 || m > left {
				return dst, errDelta
			}
			delta, n = delta[k:], m+3
		}
		if n > uint64(len(delta)) || n > left {
			return dst, errDelta
		}
		dst = append(dst, delta[:n]...)
		delta, lit, left = delta[n:], lit+n, left-n
		c := h >> 3
		if c == 0 {
			if h&1 != 0 {
				return dst, errDelta
			}
			continue
		}
		c += deltaMinMatch - 1
		src := expected + lit
		if h&1 != 0 {
			z, k := binary.Uvarint(delta)
			if k <= 0 {
				return dst, errDelta
			}
			delta = delta[k:]
			src += uint64(int64(z>>1) ^ -int64(z&1)) // wraps below zero: caught by the bound
		}
		if c > left || src > baseLen || c > baseLen-src {
			return dst, errDelta
		}
		if src < uint64(len(base1)) {
			m := min(c, uint64(len(base1))-src)
			dst = append(dst, base1[src:src+m]...)
			src, c = src+m, c-m
		}
		if c > 0 {
			dst = append(dst, base2[src-uint64(len(base1)):][:c]...)
		}
		lit, expected = 0, src+c
	}
	if uint64(len(dst)-start) != size {
		return dst, errDelta
	}
	return dst, nil
}

// growBytes makes room for n more bytes without changing len.
func growBytes(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := make([]byte, len(b), len(b)+n)
	copy(nb, b)
	return nb
}
