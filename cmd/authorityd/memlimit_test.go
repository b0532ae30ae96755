package main

import (
	"errors"
	"io/fs"
	"math"
	"runtime/debug"
	"testing"
)

func TestDefaultMemoryLimit(t *testing.T) {
	const v2, v1 = "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"
	for _, c := range []struct {
		name  string
		files map[string]string
		want  int64
		ok    bool
	}{
		{"no cgroup", nil, 0, false},
		{"v2 limit", map[string]string{v2: "2147483648\n"}, 2147483648 / 10 * 9, true},
		{"v2 unlimited", map[string]string{v2: "max\n", v1: "1073741824"}, 0, false},
		{"v1 limit", map[string]string{v1: "1073741824\n"}, 1073741824 / 10 * 9, true},
		{"v1 unlimited", map[string]string{v1: "9223372036854771712\n"}, 0, false},
		{"garbage", map[string]string{v2: "lots"}, 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			read := func(p string) ([]byte, error) {
				if s, ok := c.files[p]; ok {
					return []byte(s), nil
				}
				return nil, fs.ErrNotExist
			}
			got, ok := defaultMemoryLimit(read)
			if got != c.want || ok != c.ok {
				t.Fatalf("got %d %v, want %d %v", got, ok, c.want, c.ok)
			}
		})
	}
}

// An explicit GOMEMLIMIT wins; otherwise the cgroup's limit is applied.
func TestApplyMemoryLimit(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	read := func(string) ([]byte, error) { return []byte("1000000000"), nil }
	if n := applyMemoryLimit(func(string) string { return "off" }, read); n != 0 || debug.SetMemoryLimit(-1) != before {
		t.Fatalf("GOMEMLIMIT set: applied %d", n)
	}
	if n := applyMemoryLimit(func(string) string { return "" }, read); n != 900000000 || debug.SetMemoryLimit(-1) != 900000000 {
		t.Fatalf("applied %d, runtime limit %d", n, debug.SetMemoryLimit(-1))
	}
	debug.SetMemoryLimit(math.MaxInt64)
	if n := applyMemoryLimit(func(string) string { return "" }, func(string) ([]byte, error) { return nil, errors.New("none") }); n != 0 {
		t.Fatalf("no cgroup: applied %d", n)
	}
}
