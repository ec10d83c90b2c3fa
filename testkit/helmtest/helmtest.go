// Package helmtest builds a small chart and installs, upgrades and reads
// Helm releases with Helm's own SDK (helm.sh/helm/v4), for tests that
// roll Helm-owned workloads back on the real control plane of kubetest.
package helmtest

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/action"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/kube"
	release "helm.sh/helm/v4/pkg/release/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
)

// The chart: one Deployment named after the release, labels app=<release>
// (kubetest.PodImages finds its pods), one container "app" whose image is
// the value "image", tolerating kwok's node, rolling one pod at a time.
var chartFiles = map[string]string{
	"Chart.yaml": `apiVersion: v2
name: rbdemo
description: rollbot's test chart
version: 0.1.0
`,
	"values.yaml": `image: registry.local/app:v1
replicas: 2
`,
	"templates/deployment.yaml": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  labels:
    app: {{ .Release.Name }}
spec:
  replicas: {{ .Values.replicas }}
  revisionHistoryLimit: 10
  progressDeadlineSeconds: {{ .Values.progressDeadline | default 600 }}
  selector:
    matchLabels:
      app: {{ .Release.Name }}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 0, maxSurge: 1}
  template:
    metadata:
      labels:
        app: {{ .Release.Name }}
    spec:
      containers:
      - name: app
        image: {{ .Values.image | quote }}
      tolerations:
      - {key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}
`,
}

// Chart writes the chart into a temporary directory and loads it, as
// `helm install ./dir` would.
func Chart(t testing.TB) *chart.Chart {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "rbdemo")
	for name, body := range chartFiles {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := loader.Load(dir)
	if err != nil {
		t.Fatalf("load chart %s: %v", dir, err)
	}
	return ch
}

// Config is Helm's action configuration for namespace ns with the
// kubeconfig file's credentials and the Secrets storage driver (Helm's
// default), as the helm CLI builds it.
func Config(t testing.TB, kubeconfig, ns string) *action.Configuration {
	t.Helper()
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig, flags.Namespace = &kubeconfig, &ns
	cfg := action.NewConfiguration()
	if err := cfg.Init(flags, ns, "secret"); err != nil {
		t.Fatalf("helm configuration: %v", err)
	}
	return cfg
}

// Install installs ch as release name with the image value, without
// waiting (see kubetest.WaitRolledOut).
func Install(t testing.TB, cfg *action.Configuration, ch *chart.Chart, ns, name, image string) {
	t.Helper()
	in := action.NewInstall(cfg)
	in.ReleaseName, in.Namespace = name, ns
	in.WaitStrategy = kube.HookOnlyStrategy
	if _, err := in.Run(ch, map[string]any{"image": image}); err != nil {
		t.Fatalf("helm install %s: %v", name, err)
	}
}

// Upgrade upgrades release name to the image value (as `helm upgrade
// --set image=…`), without waiting.
func Upgrade(t testing.TB, cfg *action.Configuration, ch *chart.Chart, name, image string) {
	t.Helper()
	up := action.NewUpgrade(cfg)
	up.WaitStrategy = kube.HookOnlyStrategy
	if _, err := up.Run(name, ch, map[string]any{"image": image}); err != nil {
		t.Fatalf("helm upgrade %s: %v", name, err)
	}
}

// UpgradeFailing upgrades release name to image with Helm's wait (its
// watcher strategy, at most timeout) for an image that never becomes
// ready (kubetest's "-broken" tags): Helm records the revision as failed.
func UpgradeFailing(t testing.TB, cfg *action.Configuration, ch *chart.Chart, name, image string) {
	t.Helper()
	up := action.NewUpgrade(cfg)
	up.WaitStrategy = kube.StatusWatcherStrategy
	up.Timeout = 5 * time.Second
	if _, err := up.Run(name, ch, map[string]any{"image": image}); err == nil {
		t.Fatalf("helm upgrade %s to %s succeeded; want it to fail its wait", name, image)
	}
}

// History is the release's revisions, newest first (`helm history`).
func History(t testing.TB, cfg *action.Configuration, name string) []*release.Release {
	t.Helper()
	rs, err := action.NewHistory(cfg).Run(name)
	if err != nil {
		t.Fatalf("helm history %s: %v", name, err)
	}
	out := make([]*release.Release, 0, len(rs))
	for _, r := range rs {
		v, ok := r.(*release.Release)
		if !ok {
			t.Fatalf("helm history %s: record of type %T", name, r)
		}
		out = append(out, v)
	}
	slices.SortFunc(out, func(x, y *release.Release) int { return y.Version - x.Version })
	return out
}

// Rollback is Helm's own `helm rollback <name> <to> --wait=<wait>`: the
// rollback and Helm's wait for its resources (kube.StatusWatcherStrategy,
// Helm 4's default, or kube.LegacyStrategy, Helm 3's), at most timeout.
// The benchmark compares rollbot with it.
func Rollback(t testing.TB, cfg *action.Configuration, name string, to int, wait kube.WaitStrategy, timeout time.Duration) {
	t.Helper()
	rb := action.NewRollback(cfg)
	rb.Version = to
	rb.WaitStrategy = wait
	rb.Timeout = timeout
	if err := rb.Run(name); err != nil {
		t.Fatalf("helm rollback %s %d: %v", name, to, err)
	}
}
