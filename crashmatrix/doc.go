// Package crashmatrix holds the crash matrix of AeroDB Authority (issue 5):
// process tests that kill real authorityd processes with SIGKILL at every
// promotion boundary (named failpoints), restart them from their data
// directories, and check what must hold after recovery. The tests live in
// this package's _test files; docs/CRASH-MATRIX.md lists every cell and the
// test that runs it.
//
// Run it with the rest of the suite (`make test`) or alone:
//
//	go test -tags "invariants failpoints" -count=1 ./crashmatrix/
package crashmatrix
