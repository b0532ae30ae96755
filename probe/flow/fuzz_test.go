package flow

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoad: any bytes give a config or diagnostics, never a panic, and
// every diagnostic has a position in the file.
func FuzzLoad(f *testing.F) {
	for _, p := range []string{"sample-app/environments.yaml", "sample-app/flows.yaml", "authority/flows.yaml"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "deploy", "probes", p))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(brokenBase))
	f.Add([]byte("flows: [{name: x, steps: [{name: s, request: {url: '{{'}, assert: ['status ==']}]}]\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, ds := Load(Source{Name: "fuzz.yaml", Data: data})
		for _, d := range ds {
			if d.Pos.File != "fuzz.yaml" || d.Msg == "" {
				t.Fatalf("diagnostic without position or message: %+v", d)
			}
		}
	})
}
