package bot

import (
	"context"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sretry "k8s.io/client-go/util/retry"

	"rollbot/handlers"
	"rollbot/platforms/kube"
	"rollbot/testkit/kubetest"
	"rollbot/testkit/slackemu"
	"rollbot/testkit/wait"
)

// TestStatefulSetRollbackThroughSlack: `kind: statefulset` on the real
// control plane (its statefulset controller rolls the pods), as a
// ServiceAccount bound to exactly rbac.yaml's rollbot-workloads Role:
// assessed (readiness from its pods), confirmed, stopped with the
// partition, rolled back through its ControllerRevision, verified.
func TestStatefulSetRollbackThroughSlack(t *testing.T) {
	heavy(t)
	c := kubetest.Shared(t)
	ctx := context.Background()
	ns := kubetest.CreateNamespace(t, c.AdminClient, "sts")
	replicas := int32(2)
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "ledger"}}
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "ledger"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.local/ledger:v1"}}}}
	sts := c.AdminClient.AppsV1().StatefulSets(ns)
	if _, err := sts.Create(ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "ledger"},
		Spec: appsv1.StatefulSetSpec{Replicas: &replicas, Selector: sel, ServiceName: "ledger", PodManagementPolicy: appsv1.ParallelPodManagement, Template: tmpl}},
		metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rolledOut := func(image string) {
		wait.For(t, 30*time.Second, "ledger on "+image, func() (bool, error) {
			s, err := sts.Get(ctx, "ledger", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return s.Spec.Template.Spec.Containers[0].Image == image && s.Status.ObservedGeneration >= s.Generation &&
				s.Status.UpdatedReplicas == replicas && s.Status.ReadyReplicas == replicas && s.Status.CurrentRevision == s.Status.UpdateRevision, nil
		})
	}
	rolledOut("registry.local/ledger:v1")
	if err := k8sretry.RetryOnConflict(k8sretry.DefaultRetry, func() error {
		s, err := sts.Get(ctx, "ledger", metav1.GetOptions{})
		if err != nil {
			return err
		}
		s.Spec.Template.Spec.Containers[0].Image = "registry.local/ledger:v2"
		_, err = sts.Update(ctx, s, metav1.UpdateOptions{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	rolledOut("registry.local/ledger:v2")

	p, err := kube.NewPlatform(kube.Config{Kubeconfig: c.KubeconfigForRole(t, ns, "../deploy/kubernetes/rbac.yaml", kube.WorkloadsRole),
		Namespace: ns, Kind: "statefulset", Name: "ledger", RolloutTimeout: time.Minute}, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc := &handlers.Service{Name: "ledger", Platform: p, Metrics: imageMetrics{p},
		Thresholds: handlers.Thresholds{ErrorRate: 0.01, LatencyFactor: 2, Restarts: 3, UnreadyRatio: 0.5, BaselineP95: 100 * time.Millisecond},
		Approvers:  handlers.Access{Groups: []string{slackemu.GroupOnCall}}}
	h := newHarness(t, []*handlers.Service{svc}, fastEngine())
	h.slash(slackemu.UserAlice, "ledger")
	a := h.waitFor("assessment", hasAction(handlers.ActConfirm))
	wantAll(t, "assessment", a.PlainText(), "Bad version:* 2 (registry.local/ledger:v2)", "Last known good:* 1 (registry.local/ledger:v1)",
		"0.00% (0 of 2 not ready)", "2/2 pods Ready (kubernetes statefulset "+ns+"/ledger)")
	h.click(slackemu.UserBob, a.TS, handlers.ActConfirm)
	h.waitFor("stopped", textHas("stopped the update of statefulset "+ns+"/ledger"))
	h.tickChecksByHand(slackemu.UserBob, a.TS)
	images, ready := kubetest.PodImages(t, c.AdminClient, ns, "ledger")
	if len(images) != 2 || ready != 2 || slices.ContainsFunc(images, func(s string) bool { return s != "registry.local/ledger:v1" }) {
		t.Fatalf("after the rollback: %v, %d ready", images, ready)
	}
	s, err := sts.Get(ctx, "ledger", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ru := s.Spec.UpdateStrategy.RollingUpdate; ru != nil && ru.Partition != nil && *ru.Partition != 0 {
		t.Fatalf("partition left at %d", *ru.Partition)
	}
}
