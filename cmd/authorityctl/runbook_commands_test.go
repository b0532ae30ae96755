package main

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every authorityctl command line in the release runbooks names a command
// that exists, with flags it accepts (docs/runbooks/release-*.md).
func TestReleaseRunbookCommandsParse(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "docs", "runbooks", "release-*.md"))
	if err != nil || len(files) < 5 {
		t.Fatalf("release runbooks: %v %v", files, err)
	}
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		inBlock, line := false, ""
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			l := strings.TrimSpace(sc.Text())
			if strings.HasPrefix(l, "```") {
				inBlock = !inBlock
				continue
			}
			if !inBlock {
				continue
			}
			if line != "" || strings.HasPrefix(l, "authorityctl ") {
				line += " " + strings.TrimSuffix(l, `\`)
				if strings.HasSuffix(l, `\`) {
					continue
				}
				checkRunbookLine(t, filepath.Base(f), strings.TrimSpace(line))
				n++
				line = ""
			}
		}
	}
	t.Logf("%d command lines checked", n)
}

func checkRunbookLine(t *testing.T, file, line string) {
	t.Helper()
	if i := strings.Index(line, " #"); i >= 0 {
		line = line[:i]
	}
	line = strings.TrimSuffix(strings.TrimSpace(line), "&")
	line = strings.TrimSuffix(strings.TrimSpace(line), "> analysis.dsse")
	var args []string
	for _, f := range splitQuoted(line)[1:] {
		args = append(args, f)
	}
	root := newRootCmd(newOptions(func(string) string { return "" }, &bytes.Buffer{}, &bytes.Buffer{}))
	cmd, rest, err := root.Find(args)
	if err != nil || cmd == root || cmd.HasSubCommands() {
		t.Errorf("%s: %q: no such command (%v)", file, line, err)
		return
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Errorf("%s: %q: %v", file, line, err)
		return
	}
	if err := cmd.ValidateRequiredFlags(); err != nil {
		t.Errorf("%s: %q: %v", file, line, err)
	}
	if cmd.Args != nil {
		if err := cmd.Args(cmd, cmd.Flags().Args()); err != nil {
			t.Errorf("%s: %q: %v", file, line, err)
		}
	}
}

// splitQuoted splits a shell line on spaces, keeping "double quoted" words.
func splitQuoted(s string) []string {
	var out []string
	var cur strings.Builder
	in := false
	for _, r := range s {
		switch {
		case r == '"':
			in = !in
		case r == ' ' && !in:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}
