package observability

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpenEventLogCutsATornLastLine(t *testing.T) {
	dir := t.TempDir()
	long := strings.Repeat("x", 70<<10) // a line longer than one read block
	for _, c := range []struct {
		name, content, want string
	}{
		{"missing", "", ""},
		{"whole lines", "{\"a\":1}\n{\"b\":2}\n", "{\"a\":1}\n{\"b\":2}\n"},
		{"torn tail", "{\"a\":1}\n{\"b\":2}\n{\"c\":", "{\"a\":1}\n{\"b\":2}\n"},
		{"only a torn line", "{\"c\":", ""},
		{"torn after a long line", long + "\n{\"c\":", long + "\n"},
		{"torn long tail", "{\"a\":1}\n" + long, "{\"a\":1}\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-"))
			if c.name != "missing" {
				if err := os.WriteFile(path, []byte(c.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			f, dropped, err := OpenEventLog(path)
			if err != nil {
				t.Fatal(err)
			}
			if want := int64(len(c.content) - len(c.want)); dropped != want {
				t.Errorf("dropped %d bytes, want %d", dropped, want)
			}
			if _, err := f.WriteString("{\"d\":4}\n"); err != nil {
				t.Fatal(err)
			}
			f.Close()
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(b); got != c.want+"{\"d\":4}\n" {
				t.Errorf("file holds %q…, want %q…", trunc(got), trunc(c.want+"{\"d\":4}\n"))
			}
		})
	}
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:20] + "…" + s[len(s)-20:]
	}
	return s
}
