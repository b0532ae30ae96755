package main

import (
	"strings"
	"testing"

	pb "github.com/aerodb/authority/api/authority/v1"
	"github.com/spf13/pflag"
)

// serve and demo create a domain in replica-quorum unless told
// authority-gated; --replica-quorum stays an alias of the default.
func TestDurabilityFlags(t *testing.T) {
	for _, c := range []struct {
		args    []string
		want    pb.Durability
		wantErr string
	}{
		{nil, pb.Durability_DURABILITY_REPLICA_QUORUM, ""},
		{[]string{"--durability", "replica-quorum"}, pb.Durability_DURABILITY_REPLICA_QUORUM, ""},
		{[]string{"--durability", "authority-gated"}, pb.Durability_DURABILITY_AUTHORITY_GATED, ""},
		{[]string{"--replica-quorum"}, pb.Durability_DURABILITY_REPLICA_QUORUM, ""},
		{[]string{"--replica-quorum", "--durability", "replica-quorum"}, pb.Durability_DURABILITY_REPLICA_QUORUM, ""},
		{[]string{"--replica-quorum", "--durability", "authority-gated"}, 0, "contradicts"},
		{[]string{"--durability", "gated"}, 0, `"gated": want replica-quorum or authority-gated`},
		{[]string{"--durability", strings.Repeat("x", 10_000)}, 0, "…"},
	} {
		var d durabilityFlags
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		d.add(fs, "the domain's")
		if err := fs.Parse(c.args); err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		got, err := d.resolve()
		switch {
		case c.wantErr == "" && (err != nil || got != c.want):
			t.Errorf("%v: %v %v, want %v", c.args, got, err, c.want)
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%v: %v %v, want an error with %q", c.args, got, err, c.wantErr)
		case err != nil && len(err.Error()) > 200:
			t.Errorf("%v: the error echoes %d bytes of input", c.args[:1], len(err.Error()))
		}
	}
}
