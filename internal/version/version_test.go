package version

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestStampWins(t *testing.T) {
	bi := &debug.BuildInfo{Main: debug.Module{Version: "v0.1.0"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "1111111111111111"}, {Key: "vcs.modified", Value: "true"}}}
	read := func() (*debug.BuildInfo, bool) { return bi, true }
	in := get("v9.9.9", "abcdef0123456789", read)
	if in.Version != "v9.9.9" || in.Commit != "abcdef0123456789" || in.Modified || in.GoVersion != runtime.Version() {
		t.Fatalf("%+v", in)
	}
	if s := in.String("authorityd"); s != "authorityd v9.9.9 (commit abcdef012345, "+runtime.Version()+", "+runtime.GOOS+"/"+runtime.GOARCH+")" {
		t.Fatal(s)
	}
	in = get("", "", read) // go install: the toolchain's record
	if in.Version != "v0.1.0" || in.Commit != "1111111111111111" || !in.Modified || !strings.Contains(in.String("x"), "+dirty") {
		t.Fatalf("%+v", in)
	}
	in = get("", "", func() (*debug.BuildInfo, bool) { return nil, false })
	if in.Version != "devel" || in.Commit != "unknown" {
		t.Fatalf("%+v", in)
	}
}
