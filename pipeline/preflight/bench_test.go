package preflight

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
)

// BenchmarkParseInventory10k: an INI inventory of MaxHosts hosts (a range
// and listed hosts), parsed and resolved.
func BenchmarkParseInventory10k(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("[web]\nweb[0001:5000].example.com\n[db]\n")
	for i := range 5000 {
		fmt.Fprintf(&sb, "db%d ansible_host=10.0.%d.%d ansible_port=5432\n", i, i/256, i%256)
	}
	sb.WriteString("[prod:children]\nweb\ndb\n")
	body := []byte(sb.String())
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		inv, err := ParseInventory(body, ".ini")
		if err != nil {
			b.Fatal(err)
		}
		if ts, err := inv.Targets("prod", 22); err != nil || len(ts) != MaxHosts {
			b.Fatal(len(ts), err)
		}
	}
}

// BenchmarkNetworkCheck1000: the network check against 1000 loopback
// targets (one listener, distinct target names) with the default
// parallelism.
func BenchmarkNetworkCheck1000(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	var sb strings.Builder
	sb.WriteString("[t]\n")
	for i := range 1000 {
		fmt.Fprintf(&sb, "h%d ansible_host=127.0.0.1 ansible_port=%d\n", i, port)
	}
	cfg := only(DefaultConfig(), CheckNetwork)
	cfg.Network.Inventory = writeFile(b, "hosts", sb.String())
	for b.Loop() {
		rep, err := Run(context.Background(), cfg, noEnv)
		if err != nil || !rep.Passed {
			b.Fatal(err, rep)
		}
	}
}
