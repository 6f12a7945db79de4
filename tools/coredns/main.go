// CoreDNS with only the plugins the test node cluster uses (scripts/node-cluster.sh):
// cluster DNS for Services and the StatefulSet's per-pod names. The upstream
// binary compiles in every plugin (cloud DNS SDKs included), which costs build
// time on 2 cores and serves nothing here. No cache plugin: a restarted pod's
// new address must be served at once (Raft peers re-resolve). Nothing is forwarded: pods resolve
// cluster names only, so no query leaves the machine.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	// Plugins register themselves in init(); the order of execution is Directives'.
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
)

func init() {
	// Same relative order as upstream's plugin.cfg.
	dnsserver.Directives = []string{"bind", "errors", "log", "kubernetes"}
}

func main() {
	coremain.Run()
}
