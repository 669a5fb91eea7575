// kube-scheduler, built from k8s.io/kubernetes as a Go module (the same main
// as cmd/kube-scheduler upstream). Not started by scripts/control-plane.sh: the
// tests that run pods on a kwok node start it (docs/testing.md).
package main

import (
	"os"
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	os.Exit(cli.Run(app.NewSchedulerCommand()))
}
