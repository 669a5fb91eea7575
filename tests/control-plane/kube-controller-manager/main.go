// kube-controller-manager, built from k8s.io/kubernetes as a Go module (the
// same main as cmd/kube-controller-manager upstream). The tests need it for
// garbage collection by ownerReferences and the ServiceAccount token
// controllers.
package main

import (
	"os"
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
