package compare

import (
	"flag"
	"fmt"
	"os"
	"testing"
)

var (
	rowsFlag  = flag.String("rows", "cas,lock", `row families or row IDs to run, comma-separated, or "all" (renew, cas, lock, writes, failover, takeover, scale)`)
	quickFlag = flag.Bool("quick", true, "smaller sizes (10,000 keys instead of 100,000, fewer rounds); make bench-compare passes -quick=false")
	tlsFlag   = flag.Bool("tls", false, "run both systems with mutual TLS (default: both plaintext)")
	outFlag   = flag.String("out", "", "directory for <date>.md, .json and .svg (default: a temporary directory)")
)

func TestMain(m *testing.M) {
	if HolderMode() { // the takeover row's holder process
		if err := RunHolder(); err != nil {
			fmt.Fprintln(os.Stderr, "holder:", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// TestCompare runs the side-by-side benchmark: by default a quick run of
// the cheap rows (an end-to-end test of the harness); `make bench-compare`
// runs every row in full. It checks that each selected row was measured on
// both systems, never how fast.
func TestCompare(t *testing.T) {
	fams, err := Select(*rowsFlag)
	if err != nil {
		t.Fatal(err)
	}
	cfg := NewConfig(*quickFlag)
	cfg.TLS = *tlsFlag
	rep := Run(t, cfg, fams)
	out := *outFlag
	if out == "" {
		out = t.TempDir()
	}
	path, err := rep.Write(out)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(rep.Markdown())
	fmt.Println("written:", path, "(and .json, .svg)")
	for _, r := range rep.Results {
		if r.Etcd <= 0 || r.Ours <= 0 {
			t.Errorf("row %s: etcd %v, ours %v: not measured on both", r.ID, r.Etcd, r.Ours)
		}
	}
}
