// Command etcdserver is an etcd server built from its Go module
// (go.etcd.io/etcd/server/v3, the version bench/compare/go.mod pins), so the
// side-by-side benchmark needs no etcd release download. It takes etcd's
// own flags.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
