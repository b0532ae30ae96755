package fsm

import (
	"encoding/binary"
	"errors"
)

// A delta encodes one byte string (the target) as copies from another (the
// base) and literals: consecutive attempt records of a domain differ in a
// few dozen bytes (request id, epoch, index, holder), so a record costs
// about a tenth of its size as a delta of the one before it.
//
// The codec is part of the snapshot format (version 3) and is a pure
// function of its inputs — no library, no tables that a new build could
// change — so equal states encode to equal bytes on every replica:
//
//	delta = uvarint target length | op*
//	op    = uvarint h, then
//	        h even: a literal of h/2 (≥ 1) bytes, which follow
//	        h odd:  a copy of h/2 + deltaMinMatch bytes from the base at
//	                expected + zigzag(uvarint), where expected is the end of
//	                the previous copy (0 at first) plus the literal bytes
//	                since it — an aligned substitution costs no offset
//
// Decoding checks every length and offset against the base and the stated
// target length, so a damaged delta gives an error, never a panic or an
// allocation beyond deltaMaxTarget.
const (
	deltaMinMatch  = 4
	deltaHashBits  = 12
	deltaMaxTarget = 256 << 20
)

var errDelta = errors.New("malformed delta")

func deltaHash(b []byte) uint32 {
	return (binary.LittleEndian.Uint32(b) * 2654435761) >> (32 - deltaHashBits)
}

// appendDelta appends the delta of target against base to dst.
func appendDelta(dst, base, target []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(target)))
	// table: the last position of each 4-byte hash in base, plus one.
	var table [1 << deltaHashBits]int32
	for i := 0; i+deltaMinMatch <= len(base); i++ {
		table[deltaHash(base[i:])] = int32(i + 1)
	}
	lit, expected, i := 0, 0, 0 // lit: start of the pending literal
	for i+deltaMinMatch <= len(target) {
		src := expected + (i - lit)
		if src+deltaMinMatch > len(base) || string(base[src:src+deltaMinMatch]) != string(target[i:i+deltaMinMatch]) {
			src = int(table[deltaHash(target[i:])]) - 1
			if src < 0 || string(base[src:src+deltaMinMatch]) != string(target[i:i+deltaMinMatch]) {
				i++
				continue
			}
		}
		n := deltaMinMatch
		for src+n < len(base) && i+n < len(target) && base[src+n] == target[i+n] {
			n++
		}
		if i > lit {
			dst = binary.AppendUvarint(dst, uint64(i-lit)<<1)
			dst = append(dst, target[lit:i]...)
		}
		rel := int64(src - (expected + (i - lit)))
		dst = binary.AppendUvarint(dst, uint64(n-deltaMinMatch)<<1|1)
		dst = binary.AppendUvarint(dst, uint64(rel<<1^rel>>63))
		i += n
		lit, expected = i, src+n
	}
	if len(target) > lit {
		dst = binary.AppendUvarint(dst, uint64(len(target)-lit)<<1)
		dst = append(dst, target[lit:]...)
	}
	return dst
}

// applyDelta appends to dst the target a delta encodes against base.
func applyDelta(dst, base, delta []byte) ([]byte, error) {
	size, k := binary.Uvarint(delta)
	if k <= 0 || size > deltaMaxTarget {
		return dst, errDelta
	}
	delta = delta[k:]
	start := len(dst)
	dst = growBytes(dst, int(size))
	lit, expected := 0, 0 // literal bytes since the last copy; its end
	for len(delta) > 0 {
		h, k := binary.Uvarint(delta)
		if k <= 0 {
			return dst, errDelta
		}
		delta = delta[k:]
		if h&1 == 0 {
			n := h >> 1
			if n == 0 || n > uint64(len(delta)) || n > size-uint64(len(dst)-start) {
				return dst, errDelta
			}
			dst = append(dst, delta[:n]...)
			delta = delta[n:]
			lit += int(n)
			continue
		}
		n := h>>1 + deltaMinMatch
		z, k := binary.Uvarint(delta)
		if k <= 0 || n > size-uint64(len(dst)-start) {
			return dst, errDelta
		}
		delta = delta[k:]
		src := int64(expected+lit) + (int64(z>>1) ^ -int64(z&1))
		if src < 0 || uint64(src)+n > uint64(len(base)) {
			return dst, errDelta
		}
		dst = append(dst, base[src:uint64(src)+n]...)
		lit, expected = 0, int(uint64(src)+n)
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
