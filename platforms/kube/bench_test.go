package kube_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"testing"
	"time"

	helmkube "helm.sh/helm/v4/pkg/kube"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"rollbot/platforms"
	"rollbot/platforms/kube"
	"rollbot/testkit/helmtest"
	"rollbot/testkit/kubetest"
)

// BenchmarkRollback compares, on the same cluster in the same run, a
// bot-style rollback (Snapshot, LastKnownGood, Stop, then Rollback, which
// waits for the rollout) with a direct client-go undo (what `kubectl
// rollout undo` does: read, patch the previous template) followed by a
// watch until the rollout is complete. Each iteration deploys v2 first
// (untimed). Reported: bot-ms/op, direct-ms/op and bot/direct.
func BenchmarkRollback(b *testing.B) {
	c := cluster(b)
	ctx := context.Background()
	ns := kubetest.CreateNamespace(b, c.AdminClient, "bench")
	for _, name := range []string{"bot", "direct"} {
		kubetest.CreateDeployment(b, c.AdminClient, ns, name, v1, 3)
	}
	role, err := kubetest.LoadRole(rbacFile)
	if err != nil {
		b.Fatal(err)
	}
	path, _ := c.KubeconfigForRules(b, ns, role.Name, role.Rules)
	a, err := kube.New(kube.Config{Kubeconfig: path, Namespace: ns, Deployment: "bot"}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		b.Fatal(err)
	}
	direct, err := kubernetes.NewForConfig(rc)
	if err != nil {
		b.Fatal(err)
	}

	var bot, dir time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		// A new release each iteration; the rollback returns to the one before.
		for _, name := range []string{"bot", "direct"} {
			kubetest.SetImage(b, c.AdminClient, ns, name, "registry.local/myapp:v"+strconv.Itoa(100+i))
			kubetest.WaitRolledOut(b, c.AdminClient, ns, name)
		}
		b.StartTimer()

		start := time.Now()
		botRollback(ctx, b, a)
		bot += time.Since(start)

		start = time.Now()
		if err := undoAndWait(ctx, direct, ns, "direct"); err != nil {
			b.Fatal(err)
		}
		dir += time.Since(start)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(bot.Milliseconds())/n, "bot-ms/op")
	b.ReportMetric(float64(dir.Milliseconds())/n, "direct-ms/op")
	b.ReportMetric(bot.Seconds()/dir.Seconds(), "bot/direct")
}

// botRollback is what the bot does to roll back: Snapshot, LastKnownGood,
// Stop, then Rollback, which waits for the rollout.
func botRollback(ctx context.Context, b *testing.B, a *kube.Adapter) {
	snap, err := a.Snapshot(ctx)
	if err != nil {
		b.Fatal(err)
	}
	lkg, ok := platforms.LastKnownGood(snap.History, snap.Current, nil)
	if !ok {
		b.Fatal("no last known good revision")
	}
	if _, err := a.Stop(ctx, false); err != nil {
		b.Fatal(err)
	}
	if _, err := a.Rollback(ctx, lkg, false, nil); err != nil {
		b.Fatal(err)
	}
}

// undoAndWait is `kubectl rollout undo` + `kubectl rollout status` in plain
// client-go: patch the previous revision's template in, then watch.
func undoAndWait(ctx context.Context, cs kubernetes.Interface, ns, name string) error {
	d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	rss, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil {
		return err
	}
	var prev *appsv1.ReplicaSet
	var cur, best int64
	cur, _ = strconv.ParseInt(d.Annotations["deployment.kubernetes.io/revision"], 10, 64)
	for i := range rss.Items {
		r, _ := strconv.ParseInt(rss.Items[i].Annotations["deployment.kubernetes.io/revision"], 10, 64)
		if r < cur && r > best {
			best, prev = r, &rss.Items[i]
		}
	}
	tmpl := prev.Spec.Template.DeepCopy()
	delete(tmpl.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	patch, err := json.Marshal([]map[string]any{{"op": "replace", "path": "/spec/template", "value": tmpl}})
	if err != nil {
		return err
	}
	d, err = cs.AppsV1().Deployments(ns).Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return err
	}
	w, err := cs.AppsV1().Deployments(ns).Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String(), ResourceVersion: d.ResourceVersion})
	if err != nil {
		return err
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		if ev.Type != watch.Modified {
			continue
		}
		if d, ok := ev.Object.(*appsv1.Deployment); ok && kubetest.RolloutDone(d) {
			return nil
		}
	}
	return ctx.Err()
}

// BenchmarkHelmRollback compares, on the same cluster in the same run, the
// Helm path of a bot-style rollback (Snapshot with the release history,
// LastKnownGood, Stop, then Rollback: Helm's Rollback action, then the
// rollout followed to its end) with Helm's SDK doing it alone: `helm
// rollback <release> --wait` (the Rollback action with Helm 4's watcher
// wait), and with Helm 3's legacy wait. Each iteration upgrades the three
// releases to a new image first (untimed). Reported: bot-ms/op, helm-ms/op
// (watcher), helm-legacy-ms/op, bot/helm and bot/helm-legacy.
func BenchmarkHelmRollback(b *testing.B) {
	c := cluster(b)
	ctx := context.Background()
	ns := kubetest.CreateNamespace(b, c.AdminClient, "helmbench")
	cfg := helmtest.Config(b, c.AdminKubeconfig, ns)
	ch := helmtest.Chart(b)
	releases := []string{"bot", "sdk", "legacy"}
	for _, name := range releases {
		helmtest.Install(b, cfg, ch, ns, name, v1)
		kubetest.WaitRolledOut(b, c.AdminClient, ns, name)
	}
	path := c.KubeconfigForRoles(b, ns, rbacFile, "rollbot", kube.HelmRole)
	a, err := kube.New(kube.Config{Kubeconfig: path, Namespace: ns, Deployment: "bot"}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	var bot, sdk, legacy time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		for _, name := range releases {
			helmtest.Upgrade(b, cfg, ch, name, "registry.local/myapp:v"+strconv.Itoa(100+i))
			kubetest.WaitRolledOut(b, c.AdminClient, ns, name)
		}
		b.StartTimer()

		start := time.Now()
		botRollback(ctx, b, a)
		bot += time.Since(start)

		start = time.Now()
		helmtest.Rollback(b, cfg, "sdk", 0, helmkube.StatusWatcherStrategy, 5*time.Minute)
		sdk += time.Since(start)

		start = time.Now()
		helmtest.Rollback(b, cfg, "legacy", 0, helmkube.LegacyStrategy, 5*time.Minute)
		legacy += time.Since(start)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(bot.Milliseconds())/n, "bot-ms/op")
	b.ReportMetric(float64(sdk.Milliseconds())/n, "helm-ms/op")
	b.ReportMetric(float64(legacy.Milliseconds())/n, "helm-legacy-ms/op")
	b.ReportMetric(bot.Seconds()/sdk.Seconds(), "bot/helm")
	b.ReportMetric(bot.Seconds()/legacy.Seconds(), "bot/helm-legacy")
}
